"""The example DAG written with the Google provider's CloudBatchSubmitJobOperator.

Used only by benchmarks/parse.py, so that both DAGs are parsed side by side.
It lives outside dags/ so that Airflow never loads it.
"""

from __future__ import annotations

import os

from airflow.providers.google.cloud.operators.cloud_batch import CloudBatchSubmitJobOperator
from airflow.sdk import DAG, Param

PROJECT = os.environ.get("BATCH_STREAMING_EXAMPLE_PROJECT", "demo-project")
REGION = os.environ.get("BATCH_STREAMING_EXAMPLE_REGION", "us-central1")
IMAGE = os.environ.get("BATCH_STREAMING_EXAMPLE_IMAGE", f"{REGION}-docker.pkg.dev/{PROJECT}/demo/hello:1.0")
COMMAND = ["/bin/sh", "-c", 'echo "hello from task ${BATCH_TASK_INDEX}"']

with DAG(
    dag_id="example_image_streaming_provider",
    schedule=None,
    catchup=False,
    render_template_as_native_obj=True,
    params={
        "project": Param(PROJECT, type="string"),
        "region": Param(REGION, type="string"),
        "image": Param(IMAGE, type="string"),
        "command": Param(COMMAND, type="array"),
    },
) as dag:
    CloudBatchSubmitJobOperator(
        task_id="submit",
        project_id="{{ params.project }}",
        region="{{ params.region }}",
        job_name="example-job",
        job={
            "task_groups": [
                {
                    "task_spec": {
                        "runnables": [
                            {
                                "container": {
                                    "image_uri": "{{ params.image }}",
                                    "commands": "{{ params.command }}",
                                    "enable_image_streaming": True,
                                }
                            }
                        ],
                        "environment": {"variables": {"IMAGE_URI": "{{ params.image }}"}},
                    },
                    "task_count": 1,
                }
            ],
            "allocation_policy": {"instances": [{"policy": {"machine_type": "e2-standard-4"}}]},
            "labels": {"team": "data-platform"},
            "logs_policy": {"destination": "CLOUD_LOGGING"},
        },
        deferrable=True,
    )
