"""BatchStreamingHook over real gRPC against the package's emulator."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Collection, Iterator
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from airflow_batch_streaming import status
from airflow_batch_streaming.emulator import Emulator, Timings
from airflow_batch_streaming.hooks import clients
from airflow_batch_streaming.hooks.batch import BatchStreamingHook, default_request_id

pytestmark = pytest.mark.emulator

PROJECT = "hook-project"
REGION = "us-central1"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/repo/app:1"
FAST = Timings(queue=0.05, schedule=0.05, run=0.2, cancel=0.1, delete=0.1)


@pytest.fixture(scope="module")
def _emu() -> Iterator[Emulator]:
    with Emulator(timings=FAST) as emu:
        yield emu


@pytest.fixture
def emu(_emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    _emu.reset()
    monkeypatch.setenv(clients.EMULATOR_HOST_ENV, _emu.target)
    yield _emu
    _emu.reset()


@pytest.fixture
def hook(emu: Emulator) -> BatchStreamingHook:
    # No such Airflow connection exists: under the emulator the hook must not look for one.
    made = BatchStreamingHook(gcp_conn_id="no-such-connection")
    made.retry_initial_delay = made.quota_initial_delay = 0.01
    made.retry_max_delay = made.quota_max_delay = 0.05
    return made


def rest_job(labels: dict[str, str] | None = None, task_count: int = 1) -> dict[str, Any]:
    return {
        "taskGroups": [
            {
                "taskCount": str(task_count),
                "taskSpec": {
                    "runnables": [
                        {
                            "container": {
                                "imageUri": IMAGE,
                                "commands": ["echo", "hi"],
                                "enableImageStreaming": True,
                            }
                        }
                    ]
                },
            }
        ],
        "labels": {"owner": "hook-test", **(labels or {})},
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    }


def wait_state(hook: BatchStreamingHook, name: str, states: Collection[str], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = hook.get_job(name)
        if status.state_of(job) in states:
            return job
        assert time.monotonic() < deadline, f"{name} stuck in {status.state_of(job)}"
        time.sleep(0.03)


def test_no_connection_and_no_credentials_under_the_emulator(hook: BatchStreamingHook) -> None:
    assert hook.emulator
    assert hook.extras == {}
    assert hook.registry_token() is None
    client = hook.registry_client()
    assert type(client).__name__ == "RegistryClient"


def test_create_get_and_summary(hook: BatchStreamingHook) -> None:
    job = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(), job_id="create-get")
    assert job.name == f"projects/{PROJECT}/locations/{REGION}/jobs/create-get"
    assert job.uid
    done = wait_state(hook, job.name, status.TERMINAL)
    summary = status.summarize(done)
    assert summary["state"] == "SUCCEEDED"
    assert summary["uid"] == job.uid
    assert summary["timeline"]["running_at"] is not None
    assert summary["labels"]["owner"] == "hook-test"


def test_create_accepts_a_batch_v1_job(hook: BatchStreamingHook) -> None:
    from airflow_batch_streaming import spec

    job = hook.create_job(
        project_id=PROJECT, region=REGION, job=spec.rest_to_job(rest_job()), job_id="proto-job"
    )
    assert job.name.endswith("/jobs/proto-job")


def test_create_is_idempotent(emu: Emulator, hook: BatchStreamingHook) -> None:
    first = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(), job_id="twice")
    # Same request ID (the default): Batch answers with the first job.
    again = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(), job_id="twice")
    # Another request ID: ALREADY_EXISTS, and the hook returns the existing job.
    other = hook.create_job(
        project_id=PROJECT, region=REGION, job=rest_job(), job_id="twice", request_id=str(uuid.uuid4())
    )
    assert first.uid == again.uid == other.uid
    assert len(hook.list_jobs(PROJECT, REGION)) == 1
    assert default_request_id(first.name) == default_request_id(first.name)
    assert default_request_id(first.name) != default_request_id(first.name + "x")


def test_lost_create_response_makes_exactly_one_job(emu: Emulator, hook: BatchStreamingHook) -> None:
    emu.fault("CreateJob", "DEADLINE_EXCEEDED", count=1, after_effect=True)
    job = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(), job_id="lost-response")
    assert job.name.endswith("/jobs/lost-response")
    assert [j.uid for j in hook.list_jobs(PROJECT, REGION)] == [job.uid]
    stats = emu.stats()
    assert stats["calls"]["CreateJob"] == 2
    assert stats["errors"] == {"DEADLINE_EXCEEDED": 1}


@pytest.mark.parametrize("code", ["UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"])
def test_create_retries_transport_errors(emu: Emulator, hook: BatchStreamingHook, code: str) -> None:
    emu.fault("CreateJob", code, count=2)
    job = hook.create_job(
        project_id=PROJECT, region=REGION, job=rest_job(), job_id=f"retry-{code.lower().replace('_', '-')}"
    )
    assert emu.stats()["calls"]["CreateJob"] == 3
    assert len(hook.list_jobs(PROJECT, REGION)) == 1
    assert job.uid


def test_invalid_job_is_not_retried(emu: Emulator, hook: BatchStreamingHook) -> None:
    emu.fault("CreateJob", "INVALID_ARGUMENT", count=1, message="bad job")
    with pytest.raises(gexc.InvalidArgument, match="was rejected: bad job"):
        hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(), job_id="invalid")
    assert emu.stats()["calls"]["CreateJob"] == 1


def test_reads_retry_transient_errors(emu: Emulator, hook: BatchStreamingHook) -> None:
    job = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(), job_id="flaky-read")
    emu.fault("GetJob", "UNAVAILABLE", count=2)
    emu.fault("GetJob", "RESOURCE_EXHAUSTED", count=1)
    assert hook.get_job(job.name).uid == job.uid
    assert emu.stats()["calls"]["GetJob"] == 4


def test_permission_denied_names_the_missing_role(emu: Emulator, hook: BatchStreamingHook) -> None:
    job = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(), job_id="denied")
    emu.fault("GetJob", "PERMISSION_DENIED", count=1, message="Permission 'batch.jobs.get' denied")
    with pytest.raises(gexc.PermissionDenied) as caught:
        hook.get_job(job.name)
    message = str(caught.value)
    assert "roles/batch.jobsViewer" in message
    assert f"project {PROJECT}" in message
    assert "batch.jobs.get" in message
    assert emu.stats()["calls"]["GetJob"] == 1


def test_get_missing_job_raises_not_found(hook: BatchStreamingHook) -> None:
    with pytest.raises(gexc.NotFound):
        hook.get_job(f"projects/{PROJECT}/locations/{REGION}/jobs/never-made")


def test_list_jobs_filters_and_pages(hook: BatchStreamingHook) -> None:
    for i in range(5):
        kind = "even" if i % 2 == 0 else "odd"
        hook.create_job(project_id=PROJECT, region=REGION, job=rest_job({"kind": kind}), job_id=f"list-{i}")
    assert len(hook.list_jobs(PROJECT, REGION, page_size=2)) == 5
    even = hook.list_jobs(PROJECT, REGION, filter='labels.kind="even"', page_size=2)
    assert sorted(j.name.rsplit("/", 1)[-1] for j in even) == ["list-0", "list-2", "list-4"]
    assert len(hook.list_jobs(PROJECT, REGION, page_size=2, limit=3)) == 3


def test_list_tasks(hook: BatchStreamingHook) -> None:
    job = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(task_count=3), job_id="tasks")
    assert list(hook.list_tasks(job.name)) == []  # Batch creates the tasks when it schedules the job
    wait_state(hook, job.name, {"SCHEDULED", "RUNNING", "SUCCEEDED"})
    tasks = hook.list_tasks(job.name)
    assert [t.name.rsplit("/", 1)[-1] for t in tasks] == ["0", "1", "2"]


def test_cancel_is_idempotent(hook: BatchStreamingHook) -> None:
    job = hook.create_job(
        project_id=PROJECT, region=REGION, job=rest_job({"emulator-run-seconds": "30"}), job_id="to-cancel"
    )
    wait_state(hook, job.name, {"RUNNING"})
    assert hook.cancel_job(job.name, wait=True) is True
    assert status.state_of(hook.get_job(job.name)) == "CANCELLED"
    hook.cancel_job(job.name)  # already cancelled: fine
    hook.cancel_job(f"projects/{PROJECT}/locations/{REGION}/jobs/never-made")  # missing: fine


def test_cancel_leaves_a_finished_job_alone(emu: Emulator, hook: BatchStreamingHook) -> None:
    job = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(), job_id="finished")
    wait_state(hook, job.name, status.TERMINAL)
    hook.cancel_job(job.name)
    assert status.state_of(hook.get_job(job.name)) == "SUCCEEDED"
    assert "CancelJob" not in emu.stats()["calls"]


def test_delete(hook: BatchStreamingHook) -> None:
    job = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(), job_id="to-delete")
    hook.delete_job(job.name)
    assert hook.wait_for_job(job.name, poll_interval=0.05)["status"] == "deleted"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            hook.get_job(job.name)
        except gexc.NotFound:
            break
        time.sleep(0.05)
    with pytest.raises(gexc.NotFound):
        hook.get_job(job.name)
    hook.delete_job(job.name)  # already gone: fine


def test_list_log_entries(emu: Emulator, hook: BatchStreamingHook) -> None:
    job = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(task_count=2), job_id="logs")
    done = wait_state(hook, job.name, status.TERMINAL)
    query = status.logs_query(PROJECT, done.uid, status.summarize(done)["create_time"])
    emu.fault("ListLogEntries", "RESOURCE_EXHAUSTED", count=1)
    entries = hook.list_log_entries(PROJECT, query, page_size=2, max_entries=100)
    assert len(entries) >= 4
    assert all(e.labels["job_uid"] == done.uid for e in entries)
    times: list[Any] = [e.timestamp for e in entries]  # datetimes at run time
    assert times == sorted(times)
    assert emu.stats()["calls"]["ListLogEntries"] >= 3  # one refused, then pages of two
    assert len(hook.list_log_entries(PROJECT, query, max_entries=3)) == 3


def test_is_service_enabled(emu: Emulator, hook: BatchStreamingHook) -> None:
    assert hook.is_service_enabled(PROJECT) is True
    emu.set_apis(disable=["containerfilesystem.googleapis.com"])
    assert hook.is_service_enabled(PROJECT) is False
    assert hook.is_service_enabled(PROJECT, "batch.googleapis.com") is True


def test_async_get_and_cancel(hook: BatchStreamingHook) -> None:
    job = hook.create_job(
        project_id=PROJECT, region=REGION, job=rest_job({"emulator-run-seconds": "30"}), job_id="async-cancel"
    )

    async def scenario() -> tuple[str, bool, bool]:
        got = await hook.get_job_async(job.name)
        sent = await hook.cancel_job_async(job.name)
        again = await hook.cancel_job_async(job.name)
        client = await hook.get_async_batch_client()
        assert client is await hook.get_async_batch_client()  # one client per loop
        await hook.aclose()
        return got.uid, sent, again

    uid, sent, again = asyncio.run(scenario())
    assert uid == job.uid
    assert sent is True
    assert again is False
    # A second event loop gets its own client (grpc.aio channels are bound to their loop).
    assert asyncio.run(hook.get_job_async(job.name)).uid == job.uid
    wait_state(hook, job.name, {"CANCELLED"})


def test_async_not_found(hook: BatchStreamingHook) -> None:
    async def scenario() -> bool:
        with pytest.raises(gexc.NotFound):
            await hook.get_job_async(f"projects/{PROJECT}/locations/{REGION}/jobs/never-made")
        return await hook.cancel_job_async(f"projects/{PROJECT}/locations/{REGION}/jobs/never-made")

    assert asyncio.run(scenario()) is False


# ------------------------------------------------------------------ the sync waiter


def test_wait_for_job_success(hook: BatchStreamingHook) -> None:
    job = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(), job_id="sync-ok")
    result = hook.wait_for_job(job.name, poll_interval=0.05)
    assert result["status"] == "success"
    assert result["state"] == "SUCCEEDED"
    assert result["job"]["timeline"]["finished_at"]


def test_wait_for_job_failed_names_the_exit_code(hook: BatchStreamingHook) -> None:
    labels = {"emulator-outcome": "fail", "emulator-exit-code": "7"}
    job = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(labels), job_id="sync-fail")
    result = hook.wait_for_job(job.name, poll_interval=0.05)
    assert result["status"] == "failed"
    assert "task 0 failed with exit code 7" in result["message"].lower()


def test_wait_for_job_timeout_cancels(hook: BatchStreamingHook) -> None:
    labels = {"emulator-run-seconds": "60"}
    job = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(labels), job_id="sync-timeout")
    result = hook.wait_for_job(job.name, poll_interval=0.05, end_time=time.time() + 0.3)
    assert result["status"] == "timeout"
    assert result["cancelled"] is True
    assert status.state_of(wait_state(hook, job.name, {"CANCELLED"})) == "CANCELLED"


def test_wait_for_job_waits_through_cancellation(hook: BatchStreamingHook) -> None:
    labels = {"emulator-run-seconds": "60", "emulator-cancel-ms": "300"}
    job = hook.create_job(project_id=PROJECT, region=REGION, job=rest_job(labels), job_id="sync-cancelled")
    wait_state(hook, job.name, {"RUNNING"})
    assert hook.cancel_job(job.name) is True
    result = hook.wait_for_job(job.name, poll_interval=0.05)
    assert result["status"] == "cancelled"
    assert result["state"] == "CANCELLED"


def test_wait_for_job_deleted(hook: BatchStreamingHook) -> None:
    result = hook.wait_for_job(f"projects/{PROJECT}/locations/{REGION}/jobs/never-made", poll_interval=0.05)
    assert result["status"] == "deleted"
    assert result["job"] is None


# ------------------------------------------------------------------ without the emulator


def test_a_real_connection_is_read_outside_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: an anonymous connection builds clients; a missing one fails clearly."""
    monkeypatch.delenv(clients.EMULATOR_HOST_ENV, raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_GCP_ANON",
        '{"conn_type": "google_cloud_platform", "extra": {"is_anonymous": true, "project": "my-proj"}}',
    )
    hook = BatchStreamingHook(gcp_conn_id="gcp_anon")
    assert hook.emulator is None
    assert hook.project_id == "my-proj"
    assert hook.registry_token() is None  # anonymous: nothing to send to a registry
    assert type(hook.get_batch_client()).__name__ == "BatchServiceClient"

    async def async_client() -> str:
        client = await hook.get_async_batch_client()
        await hook.aclose()
        return type(client).__name__

    assert asyncio.run(async_client()) == "BatchServiceAsyncClient"
    with pytest.raises(Exception, match="missing-conn"):
        BatchStreamingHook(gcp_conn_id="missing-conn")
