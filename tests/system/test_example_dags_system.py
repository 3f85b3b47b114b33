"""The example DAGs as system tests against a real Google Cloud project.

As the Airflow providers' `tests/system/` do: the DAGs users read are the DAGs that run.
`make system-test` runs them with `airflow dags test` on a fresh metadata database, against
the project named by the environment, with real credentials (Application Default
Credentials, or `GOOGLE_APPLICATION_CREDENTIALS`):

    BATCH_STREAMING_SYSTEM_TEST_PROJECT  project that runs the jobs (Batch, Logging and the
                                         Container File System API enabled)
    BATCH_STREAMING_SYSTEM_TEST_REGION   Batch region, e.g. us-central1
    BATCH_STREAMING_SYSTEM_TEST_IMAGE    an Artifact Registry image the region can stream,
                                         with /bin/sh (e.g. a busybox copy)

Every job a test creates is deleted afterwards (found by the label the operator puts on
it and by the names the run returned). Without the variables every test is skipped with a
one-line reason, so `make test` never fails for want of a project.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRED = (
    "BATCH_STREAMING_SYSTEM_TEST_PROJECT",
    "BATCH_STREAMING_SYSTEM_TEST_REGION",
    "BATCH_STREAMING_SYSTEM_TEST_IMAGE",
)
MISSING = [name for name in REQUIRED if not os.environ.get(name)]
#: Credentials and gcloud settings a real run needs; the rest of the shell is left out.
PASSED_THROUGH = ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "GOOGLE_CLOUD_QUOTA_PROJECT")
#: A rehearsal on the local emulator and registry (nothing reaches Google): these become
#: BATCH_STREAMING_EMULATOR_HOST / BATCH_STREAMING_REGISTRY_URL of the runs, which the
#: test-wide conftest keeps out of every other test.
REHEARSAL = {
    "BATCH_STREAMING_SYSTEM_TEST_EMULATOR_HOST": "BATCH_STREAMING_EMULATOR_HOST",
    "BATCH_STREAMING_SYSTEM_TEST_REGISTRY_URL": "BATCH_STREAMING_REGISTRY_URL",
}
CLEANUP = """
import json, sys
from airflow_batch_streaming.hooks import clients
parent, started, names = sys.argv[1], float(sys.argv[2]), set(json.loads(sys.argv[3]))
client = clients.batch_client()
for dag_id in ("example_image_streaming", "example_streaming_fanout"):
    for job in client.list_jobs(request={"parent": parent, "filter": f'labels."airflow-dag"="{dag_id}"'}):
        if job.create_time.timestamp() >= started - 60:
            names.add(job.name)
for name in sorted(names):
    try:
        client.delete_job(name=name)
        print("deleted", name)
    except Exception as error:
        print("cleanup:", name, error)
"""

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        bool(MISSING), reason=f"system tests need {', '.join(MISSING)} and Google credentials (see README)"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"


@pytest.fixture(scope="module")
def project() -> dict[str, str]:
    return {
        "project": os.environ["BATCH_STREAMING_SYSTEM_TEST_PROJECT"],
        "region": os.environ["BATCH_STREAMING_SYSTEM_TEST_REGION"],
        "image": os.environ["BATCH_STREAMING_SYSTEM_TEST_IMAGE"],
    }


@pytest.fixture(scope="module")
def real_env(tmp_path_factory: pytest.TempPathFactory, project: dict[str, str]) -> dict[str, str]:
    from airflow_support import airflow_env, migrate

    env = airflow_env(
        tmp_path_factory.mktemp("airflow-home"),
        DAGS,
        {
            "BATCH_STREAMING_EXAMPLE_PROJECT": project["project"],
            "BATCH_STREAMING_EXAMPLE_REGION": project["region"],
            "BATCH_STREAMING_EXAMPLE_IMAGE": project["image"],
            "BATCH_STREAMING_GATE_IMAGES": json.dumps([project["image"]]),
            # The default connection: Application Default Credentials, this project.
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
                {"conn_type": "google_cloud_platform", "extra": {"project": project["project"]}}
            ),
            **{name: os.environ[name] for name in PASSED_THROUGH if os.environ.get(name)},
            **{ours: os.environ[given] for given, ours in REHEARSAL.items() if os.environ.get(given)},
        },
    )
    for name in ("NO_GCE_CHECK", "GCE_METADATA_HOST", "GCE_METADATA_IP"):  # the test-wide blocks:
        env.pop(name, None)  # real credentials may come from the metadata server
    migrate(env)
    return env


@pytest.fixture
def cleanup(project: dict[str, str], real_env: dict[str, str]) -> Iterator[set[str]]:
    """Names of the jobs a test created; every one of them, and every job labelled with the
    DAG it ran, is deleted at the end (ListJobs lags, hence both). Run with the runs' own
    environment and credentials, in a child process like the runs."""
    names: set[str] = set()
    started = time.time()
    yield names
    parent = f"projects/{project['project']}/locations/{project['region']}"
    done = subprocess.run(
        [sys.executable, "-c", CLEANUP, parent, str(started), json.dumps(sorted(names))],
        env=real_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    print(done.stdout, done.stderr[-2000:])
    assert done.returncode == 0, done.stderr[-2000:]


def _run(dag_id: str, env: dict[str, str]) -> dict[str, Any]:
    from airflow_support import airflow, last_run

    result = airflow(["dags", "test", dag_id], env, timeout=3600)
    run = last_run(dag_id, env)
    assert result.returncode == 0 and run["state"] == "success", (run, result.stderr[-5000:])
    return run


def test_example_image_streaming_on_google(real_env: dict[str, str], cleanup: set[str]) -> None:
    run = _run("example_image_streaming", real_env)
    xcoms = run["xcoms"]
    cleanup.add(xcoms["submit.return_value"]["name"])
    assert xcoms["preflight.return_value"]["ok"] is True  # the real registry and Service Usage
    waited = xcoms["wait.return_value"]
    assert waited["state"] == "SUCCEEDED" and waited["name"] == xcoms["submit.return_value"]["name"]
    assert waited["timeline"]["running_seconds"] is not None
    logs = xcoms["logs.return_value"]
    assert f'labels.job_uid="{waited["uid"]}"' in logs["filter"]


def test_example_streaming_fanout_on_google(real_env: dict[str, str], cleanup: set[str]) -> None:
    run = _run("example_streaming_fanout", real_env)
    gathered = run["xcoms"]["gather.return_value"]
    assert gathered["jobs"] == 3 and set(gathered["states"].values()) == {"SUCCEEDED"}


def test_example_preflight_gate_on_google(real_env: dict[str, str]) -> None:
    _run("example_preflight_gate", real_env)
