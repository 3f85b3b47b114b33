"""Admin API (stats, faults, quota, reset) and Service Usage, seen through the real clients."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest
from emulator_support import FAST, PARENT, PROJECT, container_job
from google.api_core import exceptions as gexc
from google.cloud import batch_v1, service_usage_v1

from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.emulator.admin import AdminError
from airflow_batch_streaming.hooks import clients

pytestmark = pytest.mark.emulator

CFS = f"projects/{PROJECT}/services/containerfilesystem.googleapis.com"


def test_stats_count_calls_jobs_and_connections(emulator: Emulator) -> None:
    batch = clients.batch_client()
    job = batch.create_job(parent=PARENT, job=container_job(labels={"emulator-queue-seconds": "60"}))
    for _ in range(3):
        batch.get_job(name=job.name)
    list(batch.list_jobs(parent=PARENT))
    clients.service_usage_client().get_service(request={"name": CFS})
    stats = emulator.stats()
    assert stats["calls"] == {"CreateJob": 1, "GetJob": 3, "ListJobs": 1, "GetService": 1}
    assert stats["jobs"] == 1 and stats["jobs_by_state"] == {"QUEUED": 1}
    assert stats["reads"] == {"us-central1": 4} and stats["mutations"] == {"us-central1": 1}
    assert stats["connections"] >= 1
    with urllib.request.urlopen(emulator.admin_url + "/v1/stats") as response:
        assert json.loads(response.read())["calls"]["GetJob"] == 3


def test_counted_fault_then_recovery(emulator: Emulator, batch: batch_v1.BatchServiceClient) -> None:
    job = batch.create_job(parent=PARENT, job=container_job())
    emulator.fault("GetJob", "UNAVAILABLE", count=2)
    for _ in range(2):
        with pytest.raises(gexc.ServiceUnavailable, match="fault injected"):
            batch.get_job(name=job.name, retry=None)
    assert batch.get_job(name=job.name, retry=None).uid == job.uid
    assert emulator.stats()["errors"] == {"UNAVAILABLE": 2}


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("DEADLINE_EXCEEDED", gexc.DeadlineExceeded),
        ("INTERNAL", gexc.InternalServerError),
        ("RESOURCE_EXHAUSTED", gexc.ResourceExhausted),
        ("PERMISSION_DENIED", gexc.PermissionDenied),
    ],
)
def test_fault_codes(
    emulator: Emulator, batch: batch_v1.BatchServiceClient, code: str, error: type[Exception]
) -> None:
    emulator.fault("ListJobs", code)
    with pytest.raises(error):
        list(batch.list_jobs(parent=PARENT, retry=None))
    assert list(batch.list_jobs(parent=PARENT, retry=None)) == []


def test_lost_response_with_request_id_makes_one_job(
    emulator: Emulator, batch: batch_v1.BatchServiceClient
) -> None:
    emulator.fault("CreateJob", "UNAVAILABLE", count=1, after_effect=True)
    request = batch_v1.CreateJobRequest(
        parent=PARENT, job_id="lost", job=container_job(), request_id=str(uuid.uuid4())
    )
    with pytest.raises(gexc.ServiceUnavailable):
        batch.create_job(request=request)
    assert emulator.stats()["jobs"] == 1  # it took effect
    again = batch.create_job(request=request)  # the retry with the same request_id
    assert again.name == f"{PARENT}/jobs/lost" and emulator.stats()["jobs"] == 1


def test_rate_fault_for_a_period(emulator: Emulator, batch: batch_v1.BatchServiceClient) -> None:
    job = batch.create_job(parent=PARENT, job=container_job())
    emulator.fault("GetJob", "UNAVAILABLE", rate=0.5, seconds=30)
    outcomes = []
    for _ in range(60):
        try:
            batch.get_job(name=job.name, retry=None)
            outcomes.append(True)
        except gexc.ServiceUnavailable:
            outcomes.append(False)
    assert 10 < outcomes.count(False) < 50
    emulator.clear_faults()
    emulator.fault("*", "UNAVAILABLE", rate=1.0, seconds=0.3)
    with pytest.raises(gexc.ServiceUnavailable):
        batch.get_job(name=job.name, retry=None)
    time.sleep(0.35)
    assert batch.get_job(name=job.name, retry=None).uid == job.uid


def test_fault_validation(emulator: Emulator) -> None:
    with pytest.raises(AdminError, match="unknown gRPC status"):
        emulator.fault("GetJob", "BROKEN")
    with pytest.raises(AdminError, match="seconds"):
        emulator.fault("GetJob", rate=0.5)
    with pytest.raises(AdminError, match="no route"):
        emulator._admin("POST", "/v1/nothing", {})


def test_read_quota(emulator: Emulator, batch: batch_v1.BatchServiceClient) -> None:
    assert emulator.quota()["reads_per_minute"] == 15_000  # Batch's default
    job = batch.create_job(parent=PARENT, job=container_job())
    emulator.quota(reads_per_minute=5)
    for _ in range(5):
        batch.get_job(name=job.name, retry=None)
    with pytest.raises(gexc.ResourceExhausted, match="Read requests per minute per region"):
        batch.get_job(name=job.name, retry=None)
    with pytest.raises(gexc.ResourceExhausted):
        list(batch.list_jobs(parent=PARENT, retry=None))
    # Quotas are per region, and mutations have their own.
    other = batch.create_job(parent=f"projects/{PROJECT}/locations/europe-west1", job=container_job())
    assert batch.get_job(name=other.name, retry=None).uid == other.uid
    emulator.quota(reads_per_minute=None)
    assert batch.get_job(name=job.name, retry=None).uid == job.uid


def test_mutation_and_logging_quotas(emulator: Emulator, batch: batch_v1.BatchServiceClient) -> None:
    emulator.quota(mutations_per_minute=1, logging_reads_per_minute=1)
    batch.create_job(parent=PARENT, job=container_job())
    with pytest.raises(gexc.ResourceExhausted, match="Mutation requests"):
        batch.create_job(parent=PARENT, job=container_job())
    logging_client = clients.logging_client()
    list(logging_client.list_log_entries(resource_names=[f"projects/{PROJECT}"]))
    with pytest.raises(gexc.ResourceExhausted):
        list(logging_client.list_log_entries(resource_names=[f"projects/{PROJECT}"], retry=None))


def test_reset_forgets_everything(emulator: Emulator, batch: batch_v1.BatchServiceClient) -> None:
    batch.create_job(parent=PARENT, job=container_job(), job_id="kept")
    emulator.fault("GetJob", count=5)
    emulator.quota(reads_per_minute=1)
    emulator.reset()
    stats = emulator.stats()
    assert stats["jobs"] == 0 and stats["calls"] == {} and stats["log_entries"] == 0
    assert emulator._admin("GET", "/v1/faults") == []
    assert emulator.quota()["reads_per_minute"] == 15_000
    with pytest.raises(gexc.NotFound):
        batch.get_job(name=f"{PARENT}/jobs/kept", retry=None)


def test_service_usage_enabled_and_disabled(emulator: Emulator) -> None:
    client = clients.service_usage_client()
    service = client.get_service(request={"name": CFS})
    assert service.state == service_usage_v1.State.ENABLED
    assert (
        service.config.name == "containerfilesystem.googleapis.com"
        and service.parent == f"projects/{PROJECT}"
    )
    emulator.set_apis(disable=["containerfilesystem"])
    assert client.get_service(request={"name": CFS}).state == service_usage_v1.State.DISABLED
    both = client.batch_get_services(
        request={
            "parent": f"projects/{PROJECT}",
            "names": [CFS, f"projects/{PROJECT}/services/batch.googleapis.com"],
        }
    )
    assert [s.state for s in both.services] == [
        service_usage_v1.State.DISABLED,
        service_usage_v1.State.ENABLED,
    ]
    with pytest.raises(gexc.InvalidArgument):
        client.get_service(request={"name": "containerfilesystem.googleapis.com"})


def test_disable_api_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    with Emulator(timings=FAST, disabled_apis=["containerfilesystem.googleapis.com"]) as emu:
        monkeypatch.setenv(clients.EMULATOR_HOST_ENV, emu.target)
        client = clients.service_usage_client()
        assert client.get_service(request={"name": CFS}).state == service_usage_v1.State.DISABLED
        other = f"projects/{PROJECT}/services/logging.googleapis.com"
        assert client.get_service(request={"name": other}).state == service_usage_v1.State.ENABLED
