"""Waiting through what the Batch API does to waiters: error bursts, quota, restarts, removal.

Rows 3, 4, 5 and 7 of the reliability list. Job outcomes come from emulator labels, so
every test knows each job's true final state and checks that the task reports exactly it.
Sync waiters run in threads and deferred ones in the test's event loop, side by side, as
workers and a triggerer would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from reliability_support import (
    TI,
    ctx,
    defer,
    first_event,
    job_op,
    rebuild,
    run_task,
    run_trigger,
    settle,
    wait_state,
    wait_until,
)

from airflow_batch_streaming import status
from airflow_batch_streaming._compat import TaskDeferred
from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.emulator import admin as emulator_admin
from airflow_batch_streaming.exceptions import (
    BatchJobCancelledError,
    BatchJobFailedError,
    BatchJobTimeoutError,
)
from airflow_batch_streaming.hooks.batch import BatchStreamingHook
from airflow_batch_streaming.links import BATCH_JOB_XCOM_KEY
from airflow_batch_streaming.operators import BatchStreamingJobOperator
from airflow_batch_streaming.sensors import BatchJobStateSensor
from airflow_batch_streaming.triggers.watcher import get_watcher

pytestmark = pytest.mark.emulator

SUCCEED = {"emulator-run-seconds": "3"}
FAIL_3 = {"emulator-outcome": "fail", "emulator-exit-code": "3", "emulator-run-seconds": "3"}
LONG = {"emulator-run-seconds": "120"}
TRANSIENT_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL")


async def _task(task_id: str, labels: dict[str, str], *, deferrable: bool) -> dict[str, Any]:
    """One task run to its end: worker calls in threads, the trigger in this (triggerer) loop."""
    ti = TI(task_id)

    def make() -> BatchStreamingJobOperator:
        return job_op(task_id, labels=labels, deferrable=deferrable, poll_interval=0.2)

    try:
        return await asyncio.to_thread(make().execute, ctx(ti))
    except TaskDeferred as deferred:
        event = await first_event(deferred.trigger)
        return await asyncio.to_thread(make().execute_complete, ctx(ti), event)


def _outcome(result: dict[str, Any] | BaseException) -> tuple[str, tuple[int, ...]]:
    if isinstance(result, BatchJobFailedError):
        return result.state, result.exit_codes
    if isinstance(result, BaseException):
        raise result
    return result["state"], ()


# --------------------------------------------------------------------------- 3. error bursts


async def test_bursts_of_transient_errors_end_with_each_jobs_true_state(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A third of GetJob/ListJobs/ListTasks calls fail (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL).

    The burst lasts longer than the jobs (about 3.5 s): every wait, and every read made to
    report a failure, happens inside it.
    """
    # Pacing sweeps from 2 jobs of a region on: the triggers' reads go through ListJobs as well.
    per_rule = 1 - (2 / 3) ** (1 / len(TRANSIENT_CODES))  # three rules, a third in all
    for method in ("GetJob", "ListJobs", "ListTasks"):
        for code in TRANSIENT_CODES:
            emu.fault(method, code, rate=round(per_rule, 4), seconds=15)
    plan = {
        "sync-ok": (SUCCEED, False),
        "sync-fails": (FAIL_3, False),
        "deferred-ok-a": (SUCCEED, True),
        "deferred-ok-b": (SUCCEED, True),
        "deferred-fails-a": (FAIL_3, True),
        "deferred-fails-b": (FAIL_3, True),
    }
    watcher = get_watcher()
    results = await asyncio.gather(
        *(_task(task_id, labels, deferrable=d) for task_id, (labels, d) in plan.items()),
        return_exceptions=True,
    )
    outcomes = dict(zip(plan, map(_outcome, results), strict=True))
    for task_id, (labels, _) in plan.items():
        expected = ("FAILED", (3,)) if labels is FAIL_3 else ("SUCCEEDED", ())
        assert outcomes[task_id] == expected, (task_id, results)

    stats = emu.stats()
    assert all(stats["errors"].get(code, 0) >= 1 for code in TRANSIENT_CODES), stats["errors"]
    assert sum(stats["errors"].values()) >= 10  # the burst was felt, not dodged
    assert watcher.stats["transient_errors"] >= 1
    assert stats["calls"]["CreateJob"] == stats["jobs"] == len(plan)
    assert stats["jobs_by_state"] == {"SUCCEEDED": 3, "FAILED": 3}


async def test_the_failed_tasks_read_after_a_wait_outlasts_the_watchers_idle_close(emu: Emulator) -> None:
    """A deferred job fails; the trigger then lists its failed tasks on the watcher's hook while
    ListTasks fails five times, so the retries outlast the watcher's idle close (0.2 s here).
    The watcher must keep its channel open for that call (closing it would cancel the call in
    flight: CancelledError out of the trigger), and the event names the failed task's exit code."""
    emu.fault("ListTasks", "UNAVAILABLE", count=5)
    trigger = defer(
        job_op("fails-late", labels=FAIL_3, deferrable=True, poll_interval=0.2), ctx(TI("fails-late"))
    )
    event = await first_event(trigger)
    assert event["state"] == "FAILED", event
    assert event["job"]["reason"].startswith("Task 0 failed with exit code 3."), event
    assert emu.stats()["calls"]["ListTasks"] == 6  # five refused, the sixth answered on the same channel


# --------------------------------------------------------------------------- 4. read quota


async def test_a_low_read_quota_is_backed_off_and_every_waiter_finishes(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten deferred tasks and a sync one against 30 reads per (compressed, 3 s) minute."""
    # The emulator's quota window is a sliding minute; compress it like every other clock here.
    monkeypatch.setattr(emulator_admin, "MINUTE_NS", 3 * 1_000_000_000)
    emu.quota(reads_per_minute=30)
    plan = {f"deferred-{i}": (FAIL_3 if i % 3 == 0 else SUCCEED, True) for i in range(10)}
    plan["sync"] = (SUCCEED, False)
    watcher = get_watcher()
    results = await asyncio.gather(
        *(_task(task_id, labels, deferrable=d) for task_id, (labels, d) in plan.items()),
        return_exceptions=True,
    )
    outcomes = dict(zip(plan, map(_outcome, results), strict=True))
    for task_id, (labels, _) in plan.items():
        expected = ("FAILED", (3,)) if labels is FAIL_3 else ("SUCCEEDED", ())
        assert outcomes[task_id] == expected, (task_id, results)

    stats = emu.stats()
    assert stats["errors"].get("RESOURCE_EXHAUSTED", 0) >= 1, stats["errors"]
    assert watcher.stats["transient_errors"] >= 1  # the triggers met the quota, and waited
    assert stats["jobs"] == len(plan)
    assert stats["jobs_by_state"] == {"SUCCEEDED": 7, "FAILED": 4}


# --------------------------------------------------------------------------- 5. triggerer restart


async def _stopped_mid_wait(trigger: Any, hook: BatchStreamingHook) -> None:
    """A triggerer that runs `trigger` until its job runs, then stops (the task is cancelled)."""
    running = asyncio.ensure_future(first_event(trigger))
    while status.state_of(await hook.get_job_async(trigger.job_name)) != "RUNNING":
        assert not running.done(), running.result()
        await asyncio.sleep(0.03)
    await asyncio.sleep(0.2)  # a few polls in
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


def test_a_triggerer_restart_resumes_the_wait(emu: Emulator) -> None:
    hook = BatchStreamingHook()
    ti = TI()
    labels = {"emulator-run-seconds": "2"}
    trigger = defer(job_op(labels=labels, deferrable=True, timeout=120), ctx(ti))
    asyncio.run(_stopped_mid_wait(trigger, hook))  # triggerer process 1
    assert status.state_of(hook.get_job(trigger.job_name)) == "RUNNING"  # stopping is not killing

    rebuilt = rebuild(trigger)  # triggerer process 2, from the stored row
    assert isinstance(rebuilt, type(trigger)) and rebuilt.end_time == trigger.end_time
    event = run_trigger(rebuilt)
    result = job_op(labels=labels, deferrable=True).execute_complete(ctx(ti), event)
    assert result["state"] == "SUCCEEDED" and result["name"] == trigger.job_name
    stats = emu.stats()
    assert stats["calls"]["CreateJob"] == 1 and stats["jobs_by_state"] == {"SUCCEEDED": 1}


def test_a_deadline_that_passes_during_a_restart_is_not_reset(emu: Emulator) -> None:
    """The trigger's end_time is absolute: the rebuilt trigger times out at once and cancels."""
    hook = BatchStreamingHook()
    ti = TI()
    timeout = 3.0
    trigger = defer(job_op(labels=LONG, deferrable=True, timeout=timeout), ctx(ti))
    end_time = trigger.end_time
    assert end_time is not None
    asyncio.run(_stopped_mid_wait(trigger, hook))
    wait_until(lambda: time.time() > end_time + 0.2, what="the deadline to pass")

    rebuilt = rebuild(trigger)
    started = time.monotonic()
    event = run_trigger(rebuilt)
    assert time.monotonic() - started < timeout  # not a fresh `timeout` seconds of waiting
    assert event["status"] == "timeout" and event["cancelled"] is True
    with pytest.raises(BatchJobTimeoutError) as timed_out:
        job_op(labels=LONG, deferrable=True, timeout=timeout).execute_complete(ctx(ti), event)
    assert timed_out.value.cancelled
    assert settle(emu) == {"CANCELLED": 1}
    assert emu.stats()["calls"]["CancelJob"] == 1


# --------------------------------------------------------------------------- 7. cancelled, deleted


@pytest.mark.parametrize("kind", ["operator-sync", "operator-deferred", "sensor-sync", "sensor-deferred"])
@pytest.mark.parametrize(
    ("how", "delete_ms", "state"),
    [
        pytest.param("cancelled", "100", "CANCELLED", id="cancelled"),
        pytest.param("deleted", "1500", "DELETION_IN_PROGRESS", id="being-deleted"),
        pytest.param("deleted", "50", "DELETION_IN_PROGRESS", id="gone"),
    ],
)
def test_a_job_cancelled_or_deleted_under_a_waiter_fails_the_task_promptly(
    emu: Emulator, kind: str, how: str, delete_ms: str, state: str
) -> None:
    """The task fails at its next read with BatchJobCancelledError saying what happened.

    "gone": the deletion takes 50 ms, so the next read (0.5 s later) finds no job (NOT_FOUND);
    "being-deleted": reads see DELETION_IN_PROGRESS. The waiters' timeout is 600 s: reaching
    it would mean polling on.
    """
    hook = BatchStreamingHook()
    labels = {**LONG, "emulator-delete-ms": delete_ms}
    deferrable = kind.endswith("deferred")
    ti = TI()
    make: Callable[[], Any]
    if kind.startswith("operator"):
        make = lambda: job_op(labels=labels, deferrable=deferrable, timeout=600, poll_interval=0.5)  # noqa: E731
    else:
        submitted = job_op("submit", labels=labels, wait_for_completion=False).execute(ctx(TI("submit")))
        ti.xcoms[BATCH_JOB_XCOM_KEY] = submitted
        make = lambda: BatchJobStateSensor(  # noqa: E731
            task_id="sensor",
            job_name=submitted["name"],
            poke_interval=0.5,
            timeout=600,
            deferrable=deferrable,
        )
    ended_at: list[float] = []

    def end_the_job() -> None:
        wait_until(lambda: BATCH_JOB_XCOM_KEY in ti.xcoms, what="the task to start")
        name = ti.xcoms[BATCH_JOB_XCOM_KEY]["name"]
        wait_state(hook, name, {"RUNNING"})
        time.sleep(0.3)  # the waiter is polling by now
        ended_at.append(time.monotonic())
        if how == "cancelled":
            hook.cancel_job(name)
        else:
            hook.delete_job(name)

    actor = threading.Thread(target=end_the_job)
    actor.start()
    try:
        with pytest.raises(BatchJobCancelledError) as failed:
            run_task(make, ti)
    finally:
        actor.join()
    assert time.monotonic() - ended_at[0] < 30  # prompt: no polling on towards the timeout
    assert failed.value.state == state
    assert ("cancelled" if how == "cancelled" else "deleted") in failed.value.reason
    if how == "cancelled":
        assert settle(emu) == {"CANCELLED": 1}
    else:
        wait_until(lambda: emu.stats()["jobs"] == 0, what="the deletion to finish")
    stats = emu.stats()
    assert stats["calls"].get("CancelJob", 0) == (1 if how == "cancelled" else 0)  # only the test's
    assert stats["calls"]["CreateJob"] == 1
