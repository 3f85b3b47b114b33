"""The compat layer tells the truth about the installed Airflow (run on every Airflow of the matrix)."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest

from airflow_batch_streaming import _compat


def test_version_is_the_installed_airflow_core() -> None:
    major, minor, *_ = version("apache-airflow-core").split(".")
    assert (int(major), int(minor)) == _compat.AIRFLOW_VERSION
    assert (3, 1) <= _compat.AIRFLOW_VERSION < (4, 0)


def test_trigger_on_kill_flag_matches_the_triggerer() -> None:
    """True exactly when this Airflow's triggerer awaits `trigger.on_kill()` on a user's kill."""
    from airflow.jobs import triggerer_job_runner

    assert ("trigger.on_kill()" in inspect.getsource(triggerer_job_runner)) == _compat.TRIGGER_ON_KILL


def test_task_state_store_flag_matches_the_task_runner() -> None:
    from airflow.sdk.execution_time import task_runner

    assert ('"task_state_store"' in inspect.getsource(task_runner)) == _compat.TASK_STATE_STORE


@pytest.mark.parametrize(
    "name", ["TaskDeferred", "TaskDeferralTimeout", "AirflowSensorTimeout", "AirflowSkipException"]
)
def test_exceptions_are_the_ones_the_task_sdk_raises(name: str) -> None:
    """Catching ours must catch what BaseOperator.defer / BaseSensorOperator raise."""
    from airflow.sdk.bases import sensor

    assert getattr(sensor, name, getattr(_compat, name)) is getattr(_compat, name)
    source = inspect.getsource(sensor)
    module = "airflow.sdk.exceptions" if _compat.AIRFLOW_VERSION >= (3, 2) else "airflow.exceptions"
    assert f"from {module} import" in source


def test_conf_reads_airflow_settings() -> None:
    assert isinstance(_compat.conf.getboolean("operators", "default_deferrable", fallback=False), bool)
