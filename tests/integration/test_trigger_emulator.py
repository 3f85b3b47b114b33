"""BatchJobStateTrigger and the shared JobWatcher over real gRPC against the emulator."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Collection, Iterator
from typing import Any

import pytest

from airflow_batch_streaming import status
from airflow_batch_streaming.emulator import Emulator, Timings
from airflow_batch_streaming.hooks import clients
from airflow_batch_streaming.hooks.batch import BatchStreamingHook
from airflow_batch_streaming.triggers import BatchJobStateTrigger
from airflow_batch_streaming.triggers import watcher as watcher_module
from airflow_batch_streaming.triggers.pacing import Policy
from airflow_batch_streaming.triggers.watcher import JobWatcher, get_watcher

pytestmark = pytest.mark.emulator

PROJECT = "trigger-project"
REGION = "us-central1"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/repo/app:1"
FAST = Timings(queue=0.05, schedule=0.05, run=0.2, cancel=0.1, delete=0.1)
LONG = {"emulator-run-seconds": "60"}


@pytest.fixture(scope="module")
def _emu() -> Iterator[Emulator]:
    with Emulator(timings=FAST) as emu:
        yield emu


@pytest.fixture(autouse=True)
def fast_watcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Poll in tenths of seconds, retry at once; the logic is the production logic."""
    for knob, value in {
        "policy": Policy(floor=0.05, ceiling=0.1, push_floor=0.1, push_ceiling=0.2, prompt_window=0.05),
        "first_poll_grace": 5.0,
        "idle_close_after": 0.2,
    }.items():
        monkeypatch.setattr(JobWatcher, knob, value)
    monkeypatch.setattr(BatchStreamingHook, "retry_initial_delay", 0.02)
    monkeypatch.setattr(BatchStreamingHook, "quota_initial_delay", 0.02)
    monkeypatch.setattr(BatchStreamingHook, "retry_max_delay", 0.05)
    monkeypatch.setattr(BatchStreamingHook, "quota_max_delay", 0.1)
    watcher_module.reset_read_budget(60_000)
    yield
    watcher_module.reset_read_budget()


@pytest.fixture
def emu(_emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    _emu.reset()
    monkeypatch.setenv(clients.EMULATOR_HOST_ENV, _emu.target)
    yield _emu
    _emu.reset()


@pytest.fixture
def hook(emu: Emulator) -> BatchStreamingHook:
    return BatchStreamingHook()


def submit(
    hook: BatchStreamingHook, job_id: str, labels: dict[str, str] | None = None, tasks: int = 1
) -> str:
    rest = {
        "taskGroups": [
            {
                "taskCount": str(tasks),
                "taskSpec": {"runnables": [{"container": {"imageUri": IMAGE, "enableImageStreaming": True}}]},
            }
        ],
        "labels": labels or {},
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    }
    return str(hook.create_job(project_id=PROJECT, region=REGION, job=rest, job_id=job_id).name)


async def until_state(
    hook: BatchStreamingHook, name: str, states: Collection[str], timeout: float = 20.0
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = status.state_of(await hook.get_job_async(name))
        if state in states:
            return state
        assert time.monotonic() < deadline, f"{name} stuck in {state}"
        await asyncio.sleep(0.03)


async def event_of(trigger: BatchJobStateTrigger) -> dict[str, Any]:
    events = [event async for event in trigger.run()]
    assert len(events) == 1
    return dict(events[0].payload)


# ------------------------------------------------------------------ terminal states


async def test_success(hook: BatchStreamingHook) -> None:
    name = submit(hook, "ok")
    event = await event_of(BatchJobStateTrigger(job_name=name))
    assert event["status"] == "success"
    assert event["state"] == "SUCCEEDED"
    assert event["job_name"] == name
    summary = event["job"]
    assert summary["state"] == "SUCCEEDED"
    assert summary["timeline"]["running_at"] and summary["timeline"]["finished_at"]
    assert summary["console_url"] == status.console_url(name)


async def test_failed_names_the_exit_code(hook: BatchStreamingHook) -> None:
    name = submit(
        hook, "fails", {"emulator-outcome": "fail", "emulator-exit-code": "3", "emulator-fail-tasks": "1"}, 2
    )
    event = await event_of(BatchJobStateTrigger(job_name=name))
    assert event["status"] == "failed"
    assert event["state"] == "FAILED"
    assert "task 1 failed with exit code 3" in event["message"].lower()
    assert event["job"]["reason"]


async def test_preempted(hook: BatchStreamingHook) -> None:
    name = submit(hook, "preempted", {"emulator-outcome": "preempt"})
    event = await event_of(BatchJobStateTrigger(job_name=name))
    assert event["status"] == "failed"
    assert "50001 (Spot VM preempted)" in event["message"]


async def test_cancelled(hook: BatchStreamingHook) -> None:
    name = submit(hook, "cancelled", LONG)
    waiting = asyncio.ensure_future(event_of(BatchJobStateTrigger(job_name=name)))
    await until_state(hook, name, {"RUNNING"})
    await hook.cancel_job_async(name)
    event = await waiting
    assert event["status"] == "cancelled"
    assert event["state"] == "CANCELLED"  # waited through CANCELLATION_IN_PROGRESS
    assert "cancelled" in event["message"]


async def test_deleted(hook: BatchStreamingHook) -> None:
    name = submit(hook, "deleted", LONG)
    waiting = asyncio.ensure_future(event_of(BatchJobStateTrigger(job_name=name)))
    await until_state(hook, name, {"RUNNING"})
    await asyncio.to_thread(hook.delete_job, name)
    event = await waiting
    assert event["status"] == "deleted"


async def test_never_existed_is_deleted(emu: Emulator) -> None:
    name = f"projects/{PROJECT}/locations/{REGION}/jobs/never-made"
    event = await event_of(BatchJobStateTrigger(job_name=name))
    assert event["status"] == "deleted"
    assert event["job"] is None


async def test_timeout_cancels_the_job(hook: BatchStreamingHook) -> None:
    name = submit(hook, "too-slow", LONG)
    event = await event_of(BatchJobStateTrigger(job_name=name, end_time=time.time() + 0.5))
    assert event["status"] == "timeout"
    assert event["cancelled"] is True
    assert event["state"] in ("QUEUED", "SCHEDULED", "RUNNING")
    assert await until_state(hook, name, {"CANCELLATION_IN_PROGRESS", "CANCELLED"})


async def test_timeout_without_cancel(hook: BatchStreamingHook) -> None:
    name = submit(hook, "left-running", LONG)
    event = await event_of(
        BatchJobStateTrigger(job_name=name, end_time=time.time() + 0.3, cancel_on_timeout=False)
    )
    assert event["status"] == "timeout"
    assert event["cancelled"] is False
    assert status.state_of(await hook.get_job_async(name)) not in status.TERMINAL


async def test_past_deadline_still_reads_the_job_once(hook: BatchStreamingHook) -> None:
    """A job that finished while nobody watched is reported finished, not timed out."""
    name = submit(hook, "finished-unseen")
    await until_state(hook, name, status.TERMINAL)
    event = await event_of(BatchJobStateTrigger(job_name=name, end_time=time.time() - 60))
    assert event["status"] == "success"


async def test_other_target_state(hook: BatchStreamingHook) -> None:
    name = submit(hook, "until-running", LONG)
    event = await event_of(BatchJobStateTrigger(job_name=name, target_states=("RUNNING",)))
    assert event["status"] == "success"
    assert event["state"] == "RUNNING"
    await hook.cancel_job_async(name)


# ------------------------------------------------------------------ faults


async def test_transient_faults_while_waiting(emu: Emulator, hook: BatchStreamingHook) -> None:
    name = submit(hook, "flaky")
    emu.fault("GetJob", "UNAVAILABLE", count=3)
    emu.fault("GetJob", "DEADLINE_EXCEEDED", count=1)
    emu.fault("GetJob", "INTERNAL", count=1)
    emu.fault("GetJob", "RESOURCE_EXHAUSTED", count=2)
    event = await event_of(BatchJobStateTrigger(job_name=name))
    assert event["status"] == "success"
    assert emu.stats()["errors"] == {
        "UNAVAILABLE": 3,
        "DEADLINE_EXCEEDED": 1,
        "INTERNAL": 1,
        "RESOURCE_EXHAUSTED": 2,
    }


async def test_quota_exhaustion_is_waited_out(emu: Emulator, hook: BatchStreamingHook) -> None:
    name = submit(hook, "quota", {"emulator-run-seconds": "2"})
    emu.quota(reads_per_minute=3)
    waiting = asyncio.ensure_future(event_of(BatchJobStateTrigger(job_name=name)))
    await asyncio.sleep(0.5)
    assert not waiting.done()  # throttled, not failed
    emu.quota(reads_per_minute=None)
    event = await waiting
    assert event["status"] == "success"
    assert emu.stats()["errors"].get("RESOURCE_EXHAUSTED", 0) >= 1


async def test_permission_denied_is_an_error(emu: Emulator, hook: BatchStreamingHook) -> None:
    name = submit(hook, "denied")
    emu.fault("GetJob", "PERMISSION_DENIED", count=1, message="Permission 'batch.jobs.get' denied")
    event = await event_of(BatchJobStateTrigger(job_name=name))
    assert event["status"] == "error"
    assert "roles/batch.jobsViewer" in event["message"]
    assert emu.stats()["calls"]["GetJob"] == 1  # never retried


# ------------------------------------------------------------------ restarts and kills


async def test_rebuilt_trigger_keeps_its_deadline(hook: BatchStreamingHook) -> None:
    name = submit(hook, "restarted", LONG)
    original = BatchJobStateTrigger(job_name=name, end_time=time.time() + 2.0)
    first = asyncio.ensure_future(event_of(original))
    await until_state(hook, name, {"RUNNING"})
    first.cancel()  # the triggerer stops: CancelledError reaches the trigger and propagates
    with pytest.raises(asyncio.CancelledError):
        await first
    assert status.state_of(await hook.get_job_async(name)) == "RUNNING"  # stopping is not killing

    classpath, kwargs = original.serialize()
    module, _, cls = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), cls)(**kwargs)
    assert rebuilt.end_time == original.end_time
    event = await event_of(rebuilt)
    assert event["status"] == "timeout"
    assert event["cancelled"] is True


async def test_on_kill_cancels_the_job(hook: BatchStreamingHook) -> None:
    name = submit(hook, "killed", LONG)
    trigger = BatchJobStateTrigger(job_name=name)
    waiting = asyncio.ensure_future(event_of(trigger))
    await until_state(hook, name, {"RUNNING"})
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await trigger.on_kill()
    assert await until_state(hook, name, {"CANCELLATION_IN_PROGRESS", "CANCELLED"})
    await trigger.on_kill()  # a second kill is harmless


async def test_on_kill_can_leave_the_job(hook: BatchStreamingHook) -> None:
    name = submit(hook, "kept", LONG)
    await until_state(hook, name, {"RUNNING"})
    await BatchJobStateTrigger(job_name=name, cancel_on_kill=False).on_kill()
    assert status.state_of(await hook.get_job_async(name)) == "RUNNING"
    await hook.cancel_job_async(name)


def test_each_event_loop_gets_its_own_watcher(hook: BatchStreamingHook) -> None:
    """dag.test() runs every trigger in a fresh asyncio.run() loop."""
    names = [submit(hook, f"loop-{i}") for i in range(2)]
    used: list[JobWatcher] = []

    async def one(name: str) -> dict[str, Any]:
        used.append(get_watcher())
        return await event_of(BatchJobStateTrigger(job_name=name))

    results = [asyncio.run(one(name)) for name in names]
    assert [r["status"] for r in results] == ["success", "success"]
    assert used[0] is not used[1]
    # A loop's watcher closes its channel and leaves the registry when the loop ends.
    assert all(w.closed for w in used)
    assert not [w for w in watcher_module.watchers() if w.loop is None or w.loop.is_closed()]


# ------------------------------------------------------------------ sharing


async def test_concurrent_triggers_share_one_client_and_coalesce(
    emu: Emulator, hook: BatchStreamingHook
) -> None:
    names = [submit(hook, f"shared-{i}") for i in range(10)]
    for name in names:
        await until_state(hook, name, status.TERMINAL)
    before = emu.stats()
    watcher = get_watcher()  # the one every trigger of this loop will use
    triggers = [BatchJobStateTrigger(job_name=names[i % 10]) for i in range(50)]
    events = await asyncio.gather(*(event_of(t) for t in triggers))
    assert [e["status"] for e in events] == ["success"] * 50
    assert watcher.stats["hooks"] == 1  # one hook, so one async client and one channel
    assert watcher.stats["waits"] == 50
    assert watcher.stats["coalesced"] == 40
    after = emu.stats()
    # One read for every job: the 50 waits join one listing of the region (ended jobs are in it).
    assert after["calls"].get("GetJob", 0) - before["calls"].get("GetJob", 0) == 0
    assert after["calls"]["ListJobs"] - before["calls"].get("ListJobs", 0) == 1
    assert after["connections"] - before["connections"] <= 1


async def test_many_jobs_of_one_region_are_swept_with_list_jobs(
    emu: Emulator, hook: BatchStreamingHook
) -> None:
    count = 30
    names = [submit(hook, f"swept-{i}", {"emulator-run-ms": "600"}) for i in range(count)]
    before = emu.stats()["calls"]
    watcher = get_watcher()
    events = await asyncio.gather(*(event_of(BatchJobStateTrigger(job_name=name)) for name in names))
    assert [e["status"] for e in events] == ["success"] * count
    calls = emu.stats()["calls"]
    assert watcher.stats["sweeps"] >= 1
    assert calls["ListJobs"] - before.get("ListJobs", 0) == watcher.stats["list_jobs"]
    # A new wait joins its region's next listing, and the createTime listing shows finished
    # jobs too: no job is read one by one.
    get_jobs = calls.get("GetJob", 0) - before.get("GetJob", 0)
    assert get_jobs == 0
    assert watcher.stats["swept_jobs"] >= count


async def test_swept_jobs_missing_from_a_lagging_list_end_right(
    emu: Emulator, hook: BatchStreamingHook
) -> None:
    """Google's ListJobs lags creation; a sweep that does not see a watched job must read it by
    name (GetJob), never take it for gone: every trigger still reports its job's true end."""
    emu.timings(list_lag=5)
    count = 25
    names = [submit(hook, f"lagged-{i}", {"emulator-run-ms": "400"}) for i in range(count)]
    names.append(submit(hook, "lagged-fails", {"emulator-outcome": "fail", "emulator-exit-code": "4"}))
    events = await asyncio.gather(*(event_of(BatchJobStateTrigger(job_name=name)) for name in names))
    assert [e["status"] for e in events] == ["success"] * count + ["failed"]
    assert emu.stats()["jobs_by_state"] == {"SUCCEEDED": count, "FAILED": 1}


async def test_a_refused_sweep_falls_back_to_get_job(emu: Emulator, hook: BatchStreamingHook) -> None:
    """INVALID_ARGUMENT on the createTime filter: the sweep falls back to the active states'
    filter; refused too, the region is read with GetJob only."""
    count = 20
    names = [submit(hook, f"unswept-{i}", {"emulator-run-ms": "800"}) for i in range(count)]
    emu.fault("ListJobs", "INVALID_ARGUMENT", count=2, message="filter not supported")
    events = await asyncio.gather(*(event_of(BatchJobStateTrigger(job_name=name)) for name in names))
    assert [e["status"] for e in events] == ["success"] * count
    assert emu.stats()["calls"]["ListJobs"] == 2  # createTime refused, active refused, then GetJob only


async def test_read_budget_stretches_polls(emu: Emulator, hook: BatchStreamingHook) -> None:
    budget = watcher_module.reset_read_budget(600)  # 10 reads a second, for the whole process
    names = [submit(hook, f"budget-{i}", {"emulator-run-seconds": "1"}) for i in range(5)]
    events = await asyncio.gather(
        *(event_of(BatchJobStateTrigger(job_name=name, poll_interval=0.01)) for name in names)
    )
    assert [e["status"] for e in events] == ["success"] * 5
    assert budget.waits > 0  # polls waited for the budget instead of exceeding it
