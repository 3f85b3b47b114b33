"""BatchService and Operations through the real google-cloud-batch sync client (label-driven jobs)."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from emulator_support import (
    LOCATION,
    PARENT,
    PROJECT,
    container_job,
    descriptions,
    exit_codes,
    seconds,
    wait_for,
)
from google.api_core import exceptions as gexc
from google.cloud import batch_v1
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.emulator.common import project_number

pytestmark = pytest.mark.emulator

State = batch_v1.JobStatus.State
TaskState = batch_v1.TaskStatus.State
SLOW = {"emulator-queue-ms": "200", "emulator-schedule-ms": "200", "emulator-run-ms": "400"}


def test_create_job_fills_what_batch_fills(batch: batch_v1.BatchServiceClient) -> None:
    # What the real CreateJob answers (recorded responses, real-api-facts.md).
    job = batch.create_job(
        parent=PARENT, job=container_job(task_count=3), job_id="first-job-with-a-long-name"
    )
    assert job.name == f"{PARENT}/jobs/first-job-with-a-long-name"  # the project ID, as requested
    assert re.fullmatch(r"first-job-with-a-l-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{5}", job.uid)
    assert job.status.state == State.QUEUED
    assert job.status.run_duration.total_seconds() == 0 and "runDuration" in type(job).to_json(job)
    assert job.create_time and job.update_time == job.create_time
    number = project_number(PROJECT)
    group = job.task_groups[0]
    assert (
        group.name
        == f"projects/{number}/locations/{LOCATION}/jobs/first-job-with-a-long-name/taskGroups/group0"
    )
    assert group.parallelism == 3
    assert group.task_spec.compute_resource.cpu_milli == 2000
    policy = job.allocation_policy
    assert policy.labels == {"batch-job-id": "first-job-with-a-long-name"}
    assert list(policy.location.allowed_locations) == [
        f"regions/{LOCATION}",
        f"zones/{LOCATION}-a",
        f"zones/{LOCATION}-b",
        f"zones/{LOCATION}-c",
    ]
    assert policy.service_account.email == f"{number}-compute@developer.gserviceaccount.com"
    assert "group0" not in job.status.task_groups  # no tasks while QUEUED
    again = batch.get_job(name=job.name)
    assert again.uid == job.uid and again.task_groups[0].task_spec.runnables[0].container.commands == ["true"]


def test_job_id_is_generated_when_missing(batch: batch_v1.BatchServiceClient) -> None:
    job = batch.create_job(parent=PARENT, job=container_job())
    assert job.name.startswith(f"{PARENT}/jobs/job-")


@pytest.mark.parametrize(
    ("parent", "job_id", "message"),
    [
        ("projects/p/regions/us-central1", "ok", "parent"),
        (PARENT, "Bad_ID", "job_id"),
        (PARENT, "-lead", "job_id"),
        (PARENT, "trail-", "job_id"),
        (PARENT, "a" * 64, "job_id"),
    ],
)
def test_create_job_checks_names(
    batch: batch_v1.BatchServiceClient, parent: str, job_id: str, message: str
) -> None:
    with pytest.raises(gexc.InvalidArgument, match=message):
        batch.create_job(parent=parent, job=container_job(), job_id=job_id)


def test_create_job_reports_every_problem_at_once(batch: batch_v1.BatchServiceClient) -> None:
    job = batch_v1.Job(
        priority=200,
        labels={"Env": "x", "ok": "UPPER", "goog-x": "1", "batch-job-id": "mine"},
        allocation_policy=batch_v1.AllocationPolicy(
            location=batch_v1.AllocationPolicy.LocationPolicy(allowed_locations=["zones/us-west1-a"])
        ),
        task_groups=[batch_v1.TaskGroup(task_spec=batch_v1.TaskSpec(max_retry_count=2))],
    )
    with pytest.raises(gexc.InvalidArgument) as info:
        batch.create_job(parent=PARENT, job=job, job_id="bad-job")
    message = info.value.message
    for fragment in (
        "priority",
        "'Env'",
        "'UPPER'",
        "'goog-x' uses a reserved prefix",
        "'batch-job-id' uses a reserved prefix",
        "zones/us-west1-a not in the job's region us-central1",
        "at least one runnable",
    ):
        assert fragment in message


def test_create_job_retry_count_out_of_range_is_googles_answer(batch: batch_v1.BatchServiceClient) -> None:
    job = container_job()
    job.task_groups[0].task_spec.max_retry_count = 11
    with pytest.raises(gexc.OutOfRange) as info:
        batch.create_job(parent=PARENT, job=job, job_id="eleven", retry=None)
    assert info.value.message == "max_retry_count with value 11 is not in between 0 and 10"
    job.task_groups[0].task_spec.max_retry_count = 10
    assert (
        batch.create_job(parent=PARENT, job=job, job_id="ten").task_groups[0].task_spec.max_retry_count == 10
    )


def test_create_job_label_limit(batch: batch_v1.BatchServiceClient) -> None:
    job = container_job(labels={f"k{i}": "v" for i in range(64)})
    with pytest.raises(gexc.InvalidArgument, match="at most 63 custom labels"):
        batch.create_job(parent=PARENT, job=job, job_id="many-labels", retry=None)
    job = container_job(labels={f"k{i}": "v" for i in range(63)})
    assert len(batch.create_job(parent=PARENT, job=job, job_id="enough-labels").labels) == 63


def test_create_job_rejects_bad_request_ids_and_emulator_labels(batch: batch_v1.BatchServiceClient) -> None:
    for request_id in ("not-a-uuid", str(uuid.UUID(int=0))):
        request = batch_v1.CreateJobRequest(parent=PARENT, job=container_job(), request_id=request_id)
        with pytest.raises(gexc.InvalidArgument, match="request_id"):
            batch.create_job(request=request)
    with pytest.raises(gexc.InvalidArgument, match="unknown emulator label"):
        batch.create_job(parent=PARENT, job=container_job(labels={"emulator-outcom": "fail"}))
    with pytest.raises(gexc.InvalidArgument, match="emulator-outcome"):
        batch.create_job(parent=PARENT, job=container_job(labels={"emulator-outcome": "explode"}))


def test_duplicate_job_id_is_already_exists(batch: batch_v1.BatchServiceClient) -> None:
    batch.create_job(parent=PARENT, job=container_job(), job_id="twice")
    with pytest.raises(gexc.AlreadyExists):
        batch.create_job(parent=PARENT, job=container_job(), job_id="twice")


def test_request_id_makes_create_idempotent(emulator: Emulator, batch: batch_v1.BatchServiceClient) -> None:
    request_id = str(uuid.uuid4())
    first = batch.create_job(
        request=batch_v1.CreateJobRequest(
            parent=PARENT, job_id="idem", job=container_job(), request_id=request_id
        )
    )
    # The same request again (even naming another job ID) answers with the first job.
    second = batch.create_job(
        request=batch_v1.CreateJobRequest(
            parent=PARENT, job_id="idem-2", job=container_job(), request_id=request_id
        )
    )
    assert second.uid == first.uid and second.name == first.name
    assert emulator.stats()["jobs"] == 1
    other = batch.create_job(
        request=batch_v1.CreateJobRequest(
            parent=PARENT, job_id="idem-3", job=container_job(), request_id=str(uuid.uuid4())
        )
    )
    assert other.uid != first.uid


def test_get_job_not_found(batch: batch_v1.BatchServiceClient) -> None:
    with pytest.raises(gexc.NotFound):
        batch.get_job(name=f"{PARENT}/jobs/nope", retry=None)
    with pytest.raises(gexc.InvalidArgument):
        batch.get_job(name="jobs/nope", retry=None)


def test_success_path(batch: batch_v1.BatchServiceClient) -> None:
    created = batch.create_job(parent=PARENT, job=container_job(labels=SLOW, task_count=2), job_id="happy")
    job, seen = wait_for(batch, created.name)
    assert seen == ["QUEUED", "SCHEDULED", "RUNNING", "SUCCEEDED"]
    # Google names the job with the project number in its status events.
    by_number = f"projects/{project_number(PROJECT)}/locations/{LOCATION}/jobs/happy"
    assert descriptions(job) == [
        f"Job state is set from QUEUED to SCHEDULED for job {by_number}.",
        f"Job state is set from SCHEDULED to RUNNING for job {by_number}.",
        f"Job state is set from RUNNING to SUCCEEDED for job {by_number}.",
    ]
    assert job.status.task_groups["group0"].counts == {"SUCCEEDED": 2}
    assert 0.35 <= seconds(job.status.run_duration) <= 0.5
    assert job.update_time == job.status.status_events[-1].event_time
    tasks = list(batch.list_tasks(parent=f"{created.name}/taskGroups/group0"))
    assert [t.status.state for t in tasks] == [TaskState.SUCCEEDED] * 2
    assert [e.description for e in tasks[0].status.status_events][
        -1
    ] == "Task state is updated from RUNNING to SUCCEEDED."


def test_failure_path_carries_exit_code(batch: batch_v1.BatchServiceClient) -> None:
    labels = {"emulator-outcome": "fail", "emulator-exit-code": "3"}
    created = batch.create_job(parent=PARENT, job=container_job(labels=labels), job_id="sad")
    job, seen = wait_for(batch, created.name)
    assert seen[-1] == "FAILED" and "RUNNING" in seen
    assert exit_codes(job) == [3]
    last = job.status.status_events[-1].description
    by_number = f"projects/{project_number(PROJECT)}/locations/{LOCATION}/jobs/sad"
    assert last.startswith(  # no space after "sad." (recorded)
        f"Job state is set from RUNNING to FAILED for job {by_number}.Job failed due to task failure."
    )
    assert "task with index 0" in last and "with exit code 3." in last
    assert job.status.task_groups["group0"].counts == {"FAILED": 1}
    task = batch.get_task(name=f"{created.name}/taskGroups/group0/tasks/0")
    assert task.status.state == TaskState.FAILED
    assert task.status.status_events[-1].task_execution.exit_code == 3


def test_preemption_without_retry_fails_with_50001(batch: batch_v1.BatchServiceClient) -> None:
    created = batch.create_job(parent=PARENT, job=container_job(labels={"emulator-outcome": "preempt"}))
    job, _ = wait_for(batch, created.name)
    assert job.status.state == State.FAILED
    assert exit_codes(job) == [50001]
    assert "due to Spot Preemption with exit code 50001." in descriptions(job)[-2]  # docs' wording


def test_preemption_is_retried_by_lifecycle_policy(batch: batch_v1.BatchServiceClient) -> None:
    policy = batch_v1.LifecyclePolicy(
        action=batch_v1.LifecyclePolicy.Action.RETRY_TASK,
        action_condition=batch_v1.LifecyclePolicy.ActionCondition(exit_codes=[50001]),
    )
    job = container_job(
        labels={"emulator-outcome": "preempt"}, max_retry_count=2, lifecycle_policies=[policy]
    )
    created = batch.create_job(parent=PARENT, job=job)
    done, _ = wait_for(batch, created.name)
    assert done.status.state == State.SUCCEEDED
    assert exit_codes(done) == [50001]
    task = batch.get_task(name=f"{created.name}/taskGroups/group0/tasks/0")
    assert "Task state is updated from FAILED to ASSIGNED." in [
        e.description for e in task.status.status_events
    ]


def test_retries_follow_max_retry_count_and_fail_task_policy(batch: batch_v1.BatchServiceClient) -> None:
    retried = batch.create_job(
        parent=PARENT,
        job=container_job(labels={"emulator-outcome": "fail", "emulator-run-ms": "50"}, max_retry_count=2),
    )
    fail_fast = batch_v1.LifecyclePolicy(
        action=batch_v1.LifecyclePolicy.Action.FAIL_TASK,
        action_condition=batch_v1.LifecyclePolicy.ActionCondition(exit_codes=[1]),
    )
    not_retried = batch.create_job(
        parent=PARENT,
        job=container_job(
            labels={"emulator-outcome": "fail"}, max_retry_count=2, lifecycle_policies=[fail_fast]
        ),
    )
    flaky = batch.create_job(
        parent=PARENT,
        job=container_job(
            labels={"emulator-outcome": "fail", "emulator-fail-attempts": "1", "emulator-run-ms": "50"},
            max_retry_count=1,
        ),
    )
    assert exit_codes(wait_for(batch, retried.name)[0]) == [1, 1, 1]
    assert exit_codes(wait_for(batch, not_retried.name)[0]) == [1]
    flaky_job = wait_for(batch, flaky.name)[0]
    assert flaky_job.status.state == State.SUCCEEDED and exit_codes(flaky_job) == [1]


def test_one_failing_task_among_many(batch: batch_v1.BatchServiceClient) -> None:
    labels = {
        "emulator-outcome": "fail",
        "emulator-fail-tasks": "1",
        "emulator-exit-code": "7",
        "emulator-run-ms": "100",
    }
    created = batch.create_job(parent=PARENT, job=container_job(labels=labels, task_count=4, parallelism=2))
    job, _ = wait_for(batch, created.name)
    assert job.status.state == State.FAILED
    # Tasks 0 and 1 run first; 1 fails, so 2 and 3 never start.
    assert job.status.task_groups["group0"].counts == {"SUCCEEDED": 1, "FAILED": 1, "UNEXECUTED": 2}
    tasks = {
        t.name.rsplit("/", 1)[1]: t.status.state
        for t in batch.list_tasks(parent=f"{created.name}/taskGroups/group0")
    }
    assert tasks == {
        "0": TaskState.SUCCEEDED,
        "1": TaskState.FAILED,
        "2": TaskState.UNEXECUTED,
        "3": TaskState.UNEXECUTED,
    }


def test_parallelism_spreads_tasks_over_time(batch: batch_v1.BatchServiceClient) -> None:
    labels = {"emulator-run-ms": "150"}
    created = batch.create_job(parent=PARENT, job=container_job(labels=labels, task_count=4, parallelism=2))
    job, _ = wait_for(batch, created.name)
    assert job.status.state == State.SUCCEEDED
    assert 0.29 <= seconds(job.status.run_duration) <= 0.35  # two waves


def test_max_run_duration_fails_with_50005(batch: batch_v1.BatchServiceClient) -> None:
    job = container_job(labels={"emulator-run-seconds": "30"}, max_run_seconds=0.2)
    created = batch.create_job(parent=PARENT, job=job)
    done, _ = wait_for(batch, created.name)
    assert done.status.state == State.FAILED and exit_codes(done) == [50005]


def test_no_resources_fails_from_scheduled(batch: batch_v1.BatchServiceClient) -> None:
    created = batch.create_job(parent=PARENT, job=container_job(labels={"emulator-outcome": "no-resources"}))
    job, seen = wait_for(batch, created.name)
    assert seen[-2:] == ["SCHEDULED", "FAILED"]
    assert "CODE_GCE_ZONE_RESOURCE_POOL_EXHAUSTED" in descriptions(job)[-1]


def test_list_jobs_pages_filters_and_orders(batch: batch_v1.BatchServiceClient) -> None:
    for i in range(5):
        labels = {"team": "a" if i % 2 == 0 else "b", "emulator-queue-seconds": "60"}
        batch.create_job(parent=PARENT, job=container_job(labels=labels), job_id=f"list-{i}")
    batch.create_job(
        parent=f"projects/{PROJECT}/locations/europe-west1", job=container_job(), job_id="list-eu"
    )
    pages = list(batch.list_jobs(request={"parent": PARENT, "page_size": 2}).pages)
    assert [len(p.jobs) for p in pages] == [2, 2, 1]
    names = [j.name.rsplit("/", 1)[1] for p in pages for j in p.jobs]
    assert names == [f"list-{i}" for i in range(5)]

    def ids(**request: object) -> list[str]:
        return [j.name.rsplit("/", 1)[1] for j in batch.list_jobs(request={"parent": PARENT, **request})]

    assert ids(filter='labels.team="a"') == ["list-0", "list-2", "list-4"]
    assert ids(filter='labels."team"="b" AND status.state=QUEUED') == ["list-1", "list-3"]
    assert ids(filter='status.state="RUNNING"') == []
    assert ids(filter='NOT labels.team="a" OR name="x"') == ["list-1", "list-3"]
    assert ids(filter='(labels.team="a" OR labels.team="b") AND NOT name:"list-4"') == [
        f"list-{i}" for i in range(4)
    ]
    assert ids(order_by="name desc", page_size=2) == [f"list-{i}" for i in reversed(range(5))]
    assert ids(order_by="create_time desc")[0] == "list-4"
    all_locations = [j.name for j in batch.list_jobs(parent=f"projects/{PROJECT}/locations/-")]
    assert len(all_locations) == 6
    with pytest.raises(gexc.InvalidArgument, match="filter"):
        list(batch.list_jobs(request={"parent": PARENT, "filter": "colour=red"}, retry=None))
    with pytest.raises(gexc.InvalidArgument, match="order_by"):
        list(batch.list_jobs(request={"parent": PARENT, "order_by": "uid"}, retry=None))


def test_cancel_job(batch: batch_v1.BatchServiceClient) -> None:
    created = batch.create_job(
        parent=PARENT, job=container_job(labels={"emulator-run-seconds": "60"}, task_count=2)
    )
    wait_for(batch, created.name, lambda j: j.status.state == State.RUNNING)
    operation = batch.cancel_job(name=created.name)
    assert operation.metadata.verb == "cancel" and operation.metadata.target == created.name
    assert isinstance(operation.result(timeout=10), batch_v1.CancelJobResponse)
    job, _ = wait_for(batch, created.name)
    assert job.status.state == State.CANCELLED
    by_number = created.name.replace(f"projects/{PROJECT}/", f"projects/{project_number(PROJECT)}/")
    assert descriptions(job)[-2:] == [
        f"Job state is set from RUNNING to CANCELLATION_IN_PROGRESS for job {by_number}.",
        f"Job state is set from CANCELLATION_IN_PROGRESS to CANCELLED for job {by_number}.",
    ]
    assert job.status.task_groups["group0"].counts == {"FAILED": 2}
    with pytest.raises(gexc.FailedPrecondition):
        batch.cancel_job(name=created.name)


def test_cancel_passes_through_cancellation_in_progress(batch: batch_v1.BatchServiceClient) -> None:
    labels = {"emulator-queue-seconds": "60", "emulator-cancel-ms": "300"}
    created = batch.create_job(parent=PARENT, job=container_job(labels=labels))
    batch.cancel_job(name=created.name)
    job, seen = wait_for(batch, created.name)
    assert seen == ["CANCELLATION_IN_PROGRESS", "CANCELLED"]
    assert job.status.task_groups["group0"].counts == {"UNEXECUTED": 1}


def test_delete_job(batch: batch_v1.BatchServiceClient) -> None:
    labels = {"emulator-delete-ms": "300"}
    created = batch.create_job(parent=PARENT, job=container_job(labels=labels), job_id="doomed")
    operation = batch.delete_job(name=created.name)
    assert operation.metadata.verb == "delete"
    assert batch.get_job(name=created.name).status.state == State.DELETION_IN_PROGRESS
    operation.result(timeout=10)
    with pytest.raises(gexc.NotFound):
        batch.get_job(name=created.name, retry=None)
    assert [j.name for j in batch.list_jobs(parent=PARENT)] == []
    # The ID is free again once the job is gone.
    assert batch.create_job(parent=PARENT, job=container_job(), job_id="doomed").uid != created.uid


def test_operations_service(batch: batch_v1.BatchServiceClient) -> None:
    created = batch.create_job(parent=PARENT, job=container_job(labels={"emulator-delete-ms": "0"}))
    operation = batch.delete_job(name=created.name)
    name = operation.operation.name
    assert name.startswith(f"{PARENT}/operations/operation-")
    time.sleep(0.05)
    fetched = batch.get_operation(request=operations_pb2.GetOperationRequest(name=name))
    assert fetched.done and fetched.response.Is(empty_pb2.Empty.DESCRIPTOR)
    meta = batch_v1.OperationMetadata.pb()()
    assert fetched.metadata.Unpack(meta) and meta.verb == "delete" and meta.end_time.seconds
    listed = batch.list_operations(request=operations_pb2.ListOperationsRequest(name=PARENT))
    assert [op.name for op in listed.operations] == [name]
    batch.delete_operation(request=operations_pb2.DeleteOperationRequest(name=name))
    with pytest.raises(gexc.NotFound):
        batch.get_operation(request=operations_pb2.GetOperationRequest(name=name), retry=None)


def test_list_and_get_tasks(batch: batch_v1.BatchServiceClient) -> None:
    labels = {"emulator-outcome": "fail", "emulator-fail-tasks": "0_2", "emulator-run-ms": "50"}
    created = batch.create_job(parent=PARENT, job=container_job(labels=labels, task_count=5))
    wait_for(batch, created.name)
    group = f"{created.name}/taskGroups/group0"
    pages = list(batch.list_tasks(request={"parent": group, "page_size": 2}).pages)
    assert [len(p.tasks) for p in pages] == [2, 2, 1]
    failed = [
        t.name.rsplit("/", 1)[1]
        for t in batch.list_tasks(request={"parent": group, "filter": "State=FAILED"})
    ]
    assert failed == ["0", "2"]
    assert batch.get_task(name=f"{group}/tasks/4").status.state == TaskState.SUCCEEDED
    with pytest.raises(gexc.NotFound):
        batch.get_task(name=f"{group}/tasks/5", retry=None)
    with pytest.raises(gexc.NotFound):
        list(batch.list_tasks(parent=f"{created.name}/taskGroups/group1", retry=None))
