"""Fixtures of the reliability suite: emulators, short clocks, registries.

Two in-process emulators serve the whole session: `emu` decides outcomes from job labels
(`emulator-outcome=preempt`, `emulator-exit-code=3`, `emulator-run-seconds=3`: exact and
cheap), `cmd_emu` really runs each task's command (so secrets, flaky commands and output
are real). Each test gets one reset, with `BATCH_STREAMING_EMULATOR_HOST` pointing at it.
`airflow_run` runs dags/reliability_dag.py once per session under real Airflow, for the
tests that check a guarantee end to end.

Every clock of the production code (hook retries, watcher intervals) is shortened through
the class attributes meant for that; the logic is the production logic.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

# The shared helpers live next to this file (add "tests/reliability" to pytest's pythonpath
# to make this unnecessary).
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from airflow_support import airflow, airflow_env, last_run, migrate
from reliability_support import (
    FAST,
    IMAGE,
    PROJECT,
    REGION,
    REGISTRY_TOKEN,
    SECRET_REF,
    SECRET_SHA256_PREFIX,
    SECRET_VALUE,
    AirflowRun,
    settle,
)

from airflow_batch_streaming import status
from airflow_batch_streaming.emulator import Emulator, Timings
from airflow_batch_streaming.hooks import clients
from airflow_batch_streaming.hooks.batch import BatchStreamingHook
from airflow_batch_streaming.image import parse_image_uri
from airflow_batch_streaming.registry import clear_cache
from airflow_batch_streaming.testing import LocalRegistry, tar_layer
from airflow_batch_streaming.testing.registry import StaticRegistry
from airflow_batch_streaming.triggers import watcher as watcher_module
from airflow_batch_streaming.triggers.pacing import Policy
from airflow_batch_streaming.triggers.watcher import JobWatcher

DAGS = Path(__file__).resolve().parent / "dags"

#: pacing's rules on a clock of tenths of seconds.
FAST_POLICY = Policy(floor=0.05, ceiling=0.1, push_floor=0.1, push_ceiling=0.2, prompt_window=0.05)
WATCHER_KNOBS = {
    "policy": FAST_POLICY,
    "first_poll_grace": 5.0,
    "idle_close_after": 0.2,
}
HOOK_KNOBS = {
    "retry_initial_delay": 0.02,
    "retry_max_delay": 0.1,
    "quota_initial_delay": 0.1,
    "quota_max_delay": 0.5,
}


@pytest.fixture(autouse=True)
def short_clocks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Production retry and polling logic on a clock of tenths of seconds."""
    for knob, value in WATCHER_KNOBS.items():
        monkeypatch.setattr(JobWatcher, knob, value)
    for knob, value in HOOK_KNOBS.items():
        monkeypatch.setattr(BatchStreamingHook, knob, value)
    watcher_module.reset_read_budget(60_000)
    yield
    watcher_module.reset_read_budget()


@pytest.fixture(scope="session")
def _label_emulator() -> Iterator[Emulator]:
    with Emulator(timings=FAST) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def _command_emulator() -> Iterator[Emulator]:
    with Emulator(run_commands=True, timings=FAST) as emulator:
        yield emulator


def _use(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    emulator.reset()
    monkeypatch.setenv(clients.EMULATOR_HOST_ENV, emulator.target)
    yield emulator
    emulator.reset()


@pytest.fixture
def emu(_label_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The label-driven emulator, reset, with the clients pointed at it."""
    yield from _use(_label_emulator, monkeypatch)


@pytest.fixture
def cmd_emu(_command_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The emulator that runs each task's command as a local process, reset."""
    yield from _use(_command_emulator, monkeypatch)


class _NoLevel:
    """A trie lookup that found no per-logger level (so the root's, DEBUG here, applies)."""

    def get(self, default: int) -> int:
        return default


@pytest.fixture
def all_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], list[str]]]:
    """Every log record of the test so far, DEBUG included: stdlib from the root down, and
    structlog's (Airflow's operator, hook and task loggers). Call it to read them."""
    caplog.set_level(logging.DEBUG)
    # Airflow's structlog loggers filter by a per-name level table (INFO by default): open it.
    for module in ("airflow.sdk._shared.logging.structlog", "airflow._shared.logging.structlog"):
        levels = getattr(importlib.import_module(module), "PER_LOGGER_LEVELS", None)
        if levels is not None:
            monkeypatch.setattr(levels, "longest_prefix", lambda _name: _NoLevel())
            monkeypatch.setitem(levels, "", logging.DEBUG)
    with capture_logs() as structured:
        yield lambda: [caplog.text, *(r.getMessage() for r in caplog.records), *map(str, structured)]


@pytest.fixture
def static_registry() -> Iterator[StaticRegistry]:
    """Canned registry answers (5xx, hangs, bad JSON, 401 loops), fresh for each test."""
    clear_cache()
    with StaticRegistry() as registry:
        yield registry
    clear_cache()


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[LocalRegistry]:
    """The CNCF registry behind Basic auth (user oauth2accesstoken, password the access token),
    as Artifact Registry takes an OAuth token; the reliability image is pushed to it."""
    with LocalRegistry(password=REGISTRY_TOKEN) as registry:
        image = parse_image_uri(IMAGE)
        registry.push_image(image.repository, image.reference, [tar_layer({"app/run.sh": b"echo hi\n"})])
        yield registry


@pytest.fixture(scope="session")
def airflow_run(
    tmp_path_factory: pytest.TempPathFactory, auth_registry: LocalRegistry
) -> Iterator[AirflowRun]:
    """Runs tests/reliability/dags/reliability_dag.py once under real Airflow, for every test that asks.

    A fresh AIRFLOW_HOME and SQLite database, Airflow in subprocesses (as in
    tests/airflow), an emulator of its own (so other tests' resets cannot touch what it
    saw) with the DB_PASSWORD secret, and the first CreateJob answer lost.
    """
    home = tmp_path_factory.mktemp("reliability-airflow-home")
    token_file = tmp_path_factory.mktemp("reliability-token") / "token"
    token_file.write_text(REGISTRY_TOKEN)
    timings = Timings(queue=0.1, schedule=0.1, run=0.3, cancel=0.2, delete=0.1)
    with Emulator(run_commands=True, timings=timings) as emulator, pytest.MonkeyPatch.context() as patch:
        patch.setenv(clients.EMULATOR_HOST_ENV, emulator.target)
        env = airflow_env(
            home,
            DAGS,
            {
                **emulator.env(),
                "BATCH_STREAMING_REGISTRY_URL": auth_registry.url,
                "REL_PROJECT": PROJECT,
                "REL_REGION": REGION,
                "REL_IMAGE": IMAGE,
                "REL_SECRET_REF": SECRET_REF,
                "REL_SECRET_SHA256_PREFIX": SECRET_SHA256_PREFIX,
                "REL_FLAKY_MARKER": str(home / "flaky-ran-once"),
                "REL_REGISTRY_TOKEN_FILE": str(token_file),
            },
        )
        migrate(env)
        emulator.secrets({SECRET_REF: SECRET_VALUE})
        emulator.fault("CreateJob", "DEADLINE_EXCEEDED", count=1, after_effect=True)
        done = airflow(["dags", "test", "reliability"], env)
        settle(emulator, timeout=30)
        jobs: dict[str, list[dict[str, Any]]] = {}
        for job in BatchStreamingHook().list_jobs(PROJECT, REGION):
            rest = status.as_rest(job)
            jobs.setdefault(rest["labels"]["airflow-task"], []).append(rest)
        logs = "\n".join(
            path.read_text(errors="replace") for path in sorted((home / "logs").rglob("*")) if path.is_file()
        )
        yield AirflowRun(
            returncode=done.returncode,
            output=done.stdout + done.stderr,
            logs=logs,
            run=last_run("reliability", env),
            stats=emulator.stats(),
            jobs=jobs,
        )
