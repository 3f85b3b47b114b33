"""The emulator holds 5,000 jobs (the fleet benchmark's size); no timing is asserted."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from emulator_support import PARENT, container_job
from google.cloud import batch_v1

from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.hooks import clients

pytestmark = [pytest.mark.emulator, pytest.mark.scale]

N = 5000


def test_five_thousand_jobs(emulator: Emulator) -> None:
    client = clients.batch_client()
    labels = {"fleet": "f1", "emulator-run-seconds": "600"}
    job = container_job(labels=labels)

    def create(i: int) -> str:
        return client.create_job(parent=PARENT, job=job, job_id=f"fleet-{i:05d}").name

    with ThreadPoolExecutor(max_workers=8) as pool:
        names = list(pool.map(create, range(N)))
    assert len(set(names)) == N

    listed: list[str] = []
    page_token = ""
    while True:
        response = client.list_jobs(
            request={
                "parent": PARENT,
                "filter": 'labels.fleet="f1"',
                "page_size": 1000,
                "page_token": page_token,
            }
        )
        page = next(iter(response.pages))
        listed.extend(j.name for j in page.jobs)
        page_token = page.next_page_token
        if not page_token:
            break
    assert sorted(listed) == sorted(names)
    states = {j.status.state for j in client.list_jobs(request={"parent": PARENT, "page_size": 1000})}
    assert states <= {
        batch_v1.JobStatus.State.RUNNING,
        batch_v1.JobStatus.State.SCHEDULED,
        batch_v1.JobStatus.State.QUEUED,
    }
    stats = emulator.stats()
    assert stats["jobs"] == N and stats["calls"]["CreateJob"] == N
    assert client.get_job(name=names[-1]).labels["fleet"] == "f1"
