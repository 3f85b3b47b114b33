"""Job identity, mapped tasks and deadlines through real Airflow (`airflow dags test`), issue 13.

Two deployments (two fresh metadata databases) run the same DAG with the same run id
against one emulator; then the first re-runs the date with its mapped input reordered.
Every job is then read back from the emulator: whose it is, what it runs, how it ended.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_support import airflow, airflow_env, last_run, migrate

from airflow_batch_streaming import status
from airflow_batch_streaming.emulator import Emulator, Timings
from airflow_batch_streaming.hooks import clients
from airflow_batch_streaming.hooks.batch import BatchStreamingHook

pytestmark = [pytest.mark.airflow, pytest.mark.emulator]

DAGS = Path(__file__).resolve().parent / "dags"
PROJECT = "id-project"
REGION = "us-central1"
DATE = "2024-05-01T00:00:00+00:00"


def commands(job: dict[str, Any]) -> list[str]:
    return list(job["taskGroups"][0]["taskSpec"]["runnables"][0]["container"]["commands"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    timings = Timings(queue=0.1, schedule=0.1, run=0.3, cancel=0.2, delete=0.1)
    with Emulator(timings=timings) as emulator, pytest.MonkeyPatch.context() as patch:
        patch.setenv(clients.EMULATOR_HOST_ENV, emulator.target)
        outputs: dict[str, Any] = {}

        def deployment(name: str, **extra: str) -> dict[str, str]:
            env = airflow_env(
                tmp_path_factory.mktemp(f"home-{name}"),
                DAGS,
                {**emulator.env(), "ID_PROJECT": PROJECT, "ID_REGION": REGION, **extra},
            )
            migrate(env)
            return env

        def run(label: str, env: dict[str, str]) -> None:
            done = airflow(["dags", "test", "identity", DATE], env)
            outputs[label] = {"run": last_run("identity", env), "output": done.stdout + done.stderr}

        staging = deployment("staging", ID_COMMAND="from staging", ID_ITEMS="x,y")
        production = deployment("production", ID_COMMAND="from production", ID_ITEMS="x,y")
        run("staging", staging)
        run("production", production)
        run("staging-again", {**staging, "ID_ITEMS": "y,x"})  # the date re-run, its input reordered
        jobs = [status.as_rest(j) for j in BatchStreamingHook().list_jobs(PROJECT, REGION)]
        # Cancellations take a moment: read the final states once nothing is live.
        for job in jobs:
            name = job["name"]
            for _ in range(100):
                state = status.state_of(BatchStreamingHook().get_job(name))
                if state not in status.ACTIVE:
                    break
                time.sleep(0.05)
            job["final"] = state
        yield {**outputs, "jobs": {j["name"]: j for j in jobs}, "stats": emulator.stats()}


def _xcom(runs: dict[str, Any], label: str, key: str) -> Any:
    return runs[label]["run"]["xcoms"].get(key)


def test_two_deployments_with_the_same_run_id_each_run_their_own_job(runs: dict[str, Any]) -> None:
    staging = _xcom(runs, "staging", "echo.return_value")
    production = _xcom(runs, "production", "echo.return_value")
    assert staging and production, runs["production"]["output"][-4000:]
    assert staging["name"] != production["name"]
    assert commands(runs["jobs"][staging["name"]]) == ["echo", "from staging"]
    assert commands(runs["jobs"][production["name"]]) == ["echo", "from production"]
    assert runs["production"]["run"]["tasks"]["echo[-1]"] == "success"


def test_a_rerun_of_the_date_runs_a_new_job(runs: dict[str, Any]) -> None:
    first = _xcom(runs, "staging", "echo.return_value")
    again = _xcom(runs, "staging-again", "echo.return_value")
    assert again["name"] != first["name"] and again["state"] == "SUCCEEDED"
    echo_jobs = [j for j in runs["jobs"].values() if j["labels"]["airflow-task"] == "echo"]
    assert len(echo_jobs) == 3  # staging, production, staging again


def test_mapped_tasks_run_the_job_of_their_own_input_after_a_reorder(runs: dict[str, Any]) -> None:
    for label, order in (("staging", ["x", "y"]), ("staging-again", ["y", "x"])):
        for index, item in enumerate(order):
            result = _xcom(runs, label, f"per_item.return_value[{index}]")
            assert result, runs[label]["output"][-4000:]
            assert commands(runs["jobs"][result["name"]]) == ["echo", item]


def test_a_mapped_deferred_timeout_cancels_every_job(runs: dict[str, Any]) -> None:
    tasks = runs["staging"]["run"]["tasks"]
    assert tasks["mapped_timeout[0]"] == tasks["mapped_timeout[1]"] == "failed"
    mine = [
        j
        for j in runs["jobs"].values()
        if j["labels"]["airflow-task"] == "mapped_timeout" and commands(j)[0] == "sleep"
    ]
    assert len(mine) == 6  # two map indexes, three runs
    assert {j["final"] for j in mine} == {"CANCELLED"}
    assert "BatchJobTimeoutError" in runs["staging"]["output"]


def test_execution_timeout_in_the_triggerer_cancels_the_job(runs: dict[str, Any]) -> None:
    assert runs["staging"]["run"]["tasks"]["exec_timeout[-1]"] == "failed"
    mine = [j for j in runs["jobs"].values() if j["labels"]["airflow-task"] == "exec_timeout"]
    assert len(mine) == 3 and {j["final"] for j in mine} == {"CANCELLED"}
