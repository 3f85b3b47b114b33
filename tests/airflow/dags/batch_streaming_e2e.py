"""Every operator of the package in one DAG, run by `airflow dags test` against the emulator.

preflight (real registry) >> run_deferred (a job submitted and waited on by the triggerer in
one task) and shards (mapped) >> submit (no wait) >> wait (deferrable sensor) >> logs. submit
comes last so that wait is the only task `dags test` can run next, whatever order its Airflow
version picks: the sensor finds the job running and defers.
Project, region and image come from the environment the test sets.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG

from airflow_batch_streaming.operators import (
    BatchJobLogsOperator,
    BatchStreamingJobOperator,
    BatchStreamingPreflightOperator,
)
from airflow_batch_streaming.sensors import BatchJobStateSensor

PROJECT = os.environ.get("E2E_PROJECT", "e2e-project")
REGION = os.environ.get("E2E_REGION", "us-central1")
IMAGE = os.environ.get("E2E_IMAGE", f"{REGION}-docker.pkg.dev/{PROJECT}/repo/app:1.0")

with DAG(
    dag_id="batch_streaming_e2e",
    schedule=None,
    catchup=False,
    render_template_as_native_obj=True,
    params={"image": IMAGE, "greeting": "hello from the e2e DAG"},
) as dag:
    preflight = BatchStreamingPreflightOperator(
        task_id="preflight",
        project_id=PROJECT,
        region=REGION,
        image_uri="{{ params.image }}",
    )
    submit = BatchStreamingJobOperator(
        task_id="submit",
        project_id=PROJECT,
        region=REGION,
        image_uri="{{ params.image }}",
        commands=["/bin/sh", "-c", 'echo "$GREETING"; sleep 20; echo "task $BATCH_TASK_INDEX done"'],
        environment={"GREETING": "{{ params.greeting }}"},
        task_count=2,
        labels={"suite": "e2e"},
        preflight=False,  # the preflight task checked this image
        wait_for_completion=False,
    )
    wait = BatchJobStateSensor(
        task_id="wait",
        job_name="{{ ti.xcom_pull(task_ids='submit')['name'] }}",
        deferrable=True,
        poke_interval=1,
        timeout=300,
    )
    logs = BatchJobLogsOperator(
        task_id="logs",
        job_name="{{ ti.xcom_pull(task_ids='submit')['name'] }}",
        include_agent_logs=True,
    )
    run_deferred = BatchStreamingJobOperator(
        task_id="run_deferred",
        project_id=PROJECT,
        region=REGION,
        image_uri=IMAGE,
        entrypoint="/bin/sh",
        commands=["-c", "sleep 10; echo deferred job ran"],
        deferrable=True,
        poll_interval=1,
        timeout=300,
    )
    # Dynamic task mapping: one job per shard, each with its own deterministic job ID.
    shards = BatchStreamingJobOperator.partial(
        task_id="shards",
        project_id=PROJECT,
        region=REGION,
        image_uri=IMAGE,
        preflight=False,
        poll_interval=0.5,
    ).expand(commands=[["/bin/sh", "-c", f"echo shard {n}"] for n in range(2)])

    preflight >> [run_deferred, shards] >> submit >> wait >> logs
