"""Job identity and deadlines under real Airflow (issue 13), run by tests/airflow/test_identity.py.

`echo` runs a command that differs per deployment (ID_COMMAND); `per_item` is mapped over
a list whose order the test changes between runs (ID_ITEMS); `mapped_timeout` is a mapped
deferred task whose jobs outlive its `timeout`; `exec_timeout` is a deferred task with only
an `execution_timeout`, which Airflow does not enforce in the triggerer.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, task

from airflow_batch_streaming.operators import BatchStreamingJobOperator

PROJECT = os.environ.get("ID_PROJECT", "id-project")
REGION = os.environ.get("ID_REGION", "us-central1")
IMAGE = os.environ.get("ID_IMAGE", f"{REGION}-docker.pkg.dev/{PROJECT}/repo/app:1.0")
COMMON = {
    "project_id": PROJECT,
    "region": REGION,
    "image_uri": IMAGE,
    "preflight": False,
    "poll_interval": 0.2,
}
LONG = {"emulator-run-seconds": "120"}

with DAG(dag_id="identity", schedule=None, catchup=False) as dag:
    BatchStreamingJobOperator(task_id="echo", commands=["echo", os.environ.get("ID_COMMAND", "hi")], **COMMON)

    @task
    def items() -> list[list[str]]:
        return [["echo", item] for item in os.environ.get("ID_ITEMS", "x,y").split(",")]

    BatchStreamingJobOperator.partial(task_id="per_item", **COMMON).expand(commands=items())
    BatchStreamingJobOperator.partial(
        task_id="mapped_timeout", deferrable=True, timeout=2, labels=LONG, **COMMON
    ).expand(commands=[["sleep", "1"], ["sleep", "2"]])
    BatchStreamingJobOperator(
        task_id="exec_timeout",
        deferrable=True,
        execution_timeout=timedelta(seconds=3),
        labels=LONG,
        commands=["sleep", "3"],
        **COMMON,
    )
