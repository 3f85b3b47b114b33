"""One task instance, one live job: lost create responses, dead workers, retries.

Rows 1 and 2 of the reliability list. Each test counts what the emulator saw (CreateJob
calls, jobs, jobs by state) as well as what the task reported. A worker that dies is
simulated by a `WorkerDied` raised where the wait begins (the job exists, nobody waits on
it), then a new operator instance running the same try again, or the next try.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_support import (
    SH,
    TI,
    AirflowRun,
    StateStore,
    WorkerDied,
    ctx,
    defer,
    dies_when_waiting,
    flaky_command,
    job_op,
    live_jobs,
    run_task,
    run_trigger,
    settle,
    wait_state,
)

from airflow_batch_streaming import status
from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.exceptions import BatchJobFailedError
from airflow_batch_streaming.hooks.batch import BatchStreamingHook
from airflow_batch_streaming.operators.job import LABEL_TI, LABEL_TRY, STATE_KEY

pytestmark = pytest.mark.emulator

MODES = [pytest.param(False, id="sync"), pytest.param(True, id="deferrable")]


# --------------------------------------------------------------------------- 1. lost create


@pytest.mark.parametrize("deferrable", MODES)
def test_a_lost_create_response_leaves_exactly_one_job_and_the_task_waits_on_it(
    emu: Emulator, deferrable: bool
) -> None:
    """The create takes effect but its answer is lost: the hook re-sends the same request ID."""
    emu.fault("CreateJob", "DEADLINE_EXCEEDED", count=1, after_effect=True)
    ti = TI()
    labels = {"emulator-run-ms": "600"}
    result = run_task(lambda: job_op(labels=labels, deferrable=deferrable), ti)

    assert result["state"] == "SUCCEEDED"
    assert result["job_id"] == job_op().job_id_for(ctx(ti))
    stats = emu.stats()
    assert stats["calls"]["CreateJob"] == 2  # the lost one and its re-send
    # NOT_FOUND: this try's name, read before creating it (the reattach lookup).
    assert stats["errors"] == {"DEADLINE_EXCEEDED": 1, "NOT_FOUND": 1}
    assert stats["jobs"] == 1
    assert stats["jobs_by_state"] == {"SUCCEEDED": 1}
    # It waited on that job: read it until it ended.
    assert stats["calls"]["GetJob"] >= 2


# --------------------------------------------------------------------------- 2. dead workers


def test_sync_rerun_reattaches_and_a_succeeded_job_is_not_rerun(cmd_emu: Emulator) -> None:
    """Same try again: reattach by label; next try: reuse the result; reattach off: same ID."""
    hook = BatchStreamingHook()
    command = [*SH, "sleep 1.5; echo done"]
    store = StateStore()  # survives tries, like Airflow 3.3's task_state_store
    ti = TI()
    with pytest.raises(WorkerDied):
        dies_when_waiting(job_op(commands=command)).execute(ctx(ti, store))
    name = store.get(STATE_KEY)
    assert name and status.state_of(hook.get_job(name)) in status.ACTIVE

    again = job_op(commands=command).execute(ctx(TI(), store))  # the same try, a new worker
    assert again["name"] == name and again["state"] == "SUCCEEDED"
    assert cmd_emu.stats()["calls"]["CreateJob"] == 1

    retried = job_op(commands=command).execute(ctx(ti.next_try(), store))
    assert retried["name"] == name and retried["state"] == "SUCCEEDED"
    # Without the label lookup the deterministic job ID and request ID still find the job.
    same_id = job_op(commands=command, reattach=False).execute(ctx(TI(), store))
    assert same_id["name"] == name
    stats = cmd_emu.stats()
    assert stats["calls"]["CreateJob"] == 2
    assert stats["jobs"] == 1 and stats["jobs_by_state"] == {"SUCCEEDED": 1}
    assert store.get(STATE_KEY) == name


def test_deferred_rerun_reattaches_with_the_same_deadline(cmd_emu: Emulator) -> None:
    """A deferral lost with its worker: the rerun defers on the same job and the same end_time."""
    command = [*SH, "sleep 1.5; echo done"]
    ti = TI()
    first = defer(job_op(commands=command, deferrable=True, timeout=600), ctx(ti))
    second = defer(job_op(commands=command, deferrable=True, timeout=600), ctx(TI()))
    assert second.job_name == first.job_name
    assert second.end_time == first.end_time  # counted from the job's creation, not the rerun
    assert cmd_emu.stats()["calls"]["CreateJob"] == 1

    event = run_trigger(second)
    result = job_op(commands=command, deferrable=True).execute_complete(ctx(ti), event)
    assert result["state"] == "SUCCEEDED" and result["name"] == first.job_name
    # The next try finds it SUCCEEDED: no new job, no deferral.
    retried = job_op(commands=command, deferrable=True).execute(ctx(ti.next_try()))
    assert retried["name"] == first.job_name and retried["state"] == "SUCCEEDED"
    stats = cmd_emu.stats()
    assert stats["calls"]["CreateJob"] == 1
    assert stats["jobs"] == 1 and stats["jobs_by_state"] == {"SUCCEEDED": 1}


@pytest.mark.parametrize("deferrable", MODES)
def test_a_failed_job_is_rerun_as_a_new_job_on_the_next_try(
    cmd_emu: Emulator, tmp_path: Path, deferrable: bool
) -> None:
    hook = BatchStreamingHook()
    command = flaky_command(str(tmp_path / "ran-once"))
    ti = TI("flaky")
    with pytest.raises(BatchJobFailedError) as failed:
        run_task(lambda: job_op("flaky", commands=command, deferrable=deferrable), ti)
    assert failed.value.exit_codes == (3,)

    second = ti.next_try()
    result = run_task(lambda: job_op("flaky", commands=command, deferrable=deferrable), second)
    assert result["state"] == "SUCCEEDED"
    assert result["name"] != failed.value.job_name
    # Running try 2 again (its worker lost after the end) reuses its result.
    again = run_task(lambda: job_op("flaky", commands=command, deferrable=deferrable), second)
    assert again["name"] == result["name"]

    stats = cmd_emu.stats()
    assert stats["calls"]["CreateJob"] == 2
    assert stats["jobs"] == 2 and stats["jobs_by_state"] == {"FAILED": 1, "SUCCEEDED": 1}
    jobs = {job.name: dict(job.labels) for job in hook.list_jobs(result["project_id"], result["region"])}
    assert jobs[failed.value.job_name][LABEL_TRY] == "1" and jobs[result["name"]][LABEL_TRY] == "2"
    assert len({labels[LABEL_TI] for labels in jobs.values()}) == 1  # one task instance owns both


def test_a_rerun_while_the_job_still_runs_never_starts_a_second_one(cmd_emu: Emulator) -> None:
    """Three workers of one try, each lost as it starts waiting: still one job, then it ends."""
    hook = BatchStreamingHook()
    command = [*SH, "sleep 2; echo done"]
    store = StateStore()
    for _ in range(3):
        with pytest.raises(WorkerDied):
            dies_when_waiting(job_op(commands=command)).execute(ctx(TI(), store))
    assert cmd_emu.stats()["jobs"] == 1
    assert live_jobs(cmd_emu)  # nobody waits on it, and it runs on
    wait_state(hook, store.get(STATE_KEY), {"SUCCEEDED"})
    assert settle(cmd_emu) == {"SUCCEEDED": 1}
    assert cmd_emu.stats()["calls"]["CreateJob"] == 1


# --------------------------------------------------------------------------- under real Airflow


@pytest.mark.airflow
@pytest.mark.registry
def test_real_airflow_a_lost_create_response_makes_one_job(airflow_run: AirflowRun) -> None:
    """`airflow dags test`: the run's first CreateJob answer is lost; the task still makes one job."""
    assert airflow_run.run["tasks"]["lost_create[-1]"] == "success", airflow_run.output[-5000:]
    (job,) = airflow_run.jobs["lost_create"]
    assert job["status"]["state"] == "SUCCEEDED"
    assert airflow_run.run["xcoms"]["lost_create.return_value"]["name"] == job["name"]
    stats = airflow_run.stats
    # NOT_FOUND: each try reads its own job's name before creating it (the reattach lookup).
    assert {**stats["errors"], "NOT_FOUND": 0} == {"DEADLINE_EXCEEDED": 1, "NOT_FOUND": 0}
    assert stats["calls"]["CreateJob"] == stats["jobs"] + 1  # one re-send, no second job


@pytest.mark.airflow
@pytest.mark.registry
def test_real_airflow_retry_runs_a_new_job_after_a_failed_one(airflow_run: AirflowRun) -> None:
    """Airflow retries the task (retries=1): try 2 submits its own job, and the task succeeds."""
    assert airflow_run.run["tasks"]["flaky_retry[-1]"] == "success", airflow_run.output[-5000:]
    jobs = {job["labels"][LABEL_TRY]: job for job in airflow_run.jobs["flaky_retry"]}
    assert {try_: job["status"]["state"] for try_, job in jobs.items()} == {"1": "FAILED", "2": "SUCCEEDED"}
    assert airflow_run.run["xcoms"]["flaky_retry.return_value"]["name"] == jobs["2"]["name"]
