"""BatchJobStateSensor: poke, reschedule and deferrable logic against an in-memory hook."""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import PokeReturnValue

from airflow_batch_streaming import status
from airflow_batch_streaming._compat import AirflowRescheduleException, AirflowSensorTimeout, TaskDeferred
from airflow_batch_streaming.exceptions import (
    BatchJobCancelledError,
    BatchJobFailedError,
    BatchStreamingError,
)
from airflow_batch_streaming.links import BATCH_JOB_XCOM_KEY, BatchJobConsoleLink
from airflow_batch_streaming.sensors import BatchJobStateSensor
from airflow_batch_streaming.triggers import BatchJobStateTrigger

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_fakes import FakeHook, context, failure_events, install, job_name, log_entry

NAME = job_name("j")


def sensor(fake: FakeHook, **kwargs: Any) -> BatchJobStateSensor:
    args: dict[str, Any] = {"task_id": "wait", "job_name": NAME, "poke_interval": 0.001, **kwargs}
    op = BatchJobStateSensor(**args)
    install(op, fake)
    return op


def test_poke_reports_progress_and_pushes_links_once() -> None:
    fake = FakeHook()
    fake.add_job("j", "RUNNING")
    op = sensor(fake)
    ctx = context()
    assert op.poke(ctx) is False
    assert ctx["ti"].xcoms[BATCH_JOB_XCOM_KEY]["name"] == NAME
    assert ctx["ti"].xcoms[BatchJobConsoleLink.key].startswith("https://console.cloud.google.com/batch/")
    fake.set_state(NAME, "SUCCEEDED")
    result = op.poke(ctx)
    assert isinstance(result, PokeReturnValue) and result.is_done
    summary = result.xcom_value
    assert isinstance(summary, dict)
    assert summary["state"] == "SUCCEEDED" and summary["name"] == NAME
    assert ctx["ti"].pushes.count(BATCH_JOB_XCOM_KEY) == 1


def test_poke_mode_returns_the_summary() -> None:
    fake = FakeHook()
    fake.add_job("j", "QUEUED")
    fake.script[NAME] = ["SCHEDULED", "RUNNING", "SUCCEEDED"]
    assert sensor(fake).execute(context())["state"] == "SUCCEEDED"


def test_failure_states_raise_our_errors_with_the_output() -> None:
    fake = FakeHook()
    fake.add_job("j", "FAILED", events=failure_events(7))
    fake.logs = [log_entry("starting"), log_entry("disk full", severity="ERROR")]
    with pytest.raises(BatchJobFailedError) as info:
        sensor(fake).poke(context())
    assert info.value.exit_codes == (7,) and "[task 0] disk full" in str(info.value)
    fake.set_state(NAME, "CANCELLED")
    with pytest.raises(BatchJobCancelledError):
        sensor(fake).poke(context())


def test_a_terminal_state_that_is_no_target_fails_instead_of_hanging() -> None:
    fake = FakeHook()
    fake.add_job("j", "SUCCEEDED")
    with pytest.raises(BatchStreamingError, match="not one of the target states"):
        sensor(fake, target_states=["RUNNING"]).poke(context())


def test_custom_targets() -> None:
    fake = FakeHook()
    fake.add_job("j", "RUNNING")
    assert sensor(fake, target_states=["RUNNING", "SUCCEEDED"]).poke(context())


def test_transient_errors_mean_poke_again() -> None:
    from google.api_core.exceptions import PermissionDenied, ServiceUnavailable

    fake = FakeHook()
    fake.add_job("j", "SUCCEEDED")
    fake.get_errors = [ServiceUnavailable("blip")]
    assert sensor(fake).poke(context()) is False
    fake.get_errors = [PermissionDenied("no")]
    with pytest.raises(PermissionDenied):
        sensor(fake).poke(context())


def test_reschedule_mode_frees_the_slot() -> None:
    fake = FakeHook()
    fake.add_job("j", "RUNNING")
    op = sensor(fake, mode="reschedule", poke_interval=30)
    with pytest.raises(AirflowRescheduleException):
        op.execute(context())
    fake.set_state(NAME, "SUCCEEDED")
    assert op.execute(context())["state"] == "SUCCEEDED"


def test_deferrable_pokes_once_then_defers_without_owning_the_job() -> None:
    fake = FakeHook()
    fake.add_job("j", "RUNNING")
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        sensor(fake, deferrable=True, timeout=120, poke_interval=7, failure_states=["FAILED"]).execute(
            context()
        )
    assert fake.methods() == ["get_job"]
    trigger = info.value.trigger
    assert isinstance(trigger, BatchJobStateTrigger)
    classpath, kwargs = trigger.serialize()
    module, _, cls = classpath.rpartition(".")
    assert getattr(importlib.import_module(module), cls)(**kwargs).serialize() == (classpath, kwargs)
    json.dumps(kwargs)
    assert kwargs["cancel_on_kill"] is False and kwargs["cancel_on_timeout"] is False
    assert kwargs["target_states"] == ["SUCCEEDED"] and kwargs["failure_states"] == ["FAILED"]
    assert kwargs["poll_interval"] == 7
    assert before + 110 < kwargs["end_time"] < time.time() + 130
    assert info.value.method_name == "execute_complete"


def test_deferrable_listens_on_the_jobs_notification_topic() -> None:
    """Push for a job the sensor does not own: the topic comes from the job's own notifications."""
    topic = "projects/p/topics/batch-job-states"
    fake = FakeHook()
    job = fake.add_job("j", "RUNNING")
    for notifications, want in [
        ([], None),
        ([{"pubsubTopic": topic, "message": {"type": "TASK_STATE_CHANGED"}}], None),
        ([{"pubsubTopic": topic}], None),  # no message: Batch sends nothing
        ([{"pubsubTopic": topic, "message": {"type": "JOB_STATE_CHANGED"}}], topic),
        ([{"pubsubTopic": topic, "message": {"newJobState": "SUCCEEDED"}}], topic),
    ]:
        job["notifications"] = notifications
        with pytest.raises(TaskDeferred) as info:
            sensor(fake, deferrable=True).execute(context())
        assert info.value.trigger.serialize()[1]["notification_topic"] == want, notifications


def test_deferrable_does_not_defer_a_finished_job() -> None:
    fake = FakeHook()
    fake.add_job("j", "SUCCEEDED")
    assert sensor(fake, deferrable=True).execute(context())["state"] == "SUCCEEDED"


def test_execute_complete_success() -> None:
    fake = FakeHook()
    summary = status.summarize(fake.add_job("j", "SUCCEEDED"))
    event = {"status": "success", "state": "SUCCEEDED", "job_name": NAME, "job": summary}
    assert sensor(fake).execute_complete(context(), event) == summary
    assert fake.calls == []


@pytest.mark.parametrize(
    ("event_status", "state", "error"),
    [
        ("failed", "FAILED", BatchJobFailedError),
        ("cancelled", "CANCELLED", BatchJobCancelledError),
        ("deleted", "DELETION_IN_PROGRESS", BatchJobCancelledError),
        ("timeout", "RUNNING", AirflowSensorTimeout),
        ("error", None, BatchStreamingError),
        ("bogus", None, BatchStreamingError),
    ],
)
def test_execute_complete_failures(event_status: str, state: str | None, error: type[Exception]) -> None:
    fake = FakeHook()
    job = fake.add_job("j", state or "RUNNING", events=failure_events(3) if state == "FAILED" else ())
    event = {
        "status": event_status,
        "state": state,
        "job_name": NAME,
        "job": status.summarize(job),
        "message": "m",
    }
    with pytest.raises(error):
        sensor(fake).execute_complete(context(), event)


def test_execute_complete_without_event() -> None:
    with pytest.raises(BatchStreamingError, match="without a trigger event"):
        sensor(FakeHook()).execute_complete(context(), None)


def test_timeout_can_soft_fail_when_deferred() -> None:
    from airflow_batch_streaming._compat import AirflowSkipException

    op = sensor(FakeHook(), soft_fail=True)
    with pytest.raises(AirflowSkipException):
        op.resume_execution(
            "execute_complete",
            {
                "event": {
                    "status": "timeout",
                    "state": "RUNNING",
                    "job_name": NAME,
                    "job": None,
                    "message": "",
                }
            },
            context(),
        )


def test_state_lists_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown states"):
        BatchJobStateSensor(task_id="w", job_name=NAME, target_states=["DONE"])
    with pytest.raises(ValueError, match="both target and failure"):
        BatchJobStateSensor(task_id="w", job_name=NAME, target_states=["FAILED"])
    BatchJobStateSensor(task_id="w", job_name="{{ ti.xcom_pull(task_ids='submit')['name'] }}")
    op = sensor(FakeHook(), job_name="not-a-job-name")
    with pytest.raises(ValueError, match="job_name"):
        op.poke(context())


def test_templated_fields() -> None:
    assert {"job_name", "target_states", "failure_states"} <= set(BatchJobStateSensor.template_fields)
    op = sensor(FakeHook(), job_name="{{ params.job }}")
    op.render_template_fields(context(params={"job": NAME}))
    assert op.job_name == NAME


def test_templated_state_lists_are_parsed_back_into_lists() -> None:
    fake = FakeHook()
    fake.add_job("j", "RUNNING")
    op = sensor(fake, target_states="{{ params.targets }}", failure_states="{{ params.failures }}")
    op.target_states, op.failure_states = "['RUNNING']", "FAILED, CANCELLED"  # as rendered to text
    result = op.poke(context())
    assert isinstance(result, PokeReturnValue) and result.is_done
    assert op.target_states == ["RUNNING"] and op.failure_states == ["FAILED", "CANCELLED"]
    op.target_states = "['RUNING']"
    with pytest.raises(ValueError, match="RUNING"):
        op.poke(context())


def test_poke_interval_zero_defers_with_the_adaptive_interval() -> None:
    fake = FakeHook()
    fake.add_job("j", "RUNNING")
    with pytest.raises(TaskDeferred) as info:
        sensor(fake, poke_interval=0, deferrable=True).execute(context())
    assert info.value.trigger.serialize()[1]["poll_interval"] is None
