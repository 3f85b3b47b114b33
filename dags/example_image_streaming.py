"""Preflight, submit, wait and read the logs of one Image Streaming Batch job."""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_batch_streaming.operators import (
    BatchJobLogsOperator,
    BatchStreamingJobOperator,
    BatchStreamingPreflightOperator,
)
from airflow_batch_streaming.sensors import BatchJobStateSensor

# Defaults come from the environment so the same file runs against the local
# emulator (`make demo`, docker-compose) and against a real project unchanged.
PROJECT = os.environ.get("BATCH_STREAMING_EXAMPLE_PROJECT", "demo-project")
REGION = os.environ.get("BATCH_STREAMING_EXAMPLE_REGION", "us-central1")
IMAGE = os.environ.get("BATCH_STREAMING_EXAMPLE_IMAGE", f"{REGION}-docker.pkg.dev/{PROJECT}/demo/hello:1.0")
COMMAND = [
    "/bin/sh",
    "-c",
    'echo "hello from task ${BATCH_TASK_INDEX} of ${BATCH_TASK_COUNT}"; sleep 2; '
    'echo "streamed image: $IMAGE_URI"',
]

DOC = """
### Image Streaming on Google Cloud Batch, step by step

1. **preflight** checks, before anything is paid for, that the image *can* stream: it is in
   Artifact Registry in a location that serves the job's region, its manifest is not Docker
   schema 1, it has no empty or duplicate layers, and the Container File System API is
   enabled in the project. Every problem is listed at once; the task fails on any error.
2. **submit** builds a Batch job from plain arguments (streaming on, Cloud Logging on) and
   submits it with a job ID derived from this task instance, so a retry re-attaches to the
   job instead of creating a second one. It does not wait (`wait_for_completion=False`).
3. **wait** is a deferrable sensor: it checks the job once and then hands the wait to the
   triggerer, freeing the worker slot until the job reaches a final state.
4. **logs** copies the job's own output from Cloud Logging into this task's log.

Params: `project`, `region`, `image`, `command`. With `BATCH_STREAMING_EMULATOR_HOST` set the
DAG talks to the local emulator; without it, to Google with the `google_cloud_default`
connection.
"""

with DAG(
    dag_id="example_image_streaming",
    schedule=None,
    catchup=False,
    doc_md=DOC,
    tags=["example", "batch", "image-streaming"],
    render_template_as_native_obj=True,
    params={
        "project": Param(PROJECT, type="string", description="Google Cloud project that runs the job"),
        "region": Param(REGION, type="string", description="Batch region (where the VMs run)"),
        "image": Param(IMAGE, type="string", description="Artifact Registry image URI"),
        "command": Param(COMMAND, type="array", description="Container command (argument list)"),
    },
) as dag:
    preflight = BatchStreamingPreflightOperator(
        task_id="preflight",
        image_uri="{{ params.image }}",
        project_id="{{ params.project }}",
        region="{{ params.region }}",
    )
    submit = BatchStreamingJobOperator(
        task_id="submit",
        project_id="{{ params.project }}",
        region="{{ params.region }}",
        image_uri="{{ params.image }}",
        commands="{{ params.command }}",
        environment={"IMAGE_URI": "{{ params.image }}"},
        labels={"team": "data-platform"},
        machine_type="e2-standard-4",
        preflight=False,  # the preflight task above already checked this image
        wait_for_completion=False,
    )
    wait = BatchJobStateSensor(
        task_id="wait",
        job_name="{{ ti.xcom_pull(task_ids='submit')['name'] }}",
        deferrable=True,
        poke_interval=5,
        timeout=60 * 60,
    )
    logs = BatchJobLogsOperator(
        task_id="logs",
        job_name="{{ ti.xcom_pull(task_ids='submit')['name'] }}",
    )

    preflight >> submit >> wait >> logs
