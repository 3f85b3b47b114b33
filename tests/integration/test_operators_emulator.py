"""The real operators and sensor, through the real hook and trigger, against the emulator.

The emulator runs each task's `entrypoint` + `commands` as a local process
(`run_commands=True`), so exit codes and output are real, and writes the output to its
Cloud Logging, as Batch does. Each test drives `execute` (and, when deferred, the trigger
and `execute_complete`) with a small stand-in for the task instance.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from airflow_batch_streaming import status
from airflow_batch_streaming._compat import AirflowRescheduleException, TaskDeferred
from airflow_batch_streaming.emulator import Emulator, Timings
from airflow_batch_streaming.exceptions import (
    BatchJobCancelledError,
    BatchJobFailedError,
    BatchJobTimeoutError,
)
from airflow_batch_streaming.hooks import clients
from airflow_batch_streaming.hooks.batch import BatchStreamingHook
from airflow_batch_streaming.links import BATCH_JOB_XCOM_KEY
from airflow_batch_streaming.operators import (
    BatchJobLogsOperator,
    BatchStreamingJobOperator,
    BatchStreamingPreflightOperator,
)
from airflow_batch_streaming.sensors import BatchJobStateSensor
from airflow_batch_streaming.triggers.pacing import Policy
from airflow_batch_streaming.triggers.watcher import JobWatcher

pytestmark = pytest.mark.emulator

PROJECT = "ops-project"
REGION = "us-central1"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/repo/app:1.0"
FAST = Timings(queue=0.05, schedule=0.05, run=0.2, cancel=0.1, delete=0.1)
SH = ["/bin/sh", "-c"]


class TI:
    """The slice of a RuntimeTaskInstance the operators use (XComs kept in memory)."""

    def __init__(self, task_id: str = "task", try_number: int = 1, run_id: str = "manual__1") -> None:
        self.dag_id = "ops_dag"
        self.task_id = task_id
        self.run_id = run_id
        self.map_index = -1
        self.try_number = try_number
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get(key)

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


def ctx(ti: TI | None = None) -> Any:
    ti = ti or TI()
    return {"ti": ti, "task_instance": ti, "run_id": ti.run_id}


@pytest.fixture(scope="module")
def _emu() -> Iterator[Emulator]:
    with Emulator(run_commands=True, timings=FAST) as emu:
        yield emu


@pytest.fixture
def emu(_emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    _emu.reset()
    monkeypatch.setenv(clients.EMULATOR_HOST_ENV, _emu.target)
    # The production retry and polling logic, on a shorter clock.
    for knob in ("retry_initial_delay", "quota_initial_delay"):
        monkeypatch.setattr(BatchStreamingHook, knob, 0.02)
    for knob in ("retry_max_delay", "quota_max_delay"):
        monkeypatch.setattr(BatchStreamingHook, knob, 0.1)
    for knob, value in {
        "policy": Policy(floor=0.05, ceiling=0.1, push_floor=0.1, push_ceiling=0.2, prompt_window=0.05),
        "idle_close_after": 0.2,
    }.items():
        monkeypatch.setattr(JobWatcher, knob, value)
    yield _emu
    _emu.reset()


@pytest.fixture
def hook(emu: Emulator) -> BatchStreamingHook:
    return BatchStreamingHook()


def job_op(commands: list[str], **kwargs: Any) -> BatchStreamingJobOperator:
    args: dict[str, Any] = {
        "task_id": "task",
        "project_id": PROJECT,
        "region": REGION,
        "image_uri": IMAGE,
        "commands": commands,
        "preflight": False,
        "poll_interval": 0.1,
        **kwargs,
    }
    return BatchStreamingJobOperator(**args)


def run_trigger(deferred: TaskDeferred) -> dict[str, Any]:
    """What the triggerer does: run the trigger to its one event."""

    async def first() -> dict[str, Any]:
        async for event in deferred.trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger yielded nothing")

    return asyncio.run(first())


def wait_state(hook: BatchStreamingHook, name: str, *states: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = status.state_of(hook.get_job(name))
        if state in states:
            return state
        assert time.monotonic() < deadline, f"{name} stuck in {state}"
        time.sleep(0.05)


# --------------------------------------------------------------------------- the job operator


@pytest.mark.registry
def test_success_after_a_real_preflight(
    emu: Emulator, local_registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_batch_streaming.testing import tar_layer

    local_registry.push_image(f"{PROJECT}/repo/app", "1.0", [tar_layer({"hello.txt": b"hi\n"})])
    monkeypatch.setenv("BATCH_STREAMING_REGISTRY_URL", local_registry.url)
    ti = TI()
    op = job_op([*SH, "echo hello from $BATCH_TASK_INDEX"], preflight=True, task_count=2)
    result = op.execute(ctx(ti))
    assert result["state"] == "SUCCEEDED"
    assert result["job_id"] == op.job_id_for(ctx(ti)) and result["uid"]
    assert result["console_url"].startswith("https://console.cloud.google.com/batch/")
    assert "logs/query" in result["logs_url"]
    timeline = result["timeline"]
    for key in ("queued_seconds", "scheduled_seconds", "running_seconds"):
        assert timeline[key] is not None and timeline[key] >= 0
    assert ti.xcoms["preflight"]["ok"] is True
    assert ti.xcoms[BATCH_JOB_XCOM_KEY]["name"] == result["name"]


@pytest.mark.registry
def test_preflight_operator_on_the_local_registry(
    emu: Emulator, local_registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_batch_streaming.exceptions import PreflightFailedError
    from airflow_batch_streaming.testing import tar_layer

    local_registry.push_image(f"{PROJECT}/repo/app", "2.0", [tar_layer({"a": b"a"})])
    monkeypatch.setenv("BATCH_STREAMING_REGISTRY_URL", local_registry.url)
    image = f"{REGION}-docker.pkg.dev/{PROJECT}/repo/app:2.0"
    report = BatchStreamingPreflightOperator(
        task_id="pf", project_id=PROJECT, region=REGION, image_uri=image
    ).execute(ctx())
    assert report["ok"] and report["manifest"]["digest"].startswith("sha256:")
    missing = BatchStreamingPreflightOperator(
        task_id="pf", project_id=PROJECT, region="europe-west1", image_uri=f"{image}-missing"
    )
    with pytest.raises(PreflightFailedError) as info:
        missing.execute(ctx())
    assert {"image-not-found", "location-mismatch"} <= {f.code for f in info.value.report.errors}


def test_a_failing_command_names_its_exit_code_and_shows_its_output(emu: Emulator) -> None:
    with pytest.raises(BatchJobFailedError) as info:
        job_op([*SH, "echo hello; echo oh no >&2; exit 3"]).execute(ctx())
    error = info.value
    assert error.exit_codes == (3,) and error.failed_tasks == 1
    text = str(error)
    assert "exit code 3" in text and "[task 0] hello" in text and "[task 0] oh no" in text


def test_a_cancelled_job_raises_cancelled(emu: Emulator, hook: BatchStreamingHook) -> None:
    ti = TI()
    op = job_op([*SH, "sleep 30"])

    def cancel_when_running() -> None:
        deadline = time.monotonic() + 30
        while BATCH_JOB_XCOM_KEY not in ti.xcoms and time.monotonic() < deadline:
            time.sleep(0.02)
        name = ti.xcoms[BATCH_JOB_XCOM_KEY]["name"]
        wait_state(hook, name, "RUNNING")
        hook.cancel_job(name)

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    with pytest.raises(BatchJobCancelledError) as info:
        op.execute(ctx(ti))
    canceller.join()
    assert info.value.state == "CANCELLED"


def test_timeout_cancels_the_job(emu: Emulator, hook: BatchStreamingHook) -> None:
    ti = TI()
    with pytest.raises(BatchJobTimeoutError) as info:
        job_op([*SH, "sleep 30"], timeout=1.5).execute(ctx(ti))
    assert info.value.cancelled
    assert wait_state(hook, ti.xcoms[BATCH_JOB_XCOM_KEY]["name"], "CANCELLED") == "CANCELLED"


def test_on_kill_cancels_the_job(emu: Emulator, hook: BatchStreamingHook) -> None:
    ti = TI()
    op = job_op([*SH, "sleep 30"])
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(ctx(ti))
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while BATCH_JOB_XCOM_KEY not in ti.xcoms and time.monotonic() < deadline:
        time.sleep(0.02)
    wait_state(hook, ti.xcoms[BATCH_JOB_XCOM_KEY]["name"], "RUNNING")
    op.on_kill()
    worker.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], BatchJobCancelledError)


def test_deferred_success_and_failure(emu: Emulator) -> None:
    ti = TI()
    op = job_op([*SH, "echo deferred"], deferrable=True, timeout=60)
    with pytest.raises(TaskDeferred) as info:
        op.execute(ctx(ti))
    event = run_trigger(info.value)
    assert event["status"] == "success"
    result = job_op([*SH, "echo deferred"], deferrable=True).execute_complete(ctx(ti), event)
    assert result["state"] == "SUCCEEDED" and result["name"] == ti.xcoms[BATCH_JOB_XCOM_KEY]["name"]

    failing = job_op([*SH, "echo bad input; exit 4"], task_id="failing", deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        failing.execute(ctx(TI("failing")))
    event = run_trigger(info.value)
    assert event["status"] == "failed"
    with pytest.raises(BatchJobFailedError) as failed:
        failing.execute_complete(ctx(), event)
    assert failed.value.exit_codes == (4,) and "bad input" in str(failed.value)


def test_deferred_timeout_cancels_the_job(emu: Emulator, hook: BatchStreamingHook) -> None:
    ti = TI()
    op = job_op([*SH, "sleep 30"], deferrable=True, timeout=1.5)
    with pytest.raises(TaskDeferred) as info:
        op.execute(ctx(ti))
    event = run_trigger(info.value)
    assert event["status"] == "timeout" and event["cancelled"] is True
    with pytest.raises(BatchJobTimeoutError) as timed_out:
        op.execute_complete(ctx(ti), event)
    assert timed_out.value.cancelled
    wait_state(hook, event["job_name"], "CANCELLED")


# --------------------------------------------------------------------------- reliability


def test_a_lost_create_response_makes_exactly_one_job(emu: Emulator) -> None:
    emu.fault("CreateJob", "UNAVAILABLE", count=1, after_effect=True)
    result = job_op([*SH, "true"]).execute(ctx())
    assert result["state"] == "SUCCEEDED"
    assert emu.stats()["jobs"] == 1


def test_reruns_reattach_reuse_or_resubmit(emu: Emulator, hook: BatchStreamingHook) -> None:
    # Try 1 submits, and its worker "dies" (we stop waiting) while the job runs.
    first = job_op([*SH, "sleep 1.5; echo done"], wait_for_completion=False).execute(ctx(TI(try_number=1)))
    assert first["state"] in ("QUEUED", "SCHEDULED", "RUNNING")
    # The same try run again, then the next try: both wait on the same job.
    again = job_op([*SH, "sleep 1.5; echo done"], wait_for_completion=False).execute(ctx(TI(try_number=1)))
    assert again["name"] == first["name"]
    second = job_op([*SH, "sleep 1.5; echo done"]).execute(ctx(TI(try_number=2)))
    assert second["name"] == first["name"] and second["state"] == "SUCCEEDED"
    # A later try finds it SUCCEEDED: no new job.
    third = job_op([*SH, "sleep 1.5; echo done"], deferrable=True).execute(ctx(TI(try_number=3)))
    assert third["name"] == first["name"]
    assert emu.stats()["jobs"] == 1


def test_a_failed_job_is_rerun_on_the_next_try(emu: Emulator) -> None:
    with pytest.raises(BatchJobFailedError):
        job_op([*SH, "exit 1"]).execute(ctx(TI(try_number=1)))
    result = job_op([*SH, "true"]).execute(ctx(TI(try_number=2)))
    assert result["state"] == "SUCCEEDED"
    assert emu.stats()["jobs"] == 2


# --------------------------------------------------------------------------- the sensor


def submitted(commands: list[str]) -> str:
    """A job from an upstream task of its own DAG run (a distinct task instance each time)."""
    ti = TI("submit", run_id=f"manual__{uuid.uuid4().hex}")
    result = job_op(commands, task_id="submit", wait_for_completion=False).execute(ctx(ti))
    return str(result["name"])


def sensor(name: str, **kwargs: Any) -> BatchJobStateSensor:
    return BatchJobStateSensor(task_id="wait", job_name=name, poke_interval=0.1, timeout=60, **kwargs)


def test_sensor_poke_mode(emu: Emulator) -> None:
    name = submitted([*SH, "sleep 0.5"])
    ti = TI("wait")
    result = sensor(name).execute(ctx(ti))
    assert result["state"] == "SUCCEEDED" and result["name"] == name
    assert ti.xcoms[BATCH_JOB_XCOM_KEY]["name"] == name
    failed = submitted([*SH, "echo failing; exit 9"])
    with pytest.raises(BatchJobFailedError, match="exit code 9"):
        sensor(failed).execute(ctx(TI("wait")))


def test_sensor_reschedule_mode(emu: Emulator, hook: BatchStreamingHook) -> None:
    name = submitted([*SH, "sleep 1"])
    op = sensor(name, mode="reschedule")
    with pytest.raises(AirflowRescheduleException):
        op.execute(ctx(TI("wait")))
    wait_state(hook, name, "SUCCEEDED")
    assert sensor(name, mode="reschedule").execute(ctx(TI("wait")))["state"] == "SUCCEEDED"


def test_sensor_deferrable_mode(emu: Emulator, hook: BatchStreamingHook) -> None:
    name = submitted([*SH, "sleep 1"])
    op = sensor(name, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        op.execute(ctx(TI("wait")))
    event = run_trigger(info.value)
    assert op.execute_complete(ctx(), event)["state"] == "SUCCEEDED"
    # Already finished: no deferral at all.
    assert sensor(name, deferrable=True).execute(ctx(TI("wait")))["state"] == "SUCCEEDED"
    # The sensor does not own the job: its timeout leaves the job running.
    long = submitted([*SH, "sleep 30"])
    waiting = BatchJobStateSensor(task_id="w", job_name=long, poke_interval=0.1, timeout=1, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        waiting.execute(ctx(TI("w")))
    assert run_trigger(info.value)["status"] == "timeout"
    assert status.state_of(hook.get_job(long)) in status.ACTIVE


# --------------------------------------------------------------------------- logs


def test_logs_are_fetched_into_the_task_log(emu: Emulator) -> None:
    name = submitted([*SH, "echo first line; echo second line; echo a warning >&2"])
    sensor(name).execute(ctx(TI("wait")))
    emu.fault("ListLogEntries", "RESOURCE_EXHAUSTED", count=2)  # Logging's small read quota
    op = BatchJobLogsOperator(task_id="logs", job_name=name, include_agent_logs=True)
    with capture_logs() as logs:
        result = op.execute(ctx(TI("logs")))
    lines = {entry["event"]: entry["log_level"] for entry in logs}
    assert lines["[task 0] first line"] == "info"
    assert lines["[task 0] a warning"] == "warning"
    assert any(line.startswith("[agent]") for line in lines)
    assert result["entries"] >= 3 and not result["truncated"]
    assert result["by_severity"]["ERROR"] >= 1
    assert "[task 0] second line" in result["last_lines"]
    only_errors = BatchJobLogsOperator(task_id="logs", job_name=name, min_severity="ERROR", max_entries=1)
    capped = only_errors.execute(ctx(TI("logs")))
    assert capped["entries"] == 1 and capped["by_severity"] == {"ERROR": 1}


def test_logs_of_a_job_named_by_project_number(emu: Emulator) -> None:
    """A job name carrying the project number (as Pub/Sub messages and status events name
    jobs) still finds the logs: the query names logs by log_id(), not by a logName that
    would carry the number and match nothing."""
    from airflow_batch_streaming.emulator.common import project_number

    name = submitted([*SH, "echo numbered output"])
    sensor(name).execute(ctx(TI("wait")))
    by_number = name.replace(f"projects/{PROJECT}/", f"projects/{project_number(PROJECT)}/")
    result = BatchJobLogsOperator(task_id="logs", job_name=by_number).execute(ctx(TI("logs")))
    assert "[task 0] numbered output" in result["last_lines"]
    assert 'log_id("batch_task_logs")' in result["filter"] and "projects/" not in result["filter"]
    # What the old query did: a logName with the number matches nothing, as on Google.
    hook = BatchStreamingHook()
    uid = status.summarize(hook.get_job(name))["uid"]
    old = f'logName="{by_number.split("/locations")[0]}/logs/batch_task_logs" AND labels.job_uid="{uid}"'
    assert (
        hook.list_log_entries(project_number(PROJECT), old + ' AND timestamp>="2000-01-01T00:00:00Z"') == []
    )
