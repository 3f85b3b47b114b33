"""Full-stack fixtures: one running Airflow deployment per executor, shared by the module's tests."""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

# --import-mode=importlib puts no test directory on sys.path; the tests here share the harness.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullstack_support import EXECUTORS, Stack, run_stack


@pytest.fixture(scope="module", params=EXECUTORS)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A running deployment with the given executor (module scope: started once per executor)."""
    executor: str = request.param
    with run_stack(executor) as running:
        yield running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of every component's log to a failing full-stack test's report."""
    report = yield
    running = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(running, Stack):
        report.sections.append((f"airflow processes ({running.executor})", running.diagnostics()))
    return report
