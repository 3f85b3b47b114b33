"""The push listener end to end: the real google-cloud-pubsub async client on the emulator's
Pub/Sub, Batch's JOB_STATE_CHANGED messages, prompts answered with the real Batch client."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator

import pytest
from emulator_support import PARENT, container_job
from google.cloud import batch_v1, pubsub_v1

from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.hooks import clients
from airflow_batch_streaming.hooks.pubsub import (
    SUBSCRIPTION_FILTER,
    JobNotificationListener,
    Prompt,
    prompt_from,
)

pytestmark = pytest.mark.emulator

TOPIC = "projects/test-project/topics/batch-jobs"


@pytest.fixture
def pubsub(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.target)
    pubsub_v1.PublisherClient().create_topic(name=TOPIC)
    yield emulator


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def _publish(emu: Emulator, job: str, state: str, uid: str | None = None) -> str | None:
    return emu.state.pubsub.publish_job_state(
        TOPIC, job_name=job, job_uid=uid or f"{job.rsplit('/', 1)[-1]}-uid", new_state=state
    )


async def test_two_triggerers_both_hear_every_job_despite_drops_and_duplicates(pubsub: Emulator) -> None:
    ps = pubsub.state.pubsub
    heard: dict[str, list[Prompt]] = {"a": [], "b": []}
    health: list[bool] = []
    a = JobNotificationListener(TOPIC, heard["a"].append, on_health=health.append)
    b = JobNotificationListener(TOPIC, heard["b"].append)
    assert await a.start() and await b.start()
    subs = ps.snapshot()["subscriptions"]
    assert set(subs) == {a.subscription, b.subscription}
    pb = ps.subs[a.subscription].pb
    assert pb.filter == SUBSCRIPTION_FILTER
    assert pb.expiration_policy.ttl.seconds == 86_400
    try:
        # The first message is lost, the second delivered twice, to each subscription.
        ps.faults({"drop": {"count": 1}, "duplicate": {"count": 1}})
        for i in range(5):
            _publish(pubsub, f"{PARENT}/jobs/j{i}", "SUCCEEDED")
        # Task messages and other types never reach the listeners (the subscription filter).
        pubsub_v1.PublisherClient().publish(TOPIC, b"x", Type="TASK_STATE_CHANGED", JobUID="j1-uid").result(
            10
        )
        await _until(lambda: len(heard["a"]) == 4 and len(heard["b"]) == 4)
        await _until(lambda: a.stats["duplicates"] == 1 and b.stats["duplicates"] == 1)
        for got in heard.values():
            assert sorted(p.job_id for p in got) == ["j1", "j2", "j3", "j4"]
            assert {p.new_state for p in got} == {"SUCCEEDED"}
        assert a.stats["messages"] == 5 and a.stats["prompts"] == 4 and a.stats["ignored"] == 0
        await _until(
            lambda: all(
                s["leased"] == 0 and s["pending"] == 0 for s in ps.snapshot()["subscriptions"].values()
            )
        )
        assert health == [True]
    finally:
        await a.close()
        await b.close()
    assert ps.snapshot()["subscriptions"] == {}  # removed on close
    assert health == [True, False]


async def test_a_prompt_is_answered_with_one_getjob(pubsub: Emulator) -> None:
    """Batch announces states out of order and twice; each prompt is only a reason to read."""
    batch = clients.batch_async_client()
    job = await batch.create_job(parent=PARENT, job_id="pushed", job=container_job(["true"]))
    await _until(lambda: pubsub.state.jobs.count_by_state().get("SUCCEEDED", 0) == 1)
    read: list[str] = []
    tasks: set[asyncio.Task[None]] = set()

    async def get(prompt: Prompt) -> None:
        got = await batch.get_job(name=f"{PARENT}/jobs/{prompt.job_id}")
        read.append(batch_v1.JobStatus.State(got.status.state).name)

    def on_prompt(prompt: Prompt) -> None:
        assert prompt.job_uid == job.uid
        task = asyncio.get_running_loop().create_task(get(prompt))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    listener = JobNotificationListener(TOPIC, on_prompt)
    assert await listener.start()
    try:
        for state in ("SUCCEEDED", "RUNNING", "SUCCEEDED"):  # reordered and duplicated by Batch
            _publish(pubsub, job.name, state, uid=job.uid)
        await _until(lambda: len(read) == 3)
    finally:
        await listener.close()
    assert read == ["SUCCEEDED"] * 3  # the state is read, never taken from the message


async def test_refused_subscription_falls_back_with_one_warning(
    pubsub: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    pubsub.fault("CreateSubscription", "PERMISSION_DENIED", count=1, message="User not authorized")
    health: list[bool] = []
    listener = JobNotificationListener(TOPIC, lambda p: None, on_health=health.append)
    with caplog.at_level(logging.WARNING, logger="airflow_batch_streaming.hooks.pubsub"):
        assert not await listener.start()
        await listener.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "falls back to polling" in text and "roles/pubsub.editor" in text and "User not authorized" in text
    assert not listener.healthy and listener.refused and health == []
    assert pubsub.state.pubsub.snapshot()["subscriptions"] == {}


async def test_missing_topic_falls_back(pubsub: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    listener = JobNotificationListener("projects/test-project/topics/nope", lambda p: None)
    with caplog.at_level(logging.WARNING, logger="airflow_batch_streaming.hooks.pubsub"):
        assert not await listener.start()
    assert "NotFound" in (listener.refused or "")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_stream_refused_later_falls_back(pubsub: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    pubsub.fault("StreamingPull", "PERMISSION_DENIED", count=1)
    health: list[bool] = []
    listener = JobNotificationListener(TOPIC, lambda p: None, on_health=health.append)
    with caplog.at_level(logging.WARNING, logger="airflow_batch_streaming.hooks.pubsub"):
        assert await listener.start()
        await _until(lambda: listener.refused is not None)
        await listener.close()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert pubsub.state.pubsub.snapshot()["subscriptions"] == {}  # still cleaned up


async def test_reconnects_and_recreates_an_expired_subscription(pubsub: Emulator) -> None:
    ps = pubsub.state.pubsub
    heard: list[Prompt] = []
    health: list[bool] = []
    listener = JobNotificationListener(TOPIC, heard.append, on_health=health.append)
    listener.reconnect_initial = 0.05
    pubsub.fault("StreamingPull", "UNAVAILABLE", count=2)
    assert await listener.start()
    try:
        await _until(lambda: listener.healthy and listener.stats["streams"] == 3, timeout=10)
        _publish(pubsub, f"{PARENT}/jobs/after-reconnect", "FAILED")
        await _until(lambda: len(heard) == 1)
        # Pub/Sub deletes it (expiry, or an operator): the listener makes it again.
        ps.delete_subscription(type("R", (), {"subscription": listener.subscription})())
        await _until(lambda: listener.stats["streams"] == 4 and listener.healthy)
        assert listener.subscription in ps.subs
        _publish(pubsub, f"{PARENT}/jobs/after-recreate", "SUCCEEDED")
        await _until(lambda: len(heard) == 2)
    finally:
        await listener.close()
    assert [p.job_id for p in heard] == ["after-reconnect", "after-recreate"]
    assert health == [True, False, True, False], (health, listener.stats)  # up, down, up again, closed


def test_prompt_matches_a_waited_job() -> None:
    by_number = Prompt("projects/943461313144/locations/us-central1/jobs/j", "j-uid", "SUCCEEDED", "1")
    assert by_number.matches("projects/my-project/locations/us-central1/jobs/j")
    assert not by_number.matches("projects/my-project/locations/europe-west4/jobs/j")
    assert not by_number.matches("projects/my-project/locations/us-central1/jobs/k")
    assert by_number.matches("projects/my-project/locations/us-central1/jobs/j", "j-uid")
    assert not by_number.matches(
        "projects/my-project/locations/us-central1/jobs/j", "older-j-uid"
    )  # recreated
    assert not Prompt("", "u", None, "2").matches("projects/p/locations/r/jobs/j")


def test_prompt_from() -> None:
    attrs = {
        "Type": "JOB_STATE_CHANGED",
        "NewJobState": "RUNNING",
        "JobName": "projects/1/locations/r/jobs/j",
        "JobUID": "u",
    }
    assert prompt_from(attrs, "7") == Prompt("projects/1/locations/r/jobs/j", "u", "RUNNING", "7")
    assert prompt_from({**attrs, "Type": "TASK_STATE_CHANGED"}, "8") is None
    assert prompt_from({"Type": "JOB_STATE_CHANGED"}, "9") is None
    with pytest.raises(ValueError, match="projects/PROJECT/topics/TOPIC"):
        JobNotificationListener("topics/x", lambda p: None)


def test_configured_notification_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_batch_streaming.hooks.pubsub import NOTIFICATION_TOPIC_ENV, configured_notification_topic

    monkeypatch.setenv(NOTIFICATION_TOPIC_ENV, " projects/p/topics/t ")
    assert configured_notification_topic() == "projects/p/topics/t"
    monkeypatch.setenv(NOTIFICATION_TOPIC_ENV, "my-topic")
    with pytest.raises(ValueError, match="projects/PROJECT/topics/TOPIC"):
        configured_notification_topic()
    monkeypatch.setenv(NOTIFICATION_TOPIC_ENV, "")
    monkeypatch.setenv("AIRFLOW__BATCH_STREAMING__NOTIFICATION_TOPIC", "projects/q/topics/u")
    assert configured_notification_topic() == "projects/q/topics/u"


_CHILD = r"""
import asyncio, sys
from airflow_batch_streaming.hooks.pubsub import JobNotificationListener

async def main():
    listener = JobNotificationListener(sys.argv[1], lambda p: print("heard", p.job_id, flush=True))
    assert await listener.start()
    print("ready", listener.subscription, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # until told to stop
    await listener.close()
    print("closed", flush=True)

asyncio.run(main())
"""


async def test_two_triggerer_processes_share_a_topic(pubsub: Emulator) -> None:
    """An HA pair: another process's listener and this one each hear every job."""
    import os
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, TOPIC],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PUBSUB_EMULATOR_HOST": pubsub.target},
    )
    assert child.stdout is not None and child.stdin is not None
    heard: list[str] = []
    here = JobNotificationListener(TOPIC, lambda p: heard.append(p.job_id))
    try:
        ready = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 120)
        assert ready.startswith("ready projects/test-project/subscriptions/")
        assert await here.start()
        for i in range(3):
            _publish(pubsub, f"{PARENT}/jobs/ha{i}", "SUCCEEDED")
        lines = [await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30) for _ in range(3)]
        await _until(lambda: len(heard) == 3)
        child.stdin.write("\n")
        child.stdin.flush()
        assert (await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)).strip() == "closed"
    finally:
        await here.close()
        if child.poll() is None:
            child.kill()
        child.wait(30)
    assert sorted(line.split()[1] for line in lines) == ["ha0", "ha1", "ha2"]
    assert sorted(heard) == ["ha0", "ha1", "ha2"]
    assert pubsub.state.pubsub.snapshot()["subscriptions"] == {}


async def test_batch_job_notifications_end_to_end(pubsub: Emulator) -> None:
    """A real Batch job asking for notifications, its timeline published by the emulator's
    Batch as its states happen, heard by the listener, each prompt answered with GetJob."""
    from airflow_batch_streaming.emulator.common import now_ns
    from airflow_batch_streaming.emulator.pubsub import job_notifications

    batch = clients.batch_async_client()
    heard: list[tuple[str | None, str]] = []
    tasks: set[asyncio.Task[None]] = set()

    async def read(prompt: Prompt) -> None:
        job = await batch.get_job(name=f"{PARENT}/jobs/{prompt.job_id}")
        heard.append((prompt.new_state, batch_v1.JobStatus.State(job.status.state).name))

    def on_prompt(prompt: Prompt) -> None:
        task = asyncio.get_running_loop().create_task(read(prompt))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    listener = JobNotificationListener(TOPIC, on_prompt)
    assert await listener.start()
    try:
        spec = container_job(["true"], labels={"emulator-run-seconds": "1"})
        spec.notifications = [
            batch_v1.JobNotification(pubsub_topic=TOPIC, message={"type_": "JOB_STATE_CHANGED"}),
            batch_v1.JobNotification(pubsub_topic=TOPIC, message={"new_job_state": "SUCCEEDED"}),
            batch_v1.JobNotification(pubsub_topic=TOPIC, message={"type_": "TASK_STATE_CHANGED"}),
            batch_v1.JobNotification(pubsub_topic=f"{TOPIC}-unused"),  # no message: nothing is sent
        ]
        job = await batch.create_job(parent=PARENT, job_id="notified", job=spec)
        record = pubsub.state.jobs.get(job.name, now_ns())
        assert job_notifications(record.base) == [(TOPIC, None), (TOPIC, "SUCCEEDED")]
        await _until(lambda: len(heard) == 5, timeout=20)
    finally:
        await listener.close()
    # Each state announced once (SUCCEEDED twice: two notifications ask for it), in order; a
    # prompt's read may see a later state than the message named, never an earlier one.
    assert [new for new, _ in heard] == ["QUEUED", "SCHEDULED", "RUNNING", "SUCCEEDED", "SUCCEEDED"]
    order = ["QUEUED", "SCHEDULED", "RUNNING", "SUCCEEDED"]
    assert all(order.index(read_state) >= order.index(new) for new, read_state in heard if new)


async def test_the_package_emulator_switch_alone_reaches_pubsub(
    pubsub: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without PUBSUB_EMULATOR_HOST, BATCH_STREAMING_EMULATOR_HOST routes the listener too."""
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST")
    heard: list[Prompt] = []
    listener = JobNotificationListener(TOPIC, heard.append)
    assert await listener.start()
    try:
        _publish(pubsub, f"{PARENT}/jobs/via-batch-switch", "SUCCEEDED")
        await _until(lambda: len(heard) == 1)
    finally:
        await listener.close()
    assert heard[0].job_id == "via-batch-switch"
