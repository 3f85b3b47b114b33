"""A daily gate: fail loudly when an image a team publishes stops being streamable."""

from __future__ import annotations

import json
import os
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_batch_streaming.operators import BatchStreamingPreflightOperator

PROJECT = os.environ.get("BATCH_STREAMING_EXAMPLE_PROJECT", "demo-project")
REGION = os.environ.get("BATCH_STREAMING_EXAMPLE_REGION", "us-central1")
# The images to watch: a JSON list in the environment, or the demo's two images.
IMAGES: list[str] = json.loads(
    os.environ.get(
        "BATCH_STREAMING_GATE_IMAGES",
        json.dumps([f"{REGION}-docker.pkg.dev/{PROJECT}/demo/hello:1.0"]),
    )
)

DOC = """
### Preflight gate

Checks every image in `BATCH_STREAMING_GATE_IMAGES` once a day: one mapped `check` task per
image, each logging its full report (every finding, with how to fix it). `report` then fails
the run with a single list of every image that is no longer streamable, so one alert says
everything.
"""

with DAG(
    dag_id="example_preflight_gate",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=DOC,
    tags=["example", "batch", "image-streaming"],
) as dag:
    check = BatchStreamingPreflightOperator.partial(
        task_id="check",
        project_id=PROJECT,
        region=REGION,
        fail_on_errors=False,  # `report` below fails once, listing every bad image
    ).expand(image_uri=IMAGES)

    @task
    def report(reports: list[dict[str, Any]]) -> dict[str, Any]:
        bad = [r for r in reports if not r["ok"]]
        if bad:
            lines = [
                f"{r['image']}: "
                + "; ".join(f"{f['code']}: {f['message']}" for f in r["findings"] if f["severity"] == "error")
                for r in bad
            ]
            raise RuntimeError(
                f"{len(bad)} of {len(reports)} images no longer streamable:\n" + "\n".join(lines)
            )
        return {"checked": len(reports), "ok": True}

    report(check.output)
