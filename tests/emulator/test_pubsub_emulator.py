"""The emulator's Pub/Sub, driven by the real google-cloud-pubsub clients over real gRPC."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.protobuf import duration_pb2

from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.emulator.pubsub import FilterError, parse_filter

pytestmark = pytest.mark.emulator

PROJECT = "proj"
TOPIC = f"projects/{PROJECT}/topics/batch-events"


@pytest.fixture
def pubsub(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.target)
    yield emulator


@pytest.fixture
def publisher(pubsub: Emulator) -> pubsub_v1.PublisherClient:
    return pubsub_v1.PublisherClient()


@pytest.fixture
def subscriber(pubsub: Emulator) -> Iterator[pubsub_v1.SubscriberClient]:
    client = pubsub_v1.SubscriberClient()
    yield client
    client.close()


def _sub(subscriber: pubsub_v1.SubscriberClient, name: str, **kwargs: object) -> str:
    path = f"projects/{PROJECT}/subscriptions/{name}"
    subscriber.create_subscription(request={"name": path, "topic": TOPIC, **kwargs})
    return path


def _pull_all(subscriber: pubsub_v1.SubscriberClient, sub: str, want: int, timeout: float = 5.0) -> list:
    got: list = []
    end = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < end:
        resp = subscriber.pull(request={"subscription": sub, "max_messages": 10}, timeout=5)
        got.extend(resp.received_messages)
    return got


def test_topics_subscriptions_publish_pull_ack(publisher, subscriber, pubsub: Emulator) -> None:
    publisher.create_topic(name=TOPIC)
    with pytest.raises(gexc.AlreadyExists):
        publisher.create_topic(name=TOPIC)
    publisher.publish(TOPIC, b"before", k="v").result(timeout=10)  # no subscription yet: nobody gets it
    sub = _sub(subscriber, "all", ack_deadline_seconds=10)
    filtered = _sub(subscriber, "jobs", filter='attributes.Type = "JOB_STATE_CHANGED"')
    assert (
        subscriber.get_subscription(subscription=filtered).filter == 'attributes.Type = "JOB_STATE_CHANGED"'
    )
    publisher.publish(TOPIC, b"task", Type="TASK_STATE_CHANGED").result(timeout=10)
    publisher.publish(TOPIC, b"job", Type="JOB_STATE_CHANGED", NewJobState="RUNNING").result(timeout=10)

    everything = _pull_all(subscriber, sub, 2)
    assert sorted(m.message.data for m in everything) == [b"job", b"task"]
    only_jobs = _pull_all(subscriber, filtered, 1)
    assert [m.message.attributes["NewJobState"] for m in only_jobs] == ["RUNNING"]
    assert only_jobs[0].message.publish_time.timestamp() > 0 and only_jobs[0].message.message_id

    subscriber.acknowledge(subscription=sub, ack_ids=[everything[0].ack_id])
    # Nack the other: redelivered at once, with a new ack ID.
    subscriber.modify_ack_deadline(subscription=sub, ack_ids=[everything[1].ack_id], ack_deadline_seconds=0)
    again = _pull_all(subscriber, sub, 1)
    assert [m.message.message_id for m in again] == [everything[1].message.message_id]
    assert again[0].ack_id != everything[1].ack_id
    subscriber.acknowledge(subscription=sub, ack_ids=[again[0].ack_id, "unknown-ack-id"])  # unknown: ignored
    assert (
        subscriber.pull(
            request={"subscription": sub, "max_messages": 5, "return_immediately": True}
        ).received_messages
        == []
    )

    names = [s for s in publisher.list_topic_subscriptions(topic=TOPIC)]
    assert names == sorted([sub, filtered])
    subscriber.delete_subscription(subscription=sub)
    with pytest.raises(gexc.NotFound):
        subscriber.get_subscription(subscription=sub)
    assert pubsub.state.pubsub.snapshot()["counts"]["filtered_out"] == 1


def test_what_pubsub_refuses(publisher, subscriber) -> None:
    publisher.create_topic(name=TOPIC)
    with pytest.raises(gexc.InvalidArgument, match=r"expiration_policy\.ttl is 1 day"):
        _sub(subscriber, "short", expiration_policy={"ttl": duration_pb2.Duration(seconds=3600)})
    with pytest.raises(gexc.InvalidArgument, match="Invalid filter"):
        _sub(subscriber, "bad", filter='attributes.a = "x" AND attributes.b = "y" OR attributes:c')
    with pytest.raises(gexc.InvalidArgument, match="ack_deadline_seconds"):
        _sub(subscriber, "slow", ack_deadline_seconds=601)
    with pytest.raises(gexc.InvalidArgument, match="IDs must be"):
        _sub(subscriber, "goog-nope")
    with pytest.raises(gexc.NotFound):
        subscriber.create_subscription(
            request={
                "name": f"projects/{PROJECT}/subscriptions/x-1",
                "topic": f"projects/{PROJECT}/topics/nope",
            }
        )
    with pytest.raises(gexc.InvalidArgument, match="empty"):
        publisher.publish(TOPIC, b"").result(timeout=10)


def test_expiration_policy_deletes_an_idle_subscription(publisher, subscriber, pubsub: Emulator) -> None:
    publisher.create_topic(name=TOPIC)
    sub = _sub(subscriber, "per-triggerer", expiration_policy={"ttl": duration_pb2.Duration(seconds=86400)})
    forever = _sub(subscriber, "forever", expiration_policy={})
    default = _sub(subscriber, "default")
    assert subscriber.get_subscription(subscription=default).expiration_policy.ttl.days == 31
    assert pubsub._admin("POST", "/v1/pubsub/advance", {"seconds": 86400}) == {"expired": [sub]}
    with pytest.raises(gexc.NotFound):
        subscriber.get_subscription(subscription=sub)
    assert subscriber.get_subscription(subscription=forever).name == forever


def test_streaming_pull_with_drop_and_duplicate_faults(publisher, subscriber, pubsub: Emulator) -> None:
    publisher.create_topic(name=TOPIC)
    sub = _sub(subscriber, "stream")
    ps = pubsub.state.pubsub
    pubsub._admin("POST", "/v1/pubsub/faults", {"drop": {"count": 1}, "duplicate": {"count": 1}})
    received: list[str] = []

    def callback(message: pubsub_v1.subscriber.message.Message) -> None:
        received.append(message.attributes["JobUID"])
        message.ack()

    future = subscriber.subscribe(sub, callback)
    try:
        for i in range(4):
            ps.publish_job_state(
                TOPIC, job_name=f"projects/1/locations/r/jobs/j{i}", job_uid=f"u{i}", new_state="SUCCEEDED"
            )
        end = time.monotonic() + 10
        while len(received) < 4 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        future.cancel()
        future.result(timeout=10)
    # The first message was dropped, the second delivered twice.
    assert sorted(received) == ["u1", "u1", "u2", "u3"]
    counts = ps.snapshot()["counts"]
    assert counts["dropped"] == 1 and counts["duplicated"] == 1 and counts["acked"] == 4
    assert ps.snapshot()["subscriptions"][sub]["leased"] == 0
    assert (
        ps.publish_job_state(
            f"projects/{PROJECT}/topics/missing", job_name="x", job_uid="y", new_state="RUNNING"
        )
        is None
    )


def test_grpc_faults_apply_to_pubsub_methods(subscriber, publisher, pubsub: Emulator) -> None:
    publisher.create_topic(name=TOPIC)
    pubsub.fault("CreateSubscription", "PERMISSION_DENIED", count=1)
    with pytest.raises(gexc.PermissionDenied):
        _sub(subscriber, "denied")
    assert pubsub.stats()["calls"]["CreateSubscription"] == 1


@pytest.mark.parametrize(
    ("text", "attrs", "want"),
    [
        ('attributes.Type = "JOB_STATE_CHANGED"', {"Type": "JOB_STATE_CHANGED"}, True),
        ('attributes.Type = "JOB_STATE_CHANGED"', {"Type": "TASK_STATE_CHANGED"}, False),
        ('attributes.Type != "X"', {}, True),
        ("attributes:JobUID", {"JobUID": ""}, True),
        ("NOT attributes:JobUID", {"JobUID": "u"}, False),
        ("-attributes:JobUID", {}, True),
        ('hasPrefix(attributes.JobName, "projects/p/")', {"JobName": "projects/p/locations/r/jobs/j"}, True),
        ('(attributes.a = "1" OR attributes.b = "2") AND attributes:c', {"b": "2", "c": "x"}, True),
        ('(attributes.a = "1" OR attributes.b = "2") AND attributes:c', {"b": "2"}, False),
        ('attributes."odd-key" = "v"', {"odd-key": "v"}, True),
    ],
)
def test_filter_language(text: str, attrs: dict[str, str], want: bool) -> None:
    assert parse_filter(text)(attrs) is want


@pytest.mark.parametrize(
    "text",
    [
        'attributes.a = "1" AND attributes.b = "2" OR attributes:c',
        "attributes.a",
        'labels.a = "x"',
        "x" * 257,
        "attributes:",
    ],
)
def test_filter_errors(text: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(text)


def test_unimplemented_methods_say_so(pubsub: Emulator) -> None:
    channel = grpc.insecure_channel(pubsub.target)
    call = channel.unary_unary(
        "/google.pubsub.v1.Subscriber/Seek", request_serializer=bytes, response_deserializer=bytes
    )
    with pytest.raises(grpc.RpcError) as err:
        call(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    channel.close()


def test_scheduled_job_states_follow_a_changed_future(publisher, subscriber, pubsub: Emulator) -> None:
    """A cancel rewrites a job's future: what was published stays, the rest is replaced."""
    from airflow_batch_streaming.emulator.common import now_ns

    publisher.create_topic(name=TOPIC)
    sub = _sub(subscriber, "timeline")
    ps = pubsub.state.pubsub
    now, s = now_ns(), 1_000_000_000
    job = "projects/proj/locations/r/jobs/j"
    planned = [(now - s, "QUEUED"), (now + s // 10, "RUNNING"), (now + 60 * s, "SUCCEEDED")]
    assert ps.schedule_job_states(TOPIC, job, "uid", planned) == 3
    got = _pull_all(subscriber, sub, 2)
    assert [m.message.attributes["NewJobState"] for m in got] == ["QUEUED", "RUNNING"]
    # Cancelled: the same past, a new end. QUEUED and RUNNING are not sent again.
    cancelled = [
        *planned[:2],
        (now + 2 * s // 10, "CANCELLATION_IN_PROGRESS"),
        (now + 3 * s // 10, "CANCELLED"),
    ]
    assert ps.schedule_job_states(TOPIC, job, "uid", cancelled) == 2
    got = _pull_all(subscriber, sub, 2)
    assert [m.message.attributes["NewJobState"] for m in got] == ["CANCELLATION_IN_PROGRESS", "CANCELLED"]
    time.sleep(0.3)
    late = subscriber.pull(request={"subscription": sub, "max_messages": 5, "return_immediately": True})
    assert late.received_messages == []
    assert (
        got[1]
        .message.data.decode()
        .endswith("previousState=CANCELLATION_IN_PROGRESS, currentState=CANCELLED")
    )


def test_subscriptions_report_who_heard_what(publisher, subscriber, pubsub: Emulator) -> None:
    """`GET /v1/pubsub/subscriptions`: every subscription since the reset, with its open streams'
    peers and the messages it acknowledged; what the full-stack test reads."""
    publisher.create_topic(name=TOPIC)
    ttl = duration_pb2.Duration(seconds=86400)
    sub = _sub(subscriber, "heard", expiration_policy={"ttl": ttl}, labels={"managed-by": "me"})
    idle = _sub(subscriber, "idle")
    acked: list[str] = []

    def callback(message: pubsub_v1.subscriber.message.Message) -> None:
        acked.append(message.attributes["JobUID"])
        message.ack()

    future = subscriber.subscribe(sub, callback)
    try:
        end = time.monotonic() + 10
        while not pubsub.pubsub_subscriptions()[0]["open_streams"] and time.monotonic() < end:
            time.sleep(0.05)
        job = "projects/1/locations/r/jobs/j"
        pubsub.state.pubsub.publish_job_state(TOPIC, job_name=job, job_uid="u", new_state="SUCCEEDED")
        while pubsub.pubsub_subscriptions()[0]["acked"] < 1 and time.monotonic() < end:
            time.sleep(0.05)
        heard, quiet = pubsub.pubsub_subscriptions()
        assert [p.split(":")[0] for p in heard["open_streams"]] == ["ipv4"]
    finally:
        future.cancel()
        future.result(timeout=10)
    subscriber.delete_subscription(subscription=sub)
    heard, quiet = pubsub.pubsub_subscriptions()
    assert acked == ["u"]
    assert heard["name"] == sub and heard["state"] == "deleted" and heard["open_streams"] == []
    assert heard["delivered"] == heard["acked"] == 1 and heard["labels"] == {"managed-by": "me"}
    assert heard["acked_messages"] == [
        {"Type": "JOB_STATE_CHANGED", "NewJobState": "SUCCEEDED", "JobName": job, "JobUID": "u"}
    ]
    assert heard["expiration_ttl_seconds"] == 86400 and quiet["expiration_ttl_seconds"] == 31 * 86400
    assert quiet["name"] == idle and quiet["state"] == "active" and quiet["delivered"] == quiet["acked"] == 0
    pubsub._admin("POST", "/v1/pubsub/advance", {"seconds": 32 * 86400})
    assert [s["state"] for s in pubsub.pubsub_subscriptions()] == ["deleted", "expired"]
    pubsub.reset()
    assert pubsub.pubsub_subscriptions() == []


def test_cli_creates_topics_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_batch_streaming.emulator import EmulatorProcess

    with EmulatorProcess(extra_args=["--pubsub-topic", TOPIC]) as emu:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emu.target)
        assert pubsub_v1.PublisherClient().get_topic(topic=TOPIC).name == TOPIC
    with pytest.raises(RuntimeError, match="exited with code 2"):
        EmulatorProcess(extra_args=["--pubsub-topic", "projects/p/topics/goog-x"]).start()
