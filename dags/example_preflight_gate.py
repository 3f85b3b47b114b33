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

Checks every image in `BATCH_STREAMING_GATE_IMAGES` once a day. One mapped task per image
fails with that image's findings (and how to fix each); `report` then fails the run with a
single list of every image that is no longer streamable, so one alert says everything.
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
        fail_on_warnings=False,
    ).expand(image_uri=IMAGES)

    @task(trigger_rule="all_done")
    def report(reports: list[dict[str, Any] | None]) -> dict[str, Any]:
        got = [r for r in reports if r]
        bad = [r for r in got if not r["ok"]]
        missing = len(IMAGES) - len(got)
        if bad or missing:
            lines = [
                f"{r['image']}: " + "; ".join(f"{f['code']}: {f['message']}" for f in r["findings"])
                for r in bad
            ]
            if missing:
                lines.append(f"{missing} image(s) failed their check: see the failed 'check' tasks")
            raise RuntimeError("images no longer streamable:\n" + "\n".join(lines))
        return {"checked": len(got), "ok": True}

    report(check.output)
