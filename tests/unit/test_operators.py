"""The operators' own logic, against an in-memory hook (the emulator tests use the real one)."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_batch_streaming import status
from airflow_batch_streaming._compat import TaskDeferralTimeout, TaskDeferred
from airflow_batch_streaming.exceptions import (
    BatchJobCancelledError,
    BatchJobFailedError,
    BatchJobTimeoutError,
    BatchStreamingError,
    PreflightFailedError,
)
from airflow_batch_streaming.links import BATCH_JOB_XCOM_KEY, BatchJobConsoleLink, BatchJobLogsLink
from airflow_batch_streaming.operators import (
    BatchJobLogsOperator,
    BatchStreamingJobOperator,
    BatchStreamingPreflightOperator,
)
from airflow_batch_streaming.operators.job import (
    LABEL_SPEC,
    LABEL_TI,
    LABEL_TRY,
    label_value,
    task_instance_labels,
)
from airflow_batch_streaming.spec import FIELD_NAMES, SpecError
from airflow_batch_streaming.triggers import BatchJobStateTrigger

# --import-mode=importlib puts no test directory on sys.path: the shared fakes sit next to us.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_fakes import (
    IMAGE,
    PROJECT,
    REGION,
    FakeHook,
    FakeTI,
    context,
    failure_events,
    install,
    job_name,
    log_entry,
)


def make_op(fake: FakeHook | None = None, **kwargs: Any) -> BatchStreamingJobOperator:
    args: dict[str, Any] = {
        "task_id": "task",
        "project_id": PROJECT,
        "region": REGION,
        "image_uri": IMAGE,
        "commands": ["echo", "hi"],
        "poll_interval": 0.001,
        **kwargs,
    }
    op = BatchStreamingJobOperator(**args)
    install(op, fake or FakeHook())
    return op


def run_to(fake: FakeHook, *states: str) -> None:
    """Script the job the next create makes to go through `states` on its next reads."""
    create = fake.create_job

    def scripted(**kwargs: Any) -> dict[str, Any]:
        job = create(**kwargs)
        fake.script[job["name"]] = list(states)
        return job

    fake.create_job = scripted  # type: ignore[method-assign]


def own_labels(ti: FakeTI, try_number: int) -> dict[str, str]:
    return task_instance_labels(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, try_number)


def earlier_job(fake: FakeHook, ti: FakeTI, try_number: int, state: str, **op_kwargs: Any) -> dict[str, Any]:
    """The job try `try_number` of `ti` made (with `op_kwargs` as its arguments), under its own name."""
    op = make_op(fake, **op_kwargs)
    then = context(
        FakeTI(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=ti.map_index,
            try_number=try_number,
        )
    )
    return fake.add_job(op.job_id_for(then), state, labels=op.build_job(then)["labels"])


# --------------------------------------------------------------------------- import cost


def test_importing_the_dag_surface_imports_no_google_client_or_grpc() -> None:
    code = (
        "import sys, airflow_batch_streaming.operators, airflow_batch_streaming.sensors, "
        "airflow_batch_streaming.links\n"
        "bad = sorted(m for m in sys.modules if m == 'grpc' or m.startswith(('grpc.', "
        "'google.cloud.batch_v1', 'google.cloud.logging')))\n"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------- constructor


def test_every_spec_field_is_a_templated_argument() -> None:
    params = inspect.signature(BatchStreamingJobOperator.__init__).parameters
    assert set(FIELD_NAMES) <= set(params)
    assert set(FIELD_NAMES) <= set(BatchStreamingJobOperator.template_fields)
    for name in ("project_id", "region", "job_id", "gcp_conn_id", "impersonation_chain", "job"):
        assert name in BatchStreamingJobOperator.template_fields
    renderers = BatchStreamingJobOperator.template_fields_renderers
    assert renderers["commands"] == renderers["environment"] == renderers["job"] == "json"


def test_static_problems_are_all_reported_at_import() -> None:
    with pytest.raises(SpecError) as info:
        make_op(
            image_uri="docker.io/library/ubuntu:22.04",
            task_count=0,
            environment={"1BAD": "x"},
        )
    text = str(info.value)
    assert len(info.value.problems) >= 3
    assert "task_count" in text and "not in Artifact Registry" in text and "1BAD" in text


def test_location_mismatch_is_an_import_error() -> None:
    with pytest.raises(SpecError, match="europe-west1"):
        make_op(region="europe-west1")


def test_templated_arguments_are_checked_after_rendering_only() -> None:
    make_op(
        project_id="{{ params.project }}",
        region="{{ params.region }}",
        image_uri="{{ params.image }}",
        commands="{{ params.command }}",
        task_count="{{ params.n }}",
        parallelism=4,  # would exceed the default task_count if task_count were ignored
    )
    make_op(image_uri="{{ params.image }}", region="europe-west1")  # image unknown: no location check


def test_preflight_false_skips_the_streaming_rules_but_not_the_spec() -> None:
    make_op(image_uri="docker.io/library/ubuntu:22.04", preflight=False)
    with pytest.raises(SpecError, match="task_count"):
        make_op(task_count=-1, preflight=False)


def test_non_streaming_jobs_skip_the_streaming_rules() -> None:
    make_op(image_uri="gcr.io/p/img:1", enable_image_streaming=False)


# --------------------------------------------------------------------------- building the job


def test_build_job_adds_task_instance_labels_and_parses_rendered_lists() -> None:
    op = make_op(labels={"team": "data", "airflow-try": "user"})
    op.commands = "['/bin/sh', '-c', 'echo hi']"  # a list rendered to text without native rendering
    ti = FakeTI(try_number=3)
    rest = op.build_job(context(ti))
    container = rest["taskGroups"][0]["taskSpec"]["runnables"][0]["container"]
    assert container["commands"] == ["/bin/sh", "-c", "echo hi"]
    assert container["enableImageStreaming"] is True
    spec = rest["labels"].pop(LABEL_SPEC)
    assert rest["labels"] == {"team": "data", **own_labels(ti, 3)}
    assert rest["logsPolicy"] == {"destination": "CLOUD_LOGGING"}
    # The spec hash ignores the try, and changes with anything submitted.
    assert op.build_job(context(FakeTI(try_number=1)))["labels"][LABEL_SPEC] == spec
    op.commands = ["/bin/sh", "-c", "echo bye"]
    assert op.build_job(context(ti))["labels"][LABEL_SPEC] != spec


def test_the_new_job_options_reach_the_job() -> None:
    op = make_op(
        provisioning_model="RESERVATION_BOUND",
        reservation="projects/p/zones/us-central1-a/reservations/r1",
        boot_disk={"image": "batch-cos", "size_gb": 50},
        runnable_timeout="10m",
        install_ops_agent=True,
        task_environments=[{"SHARD": "a"}, {"SHARD": "b"}],
        notifications=[{"pubsub_topic": "projects/p/topics/batch-events"}],
    )
    op.task_environments = '[{"SHARD": "a"}, {"SHARD": "b"}]'  # rendered to text: parsed back
    rest = op.build_job(context(FakeTI()))
    instance = rest["allocationPolicy"]["instances"][0]
    assert instance["policy"]["provisioningModel"] == "RESERVATION_BOUND"
    assert instance["policy"]["bootDisk"] == {"image": "batch-cos", "sizeGb": 50}
    assert instance["installOpsAgent"] is True
    group = rest["taskGroups"][0]
    assert group["taskSpec"]["runnables"][0]["timeout"] == "600s"
    assert group["taskEnvironments"] == [{"variables": {"SHARD": "a"}}, {"variables": {"SHARD": "b"}}]
    assert rest["notifications"][0]["message"] == {"type": "JOB_STATE_CHANGED"}
    with pytest.raises(SpecError, match="instance_template replaces the VM settings machine_type"):
        make_op(instance_template="tmpl", machine_type="e2-standard-4")


def test_label_values_satisfy_gcp_rules() -> None:
    value = label_value("My DAG.with/odd chars" * 5)
    assert len(value) <= 63
    assert all(c.islower() or c.isdigit() or c in "-_" for c in value)
    labels = task_instance_labels("D", "t", "r", None, 2)
    assert labels[LABEL_TRY] == "2" and len(labels[LABEL_TI]) == 20


def test_job_ids_are_deterministic_per_try_and_distinct_otherwise() -> None:
    op = make_op()
    ids = {
        op.job_id_for(context(FakeTI(try_number=1))),
        op.job_id_for(context(FakeTI(try_number=2))),
        op.job_id_for(context(FakeTI(map_index=0))),
        op.job_id_for(context(FakeTI(run_id="other"))),
    }
    assert len(ids) == 4
    assert op.job_id_for(context(FakeTI())) == op.job_id_for(context(FakeTI()))
    assert make_op(job_id="nightly").job_id_for(context()).startswith("nightly-")


def test_rendering_shows_the_job_as_json() -> None:
    """No private Airflow API: `job` is set in execute, and Airflow records the rendered
    fields again after the task (the public `overwrite_rtif_after_execution`)."""
    op = make_op(image_uri="{{ params.image }}", environment={"WHO": "{{ params.who }}"})
    assert "_do_render_template_fields" not in vars(BatchStreamingJobOperator)
    assert BatchStreamingJobOperator.overwrite_rtif_after_execution is True
    ctx = context(params={"image": IMAGE, "who": "world"})
    op.render_template_fields(ctx)
    assert op.image_uri == IMAGE
    install(op, FakeHook())
    op.preflight, op.wait_for_completion = False, False
    op.execute(ctx)
    assert op.job is not None
    assert op.job["taskGroups"][0]["taskSpec"]["environment"] == {"variables": {"WHO": "world"}}
    json.dumps(op.job)


# --------------------------------------------------------------------------- execute (worker)


def test_execute_waits_and_returns_the_summary_after_pushing_links() -> None:
    fake = FakeHook()
    run_to(fake, "SCHEDULED", "RUNNING", "SUCCEEDED")
    ctx = context()
    result = make_op(fake).execute(ctx)
    assert result["state"] == "SUCCEEDED"
    for key in ("name", "uid", "job_id", "console_url", "logs_url", "timeline"):
        assert result[key]
    ti = ctx["ti"]
    assert ti.xcoms[BATCH_JOB_XCOM_KEY]["name"] == result["name"]
    assert ti.xcoms[BatchJobConsoleLink.key] == result["console_url"]
    assert ti.xcoms[BatchJobLogsLink.key] == result["logs_url"]
    # This try's name is read first (GetJob, consistent); no ListJobs for a first try.
    assert fake.methods()[:3] == ["get_job", "is_service_enabled", "create_job"]
    assert "list_jobs" not in fake.methods()
    assert fake.methods().count("create_job") == 1


def test_failed_job_raises_with_exit_code_and_output() -> None:
    fake = FakeHook()
    run_to(fake, "RUNNING", "FAILED")
    fake.logs = [log_entry("hello"), log_entry("boom", severity="ERROR")]
    with pytest.raises(BatchJobFailedError) as info:
        make_op(fake).execute(context())
    error = info.value
    assert error.exit_codes == (3,)
    assert "exit code 3" in str(error) and "[task 0] hello" in str(error)
    assert error.output == ["[task 0] hello", "[task 0] boom"]
    assert "task 0 failed with exit code 3" in error.reason.lower()
    assert "list_tasks" in fake.methods()


def test_preempted_task_says_so() -> None:
    fake = FakeHook()
    name = job_name("x")
    fake.add_job("x", "FAILED", events=failure_events(50001))
    with pytest.raises(BatchJobFailedError, match="Spot VM preempted"):
        make_op(fake).execute_complete(context(), {"status": "failed", "job_name": name, "state": "FAILED"})


def test_transient_read_errors_are_tolerated_while_waiting() -> None:
    from google.api_core.exceptions import PermissionDenied, ServiceUnavailable

    fake = FakeHook()
    run_to(fake, "RUNNING", "SUCCEEDED")
    fake.get_errors = [ServiceUnavailable("blip"), ServiceUnavailable("blip")]
    assert make_op(fake, reattach=False).execute(context())["state"] == "SUCCEEDED"
    assert fake.methods().count("get_job") == 4  # two failed reads, RUNNING, SUCCEEDED: no retry on top
    fake = FakeHook()
    fake.get_errors = [PermissionDenied("no")]
    with pytest.raises(BatchStreamingError, match="no"):
        make_op(fake, reattach=False).execute(context())


def test_timeout_cancels_the_job() -> None:
    fake = FakeHook()
    run_to(fake, *["RUNNING"] * 10_000)
    with pytest.raises(BatchJobTimeoutError) as info:
        make_op(fake, timeout=0.05).execute(context())
    assert info.value.cancelled
    assert "cancel_job" in fake.methods()


def test_wait_for_completion_false_returns_at_once() -> None:
    fake = FakeHook()
    result = make_op(fake, wait_for_completion=False).execute(context())
    assert result["state"] == "QUEUED"
    assert fake.methods() == ["get_job", "is_service_enabled", "create_job"]  # the lookup, no wait


def test_preflight_errors_stop_the_submission() -> None:
    fake = FakeHook()
    fake.api_enabled = False
    with pytest.raises(PreflightFailedError, match="api-disabled"):
        make_op(fake).execute(context())
    assert "create_job" not in fake.methods()


def test_preflight_warnings_fail_only_when_asked() -> None:
    fake = FakeHook()
    with pytest.raises(PreflightFailedError):
        make_op(fake, preflight_fail_on_warnings=True).execute(context())  # the tag is mutable
    assert "create_job" not in fake.methods()
    fake = FakeHook()
    make_op(fake, wait_for_completion=False).execute(context())
    assert "create_job" in fake.methods()


def test_no_preflight_means_no_registry_or_api_call() -> None:
    fake = FakeHook()
    make_op(fake, preflight=False, wait_for_completion=False).execute(context())
    assert "is_service_enabled" not in fake.methods()


# --------------------------------------------------------------------------- reattaching


def test_reattaches_to_a_running_job_of_an_earlier_try() -> None:
    fake = FakeHook()
    ti = FakeTI(try_number=2)
    earlier = earlier_job(fake, ti, 1, "RUNNING")
    fake.script[earlier["name"]] = ["SUCCEEDED"]
    result = make_op(fake).execute(context(ti))
    assert result["name"] == earlier["name"]
    assert "create_job" not in fake.methods() and "is_service_enabled" not in fake.methods()


def test_a_succeeded_job_is_not_run_again() -> None:
    fake = FakeHook()
    ti = FakeTI(try_number=3)
    earlier_job(fake, ti, 1, "FAILED")
    done = earlier_job(fake, ti, 2, "SUCCEEDED")
    result = make_op(fake, deferrable=True).execute(context(ti))
    assert result["name"] == done["name"] and result["state"] == "SUCCEEDED"
    assert fake.methods() == ["get_job"] * 3  # tries 3, 2, 1 by name


def test_a_failed_job_is_rerun_as_a_new_job() -> None:
    fake = FakeHook()
    ti = FakeTI(try_number=2)
    failed = earlier_job(fake, ti, 1, "FAILED")
    other = fake.add_job("other-ti", "RUNNING", labels={LABEL_TI: "someone-else"})
    result = make_op(fake, wait_for_completion=False).execute(context(ti))
    assert result["name"] not in (failed["name"], other["name"])
    assert fake.methods().count("create_job") == 1


def test_reattach_false_always_creates_this_tries_job() -> None:
    fake = FakeHook()
    ti = FakeTI(try_number=2)
    earlier_job(fake, ti, 1, "SUCCEEDED")
    make_op(fake, reattach=False, wait_for_completion=False).execute(context(ti))
    assert fake.methods() == ["is_service_enabled", "create_job"]


def test_same_try_rerun_finds_its_own_job() -> None:
    fake = FakeHook()
    op = make_op(fake, wait_for_completion=False)
    first = op.execute(context())
    second = make_op(fake, wait_for_completion=False).execute(context())
    assert first["name"] == second["name"]
    assert len(fake.jobs) == 1


def test_records_the_job_in_the_task_state_store() -> None:
    class Store:
        def __init__(self) -> None:
            self.values: dict[str, Any] = {}

        def set(self, key: str, value: Any) -> None:
            self.values[key] = value

    store = Store()
    result = make_op(wait_for_completion=False).execute(context(task_state_store=store))
    assert store.values == {"batch_job_name": result["name"]}


# --------------------------------------------------------------------------- deferral


def test_defers_with_an_absolute_deadline_and_a_serializable_trigger() -> None:
    fake = FakeHook()
    ctx = context()
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        make_op(fake, deferrable=True, timeout=600).execute(ctx)
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    trigger = deferred.trigger
    assert isinstance(trigger, BatchJobStateTrigger)
    classpath, kwargs = trigger.serialize()
    module, _, cls = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), cls)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    json.dumps(kwargs)
    assert kwargs["cancel_on_kill"] is True and kwargs["cancel_on_timeout"] is True
    assert before + 590 < kwargs["end_time"] < time.time() + 610
    assert isinstance(deferred.timeout, timedelta) and deferred.timeout.total_seconds() > 600
    # The links are there while the task is deferred.
    assert ctx["ti"].xcoms[BATCH_JOB_XCOM_KEY]["name"] == kwargs["job_name"]
    assert fake.methods().count("get_job") == 1  # the lookup; the create response is the state check


def test_execute_complete_success_uses_the_event_summary() -> None:
    fake = FakeHook()
    summary = status.summarize(fake.add_job("j", "SUCCEEDED"))
    event = {"status": "success", "state": "SUCCEEDED", "job_name": summary["name"], "job": summary}
    assert make_op(fake).execute_complete(context(), event) == summary
    assert fake.calls == []


@pytest.mark.parametrize(
    ("event_status", "state", "error"),
    [
        ("failed", "FAILED", BatchJobFailedError),
        ("cancelled", "CANCELLED", BatchJobCancelledError),
        ("deleted", "DELETION_IN_PROGRESS", BatchJobCancelledError),
    ],
)
def test_execute_complete_failures(event_status: str, state: str, error: type[Exception]) -> None:
    fake = FakeHook()
    job = fake.add_job("j", state, events=failure_events(3) if state == "FAILED" else ())
    event = {"status": event_status, "state": state, "job_name": job["name"], "job": status.summarize(job)}
    with pytest.raises(error) as info:
        make_op(fake).execute_complete(context(), event)
    assert getattr(info.value, "state", None) == state
    if event_status == "deleted":
        assert "get_job" not in fake.methods()  # the job may be gone


@pytest.mark.parametrize("cancelled", [True, False])
def test_execute_complete_timeout(cancelled: bool) -> None:
    event = {
        "status": "timeout",
        "state": "RUNNING",
        "job_name": job_name("j"),
        "job": None,
        "cancelled": cancelled,
    }
    with pytest.raises(BatchJobTimeoutError) as info:
        make_op(timeout=5).execute_complete(context(), event)
    assert info.value.cancelled is cancelled and info.value.timeout == 5


@pytest.mark.parametrize(
    "event",
    [None, {}, {"status": "error", "job_name": job_name("j"), "message": "boom"}, {"status": "weird"}],
)
def test_execute_complete_errors(event: dict[str, Any] | None) -> None:
    with pytest.raises(BatchStreamingError):
        make_op().execute_complete(context(), event)


def test_deferral_timeout_still_cancels_the_job() -> None:
    fake = FakeHook()
    job = fake.add_job("j", "RUNNING")
    ti = FakeTI()
    ti.xcoms[BATCH_JOB_XCOM_KEY] = {"name": job["name"]}
    op = make_op(fake, timeout=5)
    with pytest.raises(BatchJobTimeoutError) as info:
        op.resume_execution("__fail__", {"error": "Trigger timeout"}, context(ti))
    assert info.value.cancelled and ("cancel_job", job["name"]) in fake.calls
    assert isinstance(info.value.__cause__, TaskDeferralTimeout)


# --------------------------------------------------------------------------- on_kill


def test_on_kill_cancels_the_job_being_waited_on() -> None:
    fake = FakeHook()
    op = make_op(fake)
    op.on_kill()
    assert fake.calls == []  # nothing created yet
    run_to(fake, *["RUNNING"] * 3)
    with pytest.raises(BatchJobTimeoutError):
        op = make_op(fake, timeout=0.01)
        op.execute(context())
    fake.calls.clear()
    op.on_kill()
    assert fake.methods() == ["cancel_job"]
    fake.calls.clear()
    op.cancel_on_kill = False
    op.on_kill()
    assert fake.calls == []


# --------------------------------------------------------------------------- serialization


def test_dag_serialization_keeps_links_and_template_fields() -> None:
    from airflow.sdk import DAG

    try:
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # before Airflow 3.3
        from airflow.serialization.serialized_objects import (  # type: ignore[attr-defined,no-redef]
            SerializedDAG as DagSerialization,
        )

    with DAG("ser", schedule=None) as dag:
        make_op(image_uri="{{ params.image }}", deferrable=True)
    data = DagSerialization.to_dict(dag)
    json.dumps(data)
    task = DagSerialization.from_dict(data).get_task("task")
    assert set(task.extra_links) == {"Batch Job", "Batch Job Logs"}
    assert "image_uri" in task.template_fields


# --------------------------------------------------------------------------- preflight operator


def preflight_op(fake: FakeHook, **kwargs: Any) -> BatchStreamingPreflightOperator:
    op = BatchStreamingPreflightOperator(task_id="pf", project_id=PROJECT, region=REGION, **kwargs)
    install(op, fake)
    return op


def test_preflight_operator_returns_the_report() -> None:
    fake = FakeHook()
    report = preflight_op(fake, image_uri=IMAGE).execute(context())
    assert report["ok"] is True and report["image"] == IMAGE
    assert [f["code"] for f in report["findings"]] == ["mutable-tag"]
    assert "is_service_enabled" in fake.methods()


def test_preflight_operator_fails_listing_every_error() -> None:
    fake = FakeHook()
    fake.api_enabled = False
    with pytest.raises(PreflightFailedError) as info:
        preflight_op(fake, image_uri="europe-docker.pkg.dev/p/r/i:1").execute(context())
    assert {f.code for f in info.value.report.errors} == {"location-mismatch", "api-disabled"}
    assert "location-mismatch" in str(info.value) and "api-disabled" in str(info.value)


def test_preflight_operator_checks_a_job_and_can_fail_on_warnings() -> None:
    fake = FakeHook()
    job = {
        "taskGroups": [
            {"taskSpec": {"runnables": [{"container": {"imageUri": IMAGE, "enableImageStreaming": True}}]}}
        ],
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    }
    assert preflight_op(fake, job=json.dumps(job), check_api=False).execute(context())["ok"]
    assert "is_service_enabled" not in fake.methods()
    with pytest.raises(PreflightFailedError):
        preflight_op(fake, job=job, fail_on_warnings=True).execute(context())
    assert BatchStreamingPreflightOperator.template_fields_renderers["job"] == "json"


def test_preflight_operator_needs_exactly_one_subject() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        BatchStreamingPreflightOperator(task_id="pf", project_id=PROJECT, region=REGION)
    with pytest.raises(ValueError, match="exactly one"):
        BatchStreamingPreflightOperator(
            task_id="pf", project_id=PROJECT, region=REGION, image_uri=IMAGE, job={}
        )


# --------------------------------------------------------------------------- logs operator


def logs_op(fake: FakeHook, **kwargs: Any) -> BatchJobLogsOperator:
    op = BatchJobLogsOperator(task_id="logs", job_name=job_name("j"), **kwargs)
    install(op, fake)
    return op


def test_logs_operator_copies_entries_into_the_task_log() -> None:
    from structlog.testing import capture_logs

    fake = FakeHook()
    job = fake.add_job("j", "SUCCEEDED", create_time="2024-05-01T10:00:00Z")
    fake.logs = [log_entry("one"), log_entry("oops", severity="ERROR", task=1), log_entry("two")]
    with capture_logs() as logs:
        result = logs_op(fake, last_lines=2).execute(context())
    assert result["entries"] == 3 and result["truncated"] is False
    assert result["by_severity"] == {"INFO": 2, "ERROR": 1}
    assert result["last_lines"] == ["[task 1] oops", "[task 0] two"]
    query = fake.calls[-1][1]
    assert query.startswith('log_id("batch_task_logs") AND ') and "projects/" not in query
    assert f'labels.job_uid="{job["uid"]}"' in query and 'timestamp>="2024-05-01T10:00:00Z"' in query
    lines = {entry["event"]: entry["log_level"] for entry in logs}
    assert lines == {**lines, "[task 0] one": "info", "[task 1] oops": "warning", "[task 0] two": "info"}


def test_logs_operator_caps_filters_and_includes_agent_logs() -> None:
    fake = FakeHook()
    fake.add_job("j", "FAILED")
    fake.logs = [log_entry(f"line {i}") for i in range(5)]
    result = logs_op(
        fake,
        max_entries=3,
        min_severity="warning",
        include_agent_logs=True,
        start_time="2024-01-01T00:00:00Z",
    ).execute(context())
    assert result["entries"] == 3 and result["truncated"] is True
    query = fake.calls[-1][1]
    assert "batch_agent_logs" in query and "severity>=WARNING" in query
    assert 'timestamp>="2024-01-01T00:00:00Z"' in query


def test_logs_operator_validates_its_arguments() -> None:
    with pytest.raises(ValueError) as info:
        BatchJobLogsOperator(task_id="l", job_name="nope", max_entries=0, min_severity="LOUD", start_time="x")
    text = str(info.value)
    assert all(word in text for word in ("max_entries", "min_severity", "start_time", "job_name"))
    BatchJobLogsOperator(task_id="l", job_name="{{ ti.xcom_pull(task_ids='submit')['name'] }}")


# --------------------------------------------------------------------------- links


def test_links_return_the_url_the_task_pushed(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.execution_time.xcom import XCom

    stored = {BatchJobConsoleLink.key: "https://console/job", BatchJobLogsLink.key: 42}
    monkeypatch.setattr(XCom, "get_value", classmethod(lambda cls, *, ti_key, key: stored.get(key)))
    op = make_op()
    assert BatchJobConsoleLink().get_link(op, ti_key=None) == "https://console/job"  # type: ignore[arg-type]
    assert BatchJobLogsLink().get_link(op, ti_key=None) == ""  # type: ignore[arg-type]
    assert BatchJobConsoleLink().xcom_key == "batch_job_console_url"
    assert {link.name for link in BatchStreamingJobOperator.operator_extra_links} == {
        "Batch Job",
        "Batch Job Logs",
    }


def test_rendered_arguments_are_checked_together_before_any_call() -> None:
    fake = FakeHook()
    op = make_op(fake, project_id="{{ params.project }}", task_count="{{ params.n }}")
    op.project_id, op.task_count = "", "zero"  # as rendered
    with pytest.raises(SpecError) as info:
        op.execute(context())
    assert any("project_id" in p for p in info.value.problems)
    assert any("task_count" in p for p in info.value.problems)
    assert fake.calls == []


# --------------------------------------------------------------------------- identity (issue 13)


class FakeDagRun:
    """The DAG run fields the identity reads (Airflow's execution API `DagRun`)."""

    def __init__(self, start: str = "2024-05-01T00:00:01.123456+00:00", clear_number: int = 0) -> None:
        from datetime import datetime

        self.start_date = datetime.fromisoformat(start)
        self.run_after = datetime.fromisoformat("2024-05-01T00:00:00+00:00")
        self.clear_number = clear_number


def test_the_run_stamp_separates_deployments_and_clears_but_not_retries() -> None:
    op = make_op()
    here = context(FakeTI(), dag_run=FakeDagRun())
    ids = {
        op.job_id_for(here),
        op.job_id_for(context(FakeTI(), dag_run=FakeDagRun(start="2024-05-01T00:00:02+00:00"))),  # elsewhere
        op.job_id_for(context(FakeTI(), dag_run=FakeDagRun(clear_number=1))),  # cleared
    }
    assert len(ids) == 3
    labels = {
        op.build_job(c)["labels"][LABEL_TI]
        for c in (here, context(FakeTI(), dag_run=FakeDagRun(clear_number=1)))
    }
    assert len(labels) == 2
    # A retry of the same run keeps the task instance label (only the try label changes).
    retry = context(FakeTI(try_number=2), dag_run=FakeDagRun())
    assert op.build_job(retry)["labels"][LABEL_TI] == op.build_job(here)["labels"][LABEL_TI]


def test_an_existing_job_of_someone_else_is_a_clear_error_not_an_adoption() -> None:
    fake = FakeHook()
    op = make_op(fake, wait_for_completion=False, reattach=False)
    ctx = context()
    fake.add_job(op.job_id_for(ctx), "SUCCEEDED", labels={LABEL_TI: "another-deployment", LABEL_SPEC: "x"})
    with pytest.raises(BatchStreamingError, match="already exists but was not made by this task instance"):
        op.execute(ctx)


def test_a_job_with_the_same_name_but_another_spec_is_not_adopted() -> None:
    fake = FakeHook()
    ti = FakeTI()
    earlier_job(fake, ti, 1, "SUCCEEDED", commands=["echo", "other input"])
    with pytest.raises(BatchStreamingError, match="already exists"):
        make_op(fake, wait_for_completion=False).execute(context(ti))
    assert fake.methods().count("create_job") == 1


def test_an_earlier_try_with_other_arguments_is_cancelled_not_reattached() -> None:
    fake = FakeHook()
    ti = FakeTI(try_number=2)
    stale = earlier_job(fake, ti, 1, "RUNNING", commands=["echo", "old"])
    result = make_op(fake, wait_for_completion=False).execute(context(ti))
    assert result["name"] != stale["name"]
    assert ("cancel_job", stale["name"]) in fake.calls
    assert fake.methods().count("create_job") == 1


def test_tries_beyond_the_name_lookups_are_found_by_label_and_a_refused_filter_degrades() -> None:
    from google.api_core.exceptions import InvalidArgument

    from airflow_batch_streaming.operators.job import NAME_LOOKUPS

    fake = FakeHook()
    ti = FakeTI(try_number=NAME_LOOKUPS + 2)
    old = earlier_job(fake, ti, 1, "RUNNING")
    fake.script[old["name"]] = ["SUCCEEDED"]
    result = make_op(fake).execute(context(ti))
    assert result["name"] == old["name"]
    assert fake.methods().count("get_job") >= NAME_LOOKUPS and "list_jobs" in fake.methods()

    refusing = FakeHook()
    old = earlier_job(refusing, ti, 1, "RUNNING")

    def refuse(*_: Any, **__: Any) -> list[Any]:
        refusing.calls.append(("list_jobs", None))
        raise InvalidArgument("filter not supported")

    refusing.list_jobs = refuse  # type: ignore[method-assign]
    made = make_op(refusing, wait_for_completion=False).execute(context(ti))
    assert made["name"] != old["name"] and refusing.methods().count("create_job") == 1


def test_a_kill_during_the_create_can_cancel_the_job_it_makes() -> None:
    fake = FakeHook()
    op = make_op(fake, wait_for_completion=False, preflight=False)
    create = fake.create_job

    def killed_while_creating(**kwargs: Any) -> dict[str, Any]:
        job = create(**kwargs)  # the job exists; the answer has not come back yet
        op.on_kill()
        return job

    fake.create_job = killed_while_creating  # type: ignore[method-assign]
    op.execute(context())
    (created,) = fake.jobs
    assert ("cancel_job", created) in fake.calls


# --------------------------------------------------------------------------- mapped tasks, deadlines


def test_deferral_timeout_of_a_mapped_task_cancels_its_own_job() -> None:
    """Airflow 3.3 returns a list from xcom_pull without map_indexes for a mapped task."""
    fake = FakeHook()
    store: dict[tuple[str, str, int], Any] = {}
    jobs = {i: fake.add_job(f"j{i}", "RUNNING") for i in range(3)}
    for i, job in jobs.items():
        FakeTI(map_index=i, store=store).xcom_push(BATCH_JOB_XCOM_KEY, {"name": job["name"]})
    assert isinstance(FakeTI(store=store).xcom_pull(task_ids="task", key=BATCH_JOB_XCOM_KEY), list)
    with pytest.raises(BatchJobTimeoutError) as info:
        make_op(fake, timeout=5).resume_execution(
            "__fail__", {"error": "Trigger timeout"}, context(FakeTI(map_index=1, store=store))
        )
    assert info.value.cancelled
    assert [name for method, name in fake.calls if method == "cancel_job"] == [jobs[1]["name"]]


def test_deferred_wait_ends_at_execution_timeout_when_that_is_sooner() -> None:
    from datetime import UTC, datetime

    fake = FakeHook()
    ti = FakeTI()
    ti.start_date = datetime.now(UTC)  # type: ignore[attr-defined]
    with pytest.raises(TaskDeferred) as info:
        make_op(fake, deferrable=True, timeout=600, execution_timeout=timedelta(seconds=30)).execute(
            context(ti)
        )
    end_time = info.value.trigger.serialize()[1]["end_time"]
    assert ti.start_date.timestamp() + 29 < end_time < ti.start_date.timestamp() + 31  # type: ignore[attr-defined]
    with pytest.raises(BatchJobTimeoutError) as timed_out:
        make_op(fake, execution_timeout=timedelta(seconds=30)).execute_complete(
            context(ti), {"status": "timeout", "job_name": job_name("x"), "cancelled": True}
        )
    assert timed_out.value.timeout == 30 and timed_out.value.cancelled


def test_the_hook_is_the_only_retry_layer_and_respects_the_deadline() -> None:
    """Persistent quota errors: the hook's attempts, once, and no sleep past the deadline."""
    from google.api_core import exceptions as gexc

    from airflow_batch_streaming.hooks.batch import BatchStreamingHook

    hook = BatchStreamingHook.__new__(BatchStreamingHook)
    calls: list[float] = []
    slept: list[float] = []

    def quota() -> None:
        calls.append(time.time())
        raise gexc.ResourceExhausted("quota")

    import airflow_batch_streaming.hooks.batch as hook_module

    real_sleep = hook_module.time.sleep
    try:
        hook_module.time.sleep = slept.append  # type: ignore[assignment]
        with pytest.raises(gexc.ResourceExhausted):
            hook._retry(quota, action="reading", attempts=6)
        assert len(calls) == 6 and len(slept) == 5
        calls.clear()
        slept.clear()
        hook.deadline = time.time() + 3  # the first quota backoff (5 s +-20%) would cross it
        with pytest.raises(gexc.ResourceExhausted):
            hook._retry(quota, action="reading", attempts=6)
        assert len(calls) == 1 and slept == []
    finally:
        hook_module.time.sleep = real_sleep  # type: ignore[assignment]


def test_tail_output_waits_for_lines_still_being_ingested() -> None:
    from datetime import UTC, datetime

    from airflow_batch_streaming.operators import _common

    fake = FakeHook()
    job = fake.add_job("j", "FAILED")
    job["updateTime"] = datetime.now(UTC).isoformat()  # it just ended
    arriving = [[log_entry("first")], [log_entry("first"), log_entry("last words")]]
    reads: list[int] = []

    def list_log_entries(*_: Any, **__: Any) -> list[dict[str, Any]]:
        reads.append(1)
        return list(reversed(arriving[min(len(reads), len(arriving)) - 1]))

    fake.list_log_entries = list_log_entries  # type: ignore[method-assign]
    slept: list[float] = []
    assert _common.tail_output(fake, job, 20, sleep=slept.append) == ["[task 0] first", "[task 0] last words"]
    assert len(reads) == 3 and len(slept) == 2  # the third read found nothing new: done
    # A job that ended long ago is read once.
    job["updateTime"] = "2024-01-01T00:00:00Z"
    reads.clear()
    _common.tail_output(fake, job, 20, sleep=slept.append)
    assert len(reads) == 1


def test_notification_topic_adds_the_job_notification_and_reaches_the_trigger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = "projects/p/topics/batch-events"
    monkeypatch.setenv("BATCH_STREAMING_NOTIFICATION_TOPIC", topic)  # the configured default
    rest = make_op().build_job(context(FakeTI()))
    assert rest["notifications"] == [{"pubsubTopic": topic, "message": {"type": "JOB_STATE_CHANGED"}}]
    assert "notifications" not in make_op(notification_topic="").build_job(context(FakeTI()))  # off
    given = make_op(notifications=[{"pubsub_topic": topic, "new_job_state": "FAILED"}])
    assert len(given.build_job(context(FakeTI()))["notifications"]) == 1  # the user's own stands
    with pytest.raises(TaskDeferred) as info:
        make_op(FakeHook(), deferrable=True).execute(context())
    assert info.value.trigger.serialize()[1]["notification_topic"] == topic
    with pytest.raises(SpecError, match="notifications"):
        make_op(notification_topic="my-topic")
