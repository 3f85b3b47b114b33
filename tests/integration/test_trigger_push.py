"""Push end to end: real Batch and Pub/Sub clients on the emulator, the real trigger and watcher.

Batch (the emulator) publishes JOB_STATE_CHANGED for jobs created with a notification; the
watcher's listener hears it and reads the job once. Polling's push fallback is set to 30 s
here, so a wait that ends within seconds was ended by a message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import pubsub_v1

from airflow_batch_streaming.emulator import Emulator, Timings
from airflow_batch_streaming.hooks import clients
from airflow_batch_streaming.hooks.batch import BatchStreamingHook
from airflow_batch_streaming.triggers import BatchJobStateTrigger
from airflow_batch_streaming.triggers.pacing import Policy
from airflow_batch_streaming.triggers.watcher import JobWatcher, get_watcher

pytestmark = pytest.mark.emulator

PROJECT = "push-project"
REGION = "us-central1"
TOPIC = f"projects/{PROJECT}/topics/batch-jobs"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/repo/app:1"
#: Rounds every 0.1 s without push; every 30 s with a healthy stream.
PUSH_POLICY = Policy(floor=0.05, ceiling=0.1, push_floor=30.0, push_ceiling=60.0, prompt_window=0.05)


@pytest.fixture(scope="module")
def _emu() -> Iterator[Emulator]:
    with Emulator(timings=Timings(queue=0.05, schedule=0.05, run=0.2, cancel=0.1, delete=0.1)) as emu:
        yield emu


@pytest.fixture
def emu(_emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    _emu.reset()
    monkeypatch.setenv(clients.EMULATOR_HOST_ENV, _emu.target)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", _emu.target)
    monkeypatch.setattr(JobWatcher, "policy", PUSH_POLICY)
    monkeypatch.setattr(JobWatcher, "idle_close_after", 0.2)
    pubsub_v1.PublisherClient().create_topic(name=TOPIC)
    yield _emu
    _emu.reset()


def submit(job_id: str, run_seconds: float, topic: str | None = TOPIC) -> str:
    rest: dict[str, Any] = {
        "taskGroups": [{"taskSpec": {"runnables": [{"container": {"imageUri": IMAGE}}]}}],
        "labels": {"emulator-run-ms": str(int(run_seconds * 1000))},
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    }
    if topic:
        rest["notifications"] = [{"pubsubTopic": topic, "message": {"type": "JOB_STATE_CHANGED"}}]
    return str(
        BatchStreamingHook().create_job(project_id=PROJECT, region=REGION, job=rest, job_id=job_id).name
    )


async def timed_event(name: str, topic: str | None = TOPIC) -> tuple[dict[str, Any], float]:
    """The trigger's one event and how long after the job ended it came (s)."""
    events = [e async for e in BatchJobStateTrigger(job_name=name, notification_topic=topic).run()]
    assert len(events) == 1
    at = time.time()
    payload = dict(events[0].payload)
    ended = payload["job"]["update_time"]  # the emulator stamps it with the last state change
    return payload, at - _epoch(ended)


def _epoch(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


async def test_push_ends_waits_within_a_second_with_polling_at_its_slow_fallback(emu: Emulator) -> None:
    names = [submit(f"pushed-{i}", 1.5) for i in range(6)]
    watcher = get_watcher()
    results = await asyncio.wait_for(asyncio.gather(*(timed_event(n) for n in names)), 20)
    assert [e["status"] for e, _ in results] == ["success"] * 6
    delays = [d for _, d in results]
    assert max(delays) < 2.0, delays  # the fallback round is 30 s away: messages ended these
    listener = watcher.listeners[TOPIC]
    assert listener.healthy and watcher.stats["prompts"] >= 6
    # One GetJob per job to start, then one per prompt worth reading (the SUCCEEDED ones), and
    # no polling rounds while the stream was up: nowhere near 0.1 s polling's ~90 reads.
    calls = emu.stats()["calls"]
    assert calls["GetJob"] <= 6 + watcher.stats["prompts"], calls
    assert calls.get("ListJobs", 0) <= 2


async def test_dropped_messages_end_through_the_fallback_and_duplicates_cost_nothing(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        JobWatcher,
        "policy",
        Policy(floor=0.05, ceiling=0.1, push_floor=2.0, push_ceiling=2.0, prompt_window=0.05),
    )
    ps = emu.state.pubsub
    ps.faults({"duplicate": {"rate": 1.0}})
    doubled = submit("doubled", 0.5)
    event, _ = await asyncio.wait_for(timed_event(doubled), 20)
    assert event["status"] == "success"
    ps.faults({"duplicate": None, "drop": {"rate": 1.0}})  # every message lost from now on
    lost = submit("lost", 0.5)
    started = time.monotonic()
    event, delay = await asyncio.wait_for(timed_event(lost), 20)
    assert event["status"] == "success" and event["state"] == "SUCCEEDED"
    assert time.monotonic() - started < 10 and delay < 4.0  # the 2 s fallback round found it


async def test_refused_pubsub_falls_back_to_polling_with_one_warning(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emu.fault("CreateSubscription", "PERMISSION_DENIED", count=1, message="User not authorized")
    names = [submit(f"refused-{i}", 0.5) for i in range(3)]
    watcher = get_watcher()
    with caplog.at_level(logging.WARNING):
        results = await asyncio.wait_for(asyncio.gather(*(timed_event(n) for n in names)), 20)
    assert [e["status"] for e, _ in results] == ["success"] * 3
    assert max(d for _, d in results) < 2.0  # polling at its normal rate, not the push fallback
    assert watcher.listeners[TOPIC].refused and not watcher.listeners[TOPIC].healthy
    warnings = [r for r in caplog.records if "Pub/Sub push" in r.getMessage()]
    assert len(warnings) == 1 and "roles/pubsub" in warnings[0].getMessage()


async def test_idle_watcher_closes_its_listener_and_subscription(emu: Emulator) -> None:
    name = submit("idle", 0.3)
    watcher = get_watcher()
    event, _ = await asyncio.wait_for(timed_event(name), 20)
    assert event["status"] == "success"
    assert emu.state.pubsub.snapshot()["subscriptions"]
    for _ in range(100):
        if watcher.closed and not emu.state.pubsub.snapshot()["subscriptions"]:
            break
        await asyncio.sleep(0.05)
    assert watcher.closed and emu.state.pubsub.snapshot()["subscriptions"] == {}


_CHILD = r"""
import asyncio, sys, time
from airflow_batch_streaming.triggers import BatchJobStateTrigger
from airflow_batch_streaming.triggers.pacing import Policy
from airflow_batch_streaming.triggers.watcher import JobWatcher

JobWatcher.policy = Policy(floor=0.05, ceiling=0.1, push_floor=30.0, push_ceiling=60.0, prompt_window=0.05)

async def main():
    trigger = BatchJobStateTrigger(job_name=sys.argv[1], notification_topic=sys.argv[2])
    async for event in trigger.run():
        print("event", event.payload["status"], flush=True)

asyncio.run(main())
"""


async def test_two_triggerer_processes_sharing_a_topic_both_finish_their_waits(emu: Emulator) -> None:
    """An HA pair: each process subscribes for itself, so each hears the job it waits on."""
    theirs, ours = submit("ha-theirs", 4.0), submit("ha-ours", 4.0)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, theirs, TOPIC], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    assert child.stdout is not None
    started = time.monotonic()
    try:
        mine, (out, _) = await asyncio.wait_for(
            asyncio.gather(timed_event(ours), asyncio.to_thread(child.communicate, None, 60)), 60
        )
        assert child.returncode == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert mine[0]["status"] == "success" and mine[1] < 2.0
    assert [line for line in out.splitlines() if line.startswith("event ")] == ["event success"]
    # Both ended long before the 30 s fallback: each process's own subscription was told.
    assert time.monotonic() - started < 25
    assert emu.stats()["calls"]["GetJob"] <= 2 * 6
