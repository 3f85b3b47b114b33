"""The names and features that differ between the Airflow versions we support (3.1 .. 3.3).

Every module imports version-dependent Airflow names from here, never straight from
``airflow.sdk``: a name missing in one version is a DAG import error for every DAG that
uses the operators (``from airflow.sdk import conf`` fails on 3.1). `make test-matrix`
runs the tests on each supported Airflow minor to keep this list true.

What moved (checked against the installed packages of 3.1.8, 3.2.2 and 3.3.2):

- ``conf``: ``airflow.sdk.conf`` from 3.2; before that ``airflow.configuration.conf``.
- ``AirflowSensorTimeout``, ``TaskDeferralTimeout``, ``TaskDeferred``, ``AirflowSkipException``,
  ``AirflowRescheduleException``: ``airflow.sdk.exceptions`` from 3.2; on 3.1 only
  ``airflow.exceptions`` has them (and the task runner raises and catches those).

What exists only on newer versions (explicit flags, so callers branch, never AttributeError):

- :data:`TRIGGER_ON_KILL`: Airflow 3.3's triggerer calls ``await trigger.on_kill()`` when a
  user marks, clears or kills a deferred task. Earlier triggerers just drop the trigger, so
  the Batch job keeps running; the task's next try reattaches to it (label lookup) instead of
  submitting a second job.
- :data:`TASK_STATE_STORE`: Airflow 3.3 gives tasks a ``task_state_store`` in the context;
  earlier versions have none and the operator records nothing there (it is informational:
  reattaching uses the job's labels on every version).
"""

from __future__ import annotations

import re
from importlib.metadata import version as _dist_version
from typing import Any

__all__ = [
    "AIRFLOW_VERSION",
    "TASK_STATE_STORE",
    "TRIGGER_ON_KILL",
    "AirflowRescheduleException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "TaskDeferralTimeout",
    "TaskDeferred",
    "conf",
]


def _version_tuple(text: str) -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", text)
    return (int(found[1]), int(found[2])) if found else (0, 0)


#: ``(major, minor)`` of the installed apache-airflow-core (apache-airflow is a meta package).
AIRFLOW_VERSION: tuple[int, int] = _version_tuple(_dist_version("apache-airflow-core"))

#: The triggerer calls ``BaseTrigger.on_kill`` when a user kills a deferred task (3.3+).
TRIGGER_ON_KILL: bool = AIRFLOW_VERSION >= (3, 3)

#: Task contexts carry a ``task_state_store`` (3.3+).
TASK_STATE_STORE: bool = AIRFLOW_VERSION >= (3, 3)

conf: Any
try:
    from airflow.sdk import conf
except ImportError:  # Airflow 3.1
    from airflow.configuration import conf

# The task runner raises and catches these; on 3.1 they live in airflow.exceptions only.
try:
    from airflow.sdk.exceptions import (
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferralTimeout,
        TaskDeferred,
    )
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined]
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferralTimeout,
        TaskDeferred,
    )
