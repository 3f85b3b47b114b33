"""Issue 13 against the emulator: reattach without ListJobs, one retry layer, outages stay local.

- A worker lost right after CreateJob while ListJobs answers nothing useful (refused for
  minutes, as an eventually consistent listing may miss a job made a moment ago): the
  next worker finds the job by its name; exactly one job, no ListJobs call.
- Persistent RESOURCE_EXHAUSTED on CreateJob: the hook's attempts, counted once.
- ListJobs refused for minutes while GetJob works: every deferred waiter of the region
  gets its job's true final state.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from reliability_support import (
    TI,
    WorkerDied,
    ctx,
    dies_when_waiting,
    first_event,
    job_op,
    run_task,
    settle,
)

from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.hooks.batch import BatchStreamingHook
from airflow_batch_streaming.triggers import BatchJobStateTrigger

pytestmark = pytest.mark.emulator

MODES = [pytest.param(False, id="sync"), pytest.param(True, id="deferrable")]


@pytest.mark.parametrize("deferrable", MODES)
def test_a_worker_lost_after_create_is_found_by_name_without_list_jobs(
    emu: Emulator, deferrable: bool
) -> None:
    emu.fault("ListJobs", "UNAVAILABLE", rate=1.0, seconds=600)  # the listing is no help at all
    labels = {"emulator-run-ms": "800"}
    ti = TI()
    with pytest.raises(WorkerDied):
        dies_when_waiting(job_op(labels=labels, deferrable=deferrable)).execute(ctx(ti))
    # The next try (Airflow's retry after the lost worker) reattaches to that job.
    result = run_task(lambda: job_op(labels=labels, deferrable=deferrable), ti.next_try())
    assert result["state"] == "SUCCEEDED" and result["labels"]["airflow-try"] == "1"
    stats = emu.stats()
    assert stats["calls"]["CreateJob"] == 1 and stats["jobs"] == 1
    assert stats["calls"].get("ListJobs", 0) == 0


def test_persistent_quota_errors_make_a_bounded_number_of_create_calls(emu: Emulator) -> None:
    emu.fault("CreateJob", "RESOURCE_EXHAUSTED", rate=1.0, seconds=600)
    from google.api_core.exceptions import ResourceExhausted

    with pytest.raises(ResourceExhausted, match="failed after retries"):
        run_task(job_op, TI())
    stats = emu.stats()
    # One retry layer: the hook's attempts, not the operator's times the hook's.
    assert stats["calls"]["CreateJob"] == BatchStreamingHook.create_attempts
    assert stats["jobs"] == 0


def test_list_jobs_refused_for_minutes_every_waiter_gets_its_true_final_state(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BatchStreamingHook, "give_up_after", 2.0)  # what the sweep failure must not hit
    hook = BatchStreamingHook()
    count = 25  # enough jobs of one region to sweep them
    names: dict[str, str] = {}
    for i in range(count):
        outcome = "fail" if i % 3 == 0 else "succeed"
        job = hook.create_job(
            project_id="rel-project",
            region="us-central1",
            job=job_op(labels={"emulator-outcome": outcome, "emulator-run-ms": "500"}).build_job(
                ctx(TI(f"t{i}"))
            ),
            job_id=f"outage-{i}",
        )
        names[job.name] = "FAILED" if outcome == "fail" else "SUCCEEDED"
    emu.fault("ListJobs", "UNAVAILABLE", rate=1.0, seconds=600)

    async def wait_all() -> list[dict[str, Any]]:
        triggers = [BatchJobStateTrigger(name, poll_interval=0.1) for name in names]
        return list(await asyncio.gather(*(first_event(t) for t in triggers)))

    events = asyncio.run(wait_all())
    assert {e["job_name"]: e["state"] for e in events} == names
    assert {e["status"] for e in events} == {"success", "failed"}
    stats = emu.stats()
    assert 1 <= stats["calls"]["ListJobs"] <= 3  # tried, failed, left alone for a while
    assert settle(emu) == {"FAILED": count // 3 + 1, "SUCCEEDED": count - count // 3 - 1}
