"""The package's exceptions: importable without Airflow, structured, picklable."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from airflow_batch_streaming.exceptions import (
    BatchJobCancelledError,
    BatchJobFailedError,
    BatchJobTimeoutError,
    BatchStreamingError,
    PreflightFailedError,
)
from airflow_batch_streaming.preflight import Finding, Report


def test_importing_exceptions_and_preflight_loads_no_airflow_or_google() -> None:
    # `google` and `google.cloud` may be namespace packages a .pth file loads: not imports.
    heavy = (
        "('airflow.', 'grpc', 'google.protobuf', 'google.auth', 'google.api_core', 'google.cloud.batch_v1')"
    )
    code = (
        "import sys, airflow_batch_streaming.exceptions, airflow_batch_streaming.preflight; "
        f"print([m for m in sys.modules if m == 'airflow' or m.startswith({heavy})])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "error",
    [
        PreflightFailedError(Report("img", "us-central1", [Finding("a", "error", "m", "h")])),
        BatchJobFailedError(
            "projects/p/locations/l/jobs/j", "FAILED", 2, [1, 50001], [{"description": "boom"}]
        ),
        BatchJobCancelledError("projects/p/locations/l/jobs/j", "CANCELLED", ["cancelled by user"]),
        BatchJobTimeoutError("projects/p/locations/l/jobs/j", 3600, cancelled=True),
    ],
)
def test_every_error_is_a_batch_streaming_error_and_pickles(error: BatchStreamingError) -> None:
    assert isinstance(error, BatchStreamingError)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_job_failed_details() -> None:
    error = BatchJobFailedError(
        "jobs/j", "FAILED", 2, [1, 50001], [{"description": "Job state is set from RUNNING to FAILED"}]
    )
    assert error.preempted
    assert error.exit_codes == (1, 50001)
    text = str(error)
    assert "2 tasks failed" in text and "exit codes 1, 50001" in text and "preempted" in text
    assert text.endswith("Last event: Job state is set from RUNNING to FAILED")
    assert not BatchJobFailedError("jobs/j").preempted
    assert (
        str(BatchJobFailedError("jobs/j", failed_tasks=1)) == "Batch job jobs/j ended FAILED: 1 task failed"
    )


def test_reason_and_output_are_kept_and_shown() -> None:
    error = BatchJobFailedError("jobs/j", failed_tasks=1, reason="task 0 exited 3", output=["a", "b"])
    assert (error.reason, error.output) == ("task 0 exited 3", ["a", "b"])
    assert str(error).splitlines() == [
        "Batch job jobs/j ended FAILED: 1 task failed",
        "task 0 exited 3",
        "Last lines of the job's output:",
        "  a",
        "  b",
    ]
    cancelled = BatchJobCancelledError("jobs/j", reason="cancelled by alice")
    assert str(cancelled).endswith("\ncancelled by alice")


def test_attributes_added_later_survive_pickling() -> None:
    error = BatchJobFailedError("jobs/j")
    error.args = ("a longer message",)
    vars(error).update(extra=1)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == "a longer message" and copy.extra == 1 and copy.job_name == "jobs/j"


def test_cancelled_and_timeout_messages() -> None:
    assert str(BatchJobCancelledError("jobs/j")) == "Batch job jobs/j ended CANCELLED"
    assert (
        str(BatchJobTimeoutError("jobs/j", 90.5))
        == "Batch job jobs/j did not finish within 90.5 s; it was left running"
    )
    assert BatchJobTimeoutError("jobs/j", 60, cancelled=True).cancelled
