"""`google.pubsub.v1.Publisher` and `google.pubsub.v1.Subscriber`: what Batch job notifications need.

The real `google-cloud-pubsub` clients talk to it unchanged (`PUBSUB_EMULATOR_HOST=host:port`
makes them use an insecure channel and no credentials). Served: CreateTopic, GetTopic,
DeleteTopic, ListTopics, ListTopicSubscriptions, Publish; CreateSubscription,
GetSubscription, DeleteSubscription, ListSubscriptions, Pull, StreamingPull, Acknowledge,
ModifyAckDeadline. Other methods answer UNIMPLEMENTED.

As Pub/Sub does (docs "Subscription properties", "Filter messages", "Lease management"):
- resource IDs: 3-255 characters, a letter first, then `[A-Za-z0-9-_.~+%]`, not `goog...`;
- a subscription gets only messages published after it exists, and only those its filter
  matches (the others are acknowledged for it at once); the filter language is
  `attributes.K = "v"`, `!=`, `attributes:K`, `hasPrefix(attributes.K, "p")`, `NOT`/`-`,
  `AND`, `OR` and parentheses (AND and OR never mixed without them), at most 256 bytes;
- `ack_deadline_seconds` 10..600 (0 = 10), `expirationPolicy.ttl` at least one day (an
  absent policy is 31 days; a policy with no ttl never expires); a subscription unused for
  its ttl is deleted (`advance()` moves the emulator's clock for that);
- delivery is at least once: an unacknowledged message is redelivered when its lease ends,
  ModifyAckDeadline 0 redelivers it at once, acks of unknown or expired ack IDs are ignored.

Admin `GET /v1/pubsub/subscriptions` (`subscriptions()`) reports every subscription made
since the last reset, live or ended: its state, expiration, deliveries, acks, the
attributes of the messages it acknowledged (the last 1,000) and the peers of its open
streams; read-only, for tests that check who heard what.

Faults (admin `POST /v1/pubsub/faults`, or `faults()`): drop or duplicate published
messages, a `count` of them or a `rate` of them. gRPC faults (PERMISSION_DENIED on
CreateSubscription, UNAVAILABLE on StreamingPull, ...) use the emulator's `/v1/faults`.

`publish_job_state()` is the Batch side: the message Batch publishes to a job's
`notifications[].pubsubTopic` when its state changes (attributes `Type`, `NewJobState`,
`JobName`, `JobUID`; real-api-facts.md, "Pub/Sub notifications from Batch").
`schedule_job_states()` publishes a job's planned timeline as its states happen, and
`job_notifications()` reads which topics a job asked for.
"""

from __future__ import annotations

import itertools
import random
import re
import secrets
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.pubsub_v1.types import pubsub as types

from airflow_batch_streaming.emulator.common import (
    ApiError,
    invalid,
    not_found,
    now_ns,
    seconds_ns,
    timestamp,
)

PUBLISHER = "google.pubsub.v1.Publisher"
SUBSCRIBER = "google.pubsub.v1.Subscriber"
DAY_NS = 86_400 * 1_000_000_000
DEFAULT_TTL_NS = 31 * DAY_NS
MAX_FILTER_BYTES = 256
_ACKED_KEPT = 1000

Topic = types.Topic.pb()
Subscription = types.Subscription.pb()
PubsubMessage = types.PubsubMessage.pb()
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")
_TOPIC = re.compile(r"^projects/([^/]+)/topics/([^/]+)$")
_SUBSCRIPTION = re.compile(r"^projects/([^/]+)/subscriptions/([^/]+)$")
_PROJECT = re.compile(r"^projects/([^/]+)$")


def _check_name(name: str, pattern: re.Pattern[str], what: str) -> str:
    m = pattern.match(name)
    if not m:
        raise invalid(f"Invalid resource name given (name={name}). Refer to the naming documentation.")
    rid = m.group(2)
    if not _ID.match(rid) or rid.lower().startswith("goog"):
        raise invalid(
            f"Invalid [{what}] name: ({name}). {what.capitalize()} IDs must be 3-255 characters, start "
            "with a letter, and contain only letters, digits and - _ . ~ + %, and not start with 'goog'."
        )
    return name


def job_notifications(job: Any) -> list[tuple[str, str | None]]:
    """(topic, only_state) for each job-level JOB_STATE_CHANGED notification of a `batch_v1.Job` pb.

    A notification without `message` sends nothing (real-api-facts.md); job level is
    `type: JOB_STATE_CHANGED` "and/or a specified new_job_state" (the JobNotification.Message
    docs), and `newJobState` limits it to that state.
    """
    out: list[tuple[str, str | None]] = []
    for notification in job.notifications:
        message = notification.message
        only = message.new_job_state
        kind = message.type_  # the pb field is `type_` (proto-plus renamed the REST `type`)
        job_level = kind == 1 or (kind == 0 and only != 0)  # 1: JOB_STATE_CHANGED
        if notification.pubsub_topic and job_level:
            out.append((notification.pubsub_topic, _JOB_STATES[only] if only else None))
    return out


_JOB_STATES = (
    "STATE_UNSPECIFIED",
    "QUEUED",
    "SCHEDULED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "DELETION_IN_PROGRESS",
    "CANCELLATION_IN_PROGRESS",
    "CANCELLED",
)


# --------------------------------------------------------------------------- filters


class FilterError(ValueError):
    pass


_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>!=|=|\(|\)|,|:|-|\.)|(?P<word>[A-Za-z_][A-Za-z0-9_\-]*))'
)
Pred = Callable[[Mapping[str, str]], bool]


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"unexpected character at {pos}: {text[pos : pos + 10]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append((kind, value))
        pos = m.end()
    return out


def parse_filter(text: str) -> Pred:
    """A subscription filter as a predicate on message attributes; FilterError if invalid."""
    if len(text.encode()) > MAX_FILTER_BYTES:
        raise FilterError(f"a filter may be at most {MAX_FILTER_BYTES} bytes")
    if not text.strip():
        return lambda _attrs: True
    toks = _tokens(text)
    pos = 0

    def peek() -> tuple[str, str] | None:
        return toks[pos] if pos < len(toks) else None

    def take(value: str | None = None, kind: str | None = None) -> str:
        nonlocal pos
        tok = peek()
        if tok is None or (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            raise FilterError(f"expected {value or kind} at token {pos}, got {tok[1] if tok else 'the end'}")
        pos += 1
        return tok[1]

    def key() -> str:
        tok = peek()
        if tok is not None and tok[0] in ("word", "str"):
            return take()
        raise FilterError("expected an attribute key")

    def factor() -> Pred:
        tok = peek()
        if tok == ("op", "("):
            take("(")
            inner = expr()
            take(")")
            return inner
        if tok == ("word", "hasPrefix"):
            take()
            take("(")
            take("attributes")
            take(".")
            k = key()
            take(",")
            prefix = take(kind="str")
            take(")")
            return lambda a: k in a and a[k].startswith(prefix)
        take("attributes")
        sep = take()
        if sep == ":":
            k = key()
            return lambda a: k in a
        if sep != ".":
            raise FilterError("expected attributes.KEY or attributes:KEY")
        k = key()
        op = take()
        if op not in ("=", "!="):
            raise FilterError(f"expected = or != after attributes.{k}")
        v = take(kind="str")
        if op == "=":
            return lambda a: a.get(k) == v
        return lambda a: a.get(k) != v

    def term() -> Pred:
        tok = peek()
        if tok in (("word", "NOT"), ("op", "-")):
            take()
            inner = factor()
            return lambda a: not inner(a)
        return factor()

    def expr() -> Pred:
        parts = [term()]
        joiner: str | None = None
        while (tok := peek()) is not None and tok[1] in ("AND", "OR"):
            if joiner is not None and tok[1] != joiner:
                raise FilterError("AND and OR cannot be mixed without parentheses")
            joiner = take()
            parts.append(term())
        if joiner == "OR":
            return lambda a: any(p(a) for p in parts)
        return lambda a: all(p(a) for p in parts)

    pred = expr()
    if peek() is not None:
        raise FilterError(f"unexpected {peek()[1]!r} at token {pos}")  # type: ignore[index]
    return pred


# --------------------------------------------------------------------------- state


@dataclass
class _Message:
    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_ns: int
    ordering_key: str = ""

    def render(self) -> Any:
        msg = PubsubMessage(
            data=self.data,
            attributes=self.attributes,
            message_id=self.message_id,
            ordering_key=self.ordering_key,
        )
        msg.publish_time.CopyFrom(timestamp(self.publish_ns))
        return msg


@dataclass
class _Lease:
    message: _Message
    deadline_ns: int
    stream: int | None


@dataclass
class _Sub:
    name: str
    topic: str
    pb: Any
    predicate: Pred
    ack_deadline_ns: int
    ttl_ns: int | None
    last_active_ns: int
    pending: deque[_Message] = field(default_factory=deque)
    leases: dict[str, _Lease] = field(default_factory=dict)
    deleted: bool = False
    #: "active", then "deleted" or "expired" (reported by `subscriptions()`).
    state: str = "active"
    delivered: int = 0
    acked: deque[_Message] = field(default_factory=lambda: deque(maxlen=_ACKED_KEPT))
    acked_count: int = 0
    #: Open StreamingPull calls: stream number -> the client's gRPC peer (`ipv4:127.0.0.1:PORT`).
    streams: dict[int, str] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        policy = self.pb.expiration_policy
        return {
            "name": self.name,
            "topic": self.topic,
            "state": self.state,
            "expiration_ttl_seconds": policy.ttl.seconds if policy.HasField("ttl") else None,
            "labels": dict(self.pb.labels),
            "filter": self.pb.filter,
            "delivered": self.delivered,
            "acked": self.acked_count,
            "acked_messages": [dict(m.attributes) for m in self.acked],
            "open_streams": sorted(self.streams.values()),
        }


@dataclass
class _Fault:
    count: int | None
    rate: float | None


class PubSub:
    """Topics, subscriptions and messages; thread-safe (one lock, one condition)."""

    def __init__(self, seed: int | None = None) -> None:
        self.cond = threading.Condition()
        self.topics: dict[str, Any] = {}
        self.subs: dict[str, _Sub] = {}
        self.history: list[_Sub] = []  # every subscription made since the last reset
        self.stats: Counter[str] = Counter()
        self.offset_ns = 0
        self._faults: dict[str, _Fault] = {}
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._streams = itertools.count(1)
        self._pending: list[tuple[int, int, tuple[str, str, str | None], str, str, str | None]] = []
        self._published: dict[tuple[str, str, str | None], int] = {}
        self._timer: threading.Thread | None = None
        self._stopping = False

    # ------------------------------------------------------------------ admin

    def reset(self) -> None:
        with self.cond:
            for sub in self.subs.values():
                sub.deleted = True
            self.topics.clear()
            self.subs.clear()
            self.history.clear()
            self.stats.clear()
            self._faults.clear()
            self._pending.clear()
            self._published.clear()
            self.offset_ns = 0
            self.cond.notify_all()

    def now(self) -> int:
        return now_ns() + self.offset_ns

    def advance(self, seconds: float) -> list[str]:
        """Move the clock subscriptions expire by; the names of those that expired."""
        with self.cond:
            self.offset_ns += seconds_ns(seconds)
            return self._expire()

    def faults(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """`{"drop": {"count": 2}, "duplicate": {"rate": 0.5}}`; `{"drop": null}` clears one."""
        with self.cond:
            for kind, value in spec.items():
                if kind not in ("drop", "duplicate"):
                    raise ValueError(f"unknown Pub/Sub fault {kind!r}: drop or duplicate")
                if value is None:
                    self._faults.pop(kind, None)
                    continue
                if not isinstance(value, Mapping) or ("count" in value) == ("rate" in value):
                    raise ValueError(f'{kind}: give {{"count": N}} or {{"rate": R}}')
                count, rate = value.get("count"), value.get("rate")
                if count is not None and (not isinstance(count, int) or count < 1):
                    raise ValueError(f"{kind}: count must be a whole number >= 1")
                if rate is not None and not 0 <= float(rate) <= 1:
                    raise ValueError(f"{kind}: rate must be between 0 and 1")
                self._faults[kind] = _Fault(count, None if rate is None else float(rate))
            return self.describe_faults()

    def describe_faults(self) -> dict[str, Any]:
        return {
            k: {"count": f.count} if f.count is not None else {"rate": f.rate}
            for k, f in self._faults.items()
        }

    def snapshot(self) -> dict[str, Any]:
        with self.cond:
            return {
                "topics": sorted(self.topics),
                "subscriptions": {
                    name: {"topic": s.topic, "pending": len(s.pending), "leased": len(s.leases)}
                    for name, s in sorted(self.subs.items())
                },
                "counts": dict(sorted(self.stats.items())),
                "faults": self.describe_faults(),
            }

    def subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription made since the last reset, in creation order (see the module doc)."""
        with self.cond:
            self._expire()
            return [sub.report() for sub in self.history]

    def admin_routes(self) -> dict[str, Callable[[Any], Any]]:
        def advance(body: Any) -> Any:
            if not isinstance(body, Mapping) or not isinstance(body.get("seconds"), int | float):
                raise ValueError('advance: {"seconds": N}')
            return {"expired": self.advance(float(body["seconds"]))}

        def clear(_: Any) -> Any:
            return self.faults({"drop": None, "duplicate": None})

        return {
            "GET /v1/pubsub": lambda _: self.snapshot(),
            "GET /v1/pubsub/subscriptions": lambda _: self.subscriptions(),
            "POST /v1/pubsub/faults": lambda body: self.faults(body or {}),
            "DELETE /v1/pubsub/faults": clear,
            "POST /v1/pubsub/advance": advance,
        }

    # ------------------------------------------------------------------ internals

    def _take_fault(self, kind: str) -> bool:
        fault = self._faults.get(kind)
        if fault is None:
            return False
        if fault.count is not None:
            fault.count -= 1
            if fault.count <= 0:
                del self._faults[kind]
            return True
        return self._rng.random() < (fault.rate or 0.0)

    def _expire(self) -> list[str]:
        now = self.now()
        gone = [
            s.name for s in self.subs.values() if s.ttl_ns is not None and now - s.last_active_ns >= s.ttl_ns
        ]
        for name in gone:
            sub = self.subs.pop(name)
            sub.deleted, sub.state = True, "expired"
            self.stats["subscriptions_expired"] += 1
        if gone:
            self.cond.notify_all()
        return gone

    def _sub(self, name: str) -> _Sub:
        _check_name(name, _SUBSCRIPTION, "subscription")
        self._expire()
        sub = self.subs.get(name)
        if sub is None:
            raise not_found(f"Resource not found (resource={name.rsplit('/', 1)[-1]}).")
        sub.last_active_ns = self.now()
        return sub

    def _requeue_expired(self, sub: _Sub, now: int) -> None:
        for ack_id, lease in list(sub.leases.items()):
            if lease.deadline_ns <= now:
                del sub.leases[ack_id]
                sub.pending.appendleft(lease.message)
                self.stats["redelivered"] += 1

    def _lease(self, sub: _Sub, limit: int, stream: int | None) -> list[Any]:
        now = self.now()
        self._requeue_expired(sub, now)
        out: list[Any] = []
        while sub.pending and len(out) < limit:
            message = sub.pending.popleft()
            ack_id = f"{secrets.token_hex(8)}-{message.message_id}"
            sub.leases[ack_id] = _Lease(message, now + sub.ack_deadline_ns, stream)
            out.append(types.ReceivedMessage.pb()(ack_id=ack_id, message=message.render()))
        sub.delivered += len(out)
        self.stats["delivered"] += len(out)
        return out

    def _ack(self, sub: _Sub, ack_ids: Any) -> None:
        for ack_id in ack_ids:
            lease = sub.leases.pop(ack_id, None)
            if lease is not None:
                sub.acked.append(lease.message)
                sub.acked_count += 1
                self.stats["acked"] += 1

    def _modack(self, sub: _Sub, ack_ids: Any, seconds: Any) -> None:
        now = self.now()
        for ack_id, secs in zip(ack_ids, seconds, strict=True):
            if not 0 <= secs <= 600:
                raise invalid(f"Invalid ack deadline: {secs}; must be between 0 and 600 seconds.")
            lease = sub.leases.get(ack_id)
            if lease is None:
                continue
            if secs == 0:
                del sub.leases[ack_id]
                sub.pending.appendleft(lease.message)
                self.stats["nacked"] += 1
            else:
                lease.deadline_ns = now + seconds_ns(secs)
        self.cond.notify_all()

    # ------------------------------------------------------------------ publisher

    def create_topic(self, request: Any) -> Any:
        name = _check_name(request.name, _TOPIC, "topic")
        with self.cond:
            if name in self.topics:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "Topic already exists")
            topic = Topic()
            topic.CopyFrom(request)
            self.topics[name] = topic
            return topic

    def get_topic(self, request: Any) -> Any:
        name = _check_name(request.topic, _TOPIC, "topic")
        with self.cond:
            if name not in self.topics:
                raise not_found(f"Resource not found (resource={name.rsplit('/', 1)[-1]}).")
            return self.topics[name]

    def delete_topic(self, request: Any) -> Any:
        name = _check_name(request.topic, _TOPIC, "topic")
        with self.cond:
            if self.topics.pop(name, None) is None:
                raise not_found(f"Resource not found (resource={name.rsplit('/', 1)[-1]}).")
            for sub in self.subs.values():  # subscriptions outlive their topic, as on Pub/Sub
                if sub.topic == name:
                    sub.topic = "_deleted-topic_"
                    sub.pb.topic = "_deleted-topic_"
            return empty_pb2.Empty()

    def list_topics(self, request: Any) -> Any:
        m = _PROJECT.match(request.project)
        if not m:
            raise invalid(f"Invalid resource name given (name={request.project}).")
        with self.cond:
            return types.ListTopicsResponse.pb()(
                topics=[t for n, t in sorted(self.topics.items()) if n.startswith(request.project + "/")]
            )

    def list_topic_subscriptions(self, request: Any) -> Any:
        name = _check_name(request.topic, _TOPIC, "topic")
        with self.cond:
            self._expire()
            if name not in self.topics:
                raise not_found(f"Resource not found (resource={name.rsplit('/', 1)[-1]}).")
            return types.ListTopicSubscriptionsResponse.pb()(
                subscriptions=sorted(s.name for s in self.subs.values() if s.topic == name)
            )

    def publish(self, request: Any) -> Any:
        name = _check_name(request.topic, _TOPIC, "topic")
        if not request.messages:
            raise invalid("The request contains no messages.")
        for message in request.messages:
            if not message.data and not message.attributes:
                raise invalid(
                    "One or more messages in the publish request is empty. Each message must contain "
                    "either non-empty data, or at least one attribute."
                )
            if len(message.attributes) > 100:
                raise invalid("A message may have at most 100 attributes.")
            for key, value in message.attributes.items():
                if not key or len(key.encode()) > 256 or len(value.encode()) > 1024:
                    raise invalid(
                        f"Invalid attribute {key!r}: keys are 1-256 bytes, values at most 1024 bytes."
                    )
                if key.lower().startswith("goog"):
                    raise invalid(f"Invalid attribute key {key!r}: the 'goog' prefix is reserved.")
        with self.cond:
            if name not in self.topics:
                raise not_found(f"Resource not found (resource={name.rsplit('/', 1)[-1]}).")
            ids = [self._fan_out(name, m.data, dict(m.attributes), m.ordering_key) for m in request.messages]
            return types.PublishResponse.pb()(message_ids=ids)

    def _fan_out(self, topic: str, data: bytes, attributes: dict[str, str], ordering_key: str = "") -> str:
        """Publish one message (lock held); its ID."""
        self._expire()
        message = _Message(str(next(self._ids)), data, attributes, self.now(), ordering_key)
        self.stats["published"] += 1
        copies = 1
        if self._take_fault("drop"):
            copies = 0
            self.stats["dropped"] += 1
        elif self._take_fault("duplicate"):
            copies = 2
            self.stats["duplicated"] += 1
        for sub in self.subs.values():
            if sub.topic != topic:
                continue
            if not sub.predicate(attributes):
                self.stats["filtered_out"] += 1
                continue
            for _ in range(copies):
                sub.pending.append(message)
        self.cond.notify_all()
        return message.message_id

    def publish_job_state(
        self,
        topic: str,
        *,
        job_name: str,
        job_uid: str,
        new_state: str,
        previous_state: str | None = None,
    ) -> str | None:
        """Batch's JOB_STATE_CHANGED message to `topic`; its ID, or None if the topic does not exist
        (then the message is lost, as Batch cannot publish it)."""
        with self.cond:
            return self._publish_job_state_locked(topic, job_name, job_uid, new_state, previous_state)

    def _publish_job_state_locked(
        self, topic: str, job_name: str, job_uid: str, new_state: str, previous_state: str | None
    ) -> str | None:
        attributes = {
            "Type": "JOB_STATE_CHANGED",
            "NewJobState": new_state,
            "JobName": job_name,
            "JobUID": job_uid,
        }
        # Only the attributes are documented; the data text mirrors the task message's.
        data = (
            f"Job state was updated: jobName={job_name}, jobUID={job_uid}, "
            f"previousState={previous_state or 'STATE_UNSPECIFIED'}, currentState={new_state}"
        ).encode()
        if topic not in self.topics:
            self.stats["undeliverable"] += 1
            return None
        return self._fan_out(topic, data, attributes)

    def schedule_job_states(
        self,
        topic: str,
        job_name: str,
        job_uid: str,
        timeline: list[tuple[int, str]],
        *,
        only: str | None = None,
    ) -> int:
        """Publish the job's state changes when they happen: `timeline` is [(epoch ns, state)],
        e.g. `zip(record.state_ns, (s.name for s in record.states))`. Calling again for the job
        (a cancel or delete changed its future) replaces what is still pending; states already
        published are not sent again. `only` is the notification's `newJobState`. Returns how
        many publishes are pending for the job."""
        with self.cond:
            key = (topic, job_name, only)
            published = self._published.get(key, -1)
            self._pending = [p for p in self._pending if p[2] != key]
            previous: str | None = None
            for t, state in timeline:
                if t > published and state != previous and (only is None or state == only):
                    self._pending.append((t, next(self._ids), key, job_uid, state, previous))
                previous = state
            self._pending.sort()
            if self._timer is None:
                self._timer = threading.Thread(
                    target=self._publish_due, name="pubsub-batch-notify", daemon=True
                )
                self._timer.start()
            self.cond.notify_all()
            return sum(1 for p in self._pending if p[2] == key)

    def _publish_due(self) -> None:
        with self.cond:
            while not self._stopping:
                now = now_ns()
                while self._pending and self._pending[0][0] <= now:
                    t, _, key, job_uid, state, previous = self._pending.pop(0)
                    self._published[key] = t
                    self._publish_job_state_locked(key[0], key[1], job_uid, state, previous)
                wait = (self._pending[0][0] - now) / 1e9 if self._pending else 1.0
                self.cond.wait(min(max(wait, 0.001), 1.0))

    def close(self) -> None:
        """Stop the notification timer (the server's stop)."""
        with self.cond:
            self._stopping = True
            self.cond.notify_all()
        if self._timer is not None:
            self._timer.join(timeout=5)

    # ------------------------------------------------------------------ subscriber

    def create_subscription(self, request: Any) -> Any:
        name = _check_name(request.name, _SUBSCRIPTION, "subscription")
        _check_name(request.topic, _TOPIC, "topic")
        problems = []
        deadline = request.ack_deadline_seconds or 10
        if not 10 <= deadline <= 600:
            problems.append(f"ack_deadline_seconds must be between 10 and 600, got {deadline}")
        ttl_ns: int | None = DEFAULT_TTL_NS
        if request.HasField("expiration_policy"):
            ttl = request.expiration_policy.ttl
            ttl_ns = (
                ttl.seconds * 1_000_000_000 + ttl.nanos if request.expiration_policy.HasField("ttl") else None
            )
            if ttl_ns is not None and ttl_ns < DAY_NS:
                problems.append("The minimum allowed value for expiration_policy.ttl is 1 day.")
                ttl_ns = None
        try:
            predicate = parse_filter(request.filter)
        except FilterError as exc:
            problems.append(f"Invalid filter: {exc}")
            predicate = parse_filter("")
        if request.push_config.push_endpoint:
            problems.append("push subscriptions are not supported by this emulator")
        if problems:
            raise invalid("; ".join(problems))
        with self.cond:
            self._expire()
            if name in self.subs:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "Subscription already exists")
            if request.topic not in self.topics:
                raise not_found(f"Resource not found (resource={request.topic.rsplit('/', 1)[-1]}).")
            pb = Subscription()
            pb.CopyFrom(request)
            pb.ack_deadline_seconds = deadline
            if not request.HasField("expiration_policy"):
                pb.expiration_policy.ttl.seconds = DEFAULT_TTL_NS // 1_000_000_000
            if not request.HasField("message_retention_duration"):
                pb.message_retention_duration.seconds = 7 * 86_400
            pb.state = types.Subscription.State.ACTIVE
            sub = _Sub(name, request.topic, pb, predicate, seconds_ns(deadline), ttl_ns, self.now())
            self.subs[name] = sub
            self.history.append(sub)
            self.stats["subscriptions_created"] += 1
            return pb

    def get_subscription(self, request: Any) -> Any:
        with self.cond:
            return self._sub(request.subscription).pb

    def delete_subscription(self, request: Any) -> Any:
        with self.cond:
            sub = self._sub(request.subscription)
            del self.subs[sub.name]
            sub.deleted, sub.state = True, "deleted"
            self.stats["subscriptions_deleted"] += 1
            self.cond.notify_all()
            return empty_pb2.Empty()

    def list_subscriptions(self, request: Any) -> Any:
        if not _PROJECT.match(request.project):
            raise invalid(f"Invalid resource name given (name={request.project}).")
        with self.cond:
            self._expire()
            return types.ListSubscriptionsResponse.pb()(
                subscriptions=[
                    s.pb for n, s in sorted(self.subs.items()) if n.startswith(request.project + "/")
                ]
            )

    def acknowledge(self, request: Any) -> Any:
        if not request.ack_ids:
            raise invalid("No ack ids specified.")
        with self.cond:
            self._ack(self._sub(request.subscription), request.ack_ids)
            return empty_pb2.Empty()

    def modify_ack_deadline(self, request: Any) -> Any:
        if not request.ack_ids:
            raise invalid("No ack ids specified.")
        with self.cond:
            sub = self._sub(request.subscription)
            self._modack(sub, request.ack_ids, [request.ack_deadline_seconds] * len(request.ack_ids))
            return empty_pb2.Empty()

    def pull(self, request: Any, wait: float = 1.0) -> Any:
        if request.max_messages <= 0:
            raise invalid("max_messages must be greater than 0.")
        with self.cond:
            sub = self._sub(request.subscription)
            got = self._lease(sub, request.max_messages, None)
            if not got and not request.return_immediately:
                self.cond.wait(wait)
                if sub.deleted:
                    raise not_found(f"Resource not found (resource={sub.name.rsplit('/', 1)[-1]}).")
                got = self._lease(sub, request.max_messages, None)
            return types.PullResponse.pb()(received_messages=got)

    def streaming_pull(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        """The bidirectional stream: a thread reads acks and deadline changes, this yields messages."""
        first = next(requests, None)
        if first is None:
            return
        try:
            if not first.subscription:
                raise invalid("The first StreamingPullRequest must set subscription.")
            if not 10 <= first.stream_ack_deadline_seconds <= 600:
                raise invalid(
                    f"Invalid stream_ack_deadline_seconds: {first.stream_ack_deadline_seconds}; must be "
                    "between 10 and 600."
                )
            if len(first.modify_deadline_ack_ids) != len(first.modify_deadline_seconds):
                raise invalid(
                    "modify_deadline_ack_ids and modify_deadline_seconds must have the same length."
                )
            with self.cond:
                sub = self._sub(first.subscription)
                self._ack(sub, first.ack_ids)
                self._modack(sub, first.modify_deadline_ack_ids, first.modify_deadline_seconds)
        except ApiError as exc:
            context.abort(exc.code, exc.message)
        context.send_initial_metadata(())  # headers now, as Pub/Sub sends them: the stream is open
        stream = next(self._streams)
        limit = first.max_outstanding_messages or 1000
        closed = threading.Event()
        with self.cond:
            sub.streams[stream] = context.peer()
            self.stats["streams_opened"] += 1

        def read() -> None:
            try:
                for request in requests:
                    with self.cond:
                        if len(request.modify_deadline_ack_ids) != len(request.modify_deadline_seconds):
                            continue
                        sub.last_active_ns = self.now()
                        self._ack(sub, request.ack_ids)
                        self._modack(sub, request.modify_deadline_ack_ids, request.modify_deadline_seconds)
            except Exception:  # the client went away
                pass
            finally:
                closed.set()
                with self.cond:
                    self.cond.notify_all()

        threading.Thread(target=read, name=f"pubsub-stream-{stream}", daemon=True).start()
        try:
            while context.is_active() and not closed.is_set():
                with self.cond:
                    if sub.deleted:
                        context.abort(
                            grpc.StatusCode.NOT_FOUND,
                            f"Resource not found (resource={sub.name.rsplit('/', 1)[-1]}).",
                        )
                    sub.last_active_ns = self.now()
                    outstanding = sum(1 for lease in sub.leases.values() if lease.stream == stream)
                    got = self._lease(sub, max(limit - outstanding, 0), stream)
                    if not got:
                        self.cond.wait(0.25)
                        continue
                yield types.StreamingPullResponse.pb()(received_messages=got)
        finally:
            with self.cond:
                # Leases of a closed stream end now: redelivered to the next puller.
                for ack_id, lease in list(sub.leases.items()):
                    if lease.stream == stream:
                        del sub.leases[ack_id]
                        sub.pending.appendleft(lease.message)
                sub.streams.pop(stream, None)
                self.stats["streams_closed"] += 1
                self.cond.notify_all()

    # ------------------------------------------------------------------ gRPC

    def handlers(
        self, wrap: Callable[[str, Callable[[Any], Any]], Callable[..., Any]]
    ) -> tuple[grpc.GenericRpcHandler, grpc.GenericRpcHandler]:
        def unary(name: str, fn: Callable[[Any], Any], req: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                wrap(name, fn), request_deserializer=req.FromString, response_serializer=_serialize
            )

        pre = wrap("StreamingPull", lambda _request: None)  # stats and injected faults

        def streaming(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            pre(None, context)
            return self.streaming_pull(requests, context)

        publisher = grpc.method_handlers_generic_handler(
            PUBLISHER,
            {
                "CreateTopic": unary("CreateTopic", self.create_topic, Topic),
                "GetTopic": unary("GetTopic", self.get_topic, types.GetTopicRequest.pb()),
                "DeleteTopic": unary("DeleteTopic", self.delete_topic, types.DeleteTopicRequest.pb()),
                "ListTopics": unary("ListTopics", self.list_topics, types.ListTopicsRequest.pb()),
                "ListTopicSubscriptions": unary(
                    "ListTopicSubscriptions",
                    self.list_topic_subscriptions,
                    types.ListTopicSubscriptionsRequest.pb(),
                ),
                "Publish": unary("Publish", self.publish, types.PublishRequest.pb()),
            },
        )
        subscriber = grpc.method_handlers_generic_handler(
            SUBSCRIBER,
            {
                "CreateSubscription": unary("CreateSubscription", self.create_subscription, Subscription),
                "GetSubscription": unary(
                    "GetSubscription", self.get_subscription, types.GetSubscriptionRequest.pb()
                ),
                "DeleteSubscription": unary(
                    "DeleteSubscription", self.delete_subscription, types.DeleteSubscriptionRequest.pb()
                ),
                "ListSubscriptions": unary(
                    "ListSubscriptions", self.list_subscriptions, types.ListSubscriptionsRequest.pb()
                ),
                "Acknowledge": unary("Acknowledge", self.acknowledge, types.AcknowledgeRequest.pb()),
                "ModifyAckDeadline": unary(
                    "ModifyAckDeadline", self.modify_ack_deadline, types.ModifyAckDeadlineRequest.pb()
                ),
                "Pull": unary("Pull", self.pull, types.PullRequest.pb()),
                "StreamingPull": grpc.stream_stream_rpc_method_handler(
                    streaming,
                    request_deserializer=types.StreamingPullRequest.pb().FromString,
                    response_serializer=_serialize,
                ),
            },
        )
        return publisher, subscriber


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())
