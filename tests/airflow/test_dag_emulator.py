"""`airflow dags test` of a DAG that uses every operator, against the emulator and a real registry.

What a user runs: a fresh AIRFLOW_HOME with a migrated SQLite database, the DAG in a dags
folder, `BATCH_STREAMING_EMULATOR_HOST` and `BATCH_STREAMING_REGISTRY_URL` set. Airflow
runs in subprocesses (its configuration is read once per process); the emulator and the
registry run here. Deferred tasks run their trigger inline, as `dags test` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow_support import airflow, airflow_env, last_run, migrate

from airflow_batch_streaming.emulator import Emulator, Timings
from airflow_batch_streaming.testing import LocalRegistry, tar_layer

pytestmark = [pytest.mark.airflow, pytest.mark.emulator, pytest.mark.registry]

DAG_ID = "batch_streaming_e2e"
DAGS = Path(__file__).resolve().parent / "dags"
PROJECT = "e2e-project"
REGION = "us-central1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    registry = LocalRegistry().start()
    image = f"{REGION}-docker.pkg.dev/{PROJECT}/repo/app:1.0"
    registry.push_image(f"{PROJECT}/repo/app", "1.0", [tar_layer({"app/hello.txt": b"hello\n"})])
    home = tmp_path_factory.mktemp("airflow-home")
    timings = Timings(queue=0.1, schedule=0.1, run=0.5, cancel=0.1, delete=0.1)
    with Emulator(run_commands=True, timings=timings) as emulator:
        env = airflow_env(
            home,
            DAGS,
            {
                **emulator.env(),
                "BATCH_STREAMING_REGISTRY_URL": registry.url,
                "E2E_PROJECT": PROJECT,
                "E2E_REGION": REGION,
                "E2E_IMAGE": image,
            },
        )
        migrate(env)
        try:
            yield env
        finally:
            registry.stop()


def test_dag_runs_every_operator_against_the_emulator(stack: dict[str, str]) -> None:
    result = airflow(["dags", "test", DAG_ID], stack)
    output = result.stdout + result.stderr
    run = last_run(DAG_ID, stack)
    assert result.returncode == 0 and run["state"] == "success", (run, output[-6000:])
    assert set(run["tasks"].values()) == {"success"}, run["tasks"]
    assert len(run["tasks"]) == 7  # six tasks, one of them mapped over two shards

    xcoms = run["xcoms"]
    assert xcoms["preflight.return_value"]["ok"] is True
    submitted = xcoms["submit.return_value"]
    waited = xcoms["wait.return_value"]
    assert waited["name"] == submitted["name"] and waited["state"] == "SUCCEEDED"
    assert waited["timeline"]["running_seconds"] is not None
    # The links were pushed for the UI (also by the sensor, which was deferred).
    assert xcoms["submit.batch_job_console_url"].startswith("https://console.cloud.google.com/batch/")
    assert xcoms["wait.batch_job_logs_url"].startswith("https://console.cloud.google.com/logs/")
    logs = xcoms["logs.return_value"]
    assert logs["entries"] >= 4 and not logs["truncated"]
    assert any("hello from the e2e DAG" in line for line in logs["last_lines"])
    deferred = xcoms["run_deferred.return_value"]
    assert deferred["state"] == "SUCCEEDED" and deferred["name"] != submitted["name"]
    shard_jobs = {xcoms[f"shards.return_value[{i}]"]["name"] for i in range(2)}
    assert len(shard_jobs) == 2 and submitted["name"] not in shard_jobs
    # Both the sensor and run_deferred handed their wait to the (inline) triggerer.
    assert output.count("Pausing task as DEFERRED") >= 2
    # The job's own output is in the Airflow task log.
    assert "[task 1] hello from the e2e DAG" in output or "[task 0] hello from the e2e DAG" in output
