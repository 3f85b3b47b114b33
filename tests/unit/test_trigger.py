"""BatchJobStateTrigger logic with a fake watcher (the real one is tested on the emulator)."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_batch_streaming import status as status_module
from airflow_batch_streaming.triggers import BatchJobStateTrigger
from airflow_batch_streaming.triggers import batch as trigger_module
from airflow_batch_streaming.triggers import watcher as watcher_module
from airflow_batch_streaming.triggers.watcher import ReadBudget, WatchResult

NAME = "projects/my-proj/locations/us-central1/jobs/train-1"


def job(state: str, *events: str, exit_code: int | None = None) -> dict[str, Any]:
    status_events: list[dict[str, Any]] = [
        {"description": d, "eventTime": "2024-05-01T10:03:00Z"} for d in events
    ]
    if exit_code is not None and status_events:
        status_events[-1]["taskExecution"] = {"exitCode": exit_code}
    return {
        "name": NAME,
        "uid": "train-1-uid",
        "createTime": "2024-05-01T10:00:00Z",
        "status": {"state": state, "statusEvents": status_events},
    }


class FakeHook:
    def __init__(self, tasks: list[Any] | None = None) -> None:
        self.tasks = tasks or []
        self.task_filters: list[str] = []

    async def list_tasks_async(self, job_name: str, filter: str = "") -> list[Any]:
        self.task_filters.append(filter)
        return self.tasks


class FakeWatcher:
    def __init__(self, result: WatchResult | BaseException, hook: FakeHook | None = None) -> None:
        self.result = result
        self.hook = hook or FakeHook()
        self.budget = ReadBudget(6000)
        self.waits: list[dict[str, Any]] = []
        self.cancels: list[str] = []

    async def wait(self, job_name: str, **kwargs: Any) -> WatchResult:
        self.waits.append({"job_name": job_name, **kwargs})
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    async def cancel(self, job_name: str) -> bool:
        self.cancels.append(job_name)
        return True

    async def get_hook(self) -> FakeHook:
        return self.hook


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(result: WatchResult | BaseException, hook: FakeHook | None = None) -> FakeWatcher:
        watcher = FakeWatcher(result, hook)
        monkeypatch.setattr(watcher_module, "get_watcher", lambda *args, **kwargs: watcher)
        return watcher

    return install


async def only_event(trigger: BatchJobStateTrigger) -> dict[str, Any]:
    events = [event async for event in trigger.run()]
    assert len(events) == 1
    assert isinstance(events[0], TriggerEvent)
    payload = events[0].payload
    json.dumps(payload)  # an event must be JSON-safe
    assert set(payload) >= {"status", "state", "job_name", "job", "message"}
    assert payload["job_name"] == NAME
    return dict(payload)


# ------------------------------------------------------------------ construction


def test_defaults_and_serialize_round_trip() -> None:
    trigger = BatchJobStateTrigger(job_name=NAME)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_batch_streaming.triggers.batch.BatchJobStateTrigger"
    assert kwargs == {
        "job_name": NAME,
        "gcp_conn_id": "google_cloud_default",
        "impersonation_chain": None,
        "target_states": ["SUCCEEDED"],
        "failure_states": ["FAILED", "CANCELLED", "DELETION_IN_PROGRESS"],
        "poll_interval": None,
        "end_time": None,
        "cancel_on_kill": True,
        "cancel_on_timeout": True,
    }


def test_serialize_round_trip_keeps_every_argument() -> None:
    trigger = BatchJobStateTrigger(
        job_name=NAME,
        gcp_conn_id="other",
        impersonation_chain=("a@p.iam.gserviceaccount.com", "b@p.iam.gserviceaccount.com"),
        target_states=("RUNNING", "SUCCEEDED"),
        failure_states=("FAILED",),
        poll_interval=7,
        end_time=1_900_000_000.5,
        cancel_on_kill=False,
        cancel_on_timeout=False,
    )
    classpath, kwargs = trigger.serialize()
    assert json.loads(json.dumps(kwargs)) == kwargs
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs["end_time"] == 1_900_000_000.5
    assert kwargs["impersonation_chain"] == ["a@p.iam.gserviceaccount.com", "b@p.iam.gserviceaccount.com"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"job_name": "train-1"}, "not a Batch job name"),
        ({"job_name": NAME, "target_states": ("DONE",)}, "unknown job states"),
        ({"job_name": NAME, "target_states": ("FAILED",)}, "both target and failure"),
        ({"job_name": NAME, "poll_interval": 0}, "poll_interval"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BatchJobStateTrigger(**kwargs)


def test_importing_triggers_stays_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import airflow_batch_streaming.triggers, airflow_batch_streaming.hooks, "
        "airflow_batch_streaming.status; "
        "bad = [m for m in ('grpc', 'google.cloud.batch_v1', 'google.cloud.logging_v2', "
        "'google.api_core.exceptions') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------ events


async def test_success(fake: Any) -> None:
    watcher = fake(WatchResult("state", NAME, "SUCCEEDED", job("SUCCEEDED")))
    payload = await only_event(BatchJobStateTrigger(job_name=NAME, end_time=1e10, poll_interval=3))
    assert payload["status"] == "success"
    assert payload["state"] == "SUCCEEDED"
    assert payload["job"]["state"] == "SUCCEEDED"
    assert payload["job"]["console_url"].startswith("https://console.cloud.google.com/batch/")
    (call,) = watcher.waits
    assert call["stop_states"] == {"SUCCEEDED", "FAILED", "CANCELLED", "DELETION_IN_PROGRESS"}
    assert call["deadline"] == 1e10
    assert call["poll_interval"] == 3


async def test_failed_reports_the_exit_code(fake: Any) -> None:
    text = (
        "Job state is set from RUNNING to FAILED for job x. Job failed due to task failure. "
        "Specifically, task with index 0 failed due to the following task event: "
        '"Task state is updated from RUNNING to FAILED on zones/z/instances/1 with exit code 3."'
    )
    tasks = [
        {
            "name": f"{NAME}/taskGroups/group0/tasks/1",
            "status": {
                "state": "FAILED",
                "statusEvents": [{"description": "x", "taskExecution": {"exitCode": 4}}],
            },
        }
    ]
    hook = FakeHook(tasks)
    fake(WatchResult("state", NAME, "FAILED", job("FAILED", text, exit_code=3)), hook)
    payload = await only_event(BatchJobStateTrigger(job_name=NAME))
    assert payload["status"] == "failed"
    assert payload["state"] == "FAILED"
    assert "task 0 failed with exit code 3" in payload["message"].lower()
    assert "task 1 failed with exit code 4" in payload["message"]
    assert hook.task_filters == ['status.state="FAILED"']


async def test_preempted(fake: Any) -> None:
    text = "Job state is set from RUNNING to FAILED for job x. task with index 0 failed, exit code 50001."
    fake(WatchResult("state", NAME, "FAILED", job("FAILED", text, exit_code=50001)))
    payload = await only_event(BatchJobStateTrigger(job_name=NAME))
    assert payload["status"] == "failed"
    assert "Spot VM preempted" in payload["message"]


async def test_cancelled(fake: Any) -> None:
    fake(WatchResult("state", NAME, "CANCELLED", job("CANCELLED")))
    payload = await only_event(BatchJobStateTrigger(job_name=NAME))
    assert payload["status"] == "cancelled"
    assert payload["state"] == "CANCELLED"


async def test_cancellation_in_progress_is_cancelled_when_asked_for(fake: Any) -> None:
    watcher = fake(WatchResult("state", NAME, "CANCELLATION_IN_PROGRESS", job("CANCELLATION_IN_PROGRESS")))
    trigger = BatchJobStateTrigger(job_name=NAME, failure_states=("FAILED", "CANCELLATION_IN_PROGRESS"))
    payload = await only_event(trigger)
    assert payload["status"] == "cancelled"
    assert "CANCELLATION_IN_PROGRESS" in watcher.waits[0]["stop_states"]


async def test_deletion_in_progress_is_deleted(fake: Any) -> None:
    fake(WatchResult("state", NAME, "DELETION_IN_PROGRESS", job("DELETION_IN_PROGRESS")))
    payload = await only_event(BatchJobStateTrigger(job_name=NAME))
    assert payload["status"] == "deleted"


async def test_not_found_is_deleted(fake: Any) -> None:
    fake(WatchResult("deleted", NAME, "RUNNING", None, "gone"))
    payload = await only_event(BatchJobStateTrigger(job_name=NAME))
    assert payload["status"] == "deleted"
    assert payload["job"] is None


async def test_error(fake: Any) -> None:
    fake(WatchResult("error", NAME, None, None, "the service account lacks roles/batch.jobsViewer"))
    payload = await only_event(BatchJobStateTrigger(job_name=NAME))
    assert payload["status"] == "error"
    assert "roles/batch.jobsViewer" in payload["message"]


async def test_unexpected_exception_becomes_an_error_event(fake: Any) -> None:
    fake(RuntimeError("boom"))
    payload = await only_event(BatchJobStateTrigger(job_name=NAME))
    assert payload["status"] == "error"
    assert "boom" in payload["message"]


async def test_cancelled_error_propagates(fake: Any) -> None:
    fake(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await anext(BatchJobStateTrigger(job_name=NAME).run())


async def test_timeout_cancels_the_job(fake: Any) -> None:
    watcher = fake(WatchResult("timeout", NAME, "RUNNING", job("RUNNING")))
    payload = await only_event(BatchJobStateTrigger(job_name=NAME, end_time=1.0))
    assert payload["status"] == "timeout"
    assert payload["state"] == "RUNNING"
    assert payload["cancelled"] is True
    assert "cancelled" in payload["message"]
    assert watcher.cancels == [NAME]


async def test_timeout_can_leave_the_job_running(fake: Any) -> None:
    watcher = fake(WatchResult("timeout", NAME, "RUNNING", job("RUNNING")))
    payload = await only_event(BatchJobStateTrigger(job_name=NAME, end_time=1.0, cancel_on_timeout=False))
    assert payload["status"] == "timeout"
    assert payload["cancelled"] is False
    assert watcher.cancels == []


async def test_target_state_other_than_succeeded(fake: Any) -> None:
    fake(WatchResult("state", NAME, "RUNNING", job("RUNNING")))
    payload = await only_event(BatchJobStateTrigger(job_name=NAME, target_states=("RUNNING",)))
    assert payload["status"] == "success"


async def test_terminal_state_that_is_no_target_is_a_failure(fake: Any) -> None:
    fake(WatchResult("state", NAME, "SUCCEEDED", job("SUCCEEDED")))
    trigger = BatchJobStateTrigger(job_name=NAME, target_states=("RUNNING",), failure_states=("FAILED",))
    payload = await only_event(trigger)
    assert payload["status"] == "failed"


async def test_on_kill_cancels(fake: Any) -> None:
    watcher = fake(WatchResult("state", NAME, "SUCCEEDED", None))
    await BatchJobStateTrigger(job_name=NAME).on_kill()
    assert watcher.cancels == [NAME]
    await BatchJobStateTrigger(job_name=NAME, cancel_on_kill=False).on_kill()
    assert watcher.cancels == [NAME]


# ------------------------------------------------------------------ budget and config


def test_read_budget_grants_a_burst_then_asks_to_wait() -> None:
    budget = ReadBudget(60, burst_seconds=3)  # one read a second, a burst of three
    granted = [budget.try_acquire() for _ in range(3)]
    assert granted == [0.0, 0.0, 0.0]
    wait = budget.try_acquire()
    assert 0 < wait <= 1.0
    assert budget.granted == 3


def test_configured_read_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(watcher_module.READ_BUDGET_ENV, "1200")
    assert watcher_module.configured_read_budget() == 1200
    monkeypatch.setenv(watcher_module.READ_BUDGET_ENV, "lots")
    assert watcher_module.configured_read_budget() == watcher_module.DEFAULT_READ_BUDGET_PER_MINUTE
    monkeypatch.delenv(watcher_module.READ_BUDGET_ENV)
    monkeypatch.setenv("AIRFLOW__BATCH_STREAMING__READ_BUDGET_PER_MINUTE", "900")
    assert watcher_module.configured_read_budget() == 900


def test_trigger_module_names_its_defaults() -> None:
    assert trigger_module.DEFAULT_TARGET_STATES == ("SUCCEEDED",)
    assert "CANCELLATION_IN_PROGRESS" not in trigger_module.DEFAULT_FAILURE_STATES


# ------------------------------------------------------------------ adaptive intervals


def _interval_of(state: str | None, age: float, *, fixed: float | None = None) -> float:
    loop = asyncio.new_event_loop()
    try:
        watcher = watcher_module.JobWatcher(loop, budget=ReadBudget(6000))
        entry = watcher_module._Watched(NAME, "projects/my-proj/locations/us-central1", "train-1")
        entry.state = state
        entry.entered_wall = time.time() - age
        if fixed is not None:
            waiter = watcher_module._Waiter(frozenset(), fixed, loop.create_future(), loop.create_future())
            entry.waiters.add(waiter)
        return watcher._interval(entry)
    finally:
        loop.close()


@pytest.mark.parametrize(
    ("state", "age", "low", "high"),
    [
        ("QUEUED", 10, 4.0, 6.0),  # young and waiting: fast
        ("SCHEDULED", 60, 4.0, 6.0),
        (None, 0, 4.0, 6.0),  # not read yet
        ("QUEUED", 3600, 24.0, 36.0),  # queued for an hour: slower
        ("RUNNING", 0, 8.0, 12.0),
        ("RUNNING", 300, 28.0, 42.0),
        ("RUNNING", 7200, 48.0, 72.0),  # long-running: up to a minute
        ("CANCELLATION_IN_PROGRESS", 5, 4.0, 6.0),
    ],
)
def test_adaptive_interval(state: str | None, age: float, low: float, high: float) -> None:
    for _ in range(20):
        assert low <= _interval_of(state, age) <= high


def test_fixed_poll_interval_is_only_jittered() -> None:
    for _ in range(20):
        assert 8.0 <= _interval_of("RUNNING", 7200, fixed=10) <= 12.0


# ------------------------------------------------------------------ sweeps (fake hook)


class FakeAsyncHook:
    """Jobs in memory; ListJobs understands only the watcher's two filters."""

    def __init__(self, states: dict[str, str], *, refuse_finished: bool = False) -> None:
        from google.cloud import batch_v1

        self.jobs = {
            name: batch_v1.Job(name=name, status=batch_v1.JobStatus(state=batch_v1.JobStatus.State[state]))
            for name, state in states.items()
        }
        self.refuse_finished = refuse_finished
        self.calls: list[str] = []

    async def list_jobs_page_async(self, parent: str, *, filter: str, **_: Any) -> tuple[list[Any], str]:
        from google.api_core import exceptions as gexc

        finished = "update_time" in filter
        self.calls.append("list-finished" if finished else "list-active")
        if finished and self.refuse_finished:
            raise gexc.InvalidArgument("unsupported field update_time")
        jobs = [
            job
            for job in self.jobs.values()
            if (job.status.state.name in status_module.TERMINAL) == finished and job.name.startswith(parent)
        ]
        return jobs, ""

    async def get_job_async(self, name: str, **_: Any) -> Any:
        from google.api_core import exceptions as gexc

        self.calls.append("get")
        if name not in self.jobs:
            raise gexc.NotFound(name)
        return self.jobs[name]

    async def aclose(self) -> None:
        pass


async def _wait_all(hook: FakeAsyncHook, names: list[str]) -> list[WatchResult]:
    watcher = watcher_module.JobWatcher(asyncio.get_running_loop(), budget=ReadBudget(60_000))
    watcher._hook = hook  # type: ignore[assignment]
    watcher._hook_made = time.monotonic()
    return list(await asyncio.gather(*(watcher.wait(name) for name in names)))


PARENT = "projects/my-proj/locations/us-central1"


async def test_sweep_ends_finished_jobs_without_get_job() -> None:
    names = [f"{PARENT}/jobs/done-{i}" for i in range(25)]
    hook = FakeAsyncHook(dict.fromkeys(names, "SUCCEEDED"))
    results = await _wait_all(hook, names)
    assert {(r.outcome, r.state) for r in results} == {("state", "SUCCEEDED")}
    assert hook.calls == ["list-active", "list-finished"]


async def test_refused_finished_listing_falls_back_to_get_job() -> None:
    names = [f"{PARENT}/jobs/done-{i}" for i in range(25)]
    hook = FakeAsyncHook(dict.fromkeys(names, "FAILED"), refuse_finished=True)
    results = await _wait_all(hook, names)
    assert {(r.outcome, r.state) for r in results} == {("state", "FAILED")}
    assert hook.calls[:2] == ["list-active", "list-finished"]
    assert hook.calls[2:] == ["get"] * 25


async def test_job_missing_from_every_listing_is_read_and_found_deleted() -> None:
    names = [f"{PARENT}/jobs/done-{i}" for i in range(24)]
    hook = FakeAsyncHook(dict.fromkeys(names, "SUCCEEDED"))
    gone = f"{PARENT}/jobs/gone"
    results = await _wait_all(hook, [*names, gone])
    assert results[-1].outcome == "deleted"
    assert hook.calls == ["list-active", "list-finished", "get"]


async def test_few_jobs_are_read_one_by_one() -> None:
    names = [f"{PARENT}/jobs/done-{i}" for i in range(3)]
    hook = FakeAsyncHook(dict.fromkeys(names, "SUCCEEDED"))
    await _wait_all(hook, names)
    assert hook.calls == ["get"] * 3


class OutageHook(FakeAsyncHook):
    """ListJobs refused (UNAVAILABLE or quota) while GetJob works."""

    def __init__(self, states: dict[str, str], error: Exception) -> None:
        super().__init__(states)
        self.error = error

    async def list_jobs_page_async(self, parent: str, *, filter: str, **_: Any) -> tuple[list[Any], str]:
        self.calls.append("list")
        raise self.error


@pytest.mark.parametrize("kind", ["ServiceUnavailable", "ResourceExhausted", "InternalServerError"])
async def test_a_failing_sweep_falls_back_to_get_job_at_once(kind: str) -> None:
    from google.api_core import exceptions as gexc

    names = [f"{PARENT}/jobs/done-{i}" for i in range(25)]
    hook = OutageHook(dict.fromkeys(names, "FAILED"), getattr(gexc, kind)("listing is down"))
    started = time.monotonic()
    results = await asyncio.wait_for(_wait_all(hook, names), 10)
    assert {(r.outcome, r.state) for r in results} == {("state", "FAILED")}
    assert hook.calls == ["list"] + ["get"] * 25  # one failed sweep, then each job read once
    assert time.monotonic() - started < 5


async def test_a_quota_error_slows_only_its_project_and_region() -> None:
    from google.api_core import exceptions as gexc

    other = "projects/other/locations/europe-west1/jobs/fine"
    throttled = f"{PARENT}/jobs/throttled"

    class QuotaInOneRegion(FakeAsyncHook):
        async def get_job_async(self, name: str, **_: Any) -> Any:
            if name.startswith(PARENT):
                self.calls.append("quota")
                raise gexc.ResourceExhausted("quota of us-central1")
            return await super().get_job_async(name)

    hook = QuotaInOneRegion({other: "SUCCEEDED", throttled: "RUNNING"})
    watcher = watcher_module.JobWatcher(asyncio.get_running_loop(), budget=ReadBudget(60_000))
    watcher._hook, watcher._hook_made = hook, time.monotonic()  # type: ignore[assignment]
    slow = asyncio.create_task(watcher.wait(throttled, deadline=time.time() + 3))
    await asyncio.sleep(0.1)  # the quota error has happened
    assert hook.calls[:1] == ["quota"]
    started = time.monotonic()
    result = await asyncio.wait_for(watcher.wait(other), 2)
    assert result.state == "SUCCEEDED" and time.monotonic() - started < 0.5
    assert PARENT in watcher._throttled_until and not any("other" in p for p in watcher._throttled_until)
    slow.cancel()


async def test_a_busy_watcher_replaces_its_hook_when_it_is_old() -> None:
    names = [f"{PARENT}/jobs/done-{i}" for i in range(2)]
    first, second = (
        FakeAsyncHook(dict.fromkeys(names, "SUCCEEDED")),
        FakeAsyncHook(dict.fromkeys(names, "SUCCEEDED")),
    )
    watcher = watcher_module.JobWatcher(asyncio.get_running_loop(), budget=ReadBudget(60_000))
    watcher._hook, watcher._hook_made = first, time.monotonic() - watcher.hook_max_age - 1  # type: ignore[assignment]
    made: list[Any] = []

    def new_hook(**_: Any) -> Any:
        made.append(second)
        return second

    import airflow_batch_streaming.hooks.batch as hook_module

    original = hook_module.BatchStreamingHook
    hook_module.BatchStreamingHook = new_hook  # type: ignore[assignment,misc]
    try:
        assert await watcher.get_hook() is second
    finally:
        hook_module.BatchStreamingHook = original  # type: ignore[misc]
    assert made == [second] and watcher.stats["hooks"] == 1
