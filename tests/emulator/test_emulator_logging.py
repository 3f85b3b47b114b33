"""LoggingServiceV2 through the real google-cloud-logging clients (GAPIC and the high-level one)."""

from __future__ import annotations

import datetime as dt

import pytest
from emulator_support import PARENT, PROJECT, container_job, entries, wait_for
from google.api_core import exceptions as gexc
from google.cloud import batch_v1
from google.cloud.logging_v2.types import LogEntry, WriteLogEntriesRequest

from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.hooks import clients

pytestmark = pytest.mark.emulator

TASK_LOG = f"projects/{PROJECT}/logs/batch_task_logs"
AGENT_LOG = f"projects/{PROJECT}/logs/batch_agent_logs"
BASE = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def write(logging_client: object, n: int, *, uid: str = "u-1", log: str = TASK_LOG, start: int = 0) -> None:
    entries_ = [
        LogEntry(
            text_payload=f"line {i}",
            timestamp=BASE + dt.timedelta(seconds=i),
            severity="ERROR" if i % 10 == 0 else "INFO",
            labels={"job_uid": uid, "task_id": f"task/{uid}-group0-{i % 3}/0/0"},
        )
        for i in range(start, start + n)
    ]
    request = WriteLogEntriesRequest(
        log_name=log,
        resource={"type": "batch.googleapis.com/Job", "labels": {"job_id": uid}},
        entries=entries_,
    )
    logging_client.write_log_entries(request=request)  # type: ignore[attr-defined]


def texts(found: list[LogEntry]) -> list[str]:
    return [e.text_payload for e in found]


def test_write_and_list_with_filters(emulator: Emulator) -> None:
    client = clients.logging_client()
    write(client, 30)
    write(client, 3, uid="u-2", log=AGENT_LOG)
    assert len(entries(client, "u-1")) == 30
    assert texts(entries(client, "u-1", filter='labels.job_uid="u-1" AND severity>=ERROR')) == [
        "line 0",
        "line 10",
        "line 20",
    ]
    window = 'timestamp>="2024-05-01T12:00:05Z" AND timestamp<"2024-05-01T12:00:08Z"'
    assert texts(entries(client, "", filter=f"labels.job_uid=u-1 {window}")) == ["line 5", "line 6", "line 7"]
    both = f'logName=("{TASK_LOG}" OR "{AGENT_LOG}") AND (labels.job_uid="u-2" OR labels.job_uid="nobody")'
    assert len(entries(client, "", filter=both)) == 3
    sample = f'logName="{TASK_LOG}" labels.job_uid=u-1 labels.task_id="task/u-1-group0-1/0/0"'
    assert len(entries(client, "", filter=sample)) == 10
    assert texts(entries(client, "u-1", order_by="timestamp desc"))[:2] == ["line 29", "line 28"]
    assert entries(client, "", filter='NOT logName:"batch_task_logs"')[0].log_name == AGENT_LOG
    assert entries(client, "u-1", resource_names=["projects/other"]) == []


def test_page_size_and_tokens(emulator: Emulator) -> None:
    client = clients.logging_client()
    for start in range(0, 2500, 500):
        write(client, 500, start=start)
    pages = list(
        client.list_log_entries(
            request={
                "resource_names": [f"projects/{PROJECT}"],
                "filter": "labels.job_uid=u-1",
                "page_size": 1000,
            }
        ).pages
    )
    assert [len(p.entries) for p in pages] == [1000, 1000, 500]
    got = [e.text_payload for p in pages for e in p.entries]
    assert got == [f"line {i}" for i in range(2500)]
    descending = list(
        client.list_log_entries(
            request={
                "resource_names": [f"projects/{PROJECT}"],
                "order_by": "timestamp desc",
                "page_size": 700,
            }
        )
    )
    assert descending[0].text_payload == "line 2499" and len(descending) == 2500
    default_page = next(iter(client.list_log_entries(resource_names=[f"projects/{PROJECT}"]).pages))
    assert len(default_page.entries) == 50


@pytest.mark.parametrize(
    "request_",
    [
        {"resource_names": []},
        {"resource_names": [f"projects/{PROJECT}"], "page_size": 1001},
        {"resource_names": [f"projects/{PROJECT}"], "order_by": "severity"},
        {"resource_names": [f"projects/{PROJECT}"], "filter": '"anything"'},
        {"resource_names": [f"projects/{PROJECT}"], "filter": "bogusField=1"},
        {"resource_names": [f"projects/{PROJECT}"], "filter": 'timestamp>="last tuesday"'},
        {"resource_names": [f"projects/{PROJECT}"], "page_token": "garbage"},
    ],
)
def test_bad_requests_are_invalid_argument(emulator: Emulator, request_: dict[str, object]) -> None:
    client = clients.logging_client()
    with pytest.raises(gexc.InvalidArgument):
        list(client.list_log_entries(request=request_, retry=None))


def test_label_driven_jobs_write_batch_shaped_logs(emulator: Emulator) -> None:
    batch = clients.batch_client()
    labels = {"emulator-outcome": "fail", "emulator-exit-code": "3", "team": "data"}
    job = batch.create_job(parent=PARENT, job=container_job(labels=labels))
    quiet = batch.create_job(parent=PARENT, job=container_job(logging=False))
    job, _ = wait_for(batch, job.name)
    wait_for(batch, quiet.name)
    client = clients.logging_client()
    found = entries(client, job.uid)
    assert {e.log_name for e in found} == {TASK_LOG, AGENT_LOG}
    task_id = f"task/{job.uid}-group0-0/0/0"
    for entry in found:
        assert entry.resource.type == "batch.googleapis.com/Job"
        assert entry.labels["job_uid"] == job.uid and entry.labels["task_id"] == task_id
        assert entry.labels["task_group_name"] == f"{job.name}/taskGroups/group0"
        assert entry.labels["team"] == "data"  # job labels propagate to entries
    errors = [e for e in found if e.severity == 500]  # ERROR
    assert len(errors) == 1 and errors[0].log_name == TASK_LOG and "exit code 3" in errors[0].text_payload
    assert any("exited with status 3" in e.text_payload for e in found if e.log_name == AGENT_LOG)
    assert entries(client, quiet.uid) == []  # no logsPolicy, no logs (as on Batch)


def test_entries_appear_only_once_they_happened(emulator: Emulator) -> None:
    batch = clients.batch_client()
    job = batch.create_job(parent=PARENT, job=container_job(labels={"emulator-run-seconds": "60"}))
    client = clients.logging_client()
    wait_for(batch, job.name, lambda j: j.status.state == batch_v1.JobStatus.State.RUNNING)
    seen = texts(entries(client, job.uid))
    assert any("started" in t for t in seen) and not any("exited" in t for t in seen)
    batch.cancel_job(name=job.name)
    wait_for(batch, job.name)
    assert not any("exited" in t for t in texts(entries(client, job.uid)))


def test_high_level_client_and_googles_sample_filter(emulator: Emulator) -> None:
    """As python-docs-samples batch/logs/read_job_logs.py: logger("batch_task_logs").list_entries()."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import logging
    from google.cloud.logging_v2._gapic import _LoggingAPI

    batch = clients.batch_client()
    job = batch.create_job(parent=PARENT, job=container_job(labels={"emulator-run-ms": "50"}))
    job, _ = wait_for(batch, job.name)
    client = logging.Client(project=PROJECT, credentials=AnonymousCredentials(), _use_grpc=True)
    client._logging_api = _LoggingAPI(clients.logging_client(), client)
    logger = client.logger("batch_task_logs")
    lines = [e.payload for e in logger.list_entries(filter_=f"labels.job_uid={job.uid}")]
    assert lines == ["emulator: simulated run of task 0, attempt 0"]
    created_at = job.create_time.isoformat()  # type: ignore[attr-defined]  # a datetime at run time
    stamped = f'labels.job_uid={job.uid} AND timestamp>="{created_at}"'
    assert len(list(client.list_entries(filter_=stamped, order_by=logging.DESCENDING))) == 3


def test_list_logs(emulator: Emulator) -> None:
    client = clients.logging_client()
    write(client, 1)
    write(client, 1, log=AGENT_LOG)
    assert sorted(client.list_logs(parent=f"projects/{PROJECT}")) == [AGENT_LOG, TASK_LOG]
