"""The async clients (grpc.aio) against the emulator: every Batch RPC, logs and Service Usage."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from emulator_support import PARENT, PROJECT, TERMINAL, container_job
from google.api_core import exceptions as gexc
from google.cloud import batch_v1, service_usage_v1

from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.hooks import clients

pytestmark = pytest.mark.emulator

State = batch_v1.JobStatus.State


async def wait_async(
    client: batch_v1.BatchServiceAsyncClient, name: str, states: set[int] = TERMINAL
) -> batch_v1.Job:
    for _ in range(500):
        job = await client.get_job(name=name)
        if job.status.state in states:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} never reached {states}")


async def test_async_batch_rpcs(emulator: Emulator) -> None:
    client = clients.batch_async_client()
    request = batch_v1.CreateJobRequest(
        parent=PARENT,
        job_id="async-job",
        job=container_job(labels={"emulator-outcome": "fail", "emulator-exit-code": "3"}, task_count=2),
        request_id=str(uuid.uuid4()),
    )
    created = await client.create_job(request=request)
    assert (await client.create_job(request=request)).uid == created.uid  # idempotent
    with pytest.raises(gexc.AlreadyExists):
        await client.create_job(parent=PARENT, job=container_job(), job_id="async-job")
    done = await wait_async(client, created.name)
    assert done.status.state == State.FAILED
    assert [e.task_execution.exit_code for e in done.status.status_events if e.task_execution.exit_code] == [
        3,
        3,
    ]

    listed = [
        job.name
        async for job in await client.list_jobs(request={"parent": PARENT, "filter": "status.state=FAILED"})
    ]
    assert listed == [created.name]
    tasks = [t async for t in await client.list_tasks(parent=f"{created.name}/taskGroups/group0")]
    assert len(tasks) == 2
    task = await client.get_task(name=tasks[0].name)
    assert task.status.state == batch_v1.TaskStatus.State.FAILED

    running = await client.create_job(parent=PARENT, job=container_job(labels={"emulator-run-seconds": "60"}))
    await wait_async(client, running.name, {State.RUNNING})
    cancel = await client.cancel_job(name=running.name)
    assert isinstance(await cancel.result(), batch_v1.CancelJobResponse)
    assert (await client.get_job(name=running.name)).status.state == State.CANCELLED

    delete = await client.delete_job(name=created.name)
    await delete.result()
    with pytest.raises(gexc.NotFound):
        await client.get_job(name=created.name, retry=None)
    await client.transport.close()


async def test_async_faults_and_quota(emulator: Emulator) -> None:
    client = clients.batch_async_client()
    job = await client.create_job(parent=PARENT, job=container_job())
    emulator.fault("GetJob", "UNAVAILABLE", count=1)
    with pytest.raises(gexc.ServiceUnavailable):
        await client.get_job(name=job.name, retry=None)
    emulator.quota(reads_per_minute=1)
    await client.get_job(name=job.name, retry=None)
    with pytest.raises(gexc.ResourceExhausted):
        await client.get_job(name=job.name, retry=None)
    await client.transport.close()


async def test_async_logging_and_service_usage(emulator: Emulator) -> None:
    batch = clients.batch_async_client()
    job = await batch.create_job(parent=PARENT, job=container_job(labels={"emulator-run-ms": "50"}))
    job = await wait_async(batch, job.name)
    logging_client = clients.logging_async_client()
    pager = await logging_client.list_log_entries(
        request={"resource_names": [f"projects/{PROJECT}"], "filter": f'labels.job_uid="{job.uid}"'}
    )
    lines = [entry.text_payload async for entry in pager]
    assert len(lines) == 3 and lines[1] == "emulator: simulated run of task 0, attempt 0"
    usage = clients.service_usage_async_client()
    service = await usage.get_service(
        request={"name": f"projects/{PROJECT}/services/containerfilesystem.googleapis.com"}
    )
    assert service.state == service_usage_v1.State.ENABLED
    for client in (batch, logging_client, usage):
        await client.transport.close()
