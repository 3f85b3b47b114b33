"""Push for waiting: Batch job notifications read from Pub/Sub, one stream per triggerer.

A Batch job created with `notifications: [{pubsubTopic: T, message: {type:
JOB_STATE_CHANGED}}]` publishes a message to T whenever its state changes (attributes
`Type`, `NewJobState`, `JobName`, `JobUID`; real-api-facts.md, "Pub/Sub notifications from
Batch"). `JobNotificationListener` gives each triggerer process its own subscription to T:

- created by `start()` with the filter `attributes.Type = "JOB_STATE_CHANGED"` and an
  expiration policy (1 day, Pub/Sub's minimum), deleted by `close()`; a triggerer that dies
  without closing leaves a subscription that Pub/Sub deletes a day after its last use.
  Every subscription gets every message, so with two triggerers (HA) each one hears about
  every job, whichever holds the waiting trigger;
- one StreamingPull on it (google-cloud-pubsub's async GAPIC client), re-opened with backoff
  when it ends (Pub/Sub closes streams to rebalance) and the subscription re-created if it
  disappeared;
- each message becomes a `Prompt` handed to `on_prompt` and is then acknowledged. A prompt
  is a reason to read the job once (GetJob or a sweep), never its state: delivery is at
  least once and unordered, so duplicates (dropped by message ID while recent) and
  reordering cost at most a read. A lost message only delays the event until the
  watcher's fallback round.

When Pub/Sub refuses (PERMISSION_DENIED, the topic does not exist, the API is off), the
listener logs one warning naming what is missing, reports `healthy == False`, and the
watcher polls at its normal rates. IAM: the triggerer's credentials need, on the project of
the subscription, `pubsub.subscriptions.create/consume/delete` (roles/pubsub.editor: Pub/Sub
docs, Troubleshooting, "Cannot create a subscription"; or a custom role) and
`pubsub.topics.attachSubscription` on the topic (roles/pubsub.subscriber on the topic has it);
the jobs' service account needs roles/pubsub.publisher on the topic (real-api-facts.md).

Google libraries are imported inside the methods: importing this module costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_batch_streaming.hooks import clients

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.pubsub_v1 import SubscriberAsyncClient

log = logging.getLogger(__name__)

PUBSUB_EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"
NOTIFICATION_TOPIC_ENV = "BATCH_STREAMING_NOTIFICATION_TOPIC"
JOB_STATE_CHANGED = "JOB_STATE_CHANGED"
SUBSCRIPTION_FILTER = f'attributes.Type = "{JOB_STATE_CHANGED}"'
#: Pub/Sub's minimum expiration TTL ("The minimum allowed value for expiration_policy.ttl is 1 day").
SUBSCRIPTION_TTL_SECONDS = 86_400
#: Unacknowledged prompts are worthless after the fallback round: keep them 10 minutes (the minimum).
RETENTION_SECONDS = 600
ACK_DEADLINE_SECONDS = 60
SUBSCRIPTION_PREFIX = "airflow-batch-streaming-"
_RECENT_IDS = 10_000


@dataclass(frozen=True)
class Prompt:
    """A Batch job announced a state change: read it. `new_state` is a hint, never the state."""

    job_name: str
    job_uid: str
    new_state: str | None
    message_id: str

    @property
    def job_id(self) -> str:
        """The last segment of `JobName`: the name may carry the project number, not its ID."""
        return self.job_name.rsplit("/", 1)[-1]

    def matches(self, job_name: str, job_uid: str | None = None) -> bool:
        """Whether this prompt is about the waited job `job_name` (`projects/P/locations/L/jobs/J`).

        By UID when both are known; else by location and job ID, because Batch may name the
        project by number where the waiter has its ID (real-api-facts.md, "Job uid").
        """
        if job_uid and self.job_uid:
            return job_uid == self.job_uid
        mine, theirs = self.job_name.split("/"), job_name.split("/")
        return len(mine) == len(theirs) == 6 and mine[3] == theirs[3] and mine[5] == theirs[5]


def prompt_from(attributes: Any, message_id: str) -> Prompt | None:
    """The prompt a message carries, or None when it is not a job state change."""
    if attributes.get("Type") != JOB_STATE_CHANGED:
        return None
    name, uid = attributes.get("JobName", ""), attributes.get("JobUID", "")
    if not name and not uid:
        return None
    return Prompt(name, uid, attributes.get("NewJobState") or None, message_id)


def subscriber_async_client(credentials: Credentials | None = None) -> SubscriberAsyncClient:
    """The async Subscriber client: `PUBSUB_EMULATOR_HOST` (the client's own switch) first, then
    the package's emulator switch, else Google with the given credentials. Call inside the loop."""
    from google.pubsub_v1 import SubscriberAsyncClient
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

    if os.environ.get(PUBSUB_EMULATOR_ENV, "").strip():
        from google.auth.credentials import AnonymousCredentials

        # The GAPIC client makes the insecure channel itself when it sees the variable.
        return SubscriberAsyncClient(credentials=AnonymousCredentials(), transport="grpc_asyncio")
    return SubscriberAsyncClient(
        **clients._client_kwargs(SubscriberGrpcAsyncIOTransport, credentials, None, aio=True)
    )


def configured_notification_topic() -> str | None:
    """`BATCH_STREAMING_NOTIFICATION_TOPIC`, else `[batch_streaming] notification_topic`, else None."""
    raw = os.environ.get(NOTIFICATION_TOPIC_ENV, "").strip()
    if not raw:
        try:
            from airflow.configuration import conf

            raw = (conf.get("batch_streaming", "notification_topic", fallback="") or "").strip()
        except Exception:
            raw = ""
    if raw:
        _topic_project(raw)  # a malformed topic is a configuration error, said at once
    return raw or None


def _topic_project(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "topics" or not parts[1] or not parts[3]:
        raise ValueError(f"notification topic {topic!r} must be projects/PROJECT/topics/TOPIC")
    return parts[1]


class JobNotificationListener:
    """One triggerer's subscription to a notification topic and the stream that reads it.

        listener = JobNotificationListener(topic, on_prompt=watcher.prompt, credentials=creds)
        if not await listener.start():   # refused: one warning logged; keep polling
            ...
        ...
        await listener.close()           # stream stopped, subscription deleted

    `on_prompt` runs in the event loop for each distinct message and must not block.
    `on_health(bool)` (optional) is told when the stream goes up or down, so the watcher
    can switch between its push and polling rates.
    """

    reconnect_initial = 1.0
    reconnect_max = 30.0

    def __init__(
        self,
        topic: str,
        on_prompt: Callable[[Prompt], None],
        *,
        credentials: Credentials | None = None,
        subscription_project: str | None = None,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        self.topic = topic
        project = subscription_project or _topic_project(topic)
        self.subscription = f"projects/{project}/subscriptions/{SUBSCRIPTION_PREFIX}{uuid.uuid4().hex}"
        self.on_prompt = on_prompt
        self.on_health = on_health
        self.credentials = credentials
        self.healthy = False
        self.refused: str | None = None
        self.stats: dict[str, int] = {
            "messages": 0,
            "prompts": 0,
            "duplicates": 0,
            "ignored": 0,
            "streams": 0,
        }
        self._client: SubscriberAsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._acks: asyncio.Queue[list[str] | None] = asyncio.Queue()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._created = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> bool:
        """Create the subscription and start streaming; False (after one warning) if refused."""
        from google.api_core import exceptions as gexc

        self._client = subscriber_async_client(self.credentials)
        try:
            await self._create()
        except (gexc.PermissionDenied, gexc.Forbidden, gexc.Unauthenticated, gexc.NotFound) as exc:
            self._refuse(exc)
            await self._close_client()
            return False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batch-notification-listener")
        return True

    async def close(self) -> None:
        """Stop the stream and delete the subscription (best effort: expiry is the backstop)."""
        self._closed = True
        self._set_health(False)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._created and self._client is not None:
            try:
                await self._client.delete_subscription(subscription=self.subscription, timeout=10)
                self._created = False
            except Exception as exc:
                log.info(
                    "Could not delete Pub/Sub subscription %s (%s); it expires by itself",
                    self.subscription,
                    exc,
                )
        await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.transport.close()

    # ------------------------------------------------------------------ internals

    async def _create(self) -> None:
        from google.api_core import exceptions as gexc
        from google.protobuf import duration_pb2
        from google.pubsub_v1 import types

        assert self._client is not None
        request = types.Subscription(
            name=self.subscription,
            topic=self.topic,
            filter=SUBSCRIPTION_FILTER,
            ack_deadline_seconds=ACK_DEADLINE_SECONDS,
            message_retention_duration=duration_pb2.Duration(seconds=RETENTION_SECONDS),
            expiration_policy=types.ExpirationPolicy(
                ttl=duration_pb2.Duration(seconds=SUBSCRIPTION_TTL_SECONDS)
            ),
            labels={"managed-by": "airflow-batch-streaming"},
        )
        with contextlib.suppress(gexc.AlreadyExists):  # ours, from an attempt whose answer was lost
            await self._client.create_subscription(request=request, timeout=30)
        self._created = True

    def _refuse(self, exc: Exception) -> None:
        self.refused = f"{type(exc).__name__}: {exc}"
        self._set_health(False)
        log.warning(
            "Pub/Sub push for Batch job notifications is off; waiting falls back to polling. Could not "
            "subscribe to %s with %s (%s). The triggerer's credentials need pubsub.subscriptions.create, "
            ".consume and .delete on the subscription's project (roles/pubsub.editor) and "
            "pubsub.topics.attachSubscription on the topic (roles/pubsub.subscriber); the topic must exist.",
            self.topic,
            self.subscription,
            self.refused,
        )

    def _set_health(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            if self.on_health is not None:
                self.on_health(healthy)

    async def _run(self) -> None:
        from google.api_core import exceptions as gexc
        from google.pubsub_v1 import types

        assert self._client is not None
        delay = self.reconnect_initial
        client_id = uuid.uuid4().hex
        while not self._closed:
            first = types.StreamingPullRequest(
                subscription=self.subscription,
                stream_ack_deadline_seconds=ACK_DEADLINE_SECONDS,
                max_outstanding_messages=1000,
                client_id=client_id,
            )
            try:
                self.stats["streams"] += 1
                stream: Any = await self._client.streaming_pull(
                    requests=_Requests(first, self._acks), retry=None, timeout=None
                )
                # Up once the server answers with headers; an error answer ends the call at once.
                await stream.initial_metadata()
                if stream.done():
                    raise gexc.from_grpc_status(await stream.code(), await stream.details())
                self._set_health(True)
                async for response in stream:
                    delay = self.reconnect_initial
                    self._handle(response.received_messages)
                raise gexc.ServiceUnavailable("the stream ended")
            except asyncio.CancelledError:
                raise
            except (gexc.PermissionDenied, gexc.Forbidden, gexc.Unauthenticated) as exc:
                self._refuse(exc)
                return
            except gexc.NotFound as exc:
                # The subscription expired or was deleted: make it again (the topic may be gone too).
                self._set_health(False)
                try:
                    await self._create()
                except (gexc.PermissionDenied, gexc.Forbidden, gexc.NotFound) as again:
                    self._refuse(again)
                    return
                except Exception:
                    log.debug("re-creating %s failed after %s", self.subscription, exc, exc_info=True)
                    await asyncio.sleep(delay)
            except Exception as exc:
                self._set_health(False)
                log.info(
                    "Pub/Sub stream on %s ended (%s); reconnecting in %.0f s", self.subscription, exc, delay
                )
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.reconnect_max)
            # Acks queued for the old stream refer to its leases: the new stream redelivers.
            self._acks.put_nowait(None)
            self._acks = asyncio.Queue()

    def _handle(self, received: Any) -> None:
        ack_ids: list[str] = []
        for item in received:
            ack_ids.append(item.ack_id)
            message = item.message
            self.stats["messages"] += 1
            if message.message_id in self._recent:
                self.stats["duplicates"] += 1
                continue
            self._recent[message.message_id] = None
            if len(self._recent) > _RECENT_IDS:
                self._recent.popitem(last=False)
            prompt = prompt_from(message.attributes, message.message_id)
            if prompt is None:
                self.stats["ignored"] += 1
                continue
            self.stats["prompts"] += 1
            try:
                self.on_prompt(prompt)
            except Exception:  # a bad callback must not stop the stream; the fallback round covers it
                log.exception("handling the notification for %s failed", prompt.job_name or prompt.job_uid)
        if ack_ids:
            self._acks.put_nowait(ack_ids)


class _Requests:
    """The stream's requests: the opening one, then one per batch of acks; None ends it.

    A class, not an async generator: grpc.aio cancels its consumer when the call ends, and
    an async generator suspended in `await queue.get()` then fails to close.
    """

    def __init__(self, first: Any, acks: asyncio.Queue[list[str] | None]) -> None:
        self._first: Any = first
        self._acks = acks

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Any:
        from google.pubsub_v1 import types

        if self._first is not None:
            first, self._first = self._first, None
            return first
        ack_ids = await self._acks.get()
        if ack_ids is None:
            raise StopAsyncIteration
        return types.StreamingPullRequest(ack_ids=ack_ids)
