"""Fixtures: in-process emulators (label-driven and `--run-commands`) and real clients on them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import batch_v1

# --import-mode=importlib puts no test directory on sys.path; the tests here share helpers.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from emulator_support import FAST

from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.hooks import clients


@pytest.fixture(scope="session")
def _label_emulator() -> Iterator[Emulator]:
    with Emulator(timings=FAST, seed=7) as emu:
        yield emu


@pytest.fixture(scope="session")
def _command_emulator() -> Iterator[Emulator]:
    with Emulator(run_commands=True, timings=FAST, max_processes=4) as emu:
        yield emu


@pytest.fixture
def emulator(_label_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The label-driven emulator, reset, with BATCH_STREAMING_EMULATOR_HOST pointing at it."""
    _label_emulator.reset()
    monkeypatch.setenv(clients.EMULATOR_HOST_ENV, _label_emulator.target)
    yield _label_emulator
    _label_emulator.reset()


@pytest.fixture
def command_emulator(_command_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The `--run-commands` emulator, reset, with the client variable pointing at it."""
    _command_emulator.reset()
    monkeypatch.setenv(clients.EMULATOR_HOST_ENV, _command_emulator.target)
    yield _command_emulator
    _command_emulator.reset()


@pytest.fixture
def batch(emulator: Emulator) -> batch_v1.BatchServiceClient:
    return clients.batch_client()


@pytest.fixture
def command_batch(command_emulator: Emulator) -> batch_v1.BatchServiceClient:
    return clients.batch_client()
