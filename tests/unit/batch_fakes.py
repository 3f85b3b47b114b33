"""An in-memory stand-in for `BatchStreamingHook` and a minimal task context, for unit tests.

Jobs are REST JSON dicts (what `status` reads). Each `get_job` may advance a job along a
scripted list of states, so waiting loops can be driven without sleeping on real time.
The emulator tests exercise the real hook; this fake only lets the operators' own logic
be tested quickly and exactly.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from airflow_batch_streaming.hooks.batch import BatchStreamingHook

_UNSET: Any = object()

PROJECT = "proj"
REGION = "us-central1"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/repo/app:1.0"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def job_name(job_id: str) -> str:
    return f"projects/{PROJECT}/locations/{REGION}/jobs/{job_id}"


def failure_events(exit_code: int, task: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "type": "STATUS_CHANGED",
            "description": "Job state is set from RUNNING to FAILED for job x. Job failed due to task "
            f"failure. Specifically, task with index {task} failed due to the following task event: "
            f'"Task state is updated from RUNNING to FAILED with exit code {exit_code}."',
            "eventTime": now_rfc3339(),
            "taskExecution": {"exitCode": exit_code},
        }
    ]


class FakeHook:
    """Records every call in `calls` as `(method, argument)`.

    `wait_for_job` is the real hook's wait loop running on this fake's reads (no sleeping:
    retry delays are zero), so the operator's sync wait is the production one.
    """

    wait_for_job = BatchStreamingHook.wait_for_job
    give_up_after = 1800.0
    log = logging.getLogger("tests.fake_hook")

    @staticmethod
    def retry_delay(exc: BaseException, attempt: int) -> float:
        return 0.0

    @staticmethod
    def explain(exc: Exception, **_: Any) -> Exception:
        return exc

    @staticmethod
    def _project_of(name: str) -> str:
        return PROJECT

    def _failed_tasks(self, name: str) -> list[dict[str, Any]]:
        return self.list_tasks(name)

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.script: dict[str, list[str]] = {}
        self.get_errors: list[BaseException] = []
        self.tasks: dict[str, list[dict[str, Any]]] = {}
        self.logs: list[dict[str, Any]] = []
        self.calls: list[tuple[str, Any]] = []
        self.api_enabled = True
        self.created_state = "QUEUED"

    # -- helpers ------------------------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        state: str,
        *,
        labels: dict[str, str] | None = None,
        events: Iterable[dict[str, Any]] = (),
        create_time: str | None = None,
    ) -> dict[str, Any]:
        name = job_name(job_id)
        self.jobs[name] = {
            "name": name,
            "uid": f"{job_id}-uid",
            "createTime": create_time or now_rfc3339(),
            "labels": dict(labels or {}),
            "status": {"state": state, "statusEvents": list(events)},
        }
        return self.jobs[name]

    def set_state(self, name: str, state: str, events: Iterable[dict[str, Any]] = ()) -> None:
        self.jobs[name]["status"] = {"state": state, "statusEvents": list(events)}

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]

    # -- the hook's interface -----------------------------------------------------------

    def create_job(
        self, *, project_id: str, region: str, job: dict[str, Any], job_id: str, request_id: str | None = None
    ) -> dict[str, Any]:
        self.calls.append(("create_job", job_id))
        name = f"projects/{project_id}/locations/{region}/jobs/{job_id}"
        if name not in self.jobs:
            created = copy.deepcopy(job)
            created.update(
                name=name,
                uid=f"{job_id}-uid",
                createTime=now_rfc3339(),
                status={"state": self.created_state, "statusEvents": []},
            )
            self.jobs[name] = created
        return copy.deepcopy(self.jobs[name])

    def get_job(self, name: str, *, attempts: int | None = None) -> dict[str, Any]:
        self.calls.append(("get_job", name))
        if self.get_errors:
            raise self.get_errors.pop(0)
        if name not in self.jobs:
            from google.api_core.exceptions import NotFound

            raise NotFound(f"job {name} not found")
        if self.script.get(name):
            state = self.script[name].pop(0)
            events = failure_events(3) if state == "FAILED" else []
            self.set_state(name, state, events)
        return copy.deepcopy(self.jobs[name])

    def list_jobs(self, project_id: str, region: str, filter: str | None = None) -> list[dict[str, Any]]:
        self.calls.append(("list_jobs", filter))
        wanted = dict(re.findall(r'labels\."([^"]+)"="([^"]*)"', filter or ""))
        return [
            copy.deepcopy(j)
            for j in self.jobs.values()
            if all(j.get("labels", {}).get(k) == v for k, v in wanted.items())
        ]

    def list_tasks(self, job_name: str) -> list[dict[str, Any]]:
        self.calls.append(("list_tasks", job_name))
        return copy.deepcopy(self.tasks.get(job_name, []))

    def cancel_job(self, name: str, wait: bool = False) -> bool:
        self.calls.append(("cancel_job", name))
        if name in self.jobs:
            self.set_state(name, "CANCELLED")
            return True
        return False

    def list_log_entries(
        self, project_id: str, filter: str, *, order_by: str, max_entries: int, page_size: int
    ) -> list[dict[str, Any]]:
        self.calls.append(("list_log_entries", filter))
        entries = list(reversed(self.logs)) if order_by == "timestamp desc" else list(self.logs)
        return copy.deepcopy(entries[:max_entries])

    def registry_client(self) -> None:
        return None

    def is_service_enabled(
        self, project_id: str, service: str = "containerfilesystem.googleapis.com"
    ) -> bool:
        self.calls.append(("is_service_enabled", project_id))
        return self.api_enabled


def log_entry(text: str, *, severity: str = "INFO", task: int = 0, uid: str = "uid") -> dict[str, Any]:
    return {
        "logName": f"projects/{PROJECT}/logs/batch_task_logs",
        "textPayload": text,
        "severity": severity,
        "timestamp": now_rfc3339(),
        "labels": {"job_uid": uid, "task_id": f"task/{uid}-group0-{task}/0/0"},
    }


class FakeTI:
    """The slice of a RuntimeTaskInstance the operators use.

    XComs live in `store`, keyed by (task_id, key, map_index), which the task instances
    of one run may share; `xcom_pull` answers as Airflow 3.3's does: with `map_indexes`,
    that index's value; without, every index's value of the task, a single one unwrapped.
    `xcoms` is this task instance's own view (key -> value).
    """

    def __init__(
        self,
        *,
        dag_id: str = "dag",
        task_id: str = "task",
        run_id: str = "manual__2024-05-01T00:00:00+00:00",
        map_index: int = -1,
        try_number: int = 1,
        store: dict[tuple[str, str, int], Any] | None = None,
    ) -> None:
        self.dag_id = dag_id
        self.task_id = task_id
        self.run_id = run_id
        self.map_index = map_index
        self.try_number = try_number
        self.store: dict[tuple[str, str, int], Any] = {} if store is None else store
        self.pushes: list[str] = []

    @property
    def xcoms(self) -> _OwnXComs:
        return _OwnXComs(self)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushes.append(key)
        self.store[(self.task_id, key, self.map_index)] = value

    def xcom_pull(
        self, task_ids: str | None = None, key: str = "return_value", *, map_indexes: Any = _UNSET, **_: Any
    ) -> Any:
        task_id = task_ids or self.task_id
        if map_indexes is not _UNSET and map_indexes is not None:
            return self.store.get((task_id, key, map_indexes))
        values = [
            v
            for (t, k, _), v in sorted(self.store.items(), key=lambda kv: kv[0][2])
            if (t, k) == (task_id, key)
        ]
        return values[0] if len(values) == 1 else values or None

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


class _OwnXComs(dict[str, Any]):
    """A task instance's XComs as key -> value; writes go to the shared store."""

    def __init__(self, ti: FakeTI) -> None:
        super().__init__({k: v for (t, k, m), v in ti.store.items() if (t, m) == (ti.task_id, ti.map_index)})
        self._ti = ti

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._ti.store[(self._ti.task_id, key, self._ti.map_index)] = value


def context(ti: FakeTI | None = None, **extra: Any) -> Any:
    """A task context (typed Any: it stands in for Airflow's Context TypedDict)."""
    ti = ti or FakeTI()
    return {"ti": ti, "task_instance": ti, "run_id": ti.run_id, **extra}


def install(operator: Any, hook: FakeHook) -> None:
    """Give an operator this fake instead of building the real hook (its `hook` cached_property)."""
    vars(operator)["hook"] = hook
