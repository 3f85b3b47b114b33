"""A task that stops waiting takes its job with it: kills and timeouts cancel the job.

Row 6 of the reliability list. "Killed" is what Airflow does when a user marks, clears or
kills a task: `on_kill()` on the worker's operator, or, for a deferred task, cancelling the
trigger's coroutine and awaiting `trigger.on_kill()` (Airflow 3.3's triggerer). Every test
ends by checking that the emulator has no job left queued or running.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from reliability_support import (
    LIVE_STATES,
    TI,
    AirflowRun,
    WorkerDied,
    ctx,
    defer,
    dies_when_waiting,
    first_event,
    job_op,
    live_jobs,
    run_task,
    settle,
    wait_state,
    wait_until,
)

from airflow_batch_streaming import status
from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.exceptions import BatchJobCancelledError, BatchJobTimeoutError
from airflow_batch_streaming.hooks.batch import BatchStreamingHook
from airflow_batch_streaming.links import BATCH_JOB_XCOM_KEY

pytestmark = pytest.mark.emulator

LONG = {"emulator-run-seconds": "120"}
MODES = [pytest.param(False, id="sync"), pytest.param(True, id="deferrable")]


def test_killing_a_task_waiting_on_a_worker_cancels_its_job(emu: Emulator) -> None:
    hook = BatchStreamingHook()
    ti = TI()
    op = job_op(labels=LONG)
    outcome: list[BaseException] = []

    def worker() -> None:
        try:
            op.execute(ctx(ti))
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=worker)
    thread.start()
    wait_until(lambda: BATCH_JOB_XCOM_KEY in ti.xcoms, what="the job to be submitted")
    name = ti.xcoms[BATCH_JOB_XCOM_KEY]["name"]
    wait_state(hook, name, {"RUNNING"})
    op.on_kill()  # what the task runner calls on SIGTERM
    thread.join(30)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], BatchJobCancelledError)
    assert settle(emu) == {"CANCELLED": 1}
    assert emu.stats()["calls"]["CancelJob"] == 1


async def test_killing_a_deferred_task_cancels_its_job(emu: Emulator) -> None:
    hook = BatchStreamingHook()
    trigger = await asyncio.to_thread(defer, job_op(labels=LONG, deferrable=True), ctx(TI()))
    running = asyncio.ensure_future(first_event(trigger))
    while status.state_of(await hook.get_job_async(trigger.job_name)) != "RUNNING":
        await asyncio.sleep(0.03)
    # The triggerer on a user's kill: cancel the trigger's task, then await its on_kill().
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await trigger.on_kill()
    assert await asyncio.to_thread(settle, emu) == {"CANCELLED": 1}
    await trigger.on_kill()  # a second kill (or a kill after the end) sends nothing more
    assert emu.stats()["calls"]["CancelJob"] == 1


@pytest.mark.parametrize("deferrable", MODES)
def test_a_timeout_cancels_the_job(emu: Emulator, deferrable: bool) -> None:
    with pytest.raises(BatchJobTimeoutError) as timed_out:
        run_task(lambda: job_op(labels=LONG, deferrable=deferrable, timeout=1.5), TI())
    assert timed_out.value.cancelled and timed_out.value.timeout == 1.5
    assert settle(emu) == {"CANCELLED": 1}
    assert emu.stats()["calls"]["CancelJob"] == 1


@pytest.mark.parametrize("deferrable", MODES)
def test_a_timeout_counts_from_the_jobs_creation_across_retries(emu: Emulator, deferrable: bool) -> None:
    """Try 1 submits and its worker dies; try 2 reattaches after the deadline: it cancels at once."""
    timeout = 3.0
    ti = TI()
    with pytest.raises(WorkerDied):
        dies_when_waiting(job_op(labels=LONG, deferrable=deferrable, timeout=timeout)).execute(ctx(ti))
    created = time.time()
    assert live_jobs(emu)
    wait_until(lambda: time.time() > created + timeout, what="the deadline to pass")

    started = time.monotonic()
    with pytest.raises(BatchJobTimeoutError) as timed_out:
        run_task(lambda: job_op(labels=LONG, deferrable=deferrable, timeout=timeout), ti.next_try())
    assert time.monotonic() - started < timeout  # not a fresh `timeout` for the new try
    assert timed_out.value.cancelled
    assert settle(emu) == {"CANCELLED": 1}
    stats = emu.stats()
    assert stats["calls"]["CreateJob"] == 1 and stats["calls"]["CancelJob"] == 1


@pytest.mark.airflow
@pytest.mark.registry
def test_real_airflow_timeouts_cancel_the_jobs(airflow_run: AirflowRun) -> None:
    """`airflow dags test`: a sync and a deferred task time out; both fail and both jobs are cancelled."""
    for task_id in ("timeout_sync", "timeout_deferred"):
        assert airflow_run.run["tasks"][f"{task_id}[-1]"] == "failed"
        (job,) = airflow_run.jobs[task_id]
        assert job["status"]["state"] == "CANCELLED", task_id
    assert airflow_run.output.count("BatchJobTimeoutError") >= 2
    assert "did not finish within 3 s; it was cancelled" in airflow_run.output
    # Nothing the run started is left queued or running.
    assert not LIVE_STATES & set(airflow_run.stats["jobs_by_state"])
