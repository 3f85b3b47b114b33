"""Secrets stay out of every output: the registry token and Secret Manager values.

Row 11 of the reliability list. A full run reads the image's manifest from a registry that
wants Basic auth with the access token (as Artifact Registry does), and gives the job a
`secret_environment` variable that the emulator resolves from its Secret Manager stand-in.
The job checks it received the right value (against a hash) without printing it. Then all
output is searched for the token, its Basic-auth form and the secret value: every log
record (stdlib at DEBUG and structlog), stdout/stderr, XComs, the result, errors, the job
Batch stored; and under real Airflow, the command's output and the task log files.

What the job itself prints is its author's business: these jobs never print the secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from reliability_support import (
    PROJECT,
    REGISTRY_TOKEN,
    SECRET_REF,
    SECRET_VALUE,
    TI,
    USES_SECRET,
    AirflowRun,
    assert_no_leak,
    job_op,
    run_task,
)

from airflow_batch_streaming import spec, status
from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.exceptions import BatchJobFailedError
from airflow_batch_streaming.hooks.batch import BatchStreamingHook
from airflow_batch_streaming.operators._common import log_filter
from airflow_batch_streaming.registry import REGISTRY_URL_ENV
from airflow_batch_streaming.testing import LocalRegistry

pytestmark = [pytest.mark.emulator, pytest.mark.registry]


@pytest.fixture
def secret_run(cmd_emu: Emulator, auth_registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The emulator knows the secret; the hook has the registry token, as it does on GCP."""
    cmd_emu.secrets({SECRET_REF: SECRET_VALUE})
    monkeypatch.setattr(BatchStreamingHook, "registry_token", lambda self: REGISTRY_TOKEN)
    monkeypatch.setenv(REGISTRY_URL_ENV, auth_registry.url)
    return cmd_emu


@pytest.mark.parametrize(
    ("deferrable", "fails"),
    [
        pytest.param(False, False, id="sync"),
        pytest.param(True, False, id="deferrable"),
        pytest.param(False, True, id="failing"),
    ],
)
def test_a_full_run_shows_neither_token_nor_secret(
    secret_run: Emulator,
    all_logs: Callable[[], list[str]],
    capfd: pytest.CaptureFixture[str],
    deferrable: bool,
    fails: bool,
) -> None:
    """Preflight against the authenticated registry, submit, wait, (fail with output); then search."""
    commands = [*USES_SECRET[:-1], USES_SECRET[-1] + ("; echo failing now; exit 3" if fails else "")]
    ti = TI()
    outcome: Any
    try:
        outcome = run_task(
            lambda: job_op(
                preflight=True,  # reads the manifest with the token
                commands=commands,
                environment={"GREETING": "hello"},
                secret_environment={"DB_PASSWORD": SECRET_REF},
                deferrable=deferrable,
            ),
            ti,
        )
    except BatchJobFailedError as error:
        assert fails
        outcome = error
        assert "the password checks out" in str(error)  # its output tail, without the password
    assert ti.xcoms["preflight"]["ok"] is True  # the registry accepted the token
    hook = BatchStreamingHook()
    name = ti.xcoms["batch_job"]["name"]
    job = spec.job_to_rest(hook.get_job(name))
    uid = status.summarize(job)["uid"]
    lines = [
        str(entry.text_payload)
        for entry in hook.list_log_entries(PROJECT, log_filter(uid, "2000-01-01T00:00:00Z"))
    ]
    assert "the password checks out" in lines  # the job really got the value
    out, err = capfd.readouterr()
    assert_no_leak(outcome, json.dumps(ti.xcoms, default=str), json.dumps(job), out, err)
    assert_no_leak(*all_logs())
    assert SECRET_REF in json.dumps(job)  # Batch holds the reference, not the value


@pytest.mark.airflow
def test_real_airflow_logs_and_xcoms_show_neither_token_nor_secret(airflow_run: AirflowRun) -> None:
    tasks = airflow_run.run["tasks"]
    assert tasks["with_secrets[-1]"] == "success", airflow_run.output[-5000:]
    xcoms = airflow_run.run["xcoms"]
    assert xcoms["with_secrets.return_value"]["state"] == "SUCCEEDED"
    # The scanned output is the task's log: it has the preflight report and the job's progress.
    assert "Preflight:" in airflow_run.output and "with_secrets" in airflow_run.output
    assert_no_leak(airflow_run.output, airflow_run.logs, json.dumps(xcoms, default=str))
    (job,) = airflow_run.jobs["with_secrets"]
    assert_no_leak(json.dumps(job))
