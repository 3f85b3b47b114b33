"""Where Google is less kind than a naive fake, the emulator is too (real-api-facts.md).

Through the real google-cloud-batch and google-cloud-logging clients over gRPC.
"""

from __future__ import annotations

import sys
import time

import pytest
from emulator_support import LOCATION, PARENT, PROJECT, container_job, wait_for
from google.api_core import exceptions as gexc
from google.cloud import batch_v1

from airflow_batch_streaming.emulator import Emulator, Timings
from airflow_batch_streaming.emulator.common import project_number
from airflow_batch_streaming.hooks import clients

pytestmark = pytest.mark.emulator

State = batch_v1.JobStatus.State


def _listed(batch: batch_v1.BatchServiceClient, name: str) -> bool:
    return name in {j.name for j in batch.list_jobs(parent=PARENT, retry=None)}


def _tasks(batch: batch_v1.BatchServiceClient, name: str) -> list[batch_v1.Task]:
    return list(batch.list_tasks(parent=f"{name}/taskGroups/group0", retry=None))


def test_tasks_exist_only_once_the_job_is_scheduled(batch: batch_v1.BatchServiceClient) -> None:
    created = batch.create_job(
        parent=PARENT, job=container_job(labels={"emulator-queue-ms": "700"}, task_count=2), job_id="queued"
    )
    assert batch.get_job(name=created.name).status.state == State.QUEUED
    assert _tasks(batch, created.name) == []  # recorded: ListTasks answers {} while QUEUED
    with pytest.raises(gexc.NotFound):
        batch.get_task(name=f"{created.name}/taskGroups/group0/tasks/0", retry=None)
    assert "group0" not in batch.get_job(name=created.name).status.task_groups
    job, _ = wait_for(batch, created.name, lambda j: j.status.state != State.QUEUED)
    assert job.status.task_groups["group0"].counts  # scheduled: the tasks exist now
    assert len(_tasks(batch, created.name)) == 2


def test_list_jobs_and_list_tasks_lag_but_get_job_does_not(emulator: Emulator) -> None:
    batch = clients.batch_client()
    assert emulator.timings(list_lag=0.8)["list_lag"] == 0.8
    created = batch.create_job(
        parent=PARENT, job=container_job(labels={"emulator-run-ms": "3000"}), job_id="lag"
    )
    started = time.monotonic()
    assert batch.get_job(name=created.name).name == created.name  # the consistent read
    assert not _listed(batch, created.name)  # recorded: ListJobs answers {} right after CreateJob
    wait_for(batch, created.name, lambda j: j.status.state == State.RUNNING)
    if time.monotonic() - started < 0.7:
        assert _tasks(batch, created.name) == []
    while time.monotonic() - started < 1.0:
        time.sleep(0.05)
    assert _listed(batch, created.name)
    deadline = time.monotonic() + 5
    while not _tasks(batch, created.name):
        assert time.monotonic() < deadline, "ListTasks never caught up"
        time.sleep(0.05)
    emulator.reset()
    assert emulator.timings()["list_lag"] == 0.0  # reset restores the defaults


def test_a_project_number_names_the_same_job(batch: batch_v1.BatchServiceClient) -> None:
    created = batch.create_job(parent=PARENT, job=container_job(), job_id="numbered")
    by_number = f"projects/{project_number(PROJECT)}/locations/{LOCATION}/jobs/numbered"
    assert batch.get_job(name=by_number).uid == created.uid


def test_allowed_locations_outside_the_region_are_refused(batch: batch_v1.BatchServiceClient) -> None:
    job = container_job()
    job.allocation_policy.location.allowed_locations.extend(["regions/us-east1"])
    with pytest.raises(gexc.InvalidArgument) as info:
        batch.create_job(parent=PARENT, job=job, job_id="elsewhere", retry=None)
    assert "must be in the same region in which the job is created" in info.value.message
    job = container_job()
    job.allocation_policy.location.allowed_locations.extend([f"zones/{LOCATION}-b"])
    created = batch.create_job(parent=PARENT, job=job, job_id="inside")
    assert list(created.allocation_policy.location.allowed_locations) == [f"zones/{LOCATION}-b"]


def test_task_environments_set_the_task_count(command_batch: batch_v1.BatchServiceClient) -> None:
    job = container_job([sys.executable, "-c", "import os, sys; sys.exit(int(os.environ['CODE']))"])
    job.task_groups[0].task_count = 0  # TaskGroup.taskEnvironments: task count is their number
    job.task_groups[0].task_environments.extend(
        [batch_v1.Environment(variables={"CODE": "0"}), batch_v1.Environment(variables={"CODE": "0"})]
    )
    created = command_batch.create_job(parent=PARENT, job=job, job_id="per-task-env")
    assert created.task_groups[0].task_count == 2
    done, _ = wait_for(command_batch, created.name)
    assert done.status.state == State.SUCCEEDED
    assert done.status.task_groups["group0"].counts == {"SUCCEEDED": 2}


def test_jobs_waiting_for_a_process_slot_are_not_running(monkeypatch: pytest.MonkeyPatch) -> None:
    with Emulator(run_commands=True, timings=Timings(queue=0.02, schedule=0.02), max_processes=1) as emu:
        monkeypatch.setenv(clients.EMULATOR_HOST_ENV, emu.target)
        batch = clients.batch_client()
        sleeper = container_job([sys.executable, "-c", "import time; time.sleep(1.5)"])
        first = batch.create_job(parent=PARENT, job=sleeper, job_id="holds-the-slot")
        wait_for(batch, first.name, lambda j: j.status.state == State.RUNNING)
        second = batch.create_job(parent=PARENT, job=container_job(["true"]), job_id="waits")
        time.sleep(0.5)
        waiting = batch.get_job(name=second.name)
        assert waiting.status.state == State.SCHEDULED  # no slot yet: not RUNNING
        assert waiting.status.task_groups["group0"].counts == {"PENDING": 1}
        done, _ = wait_for(batch, second.name)
        events = [e.description.split(" for job")[0] for e in done.status.status_events]
        assert done.status.state == State.SUCCEEDED
        assert events == [
            "Job state is set from QUEUED to SCHEDULED",
            "Job state is set from SCHEDULED to RUNNING",
            "Job state is set from RUNNING to SUCCEEDED",
        ]
        running_at = done.status.status_events[1].event_time.timestamp()
        first_done = batch.get_job(name=first.name).status.status_events[-1].event_time.timestamp()
        assert running_at >= first_done - 0.05  # it started only when the slot was free
