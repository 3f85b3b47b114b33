"""Fan out one streaming Batch job per input with dynamic task mapping, then gather."""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import DAG, task

from airflow_batch_streaming.operators import BatchStreamingJobOperator

PROJECT = os.environ.get("BATCH_STREAMING_EXAMPLE_PROJECT", "demo-project")
REGION = os.environ.get("BATCH_STREAMING_EXAMPLE_REGION", "us-central1")
IMAGE = os.environ.get("BATCH_STREAMING_EXAMPLE_IMAGE", f"{REGION}-docker.pkg.dev/{PROJECT}/demo/hello:1.0")

DOC = """
### Fan-out: one streaming job per input

`inputs` returns the work list at run time; `render` is mapped over it, so each input gets
its own Batch job (and its own job ID, derived from the map index: retries re-attach, they
never duplicate). Each job is deferred to the triggerer while it runs. `gather` collects
every job's summary (state, timeline) once all have finished.
"""

with DAG(
    dag_id="example_streaming_fanout",
    schedule=None,
    catchup=False,
    doc_md=DOC,
    tags=["example", "batch", "image-streaming"],
) as dag:

    @task
    def inputs() -> list[list[str]]:
        shards = ["alpha", "beta", "gamma"]
        return [["/bin/sh", "-c", f"echo processing shard {s}"] for s in shards]

    render = BatchStreamingJobOperator.partial(
        task_id="render",
        project_id=PROJECT,
        region=REGION,
        image_uri=IMAGE,
        machine_type="e2-standard-4",
        deferrable=True,
        poll_interval=5,
    ).expand(commands=inputs())

    @task
    def gather(results: list[dict[str, Any]]) -> dict[str, Any]:
        states = {r["job_id"]: r["state"] for r in results}
        running = [r["timeline"].get("running_seconds") for r in results]
        print(f"{len(results)} jobs: {states}; seconds running: {running}")
        return {"jobs": len(results), "states": states}

    gather(render.output)
