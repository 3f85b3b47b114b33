"""Helpers shared by the emulator tests: job builders, polling, log reading."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from google.cloud import batch_v1
from google.protobuf import duration_pb2

from airflow_batch_streaming.emulator import Timings

PROJECT = "test-project"
LOCATION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
FAST = Timings(queue=0.05, schedule=0.05, run=0.2, cancel=0.1, delete=0.1)
TERMINAL = {
    batch_v1.JobStatus.State.SUCCEEDED,
    batch_v1.JobStatus.State.FAILED,
    batch_v1.JobStatus.State.CANCELLED,
}


def container_job(
    commands: list[str] | None = None,
    *,
    labels: dict[str, str] | None = None,
    task_count: int = 1,
    parallelism: int = 0,
    max_retry_count: int = 0,
    lifecycle_policies: list[batch_v1.LifecyclePolicy] | None = None,
    max_run_seconds: float | None = None,
    entrypoint: str = "",
    variables: dict[str, str] | None = None,
    secret_variables: dict[str, str] | None = None,
    runnables: list[batch_v1.Runnable] | None = None,
    logging: bool = True,
) -> batch_v1.Job:
    """A one-group container job like the operator submits (logs to Cloud Logging)."""
    spec = batch_v1.TaskSpec(
        runnables=runnables
        or [
            batch_v1.Runnable(
                container=batch_v1.Runnable.Container(
                    image_uri="us-central1-docker.pkg.dev/test-project/repo/image:1",
                    commands=commands or ["true"],
                    entrypoint=entrypoint,
                    enable_image_streaming=True,
                )
            )
        ],
        max_retry_count=max_retry_count,
        lifecycle_policies=lifecycle_policies or [],
        environment=batch_v1.Environment(variables=variables or {}, secret_variables=secret_variables or {}),
    )
    if max_run_seconds:
        spec.max_run_duration = duration_pb2.Duration(
            seconds=int(max_run_seconds), nanos=round(max_run_seconds % 1 * 1e9)
        )
    return batch_v1.Job(
        task_groups=[batch_v1.TaskGroup(task_count=task_count, parallelism=parallelism, task_spec=spec)],
        labels=labels or {},
        logs_policy=batch_v1.LogsPolicy(
            destination=batch_v1.LogsPolicy.Destination.CLOUD_LOGGING if logging else 0
        ),
    )


def wait_for(
    client: batch_v1.BatchServiceClient,
    name: str,
    until: Callable[[batch_v1.Job], bool] = lambda job: job.status.state in TERMINAL,
    timeout: float = 20.0,
    interval: float = 0.02,
) -> tuple[batch_v1.Job, list[str]]:
    """Poll GetJob until `until(job)`; the job and the distinct states seen on the way."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        job = client.get_job(name=name)
        state = job.status.state.name
        if not seen or seen[-1] != state:
            seen.append(state)
        if until(job):
            return job, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} stuck in {state}; seen {seen}")
        time.sleep(interval)


def exit_codes(job: batch_v1.Job) -> list[int]:
    return [e.task_execution.exit_code for e in job.status.status_events if e.task_execution.exit_code]


def descriptions(job: batch_v1.Job) -> list[str]:
    return [e.description for e in job.status.status_events]


def entries(logging_client: Any, uid: str, **request: Any) -> list[Any]:
    """All of a job's log entries (both logs), oldest first."""
    flt = request.pop("filter", f'labels.job_uid="{uid}"')
    return list(
        logging_client.list_log_entries(
            request={"resource_names": [f"projects/{PROJECT}"], "filter": flt, **request}
        )
    )


def seconds(value: Any) -> float:
    """A proto-plus Duration field (a timedelta at run time) in seconds."""
    return float(value.total_seconds())
