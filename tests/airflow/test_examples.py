"""The example DAGs and the demo, run as a user runs them: `airflow dags test`, `make demo`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow_support import ROOT, airflow, airflow_env, last_run, migrate

from airflow_batch_streaming.emulator import Emulator, Timings
from airflow_batch_streaming.testing import LocalRegistry
from airflow_batch_streaming.testing.demo_images import push_demo_images

pytestmark = [pytest.mark.airflow, pytest.mark.emulator, pytest.mark.registry]

DAGS = ROOT / "dags"
PROJECT = "demo-project"
REGION = "us-central1"


def test_every_example_dag_imports() -> None:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    bag = DagBag(dag_folder=str(DAGS), collect_dags=True)
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "example_image_streaming",
        "example_streaming_fanout",
        "example_preflight_gate",
    }
    for dag in bag.dags.values():
        assert dag.doc_md, f"{dag.dag_id} has no doc_md"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    timings = Timings(queue=0.2, schedule=0.2, run=0.5, cancel=0.1, delete=0.1)
    with LocalRegistry() as registry, Emulator(run_commands=True, timings=timings) as emulator:
        images = push_demo_images(registry.url, project=PROJECT, location=REGION)
        env = airflow_env(
            tmp_path_factory.mktemp("airflow-home"),
            DAGS,
            {
                **emulator.env(),
                "BATCH_STREAMING_REGISTRY_URL": registry.url,
                "BATCH_STREAMING_EXAMPLE_PROJECT": PROJECT,
                "BATCH_STREAMING_EXAMPLE_REGION": REGION,
                "BATCH_STREAMING_EXAMPLE_IMAGE": images["good"],
                "BATCH_STREAMING_GATE_IMAGES": json.dumps([images["good"]]),
                "BROKEN_IMAGE": images["broken"],
            },
        )
        migrate(env)
        yield env


def test_example_image_streaming(stack: dict[str, str]) -> None:
    result = airflow(["dags", "test", "example_image_streaming"], stack)
    run = last_run("example_image_streaming", stack)
    assert result.returncode == 0 and run["state"] == "success", (run, result.stderr[-5000:])
    xcoms = run["xcoms"]
    assert xcoms["preflight.return_value"]["ok"] is True
    waited = xcoms["wait.return_value"]
    assert waited["state"] == "SUCCEEDED" and waited["name"] == xcoms["submit.return_value"]["name"]
    assert waited["timeline"]["running_seconds"] is not None
    assert any("hello from task 0 of 1" in line for line in xcoms["logs.return_value"]["last_lines"])


def test_example_streaming_fanout(stack: dict[str, str]) -> None:
    result = airflow(["dags", "test", "example_streaming_fanout"], stack)
    run = last_run("example_streaming_fanout", stack)
    assert result.returncode == 0 and run["state"] == "success", (run, result.stderr[-5000:])
    gathered = run["xcoms"]["gather.return_value"]
    assert gathered["jobs"] == 3 and set(gathered["states"].values()) == {"SUCCEEDED"}
    assert len(gathered["states"]) == 3  # one distinct job per mapped input


def test_example_preflight_gate_passes_then_fails_loudly(stack: dict[str, str]) -> None:
    result = airflow(["dags", "test", "example_preflight_gate"], stack)
    run = last_run("example_preflight_gate", stack)
    assert result.returncode == 0 and run["state"] == "success", (run, result.stderr[-5000:])

    broken = {
        **stack,
        "BATCH_STREAMING_GATE_IMAGES": json.dumps(
            [stack["BATCH_STREAMING_EXAMPLE_IMAGE"], stack["BROKEN_IMAGE"]]
        ),
    }
    result = airflow(["dags", "test", "example_preflight_gate", "2026-02-01"], broken)
    run = last_run("example_preflight_gate", broken)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and run["state"] == "failed"
    assert "1 of 2 images no longer streamable" in output
    assert "empty-layer" in output and "duplicate-layer" in output


def test_demo_command_end_to_end() -> None:
    demo = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=ROOT,
    )
    output = demo.stdout
    assert demo.returncode == 0, output[-6000:] + demo.stderr[-6000:]
    assert "OK (0 errors" in output  # the good image's preflight report
    assert "DAG run state: success" in output
    assert "state SUCCEEDED" in output and "running seconds" in output
    assert "hello from task 0 of 1" in output  # the job's own output, from logging
    assert "FAILED (2 errors" in output and "duplicate-layer" in output  # the broken image
    home = re.search(r"temporary AIRFLOW_HOME (\S+)\)", output)
    assert home and not Path(home.group(1)).exists()  # it cleaned up after itself
