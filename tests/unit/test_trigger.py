"""BatchJobStateTrigger logic with a fake watcher (the real one is tested on the emulator)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import time
from collections.abc import AsyncIterator
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

    @contextlib.asynccontextmanager
    async def hook_in_use(self) -> AsyncIterator[FakeHook]:
        yield self.hook


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
        "notification_topic": None,
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
        notification_topic="projects/p/topics/batch-events",
    )
    classpath, kwargs = trigger.serialize()
    assert kwargs["notification_topic"] == "projects/p/topics/batch-events"
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


# ------------------------------------------------------------------ pacing of rounds


def test_poll_interval_caps_its_regions_round_and_pacing_sets_the_rest() -> None:
    from airflow_batch_streaming.triggers.pacing import Policy

    loop = asyncio.new_event_loop()
    try:
        watcher = watcher_module.JobWatcher(loop, budget=ReadBudget(6000))
        watcher.policy = Policy()  # the production pacing
        for i, fixed in enumerate((None, 2.0)):
            parent = f"projects/p{i}/locations/us-central1"
            entry = watcher_module._Watched(f"{parent}/jobs/j", parent, "j")
            entry.waiters.add(
                watcher_module._Waiter(frozenset(), fixed, loop.create_future(), loop.create_future())
            )
            watcher._regions[parent] = watcher_module._Region(members={entry})
        plans = watcher._plans()
        assert plans["projects/p0/locations/us-central1"].interval == watcher.policy.ceiling  # one wait: 3 s
        assert plans["projects/p1/locations/us-central1"].interval == 2.0
        assert {p.mode for p in plans.values()} == {"get"}  # one job: a GetJob is the cheaper round
    finally:
        loop.close()


# ------------------------------------------------------------------ sweeps (fake hook)


class FakeAsyncHook:
    """Jobs in memory, created a minute ago; ListJobs understands the watcher's two filters."""

    def __init__(self, states: dict[str, str], *, refuse_recent: bool = False) -> None:
        from google.cloud import batch_v1
        from google.protobuf import timestamp_pb2

        created = timestamp_pb2.Timestamp(seconds=int(time.time()) - 60)
        self.jobs = {
            name: batch_v1.Job(
                name=name,
                create_time=created,
                status=batch_v1.JobStatus(state=batch_v1.JobStatus.State[state]),
            )
            for name, state in states.items()
        }
        self.refuse_recent = refuse_recent
        self.calls: list[str] = []

    def set_all(self, state: str) -> None:
        from google.cloud import batch_v1

        for job in self.jobs.values():
            job.status.state = batch_v1.JobStatus.State[state]

    async def list_jobs_page_async(self, parent: str, *, filter: str, **_: Any) -> tuple[list[Any], str]:
        from google.api_core import exceptions as gexc

        recent = "createTime" in filter
        self.calls.append("list-recent" if recent else "list-active")
        if recent and self.refuse_recent:
            raise gexc.InvalidArgument("unsupported field createTime")
        jobs = [
            job
            for job in self.jobs.values()
            if (recent or job.status.state.name not in status_module.TERMINAL) and job.name.startswith(parent)
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


@pytest.fixture(autouse=True)
def fast_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_batch_streaming.triggers.pacing import Policy

    monkeypatch.setattr(
        watcher_module.JobWatcher, "policy", Policy(floor=0.05, ceiling=0.1, prompt_window=0.05)
    )


def _watcher(hook: FakeAsyncHook) -> watcher_module.JobWatcher:
    watcher = watcher_module.JobWatcher(asyncio.get_running_loop(), budget=ReadBudget(60_000))
    watcher._hook, watcher._hook_made = hook, time.monotonic()  # type: ignore[assignment]
    return watcher


async def _answered(watcher: watcher_module.JobWatcher, names: list[str]) -> None:
    """Until a read has returned every one of the jobs."""
    while not all(watcher._jobs.get(n) is not None and watcher._jobs[n].job is not None for n in names):
        await asyncio.sleep(0.005)


async def _wait_all(hook: FakeAsyncHook, names: list[str], then: str | None = None) -> list[WatchResult]:
    """Wait on every job; once a read has returned each, move them all to `then`."""
    watcher = _watcher(hook)
    waits = asyncio.gather(*(watcher.wait(name) for name in names))
    if then is not None:
        await asyncio.wait_for(_answered(watcher, names), 10)
        hook.set_all(then)
    return list(await asyncio.wait_for(waits, 10))


PARENT = "projects/my-proj/locations/us-central1"


async def test_new_waits_join_the_listing_and_no_job_costs_a_get_job() -> None:
    names = [f"{PARENT}/jobs/run-{i}" for i in range(25)]
    hook = FakeAsyncHook(dict.fromkeys(names, "RUNNING"))
    results = await _wait_all(hook, names, then="SUCCEEDED")
    assert {(r.outcome, r.state) for r in results} == {("state", "SUCCEEDED")}
    # Listings only: the first read of a wait is its region's next sweep, and createTime
    # covers finished jobs, so no job needs a GetJob of its own.
    assert set(hook.calls) == {"list-recent"}


async def test_a_job_no_listing_shows_is_read_once_the_grace_has_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ListJobs lags (or the job predates the listing's createTime bound): one GetJob after
    `Policy.unlisted_grace` without an answer, none before, and the wait still ends."""
    from airflow_batch_streaming.triggers.pacing import Policy

    grace = Policy(floor=0.05, ceiling=0.1, prompt_window=0.05, unlisted_grace=0.3)
    monkeypatch.setattr(watcher_module.JobWatcher, "policy", grace)
    listed_name, hidden = f"{PARENT}/jobs/listed", f"{PARENT}/jobs/hidden"
    hook = FakeAsyncHook({listed_name: "RUNNING", hidden: "SUCCEEDED"})

    class Lagging(FakeAsyncHook):
        async def list_jobs_page_async(self, parent: str, *, filter: str, **kw: Any) -> tuple[list[Any], str]:
            jobs, token = await hook.list_jobs_page_async(parent, filter=filter, **kw)
            return [j for j in jobs if j.name != hidden], token

        async def get_job_async(self, name: str, **kw: Any) -> Any:
            return await hook.get_job_async(name, **kw)

    watcher = _watcher(Lagging({}))
    started = time.monotonic()
    other = asyncio.ensure_future(watcher.wait(listed_name))  # two waits: the region sweeps
    result = await asyncio.wait_for(watcher.wait(hidden), 10)
    other.cancel()
    assert (result.outcome, result.state) == ("state", "SUCCEEDED")
    assert time.monotonic() - started >= 0.3  # not read before the grace
    assert hook.calls.count("get") == 1 and hook.calls[0] == "list-recent"


async def test_prompts_of_one_window_are_answered_by_one_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_batch_streaming.hooks.pubsub import Prompt
    from airflow_batch_streaming.triggers.pacing import Policy

    # Rounds 30 s apart: only the prompts make the watcher read within the test.
    monkeypatch.setattr(watcher_module.JobWatcher, "policy", Policy(floor=30, ceiling=30, prompt_window=0.05))
    names = [f"{PARENT}/jobs/run-{i}" for i in range(25)]
    sensor = f"{PARENT}/jobs/sensor"
    hook = FakeAsyncHook(dict.fromkeys([*names, sensor], "SCHEDULED"))
    watcher = _watcher(hook)
    waits = asyncio.gather(*(watcher.wait(name) for name in names))
    sensed = asyncio.ensure_future(watcher.wait(sensor, stop_states={"RUNNING"}))
    await asyncio.wait_for(_answered(watcher, [*names, sensor]), 10)
    assert hook.calls == ["list-recent"]
    hook.set_all("RUNNING")
    for i, name in enumerate([*names, sensor]):  # RUNNING ends no wait but the sensor's
        watcher._prompt(Prompt(name, "", "RUNNING", f"m{i}"))
    assert (await asyncio.wait_for(sensed, 10)).state == "RUNNING"
    assert hook.calls == ["list-recent", "get"]  # one prompt worth a read: one GetJob
    hook.set_all("SUCCEEDED")
    hook.jobs[names[0]].status.state = 3  # RUNNING still: the listing is behind its message
    for i, name in enumerate(names):
        watcher._prompt(Prompt(name, "", "SUCCEEDED", f"n{i}"))
    while hook.calls.count("get") < 2:
        await asyncio.sleep(0.005)
    hook.set_all("SUCCEEDED")
    watcher._prompt(Prompt(names[0], "", "SUCCEEDED", "again"))
    results = await asyncio.wait_for(waits, 10)
    assert {(r.outcome, r.state) for r in results} == {("state", "SUCCEEDED")}
    # 25 prompts in one window: one listing; the job it showed RUNNING: one GetJob; the
    # last prompt, alone in its window: one GetJob.
    assert hook.calls[2:] == ["list-recent", "get", "get"]


async def test_refused_create_time_filter_falls_back_to_the_active_listing() -> None:
    names = [f"{PARENT}/jobs/run-{i}" for i in range(25)]
    hook = FakeAsyncHook(dict.fromkeys(names, "RUNNING"), refuse_recent=True)
    results = await _wait_all(hook, names, then="FAILED")
    assert {(r.outcome, r.state) for r in results} == {("state", "FAILED")}
    assert hook.calls[:2] == ["list-recent", "list-active"]
    assert "list-recent" not in hook.calls[2:]  # refused once, never asked again
    # Jobs that left the active listing are read once each (pacing.to_get).
    assert hook.calls[-25:] == ["get"] * 25


async def test_job_deleted_while_waited_is_read_and_found_deleted() -> None:
    names = [f"{PARENT}/jobs/run-{i}" for i in range(3)]
    hook = FakeAsyncHook(dict.fromkeys(names, "RUNNING"))
    watcher = _watcher(hook)
    waits = asyncio.gather(*(watcher.wait(name) for name in names))
    await asyncio.wait_for(_answered(watcher, names), 10)
    del hook.jobs[names[0]]
    hook.set_all("SUCCEEDED")
    results = await asyncio.wait_for(waits, 10)
    assert [r.outcome for r in results] == ["deleted", "state", "state"]
    assert hook.calls.count("get") == 1  # the job that left the listing: one GetJob


async def test_one_job_is_read_with_get_job() -> None:
    names = [f"{PARENT}/jobs/alone"]
    hook = FakeAsyncHook(dict.fromkeys(names, "RUNNING"))
    await _wait_all(hook, names, then="SUCCEEDED")
    assert set(hook.calls) == {"get"} and len(hook.calls) >= 2


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

    names = [f"{PARENT}/jobs/run-{i}" for i in range(25)]
    hook = OutageHook(dict.fromkeys(names, "RUNNING"), getattr(gexc, kind)("listing is down"))
    started = time.monotonic()
    results = await _wait_all(hook, names, then="FAILED")
    assert {(r.outcome, r.state) for r in results} == {("state", "FAILED")}
    assert hook.calls[:26] == ["list"] + ["get"] * 25  # one failed sweep, then each job read once
    assert "list" not in hook.calls[1:]  # the region is not swept again for a while
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
