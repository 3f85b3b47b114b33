"""status.py on hand-built jobs shaped like the real API's REST JSON."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import pytest

from airflow_batch_streaming import status

NAME = "projects/my-proj/locations/us-central1/jobs/train-1"
UID = "train-1-7c3a5b2e-1f4c-4a3b-9c1e-4d5e6f708192"
NUMBERED = "projects/123456789012/locations/us-central1/jobs/train-1"


def transition(old: str, new: str, at: str, extra: str = "", **fields: Any) -> dict[str, Any]:
    event = {
        "type": "STATUS_CHANGED",
        "description": f"Job state is set from {old} to {new} for job {NUMBERED}.{extra}",
        "eventTime": at,
    }
    event.update(fields)
    return event


def task_failed_detail(index: int, code: int, why: str = "") -> str:
    return (
        " Job failed due to task failure. Specifically, task with index "
        f'{index} failed due to the following task event: "Task state is updated from RUNNING to FAILED '
        f'on zones/us-central1-a/instances/8123456789{why} with exit code {code}."'
    )


def make_job(state: str, events: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "name": NAME,
        "uid": UID,
        "createTime": "2024-05-01T10:00:00.123456789Z",
        "updateTime": "2024-05-01T10:05:00Z",
        "labels": {"team": "ml"},
        "status": {"state": state, "statusEvents": events},
    }
    job["status"].update(extra)
    return job


SUCCEEDED_JOB = make_job(
    "SUCCEEDED",
    [
        transition("QUEUED", "SCHEDULED", "2024-05-01T10:00:10.5Z"),
        transition("SCHEDULED", "RUNNING", "2024-05-01T10:01:00Z"),
        transition("RUNNING", "SUCCEEDED", "2024-05-01T10:03:00Z"),
    ],
    runDuration="120.250s",
    taskGroups={"group0": {"counts": {"SUCCEEDED": "4"}}},
)


def failed_job(code: int, why: str = "", index: int = 2) -> dict[str, Any]:
    return make_job(
        "FAILED",
        [
            transition("QUEUED", "SCHEDULED", "2024-05-01T10:00:10Z"),
            transition("SCHEDULED", "RUNNING", "2024-05-01T10:01:00Z"),
            transition(
                "RUNNING",
                "FAILED",
                "2024-05-01T10:03:00Z",
                task_failed_detail(index, code, why),
                taskExecution={"exitCode": code},
            ),
        ],
        taskGroups={"group0": {"counts": {"FAILED": "1", "SUCCEEDED": "3"}}},
    )


# ------------------------------------------------------------------ names and URLs


def test_parse_job_name() -> None:
    assert status.parse_job_name(NAME) == ("my-proj", "us-central1", "train-1")
    assert status.parse_job_name("projects/example.com:p/locations/r/jobs/j") == ("example.com:p", "r", "j")
    assert status.job_name("my-proj", "us-central1", "train-1") == NAME
    assert status.parent_of(NAME) == "projects/my-proj/locations/us-central1"


@pytest.mark.parametrize(
    "bad",
    [
        "train-1",
        "",
        "projects/p/locations/r/jobs/",
        "projects/p/jobs/j",
        f"{NAME}/tasks/0",
        "projects/p q/locations/r/jobs/j",
    ],
)
def test_parse_job_name_rejects_bad_names(bad: str) -> None:
    with pytest.raises(ValueError, match="projects/PROJECT/locations/REGION/jobs/JOB_ID"):
        status.parse_job_name(bad)


def test_parse_job_name_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="not a Batch job name"):
        status.parse_job_name(None)  # type: ignore[arg-type]


def test_console_url() -> None:
    assert status.console_url(NAME) == (
        "https://console.cloud.google.com/batch/jobsDetail/regions/us-central1/jobs/train-1/details?project=my-proj"
    )


def test_logs_url_holds_an_encoded_query_for_both_logs() -> None:
    url = status.logs_url("my-proj", UID)
    assert url.startswith("https://console.cloud.google.com/logs/query;query=")
    assert url.endswith("?project=my-proj")
    encoded = url.split(";query=", 1)[1].split("?", 1)[0]
    assert " " not in encoded and '"' not in encoded and "\n" not in encoded
    query = unquote(encoded)
    assert query == (f'(log_id("batch_task_logs") OR log_id("batch_agent_logs"))\nlabels.job_uid="{UID}"')


def test_logs_query_bounds_time_from_the_create_time() -> None:
    query = status.logs_query("p", "u", "2024-05-01T10:00:00.5Z")
    assert query.endswith('timestamp>="2024-05-01T09:59:00.5Z"')


# ------------------------------------------------------------------ reading


def test_state_of_accepts_names_numbers_and_snake_case() -> None:
    assert status.state_of({"status": {"state": "RUNNING"}}) == "RUNNING"
    assert status.state_of({"status": {"state": 8}}) == "CANCELLED"
    assert status.state_of({"status": {"state": "7"}}) == "CANCELLATION_IN_PROGRESS"
    assert status.state_of({}) == "STATE_UNSPECIFIED"
    assert status.state_of(json.dumps({"status": {"state": "QUEUED"}})) == "QUEUED"


def test_reads_a_batch_v1_job() -> None:
    from google.cloud import batch_v1

    job = batch_v1.Job(
        name=NAME,
        uid=UID,
        status=batch_v1.JobStatus(
            state=batch_v1.JobStatus.State.FAILED,
            status_events=[
                batch_v1.StatusEvent(
                    type_="STATUS_CHANGED",
                    description=f"Job state is set from RUNNING to FAILED for job {NUMBERED}."
                    + task_failed_detail(0, 137),
                    task_execution=batch_v1.TaskExecution(exit_code=137),
                )
            ],
        ),
    )
    assert status.state_of(job) == "FAILED"
    details = status.failure_details(job)
    assert details["exit_codes"] == [137]
    assert details["failed_task_indexes"] == [0]
    # Job.to_dict (snake_case keys, enum numbers) reads the same.
    as_dict = batch_v1.Job.to_dict(job)
    assert status.state_of(as_dict) == "FAILED"
    assert status.failure_details(as_dict)["exit_codes"] == [137]


def test_task_counts_sum_groups_and_name_enum_numbers() -> None:
    job = {
        "status": {
            "taskGroups": {"a": {"counts": {"RUNNING": "2", "5": 1}}, "b": {"counts": {"SUCCEEDED": 3}}}
        }
    }
    assert status.task_counts(job) == {"RUNNING": 2, "SUCCEEDED": 4}


def test_status_events_are_sorted_by_time() -> None:
    job = make_job(
        "RUNNING",
        [
            transition("SCHEDULED", "RUNNING", "2024-05-01T10:01:00Z"),
            transition("QUEUED", "SCHEDULED", "2024-05-01T10:00:10Z"),
        ],
    )
    assert [e["description"][:36] for e in status.status_events(job)] == [
        "Job state is set from QUEUED to SCHE",
        "Job state is set from SCHEDULED to R",
    ]


# ------------------------------------------------------------------ timeline


def test_timeline_of_a_finished_job() -> None:
    t = status.timeline(SUCCEEDED_JOB)
    assert t["create_time"] == "2024-05-01T10:00:00.123456Z"
    assert t["queued_at"] == t["create_time"]
    assert t["scheduled_at"] == "2024-05-01T10:00:10.5Z"
    assert t["running_at"] == "2024-05-01T10:01:00Z"
    assert t["finished_at"] == "2024-05-01T10:03:00Z"
    assert t["queued_seconds"] == 10.377
    assert t["scheduled_seconds"] == 49.5
    assert t["running_seconds"] == 120.0
    assert t["total_seconds"] == pytest.approx(179.877, abs=1e-3)
    assert t["states"] == {
        "SCHEDULED": "2024-05-01T10:00:10.5Z",
        "RUNNING": "2024-05-01T10:01:00Z",
        "SUCCEEDED": "2024-05-01T10:03:00Z",
    }
    assert [(x["from"], x["to"]) for x in t["transitions"]] == [
        ("QUEUED", "SCHEDULED"),
        ("SCHEDULED", "RUNNING"),
        ("RUNNING", "SUCCEEDED"),
    ]
    json.dumps(t)


def test_timeline_of_a_running_job_leaves_open_phases_empty() -> None:
    job = make_job(
        "RUNNING",
        [
            transition("QUEUED", "SCHEDULED", "2024-05-01T10:00:10Z"),
            transition("SCHEDULED", "RUNNING", "2024-05-01T10:01:00Z"),
        ],
    )
    t = status.timeline(job)
    assert t["scheduled_seconds"] == 50.0
    assert t["running_seconds"] is None
    assert t["finished_at"] is None
    assert t["total_seconds"] is None


def test_timeline_of_a_job_without_events() -> None:
    t = status.timeline({"createTime": "2024-05-01T10:00:00Z", "status": {"state": "QUEUED"}})
    assert t["queued_at"] == "2024-05-01T10:00:00Z"
    assert t["queued_seconds"] is None
    assert t["transitions"] == []


def test_timeline_cancelled_while_queued() -> None:
    job = make_job(
        "CANCELLED",
        [
            transition("QUEUED", "CANCELLATION_IN_PROGRESS", "2024-05-01T10:00:30Z"),
            transition("CANCELLATION_IN_PROGRESS", "CANCELLED", "2024-05-01T10:00:40Z"),
        ],
    )
    t = status.timeline(job)
    assert t["finished_at"] == "2024-05-01T10:00:30Z"
    assert t["queued_seconds"] == pytest.approx(29.877, abs=1e-3)
    assert t["running_at"] is None


def test_timeline_uses_run_duration_when_running_time_is_unknown() -> None:
    job = make_job(
        "SUCCEEDED",
        [transition("RUNNING", "SUCCEEDED", "2024-05-01T10:03:00Z")],
        runDuration="42.5s",
    )
    assert status.timeline(job)["running_seconds"] == 42.5


# ------------------------------------------------------------------ failures


def test_failure_reason_names_the_task_and_exit_code() -> None:
    details = status.failure_details(failed_job(1))
    assert details["state"] == "FAILED"
    assert details["failed_task_indexes"] == [2]
    assert details["failed_tasks"] == 1
    assert details["exit_codes"] == [1]
    assert details["task_exit_codes"] == {"2": [1]}
    assert details["preempted"] is False
    assert details["reason"].startswith(
        "Task 2 failed with exit code 1. Event: Job state is set from RUNNING"
    )
    json.dumps(details)


def test_failure_reason_explains_preemption() -> None:
    reason = status.failure_reason(failed_job(50001, " due to Spot VM preemption"))
    assert "Task 2 failed with exit code 50001 (Spot VM preempted)" in reason
    assert status.failure_details(failed_job(50001))["preempted"] is True


def test_failure_reason_explains_max_run_duration() -> None:
    reason = status.failure_reason(failed_job(50005, index=0))
    assert reason.startswith("Task 0 failed with exit code 50005 (max run duration exceeded)")


def test_failure_reason_adds_exit_codes_of_listed_tasks() -> None:
    tasks = [
        {
            "name": f"{NAME}/taskGroups/group0/tasks/2",
            "status": {
                "state": "FAILED",
                "statusEvents": [
                    {
                        "description": "Task state is updated from ASSIGNED to RUNNING.",
                        "taskState": "RUNNING",
                    },
                    {
                        "description": "Task state is updated from RUNNING to FAILED on zones/z/instances/1 "
                        "with exit code 1.",
                        "taskExecution": {"exitCode": 1},
                        "taskState": "FAILED",
                    },
                ],
            },
        },
        {
            "name": f"{NAME}/taskGroups/group0/tasks/3",
            "status": {
                "state": 4,
                "statusEvents": [
                    {
                        "description": "Task state is updated from RUNNING to FAILED",
                        "taskExecution": {"exitCode": 3},
                    }
                ],
            },
        },
        {"name": f"{NAME}/taskGroups/group0/tasks/0", "status": {"state": "SUCCEEDED"}},
    ]
    details = status.failure_details(failed_job(1), tasks)
    assert details["failed_task_indexes"] == [2, 3]
    assert details["task_exit_codes"] == {"2": [1], "3": [3]}
    assert details["exit_codes"] == [1, 3]
    assert details["failed_tasks"] == 2
    assert "task 3 failed with exit code 3" in details["reason"]


def test_task_events_in_the_job_are_not_counted_twice() -> None:
    job = failed_job(1)
    job["status"]["statusEvents"].insert(
        2,
        {
            "type": "STATUS_CHANGED",
            "description": "Task state is updated from RUNNING to FAILED on zones/z/instances/1 "
            "with exit code 1.",
            "eventTime": "2024-05-01T10:02:59Z",
            "taskExecution": {"exitCode": 1},
            "taskState": "FAILED",
        },
    )
    details = status.failure_details(job)
    assert details["exit_codes"] == [1]
    assert "other task attempts" not in details["reason"]


def test_failure_reason_of_a_batch_error_without_tasks() -> None:
    error = (
        "Batch Error: code - CODE_GCE_ZONE_RESOURCE_POOL_EXHAUSTED, description - The zone "
        "'projects/p/zones/us-central1-a' does not have enough resources available."
    )
    job = make_job(
        "FAILED",
        [
            transition("QUEUED", "SCHEDULED", "2024-05-01T10:00:10Z"),
            transition("SCHEDULED", "FAILED", "2024-05-01T10:01:00Z", " " + error),
        ],
        taskGroups={"group0": {"counts": {"FAILED": "2"}}},
    )
    reason = status.failure_reason(job)
    assert reason.startswith("2 tasks failed. Event: Job state is set from SCHEDULED to FAILED")
    assert "CODE_GCE_ZONE_RESOURCE_POOL_EXHAUSTED" in reason


def test_failure_reason_of_a_cancelled_job() -> None:
    job = make_job(
        "CANCELLED",
        [
            transition("RUNNING", "CANCELLATION_IN_PROGRESS", "2024-05-01T10:02:00Z"),
            transition("CANCELLATION_IN_PROGRESS", "CANCELLED", "2024-05-01T10:02:30Z"),
        ],
    )
    reason = status.failure_reason(job)
    assert reason.startswith("The job was cancelled. Event: Job state is set from CANCELLATION_IN_PROGRESS")


def test_no_failure_reason_for_a_successful_job() -> None:
    assert status.failure_reason(SUCCEEDED_JOB) == ""
    assert status.failure_details(SUCCEEDED_JOB)["exit_codes"] == []


# ------------------------------------------------------------------ summary


def test_summarize_is_json_safe_and_complete() -> None:
    summary = status.summarize(failed_job(50001))
    assert json.loads(json.dumps(summary)) == summary
    assert set(summary) >= {
        "name", "uid", "job_id", "project_id", "region", "state", "create_time", "update_time",
        "run_duration_seconds", "task_counts", "timeline", "console_url", "logs_url", "reason",
    }  # fmt: skip
    assert summary["job_id"] == "train-1"
    assert summary["project_id"] == "my-proj"
    assert summary["region"] == "us-central1"
    assert summary["state"] == "FAILED"
    assert summary["task_counts"] == {"FAILED": 1, "SUCCEEDED": 3}
    assert summary["console_url"] == status.console_url(NAME)
    assert summary["logs_url"] == status.logs_url("my-proj", UID, "2024-05-01T10:00:00.123456Z")
    assert "Spot VM preempted" in summary["reason"]


def test_summarize_a_running_job_has_no_reason() -> None:
    job = make_job("RUNNING", [transition("SCHEDULED", "RUNNING", "2024-05-01T10:01:00Z")])
    summary = status.summarize(job)
    assert summary["reason"] == ""
    assert summary["run_duration_seconds"] is None


def test_summarize_tolerates_a_job_without_a_name() -> None:
    summary = status.summarize({"status": {"state": "QUEUED"}})
    assert summary["console_url"] is None
    assert summary["logs_url"] is None


def test_state_sets_are_consistent() -> None:
    assert {"SUCCEEDED", "FAILED", "CANCELLED", "DELETION_IN_PROGRESS"} == status.TERMINAL
    assert not status.TERMINAL & status.ACTIVE
    assert set(status.STATES) == status.TERMINAL | status.ACTIVE
    assert status.SUCCESS | status.FAILURE == status.TERMINAL


# ------------------------------------------------------------------ waiting


@pytest.mark.parametrize(
    ("state", "targets", "failures", "expected"),
    [
        ("SUCCEEDED", ("SUCCEEDED",), status.DEFAULT_FAILURE_STATES, "success"),
        ("FAILED", ("SUCCEEDED",), status.DEFAULT_FAILURE_STATES, "failed"),
        ("CANCELLED", ("SUCCEEDED",), status.DEFAULT_FAILURE_STATES, "cancelled"),
        ("DELETION_IN_PROGRESS", ("SUCCEEDED",), status.DEFAULT_FAILURE_STATES, "deleted"),
        ("CANCELLATION_IN_PROGRESS", ("SUCCEEDED",), status.DEFAULT_FAILURE_STATES, None),
        ("CANCELLATION_IN_PROGRESS", ("SUCCEEDED",), ("CANCELLATION_IN_PROGRESS",), "cancelled"),
        ("RUNNING", ("SUCCEEDED",), status.DEFAULT_FAILURE_STATES, None),
        ("QUEUED", ("SUCCEEDED",), status.DEFAULT_FAILURE_STATES, None),
        ("RUNNING", ("RUNNING",), ("FAILED",), "success"),
        ("SUCCEEDED", ("RUNNING",), ("FAILED",), "failed"),  # terminal, but not what was asked for
        ("CANCELLED", ("RUNNING",), (), "cancelled"),  # terminal states always end a wait
    ],
)
def test_outcome_of(
    state: str, targets: tuple[str, ...], failures: tuple[str, ...], expected: str | None
) -> None:
    assert status.outcome_of(state, targets, failures) == expected


def test_wait_event_shape() -> None:
    event = status.wait_event("failed", NAME, job=failed_job(3))
    assert set(event) == {"status", "state", "job_name", "job", "message"}
    assert event["state"] == "FAILED"
    assert event["message"].startswith(f"Batch job {NAME} ended FAILED: Task 2 failed with exit code 3")
    json.dumps(event)
    assert status.wait_event("deleted", NAME)["job"] is None
    assert status.wait_event("timeout", NAME, message="late", cancelled=True)["cancelled"] is True
    with pytest.raises(ValueError, match="unknown wait outcome"):
        status.wait_event("done", NAME)


@pytest.mark.parametrize(
    ("state", "age", "expected"),
    [
        ("QUEUED", 0, 5.0),
        ("SCHEDULED", 120, 5.0),
        ("QUEUED", 420, 17.5),
        ("QUEUED", 10_000, 30.0),
        (None, 0, 5.0),
        ("RUNNING", 0, 10.0),
        ("RUNNING", 300, 35.0),
        ("RUNNING", 600, 60.0),
        ("RUNNING", 86_400, 60.0),
        ("CANCELLATION_IN_PROGRESS", 1000, 5.0),
    ],
)
def test_adaptive_interval(state: str | None, age: float, expected: float) -> None:
    assert status.adaptive_interval(state, age) == pytest.approx(expected)
