"""Running real Airflow in subprocesses, as users do: shared by the Airflow-level tests.

Airflow reads its configuration once per process, so each test gets a fresh
AIRFLOW_HOME and runs `airflow ...` commands with a clean environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]

READ_RUN = textwrap.dedent(
    """
    import json, sys
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == sys.argv[1]).order_by(DagRun.id.desc()).first()
        tis = session.query(TaskInstance).filter(
            TaskInstance.run_id == run.run_id, TaskInstance.dag_id == sys.argv[1]
        )
        xcoms = session.query(XComModel).filter(
            XComModel.dag_id == sys.argv[1], XComModel.run_id == run.run_id
        )
        out = {
            "state": str(run.state),
            "tasks": {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in tis},
            "xcoms": {f"{x.task_id}.{x.key}" + (f"[{x.map_index}]" if x.map_index >= 0 else ""): x.value
                      for x in xcoms},
        }
    print(json.dumps(out, default=str))
    """
)


def airflow_env(home: Path, dags_folder: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a user's shell: no stray Airflow or Google settings, ours on top."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "BATCH_STREAMING_", "GOOGLE_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "NO_GCE_CHECK": "True",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            **extra,
        }
    )
    return env


def airflow(
    args: list[str], env: Mapping[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "airflow"), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def migrate(env: Mapping[str, str]) -> None:
    done = airflow(["db", "migrate"], env)
    assert done.returncode == 0, done.stderr[-3000:]


def last_run(dag_id: str, env: Mapping[str, str]) -> dict[str, Any]:
    """State, task states and XComs of the DAG's latest run, read from the metadata database."""
    read = subprocess.run(
        [sys.executable, "-c", READ_RUN, dag_id], env=dict(env), capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(read.stdout.strip().splitlines()[-1])
    return result
