"""Spot preemption (task exit code 50001): named in the failure, retried by Batch when asked.

Row 8 of the reliability list. The emulator preempts the first `emulator-preempt-attempts`
attempts of each task; Batch (not Airflow) retries them when the job's lifecycle policies
say RETRY_TASK on 50001, so a retried preemption is still one job, and the task reports how
that one job ended.
"""

from __future__ import annotations

from typing import Any

import pytest
from reliability_support import TI, job_op, run_task

from airflow_batch_streaming import status
from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.exceptions import PREEMPTED_EXIT_CODE, BatchJobFailedError
from airflow_batch_streaming.hooks.batch import BatchStreamingHook

pytestmark = pytest.mark.emulator

MODES = [pytest.param(False, id="sync"), pytest.param(True, id="deferrable")]
RETRY_POLICIES = [
    pytest.param({"retry_on_preemption": True}, id="retry_on_preemption"),
    pytest.param(
        {"lifecycle_policies": [{"action": "RETRY_TASK", "exit_codes": [50001]}], "max_retry_count": 3},
        id="lifecycle_policy",
    ),
]


def preempted(attempts: int) -> dict[str, str]:
    return {"emulator-outcome": "preempt", "emulator-preempt-attempts": str(attempts)}


def failed_attempts(hook: BatchStreamingHook, name: str) -> list[int]:
    """The exit code of each failed attempt of task 0, as Batch records it in the task's events."""
    events = status.as_rest(hook.list_tasks(name)[0])["status"].get("statusEvents", [])
    codes = [(e.get("taskExecution") or {}).get("exitCode") for e in events]
    return [code for code in codes if code]


@pytest.mark.parametrize("deferrable", MODES)
def test_a_preemption_without_a_retry_policy_fails_naming_it(emu: Emulator, deferrable: bool) -> None:
    with pytest.raises(BatchJobFailedError) as failed:
        run_task(lambda: job_op(provisioning_model="SPOT", labels=preempted(1), deferrable=deferrable), TI())
    error = failed.value
    assert error.exit_codes == (PREEMPTED_EXIT_CODE,) and error.preempted
    assert "50001 (Spot VM preempted)" in error.reason
    assert "Spot VM was preempted" in str(error)
    stats = emu.stats()
    assert stats["calls"]["CreateJob"] == 1 and stats["jobs_by_state"] == {"FAILED": 1}


@pytest.mark.parametrize("policy", RETRY_POLICIES)
@pytest.mark.parametrize("deferrable", MODES)
def test_batch_retries_a_preempted_task_and_the_task_reports_success(
    emu: Emulator, deferrable: bool, policy: dict[str, Any]
) -> None:
    hook = BatchStreamingHook()
    result = run_task(
        lambda: job_op(provisioning_model="SPOT", labels=preempted(1), deferrable=deferrable, **policy), TI()
    )
    assert result["state"] == "SUCCEEDED"
    assert failed_attempts(hook, result["name"]) == [PREEMPTED_EXIT_CODE]  # preempted once, then retried
    assert "50001 (Spot VM preempted)" in result["reason"]  # the summary still says what happened
    stats = emu.stats()
    assert stats["calls"]["CreateJob"] == 1 and stats["jobs_by_state"] == {"SUCCEEDED": 1}


@pytest.mark.parametrize("deferrable", MODES)
def test_preemptions_beyond_the_retries_fail_with_the_reason(emu: Emulator, deferrable: bool) -> None:
    hook = BatchStreamingHook()
    with pytest.raises(BatchJobFailedError) as failed:
        run_task(
            lambda: job_op(
                provisioning_model="SPOT",
                labels=preempted(10),
                retry_on_preemption=True,
                max_retry_count=2,
                deferrable=deferrable,
            ),
            TI(),
        )
    error = failed.value
    assert error.exit_codes == (PREEMPTED_EXIT_CODE,) and error.preempted
    assert "Spot VM preempted" in error.reason
    assert failed_attempts(hook, error.job_name) == [PREEMPTED_EXIT_CODE] * 3  # the first try and 2 retries
    stats = emu.stats()
    assert stats["calls"]["CreateJob"] == 1 and stats["jobs_by_state"] == {"FAILED": 1}
