"""A sweep's cost does not grow with the region's history: 20,000 finished jobs, real ListJobs."""

from __future__ import annotations

import time

import pytest
from emulator_support import PARENT, container_job
from google.cloud import batch_v1

from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.emulator.admin import AdminError
from airflow_batch_streaming.triggers import pacing

pytestmark = [pytest.mark.emulator, pytest.mark.scale]

HISTORY = 20_000


def _pages(batch: batch_v1.BatchServiceClient, flt: str) -> tuple[int, set[str]]:
    pages, token, names = 0, "", set()
    while True:
        response = batch.list_jobs(
            request={"parent": PARENT, "filter": flt, "page_size": pacing.PAGE_SIZE, "page_token": token}
        )
        pages += 1
        names |= {job.name for job in response.jobs}
        token = response.next_page_token
        if not token:
            return pages, names


def test_reads_per_sweep_do_not_grow_with_finished_jobs(
    emulator: Emulator, batch: batch_v1.BatchServiceClient
) -> None:
    # Two days ago, 20,000 jobs ran and finished (the admin API's history seeding).
    assert emulator.history(PARENT, HISTORY, age_seconds=2 * 86_400) == HISTORY
    assert emulator.state.jobs.count_by_state() == {"SUCCEEDED": HISTORY}
    with pytest.raises(AdminError, match="empty emulator"):  # creation order is list order
        emulator.history(PARENT, 1)

    # Now: 30 waited jobs, of which 5 end quickly and 25 keep running.
    waited = []
    for i in range(30):
        labels = {"emulator-run-seconds": "0" if i < 5 else "600"}
        job = batch.create_job(
            parent=PARENT, job_id=f"waited-{i}", job=container_job(["true"], labels=labels)
        )
        waited.append(job)
    end = time.monotonic() + 30
    succeeded = batch_v1.JobStatus.State.SUCCEEDED
    while any(batch.get_job(name=job.name).status.state != succeeded for job in waited[:5]):
        assert time.monotonic() < end
        time.sleep(0.1)
    now = time.time()
    create_times = [job.create_time.timestamp() for job in waited]
    names = {job.name for job in waited}

    everything, _ = _pages(batch, "")
    assert everything == HISTORY // pacing.PAGE_SIZE + 1  # what an unfiltered sweep would cost: 21

    recent = pacing.sweep_filter(create_times, now)
    assert recent.covers_finished
    pages, listed = _pages(batch, recent.filter)
    assert pages == 1 and listed == names  # ended or not, every waited job, no history
    assert pacing.to_get([pacing.Waited(n, now - 60, listed=True) for n in names], listed, now) == {}

    active = pacing.sweep_filter(create_times, now, recent_refused=True)
    pages, listed = _pages(batch, active.filter)
    assert pages == 1 and len(listed) == 25
    ended = pacing.to_get([pacing.Waited(n, now - 60, listed=True) for n in sorted(names)], listed, now)
    assert sorted(ended) == sorted(j.name for j in waited[:5])  # one GetJob each, nothing else
