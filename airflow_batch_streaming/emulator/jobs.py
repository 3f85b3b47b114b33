"""Jobs as a function of the clock.

A job's whole life (state changes, status events, task states) is a timeline of timestamped
entries. Without `--run-commands` the timeline is planned at CreateJob from the job's labels
(see the package docstring) and reads show the part of it that lies in the past, so 5,000
jobs cost no threads and a poll costs a bisect (and one render per visible change, cached).
With `--run-commands` only QUEUED and SCHEDULED are planned; the runner appends the rest as
the processes run. Cancel and delete cut the future off the timeline and append their own.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import re
import threading
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from google.cloud import batch_v1

from airflow_batch_streaming.emulator import filters
from airflow_batch_streaming.emulator.common import (
    ApiError,
    duration,
    duration_ns,
    invalid,
    not_found,
    now_ns,
    project_number,
    seconds_ns,
    timestamp,
)
from airflow_batch_streaming.emulator.logs import AGENT_LOGS, ERROR, INFO, TASK_LOGS, LogStore, batch_entry
from airflow_batch_streaming.emulator.pubsub import PubSub, job_notifications

if TYPE_CHECKING:
    from airflow_batch_streaming.emulator.runner import Runner

JobPb = batch_v1.Job.pb()
TaskPb = batch_v1.Task.pb()
StatusEventPb = batch_v1.StatusEvent.pb()

CLOUD_LOGGING = 1
RETRY_TASK, FAIL_TASK = 1, 2
GENERIC_FAILURE = 50000
PREEMPTED = 50001
TIMED_OUT = 50005
REQUEST_ID_TTL_NS = 2 * 3600 * 1_000_000_000


class JobState(enum.IntEnum):
    QUEUED = 1
    SCHEDULED = 2
    RUNNING = 3
    SUCCEEDED = 4
    FAILED = 5
    DELETION_IN_PROGRESS = 6
    CANCELLATION_IN_PROGRESS = 7
    CANCELLED = 8


class TaskState(enum.IntEnum):
    PENDING = 1
    ASSIGNED = 2
    RUNNING = 3
    FAILED = 4
    SUCCEEDED = 5
    UNEXECUTED = 6


TERMINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
TASK_DONE = {TaskState.FAILED, TaskState.SUCCEEDED, TaskState.UNEXECUTED}

# The reserved exit codes' status event texts, as Batch's "Troubleshooting" page quotes them:
# "Task state is updated from PRE-STATE to FAILED on zones/ZONE/instances/ID due to ... with
# exit code 5000N."
_REASONS = {
    PREEMPTED: " due to Spot Preemption",
    50002: " due to Batch no longer receives VM updates",
    50003: " due to VM is rebooted during task execution",
    50004: " due to tasks cannot be canceled",
    TIMED_OUT: " due to task runs over the maximum runtime",
    50006: " due to VM is recreated during task execution",
}
#: What Google gives a job that does not name its VMs' service account (recorded CreateJob).
DEFAULT_SERVICE_ACCOUNT = "{number}-compute@developer.gserviceaccount.com"
#: Zones of a region the emulator offers by default (recorded CreateJob: regions/R + R-a..c).
DEFAULT_ZONES = ("a", "b", "c")
MAX_PARALLELISM = 5_000


# --- outcomes planned from labels ----------------------------------------------------------


@dataclass(frozen=True)
class Timings:
    """Default phase durations (seconds); labels override them per job.

    ``list_lag``: seconds after its creation before ListJobs shows a job, and after it is
    SCHEDULED before ListTasks shows its tasks. Google's lists are eventually consistent
    (recorded: ListJobs answers ``{}`` right after a CreateJob); GetJob is not. Default 0
    for speed; tests of anything that must find a just-created job turn it on.
    """

    queue: float = 0.3
    schedule: float = 0.3
    run: float = 1.0
    cancel: float = 0.3
    delete: float = 0.3
    list_lag: float = 0.0


OUTCOMES = ("succeed", "fail", "preempt", "no-resources")
_PHASES = ("queue", "schedule", "run", "cancel", "delete")
LABEL_KEYS = {
    "emulator-outcome",
    "emulator-exit-code",
    "emulator-fail-tasks",
    "emulator-fail-attempts",
    "emulator-preempt-attempts",
    *(f"emulator-{p}-{unit}" for p in _PHASES for unit in ("seconds", "ms")),
}


@dataclass(frozen=True)
class Plan:
    """What a job's labels ask of it. Phase durations apply in both modes."""

    queue_ns: int
    schedule_ns: int
    run_ns: int
    cancel_ns: int
    delete_ns: int
    outcome: str = "succeed"
    exit_code: int = 0
    fail_tasks: frozenset[int] | None = None
    fail_attempts: int | None = None

    def exit_code_for(self, index: int, attempt: int) -> int:
        if self.outcome not in ("fail", "preempt"):
            return 0
        if self.fail_tasks is not None and index not in self.fail_tasks:
            return 0
        if self.fail_attempts is not None and attempt >= self.fail_attempts:
            return 0
        return self.exit_code


def plan_from_labels(labels: Mapping[str, str], timings: Timings) -> Plan:
    problems: list[str] = []

    def number(key: str) -> int | None:
        value = labels.get(key)
        if value is None:
            return None
        if not value.isdigit():
            problems.append(f"label {key}={value!r}: expected a whole number")
            return None
        return int(value)

    phases: dict[str, int] = {}
    for phase in _PHASES:
        ms, sec = number(f"emulator-{phase}-ms"), number(f"emulator-{phase}-seconds")
        default = seconds_ns(getattr(timings, phase))
        phases[phase] = (
            ms * 1_000_000 if ms is not None else (seconds_ns(sec) if sec is not None else default)
        )
    for key in labels:
        if key.startswith("emulator-") and key not in LABEL_KEYS:
            problems.append(f"unknown emulator label {key!r}; known: {', '.join(sorted(LABEL_KEYS))}")
    outcome = labels.get("emulator-outcome", "succeed")
    if outcome not in OUTCOMES:
        problems.append(f"label emulator-outcome={outcome!r}: expected one of {', '.join(OUTCOMES)}")
    exit_code = number("emulator-exit-code")
    attempts = number("emulator-fail-attempts")
    if attempts is None:
        attempts = number("emulator-preempt-attempts")
    fail_tasks: frozenset[int] | None = None
    if "emulator-fail-tasks" in labels and labels["emulator-fail-tasks"] != "all":
        parts = labels["emulator-fail-tasks"].split("_")
        if all(p.isdigit() for p in parts):
            fail_tasks = frozenset(int(p) for p in parts)
        else:
            problems.append("label emulator-fail-tasks: task indexes joined by '_' (e.g. 0_3) or 'all'")
    if problems:
        raise invalid("; ".join(problems))
    if outcome == "preempt":
        exit_code = PREEMPTED if exit_code is None else exit_code
        attempts = 1 if attempts is None else attempts
    elif outcome == "fail" and not exit_code:
        exit_code = 1
    return Plan(
        queue_ns=phases["queue"],
        schedule_ns=phases["schedule"],
        run_ns=phases["run"],
        cancel_ns=phases["cancel"],
        delete_ns=phases["delete"],
        outcome=outcome,
        exit_code=exit_code or 0,
        fail_tasks=fail_tasks,
        fail_attempts=attempts,
    )


def should_retry(task_spec: Any, exit_code: int, attempt: int) -> bool:
    """Batch's rule: the (first) lifecycle policy decides, else any failure retries."""
    if attempt >= task_spec.max_retry_count:
        return False
    for policy in task_spec.lifecycle_policies:
        matched = exit_code in policy.action_condition.exit_codes
        if policy.action == RETRY_TASK:
            return matched
        if policy.action == FAIL_TASK:
            return not matched
    return True


# --- one job ------------------------------------------------------------------------------


def job_state_text(job_name: str, old: JobState, new: JobState) -> str:
    """Google's wording; `job_name` carries the project number (recorded status events)."""
    return f"Job state is set from {old.name} to {new.name} for job {job_name}."


def task_failure_text(zone: str, instance: str, exit_code: int) -> str:
    reason = _REASONS.get(exit_code, "")
    return (
        f"Task state is updated from RUNNING to FAILED on zones/{zone}/instances/{instance}"
        f"{reason} with exit code {exit_code}."
    )


@dataclass
class RunState:
    """Bookkeeping of a `--run-commands` job (owned by the runner, guarded by the store lock)."""

    pending: list[int]
    running: set[int] = field(default_factory=set)
    failure: tuple[int, str] | None = None  # first task that failed for good, and its event text
    processes: set[Any] = field(default_factory=set)


class JobRecord:
    """A job and its timeline. Mutators take the store lock; times only move forward."""

    def __init__(
        self, *, base: Any, project: str, location: str, job_id: str, seq: int, create_ns: int, plan: Plan
    ) -> None:
        self.base = base
        self.name: str = base.name
        self.number_name = f"projects/{project_number(project)}/locations/{location}/jobs/{job_id}"
        self.scheduled_ns = create_ns + plan.queue_ns
        self.uid: str = base.uid
        self.project, self.location, self.job_id = project, location, job_id
        self.seq, self.create_ns, self.plan = seq, create_ns, plan
        group = base.task_groups[0]
        self.task_count: int = group.task_count
        self.parallelism: int = group.parallelism or self.task_count
        self.spec = group.task_spec
        self.labels: dict[str, str] = dict(base.labels)
        self.logging = base.logs_policy.destination == CLOUD_LOGGING
        self.generic_resource = bool(
            base.logs_policy.cloud_logging_option.use_generic_task_monitored_resource
        )
        self.zone = _zone(base, location)
        self.change_ns: list[int] = []
        self.state_ns: list[int] = []
        self.states: list[JobState] = []
        self.event_ns: list[int] = []
        self.events: list[Any] = []
        self.task_ns: list[list[int]] = [[] for _ in range(self.task_count)]
        self.task_states: list[list[TaskState]] = [[] for _ in range(self.task_count)]
        self.task_events: list[list[Any]] = [[] for _ in range(self.task_count)]
        self.gone_ns: int | None = None
        self.cancel_done_ns: int | None = None
        self.stopped = False
        self.run: RunState | None = None
        self._cache: tuple[int, Any, bytes] | None = None
        self.set_state(create_ns, JobState.QUEUED)
        for index in range(self.task_count):
            self._task_append(create_ns, index, TaskState.PENDING, None)

    # -- mutators (caller holds the store lock) --

    def _stamp(self, t: int) -> int:
        t = max(t, self.change_ns[-1]) if self.change_ns else t
        self.change_ns.append(t)
        self._cache = None
        return t

    def event(
        self, t: int, description: str, *, task_state: TaskState | None = None, exit_code: int | None = None
    ) -> Any:
        t = self._stamp(t)
        ev = _status_event(t, description, task_state, exit_code)
        self.events.append(ev)
        self.event_ns.append(t)
        return ev

    def set_state(self, t: int, new: JobState, detail: str = "") -> None:
        old = self.states[-1] if self.states else None
        t = self._stamp(t)
        # Values before times: lock-free readers bisect the times and index the values.
        self.states.append(new)
        self.state_ns.append(t)
        if old is not None:
            self.event(t, job_state_text(self.number_name, old, new) + detail)

    def set_task(
        self, t: int, index: int, new: TaskState, description: str, exit_code: int | None = None
    ) -> None:
        t = self._stamp(t)
        self._task_append(t, index, new, _status_event(t, description, new, exit_code))

    def _task_append(self, t: int, index: int, state: TaskState, ev: Any) -> None:
        self.task_states[index].append(state)
        self.task_ns[index].append(t)
        if ev is not None:
            self.task_events[index].append(ev)

    def truncate(self, t: int) -> None:
        """Forget everything planned after `t` (a cancel or delete changes the future)."""
        self.change_ns = self.change_ns[: bisect_right(self.change_ns, t)]
        k = bisect_right(self.state_ns, t)
        self.state_ns, self.states = self.state_ns[:k], self.states[:k]
        k = bisect_right(self.event_ns, t)
        self.event_ns, self.events = self.event_ns[:k], self.events[:k]
        for i in range(self.task_count):
            k = bisect_right(self.task_ns[i], t)
            self.task_ns[i], self.task_states[i] = self.task_ns[i][:k], self.task_states[i][:k]
            self.task_events[i] = [e for e in self.task_events[i] if _ev_ns(e) <= t]
        self._cache = None

    # -- reads --

    def state_at(self, now: int) -> JobState:
        return self.states[bisect_right(self.state_ns, now) - 1]

    def task_state_at(self, index: int, now: int) -> TaskState:
        return self.task_states[index][bisect_right(self.task_ns[index], now) - 1]

    def render(self, now: int) -> tuple[Any, bytes]:
        """The Job as GetJob returns it at `now` (cached per visible change)."""
        version = bisect_right(self.change_ns, now)
        cache = self._cache
        if cache is not None and cache[0] == version:
            return cache[1], cache[2]
        job = JobPb()
        job.CopyFrom(self.base)
        status = job.status
        k = bisect_right(self.state_ns, now)
        state = self.states[k - 1]
        status.state = state
        status.status_events.extend(self.events[: bisect_right(self.event_ns, now)])
        if self.tasks_exist(now):  # a QUEUED job has no tasks yet, and no task counts
            counts = Counter(self.task_state_at(i, now) for i in range(self.task_count))
            group = status.task_groups["group0"]
            for task_state, n in counts.items():
                group.counts[task_state.name] = n
        run_ns = 0
        if state in TERMINAL and JobState.RUNNING in self.states[:k]:
            run_ns = self.state_ns[k - 1] - self.state_ns[self.states.index(JobState.RUNNING)]
        status.run_duration.CopyFrom(duration(run_ns))  # "0s" until the job ends, as Google says
        job.update_time.CopyFrom(timestamp(self.change_ns[version - 1] if version else self.create_ns))
        data = job.SerializeToString()
        self._cache = (version, job, data)
        return job, data

    def render_task(self, index: int, now: int) -> Any:
        task = TaskPb(name=f"{self.name}/taskGroups/group0/tasks/{index}")
        task.status.state = self.task_state_at(index, now)
        events = self.task_events[index]
        task.status.status_events.extend(e for e in events if _ev_ns(e) <= now)
        return task

    def tasks_exist(self, now: int) -> bool:
        """Batch creates a job's tasks when it schedules the job; before that they do not exist."""
        k = bisect_right(self.state_ns, now)
        return any(state != JobState.QUEUED for state in self.states[:k])

    def gone(self, now: int) -> bool:
        return self.gone_ns is not None and now >= self.gone_ns

    # -- names Batch uses for a task's attempt --

    def task_id(self, index: int, attempt: int) -> str:
        return f"task/{self.uid}-group0-{index}/{attempt}/0"

    def instance(self, index: int, attempt: int) -> str:
        digest = hashlib.sha256(f"{self.uid}/{index}/{attempt}".encode()).hexdigest()
        return str(int(digest[:15], 16))

    def log(
        self, logs: LogStore, log_id: str, text: str, *, severity: int, ts: int, task_id: str | None
    ) -> None:
        """Write one Batch-style entry (if the job logs to Cloud Logging), visible from `ts`."""
        if not self.logging:
            return
        entry, labels = batch_entry(
            project=self.project,
            location=self.location,
            job_uid=self.uid,
            job_name=self.name,
            job_labels=self.labels,
            log_id=log_id,
            text=text,
            severity=severity,
            ts=ts,
            task_id=task_id,
            generic_resource=self.generic_resource,
        )
        logs.add(entry, visible=ts, labels=labels)


def _ev_ns(ev: Any) -> int:
    return int(ev.event_time.seconds) * 1_000_000_000 + int(ev.event_time.nanos)


def _status_event(t: int, description: str, task_state: TaskState | None, exit_code: int | None) -> Any:
    ev = StatusEventPb(description=description, type_="STATUS_CHANGED")
    ev.event_time.CopyFrom(timestamp(t))
    if task_state is not None:
        ev.task_state = task_state
    if exit_code is not None:
        ev.task_execution.exit_code = exit_code
    return ev


def _zone(job: Any, location: str) -> str:
    for loc in job.allocation_policy.location.allowed_locations:
        if loc.startswith("zones/"):
            return loc.split("/", 1)[1]
        if loc.startswith("regions/"):
            return loc.split("/", 1)[1] + "-a"
    return f"{location}-a"


# --- planning a label-driven job -----------------------------------------------------------


def plan_timeline(record: JobRecord, logs: LogStore, run_commands: bool) -> None:
    """Lay out the job's future from its plan (up to RUNNING only, when commands really run)."""
    plan = record.plan
    t_sched = record.create_ns + plan.queue_ns
    t_run = t_sched + plan.schedule_ns
    record.set_state(t_sched, JobState.SCHEDULED)
    if plan.outcome == "no-resources":
        error = (
            "Batch Error: code - CODE_GCE_ZONE_RESOURCE_POOL_EXHAUSTED, description - The zone "
            f"'projects/{record.project}/zones/{record.zone}' does not have enough resources available "
            "to fulfill the request. Try a different zone, or try again later."
        )
        for index in range(record.task_count):
            record.set_task(
                t_run, index, TaskState.FAILED, f"Task state is updated from PENDING to FAILED. {error}"
            )
        record.set_state(t_run, JobState.FAILED, error)
        return
    if run_commands:
        return  # RUNNING comes when a process slot is free and the first task starts (runner)
    record.set_state(t_run, JobState.RUNNING)
    ops: list[tuple[int, int, Callable[[], None]]] = []

    def at(t: int, fn: Callable[[], None]) -> None:
        ops.append((t, len(ops), fn))

    max_run = duration_ns(record.spec.max_run_duration)
    slots = [t_run] * min(record.parallelism, record.task_count)
    failure: tuple[int, int, str] | None = None  # (time, index, event text)
    unexecuted: list[int] = []
    end = t_run
    for index in range(record.task_count):
        start = heapq.heappop(slots)
        if failure is not None and start >= failure[0]:
            unexecuted.append(index)
            heapq.heappush(slots, start)
            continue
        t, attempt = start, 0
        while True:
            _plan_attempt(record, logs, at, index=index, attempt=attempt, t=t)
            run_ns, code = plan.run_ns, plan.exit_code_for(index, attempt)
            if max_run and run_ns > max_run:
                run_ns, code = max_run, TIMED_OUT
            t += run_ns
            task_id = record.task_id(index, attempt)
            if code:
                text = f"emulator: simulated failure, exit code {code}"
                record.log(logs, TASK_LOGS, text, severity=ERROR, ts=t - 1, task_id=task_id)
            text = f"Task {task_id} runnable 0 exited with status {code}."
            record.log(logs, AGENT_LOGS, text, severity=INFO, ts=t, task_id=task_id)
            if code == 0:
                at(t, _task_setter(record, t, index, TaskState.SUCCEEDED, "RUNNING"))
                break
            text = task_failure_text(record.zone, record.instance(index, attempt), code)
            at(t, _task_failed(record, t, index, text, code))
            if should_retry(record.spec, code, attempt):
                attempt += 1
                continue
            if failure is None or t < failure[0]:
                failure = (t, index, text)
            break
        heapq.heappush(slots, t)
        end = max(end, t)
    for index in unexecuted:
        at(end, _task_setter(record, end, index, TaskState.UNEXECUTED, "PENDING"))
    if failure is None:
        at(end, lambda: record.set_state(end, JobState.SUCCEEDED))
    else:
        detail = failure_detail(failure[1], failure[2])
        at(end, lambda: record.set_state(end, JobState.FAILED, detail))
    for _t, _seq, fn in sorted(ops, key=lambda op: (op[0], op[1])):
        fn()


def failure_detail(index: int, text: str) -> str:
    """Appended to the RUNNING -> FAILED event, without a space after `jobs/x.` (recorded)."""
    return (
        "Job failed due to task failure. Specifically, task with index "
        f'{index} failed due to the following task event: "{text}"'
    )


def _plan_attempt(
    record: JobRecord,
    logs: LogStore,
    at: Callable[[int, Callable[[], None]], None],
    *,
    index: int,
    attempt: int,
    t: int,
) -> None:
    previous = "PENDING" if attempt == 0 else "FAILED"
    at(t, _task_setter(record, t, index, TaskState.ASSIGNED, previous))
    at(t, _task_setter(record, t, index, TaskState.RUNNING, "ASSIGNED"))
    task_id = record.task_id(index, attempt)
    record.log(logs, AGENT_LOGS, f"Task {task_id} runnable 0 started.", severity=INFO, ts=t, task_id=task_id)
    text = f"emulator: simulated run of task {index}, attempt {attempt}"
    record.log(logs, TASK_LOGS, text, severity=INFO, ts=t + 1, task_id=task_id)


def _task_setter(record: JobRecord, t: int, index: int, new: TaskState, old: str) -> Callable[[], None]:
    text = f"Task state is updated from {old} to {new.name}."
    exit_code = 0 if new == TaskState.SUCCEEDED else None
    return lambda: record.set_task(t, index, new, text, exit_code)


def _task_failed(record: JobRecord, t: int, index: int, text: str, code: int) -> Callable[[], None]:
    def apply() -> None:
        record.set_task(t, index, TaskState.FAILED, text, code)
        record.event(t, text, task_state=TaskState.FAILED, exit_code=code)

    return apply


# --- what CreateJob adds ------------------------------------------------------------------


def new_uid(job_id: str) -> str:
    """The first 18 characters of the job ID and a random suffix (recorded:
    `test-1829c54bea29f-93081cd2-4cda-4ad50`)."""
    h = uuid.uuid4().hex
    return f"{job_id[:18]}-{h[:8]}-{h[8:12]}-{h[12:17]}"


def fill_defaults(job: Any, project: str, location: str, job_id: str) -> None:
    """What the real CreateJob fills in (recorded responses): the `batch-job-id` allocation
    label, the region and its zones as allowed locations, the Compute Engine default service
    account, task count and parallelism, and task group names carrying the project number."""
    number = project_number(project)
    policy = job.allocation_policy
    policy.labels["batch-job-id"] = job_id
    if not policy.location.allowed_locations:
        policy.location.allowed_locations.extend(
            [f"regions/{location}", *(f"zones/{location}-{z}" for z in DEFAULT_ZONES)]
        )
    if not policy.service_account.email:
        policy.service_account.email = DEFAULT_SERVICE_ACCOUNT.format(number=number)
    for index, group in enumerate(job.task_groups):
        group.name = f"projects/{number}/locations/{location}/jobs/{job_id}/taskGroups/group{index}"
        if group.task_environments:  # TaskGroup.taskEnvironments: task count is their number
            group.task_count = len(group.task_environments)
        elif not group.task_count:
            group.task_count = 1
        if not group.parallelism:
            group.parallelism = min(group.task_count, MAX_PARALLELISM)


# --- the store ----------------------------------------------------------------------------

JOB_ID_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_JOB_ROOTS = {
    "name",
    "uid",
    "status",
    "labels",
    "create_time",
    "createTime",
    "update_time",
    "updateTime",
    "priority",
}


def check_job_path(path: filters.Path) -> None:
    ok = path[0] in _JOB_ROOTS and (
        (path[0] == "labels" and len(path) == 2)
        or (path[0] == "status" and path[1:] == ("state",))
        or (path[0] not in ("labels", "status") and len(path) == 1)
    )
    if not ok:
        raise filters.FilterError(
            f"unsupported field {'.'.join(path)!r} in a job filter; supported: name, uid, "
            "status.state, labels.KEY, create_time, update_time, priority"
        )


def check_task_path(path: filters.Path) -> None:
    lowered = tuple(p.lower() for p in path)
    if lowered not in (("name",), ("state",), ("status", "state")):
        raise filters.FilterError(
            f"unsupported field {'.'.join(path)!r} in a task filter; supported: name, State"
        )


class JobView:
    """A job seen by a filter at one instant."""

    __slots__ = ("now", "record")

    def __init__(self, record: JobRecord, now: int) -> None:
        self.record, self.now = record, now

    def lookup(self, path: filters.Path) -> filters.Value | None:
        r = self.record
        root = path[0]
        if root == "labels":
            return r.labels.get(path[1])
        if root == "status":
            return r.state_at(self.now).name
        if root == "name":
            return r.name
        if root == "uid":
            return r.uid
        if root in ("create_time", "createTime"):
            return filters.Nanos(r.create_ns)
        if root in ("update_time", "updateTime"):
            k = bisect_right(r.change_ns, self.now)
            return filters.Nanos(r.change_ns[k - 1] if k else r.create_ns)
        if root == "priority":
            return int(r.base.priority)
        return None


class TaskView:
    __slots__ = ("index", "now", "record")

    def __init__(self, record: JobRecord, index: int, now: int) -> None:
        self.record, self.index, self.now = record, index, now

    def lookup(self, path: filters.Path) -> filters.Value | None:
        if path[0].lower() == "name":
            return f"{self.record.name}/taskGroups/group0/tasks/{self.index}"
        return self.record.task_state_at(self.index, self.now).name


class JobStore:
    """All jobs, the request-ID memory, and the hooks into the log store and the runner."""

    def __init__(
        self, logs: LogStore, timings: Timings, runner: Runner | None = None, pubsub: PubSub | None = None
    ) -> None:
        self.lock = threading.RLock()
        self.logs = logs
        self.pubsub = pubsub
        self.timings = timings
        self.runner = runner
        self.jobs: dict[str, JobRecord] = {}
        self._order: list[JobRecord] = []
        self._requests: dict[tuple[str, str], tuple[int, str, bytes]] = {}
        self._requests_limit = 10_000
        self._seq = 0
        self._doomed: list[JobRecord] = []

    def clear(self) -> None:
        with self.lock:
            for record in self.jobs.values():
                record.stopped = True
                if self.runner is not None:
                    self.runner.stop_job(record)
            self.jobs.clear()
            self._order.clear()
            self._requests.clear()
            self._doomed.clear()

    def create(
        self, project: str, location: str, job_id: str, job: Any, request_id: str, *, at: int | None = None
    ) -> bytes:
        """Store a validated job; the same `request_id` within two hours returns the first answer.
        `at`: its creation time (ns) if not now (`seed_history` only)."""
        parent = f"projects/{project}/locations/{location}"
        plan = plan_from_labels(job.labels, self.timings)
        with self.lock:
            now = now_ns() if at is None else at  # under the lock: creation times follow creation order
            if request_id:
                self._forget_requests(now)
                seen = self._requests.get((parent, request_id))
                if seen is not None and seen[0] > now:
                    existing = self.jobs.get(seen[1])
                    return existing.render(now)[1] if existing and not existing.gone(now) else seen[2]
            if not job_id:
                job_id = f"job-{uuid.uuid4().hex[:12]}"
            name = f"{parent}/jobs/{job_id}"
            self._purge(now)
            if name in self.jobs:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Job {name} already exists.")
            base = JobPb()
            base.CopyFrom(job)
            base.ClearField("status")
            base.ClearField("update_time")
            base.name = name
            base.uid = new_uid(job_id)
            base.create_time.CopyFrom(timestamp(now))
            fill_defaults(base, project, location, job_id)
            group = base.task_groups[0]
            if not group.task_spec.compute_resource.cpu_milli:
                group.task_spec.compute_resource.cpu_milli = 2000
            if not group.task_spec.compute_resource.memory_mib:
                group.task_spec.compute_resource.memory_mib = 2000
            self._seq += 1
            record = JobRecord(
                base=base, project=project, location=location, job_id=job_id, seq=self._seq,
                create_ns=now, plan=plan,
            )  # fmt: skip
            plan_timeline(record, self.logs, run_commands=self.runner is not None)
            self.notify(record)
            self.jobs[name] = record
            self._order.append(record)
            data = record.render(now)[1]
            if request_id:
                self._requests[(parent, request_id)] = (now + REQUEST_ID_TTL_NS, name, data)
        if self.runner is not None and plan.outcome != "no-resources":
            self.runner.schedule(record, record.create_ns + plan.queue_ns + plan.schedule_ns)
        return data

    def seed_history(self, project: str, location: str, count: int, age_seconds: float) -> int:
        """`count` one-task jobs created `age_seconds` ago, long SUCCEEDED: a region's history
        (Batch keeps jobs 60 days), for measuring what a listing costs next to it. Into an
        empty store only, so creation order stays list order; not with `--run-commands`."""
        if count < 0 or age_seconds < 3600:
            raise ValueError("history: count >= 0 and age_seconds >= 3600")
        job = JobPb()
        runnable = job.task_groups.add(task_count=1).task_spec.runnables.add()
        runnable.container.image_uri = "us-docker.pkg.dev/history/repo/app:1"
        runnable.container.commands.append("true")
        with self.lock:
            if self._order or self.runner is not None:
                raise ValueError("history is seeded into an empty emulator without --run-commands")
            start = now_ns() - seconds_ns(age_seconds)
            for i in range(count):
                self.create(project, location, f"history-{i:06d}", job, "", at=start + i * 1_000_000)
        return count

    def _forget_requests(self, now: int) -> None:
        # Expired request IDs are dropped in batches, so a big fleet does not pay a scan per create.
        if len(self._requests) > self._requests_limit:
            self._requests = {k: v for k, v in self._requests.items() if v[0] > now}
            self._requests_limit = max(10_000, 2 * len(self._requests))

    def _purge(self, now: int) -> None:
        gone = {id(r) for r in self._doomed if r.gone(now)}
        if gone:
            self._order = [r for r in self._order if id(r) not in gone]
            self._doomed = [r for r in self._doomed if id(r) not in gone]
            self.jobs = {name: r for name, r in self.jobs.items() if id(r) not in gone}

    def get(self, name: str, now: int) -> JobRecord:
        """The job, by a consistent read (GetJob sees a job as soon as CreateJob returns)."""
        record = self.jobs.get(name)
        if record is None or record.gone(now):
            raise not_found(f"Resource '{name}' was not found")
        return record

    def records(self, project: str, location: str, now: int) -> Iterator[JobRecord]:
        """The jobs ListJobs shows: those created at least `list_lag` seconds ago."""
        with self.lock:
            self._purge(now)
            snapshot = list(self._order)
        listed_before = now - seconds_ns(self.timings.list_lag)
        for record in snapshot:
            if (
                record.project == project
                and location in ("-", record.location)
                and record.create_ns <= listed_before
                and not record.gone(now)
            ):
                yield record

    def tasks_listed(self, record: JobRecord, now: int) -> bool:
        """Whether ListTasks shows the job's tasks: they exist, and `list_lag` has passed."""
        return record.tasks_exist(now) and now - record.scheduled_ns >= seconds_ns(self.timings.list_lag)

    def cancel(self, name: str) -> int:
        """Start cancelling; returns when CANCELLED will be reached."""
        with self.lock:
            now = now_ns()
            record = self.get(name, now)
            state = record.state_at(now)
            if state == JobState.CANCELLATION_IN_PROGRESS and record.cancel_done_ns is not None:
                return record.cancel_done_ns
            if state in TERMINAL or state == JobState.DELETION_IN_PROGRESS:
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Job {name} is in state {state.name} and cannot be cancelled.",
                )
            self._stop(record, now)
            record.set_state(now, JobState.CANCELLATION_IN_PROGRESS)
            done = now + record.plan.cancel_ns
            for index in range(record.task_count):
                task_state = record.task_state_at(index, now)
                if task_state in (TaskState.RUNNING, TaskState.ASSIGNED):
                    text = f"Task state is updated from {task_state.name} to FAILED: the job was cancelled."
                    record.set_task(done, index, TaskState.FAILED, text)
                elif task_state == TaskState.PENDING:
                    record.set_task(
                        done, index, TaskState.UNEXECUTED, "Task state is updated from PENDING to UNEXECUTED."
                    )
            record.set_state(done, JobState.CANCELLED)
            record.cancel_done_ns = done
            self.notify(record)
            return done

    def delete(self, name: str) -> int:
        """Start deleting; returns when the job will be gone."""
        with self.lock:
            now = now_ns()
            record = self.get(name, now)
            if record.gone_ns is not None:
                return record.gone_ns
            self._stop(record, now)
            record.set_state(now, JobState.DELETION_IN_PROGRESS)
            record.gone_ns = now + record.plan.delete_ns
            self._doomed.append(record)
            self.notify(record)
            return record.gone_ns

    def notify(self, record: JobRecord) -> None:
        """Publish the job's state changes, as they happen, to the topics it asked for (Batch's
        JOB_STATE_CHANGED notifications); called whenever its timeline changes."""
        if self.pubsub is None:
            return
        timeline = list(zip(record.state_ns, (s.name for s in record.states), strict=True))
        for topic, only in job_notifications(record.base):
            self.pubsub.schedule_job_states(topic, record.name, record.uid, timeline, only=only)

    def _stop(self, record: JobRecord, now: int) -> None:
        record.stopped = True
        record.truncate(now)
        self.logs.drop_after(record.uid, now)
        if self.runner is not None:
            self.runner.stop_job(record)

    def count_by_state(self) -> dict[str, int]:
        now = now_ns()
        with self.lock:
            snapshot = list(self._order)
        counts = Counter(r.state_at(now).name for r in snapshot if not r.gone(now))
        return dict(sorted(counts.items()))
