"""A streaming Batch job whose command exits 3: the task must fail and say so in its log.

Loaded by the full-stack test as a second DAG bundle next to the repository's `dags/`.
Polling only (`notification_topic=""`), although the deployment configures push: the one
full-stack wait that keeps the polling path covered.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG

from airflow_batch_streaming.operators import BatchStreamingJobOperator

PROJECT = os.environ.get("BATCH_STREAMING_EXAMPLE_PROJECT", "demo-project")
REGION = os.environ.get("BATCH_STREAMING_EXAMPLE_REGION", "us-central1")
IMAGE = os.environ.get("BATCH_STREAMING_EXAMPLE_IMAGE", f"{REGION}-docker.pkg.dev/{PROJECT}/demo/hello:1.0")

with DAG(
    dag_id="example_failing_job",
    schedule=None,
    catchup=False,
    tags=["test", "batch", "image-streaming"],
) as dag:
    BatchStreamingJobOperator(
        task_id="fail",
        project_id=PROJECT,
        region=REGION,
        image_uri=IMAGE,
        commands=["/bin/sh", "-c", "echo about to fail; exit 3"],
        deferrable=True,
        preflight=True,
        poll_interval=5,
        retries=0,
        notification_topic="",
    )
