"""Read a Batch job's state, history and failure reason from its REST JSON.

Pure: works on the REST JSON of a job (`spec.job_to_rest(job)`, `batch_v1.Job.to_json`,
`Job.to_dict` or a `gcloud ... --format=json` dump), so waiters, operators, links and
callbacks share one reading of the job and it can be tested on hand-written dicts. Both
camelCase and snake_case keys, and enum names or numbers, are accepted because the
Google client's own dict and JSON conversions produce either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

STATE_UNSPECIFIED = "STATE_UNSPECIFIED"
QUEUED = "QUEUED"
SCHEDULED = "SCHEDULED"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
DELETION_IN_PROGRESS = "DELETION_IN_PROGRESS"
CANCELLATION_IN_PROGRESS = "CANCELLATION_IN_PROGRESS"
CANCELLED = "CANCELLED"

#: `JobStatus.State` in enum order: the index is the enum number.
STATES: tuple[str, ...] = (
    STATE_UNSPECIFIED,
    QUEUED,
    SCHEDULED,
    RUNNING,
    SUCCEEDED,
    FAILED,
    DELETION_IN_PROGRESS,
    CANCELLATION_IN_PROGRESS,
    CANCELLED,
)
#: States a waiter stops at: nothing more will happen to the job's tasks.
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, DELETION_IN_PROGRESS})
#: States a waiter keeps waiting in. CANCELLATION_IN_PROGRESS is here on purpose: the
#: job's VMs are still being torn down, and it ends CANCELLED (or FAILED/SUCCEEDED if the
#: tasks finished first), which is the state worth reporting.
ACTIVE = frozenset({STATE_UNSPECIFIED, QUEUED, SCHEDULED, RUNNING, CANCELLATION_IN_PROGRESS})
#: Not yet running: the job waits for capacity or VMs (a waiter polls these fast).
PENDING = frozenset({STATE_UNSPECIFIED, QUEUED, SCHEDULED})
SUCCESS = frozenset({SUCCEEDED})
FAILURE = frozenset({FAILED, CANCELLED, DELETION_IN_PROGRESS})

#: `TaskStatus.State` in enum order.
TASK_STATES: tuple[str, ...] = (
    STATE_UNSPECIFIED,
    "PENDING",
    "ASSIGNED",
    RUNNING,
    FAILED,
    SUCCEEDED,
    "UNEXECUTED",
)

#: Batch's reserved task exit codes
#: (https://cloud.google.com/batch/docs/troubleshooting#reserved-exit-codes).
RESERVED_EXIT_CODES: dict[int, str] = {
    50000: "task failed for a reason Batch does not classify",
    50001: "Spot VM preempted",
    50002: "VM stopped reporting to Batch (VM reporting timeout)",
    50003: "VM rebooted during execution",
    50004: "VM and task unresponsive",
    50005: "max run duration exceeded",
    50006: "VM recreated during execution",
}

CONSOLE_BASE = "https://console.cloud.google.com"
TASK_LOG = "batch_task_logs"
AGENT_LOG = "batch_agent_logs"

_JOB_NAME = re.compile(r"^projects/([^/\s]+)/locations/([^/\s]+)/jobs/([^/\s]+)$")
_TASK_NAME = re.compile(r"/taskGroups/([^/]+)/tasks/(\d+)$")
_TRANSITION = re.compile(r"Job state is set from ([A-Z_]+) to ([A-Z_]+)")
_TASK_INDEX = re.compile(r"task with index (\d+) failed")
_EXIT_CODE = re.compile(r"exit code (-?\d+)")
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)s\s*$")
_BARE_TRANSITION = re.compile(r"^Job state is set from [A-Z_]+ to [A-Z_]+(?: for job \S+?)?\.?$")


# --------------------------------------------------------------------------- names


def parse_job_name(name: str) -> tuple[str, str, str]:
    """Split `projects/P/locations/R/jobs/J` into `(P, R, J)`."""
    match = _JOB_NAME.match(name or "") if isinstance(name, str) else None
    if not match:
        raise ValueError(
            f"not a Batch job name: {name!r}; expected projects/PROJECT/locations/REGION/jobs/JOB_ID "
            "(the job's full resource name, e.g. the `name` the operator returns)"
        )
    project, region, job_id = match.groups()
    return project, region, job_id


def job_name(project_id: str, region: str, job_id: str) -> str:
    """The full resource name of a job."""
    return f"projects/{project_id}/locations/{region}/jobs/{job_id}"


def parent_of(name: str) -> str:
    """`projects/P/locations/R` of a job name (what ListJobs takes)."""
    project, region, _ = parse_job_name(name)
    return f"projects/{project}/locations/{region}"


def console_url(name: str) -> str:
    """The job's page in the Google Cloud console."""
    project, region, job_id = parse_job_name(name)
    return (
        f"{CONSOLE_BASE}/batch/jobsDetail/regions/{quote(region, safe='')}/jobs/{quote(job_id, safe='')}"
        f"/details?project={quote(project, safe='')}"
    )


def logs_query(project: str, uid: str, create_time: str | datetime | None = None) -> str:
    """The Cloud Logging filter for a job's task and agent logs."""
    # log_id(): entries are stored under the project ID whatever form `project` takes.
    query = f'(log_id("{TASK_LOG}") OR log_id("{AGENT_LOG}"))\nlabels.job_uid="{uid}"'

    start = _parse_time(create_time)
    if start is not None:
        # A timestamp in the query overrides Logs Explorer's default "last hour" view.
        query += f'\ntimestamp>="{_iso(start - timedelta(minutes=1))}"'
    return query


def logs_url(project: str, uid: str, create_time: str | datetime | None = None) -> str:
    """Logs Explorer, showing the job's task and agent logs."""
    query = quote(logs_query(project, uid, create_time), safe="")
    return f"{CONSOLE_BASE}/logs/query;query={query}?project={quote(project, safe='')}"


# --------------------------------------------------------------------------- reading


def as_rest(job: Any) -> dict[str, Any]:
    """The REST dict of `job`: a Mapping, a JSON string, or a proto-plus / protobuf `Job`."""
    if isinstance(job, Mapping):
        return dict(job)
    if isinstance(job, str | bytes):
        loaded = json.loads(job)
        if not isinstance(loaded, dict):
            raise ValueError("job JSON must be an object")
        return loaded
    to_json = getattr(type(job), "to_json", None)
    if callable(to_json):  # proto-plus message (batch_v1.Job)
        return dict(json.loads(to_json(job, use_integers_for_enums=False)))
    if hasattr(job, "DESCRIPTOR"):  # raw protobuf message
        from google.protobuf import json_format

        return json_format.MessageToDict(job)
    raise TypeError(f"cannot read a Batch job from {type(job).__name__}")


def _get(mapping: Any, key: str, default: Any = None) -> Any:
    """`mapping[key]`, also trying the snake_case spelling of a camelCase key."""
    if not isinstance(mapping, Mapping):
        return default
    if key in mapping:
        return mapping[key]
    snake = re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()
    if snake in mapping:
        return mapping[snake]
    if key == "type" and "type_" in mapping:
        return mapping["type_"]
    return default


def _enum_name(value: Any, names: Sequence[str]) -> str:
    if value is None or value == "":
        return STATE_UNSPECIFIED
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        index = int(value)
        return names[index] if 0 <= index < len(names) else STATE_UNSPECIFIED
    text = str(getattr(value, "name", value))
    return text.rsplit(".", 1)[-1]


def state_of(job: Any) -> str:
    """The job's `JobStatus.State` name (`STATE_UNSPECIFIED` when missing)."""
    rest = as_rest(job)
    return _enum_name(_get(_get(rest, "status", {}), "state"), STATES)


def notification_topic(job: Any) -> str | None:
    """The Pub/Sub topic the job announces its state changes to (a job-level `JOB_STATE_CHANGED`
    notification, or one naming a `newJobState`), else None: what a wait can listen on (push)."""
    for notification in _get(as_rest(job), "notifications", []) or []:
        message = _get(notification, "message", {}) or {}
        kind = _get(message, "type") or "TYPE_UNSPECIFIED"
        job_level = kind == "JOB_STATE_CHANGED" or (
            kind == "TYPE_UNSPECIFIED" and bool(_get(message, "newJobState"))
        )
        topic = _get(notification, "pubsubTopic")
        if topic and job_level:
            return str(topic)
    return None


def is_terminal(state: str) -> bool:
    return state in TERMINAL


def status_events(job: Any) -> list[dict[str, Any]]:
    """The job's status events as camelCase dicts, in time order."""
    rest = as_rest(job)
    events = [_event(e) for e in _get(_get(rest, "status", {}), "statusEvents", []) or []]
    return sorted(events, key=lambda e: _parse_time(e.get("eventTime")) or _EPOCH)


def _event(raw: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": str(_get(raw, "type", "") or ""),
        "description": str(_get(raw, "description", "") or ""),
        "eventTime": _iso_or_none(_get(raw, "eventTime")),
    }
    execution = _get(raw, "taskExecution")
    code = _get(execution, "exitCode")
    if code is not None and code != "":
        event["exitCode"] = int(code)
    task_state = _get(raw, "taskState")
    if task_state not in (None, "", 0, STATE_UNSPECIFIED):
        event["taskState"] = _enum_name(task_state, TASK_STATES)
    return event


def task_counts(job: Any) -> dict[str, int]:
    """Task counts by task state, summed over task groups."""
    rest = as_rest(job)
    counts: dict[str, int] = {}
    groups = _get(_get(rest, "status", {}), "taskGroups", {}) or {}
    for group in groups.values() if isinstance(groups, Mapping) else ():
        for state, count in (_get(group, "counts", {}) or {}).items():
            name = _enum_name(state, TASK_STATES)
            counts[name] = counts.get(name, 0) + int(count)
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- time

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _parse_time(value: Any) -> datetime | None:
    """RFC 3339 (nanoseconds allowed), datetime, or `{seconds, nanos}` → aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, Mapping):
        seconds = int(value.get("seconds", 0) or 0)
        nanos = int(value.get("nanos", 0) or 0)
        return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    text = str(value).strip()
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", text)
    if not match:
        return None
    base, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    parsed = datetime.fromisoformat(base).replace(microsecond=micros)
    if zone in (None, "Z"):
        return parsed.replace(tzinfo=UTC)
    return parsed.replace(tzinfo=datetime.strptime(zone, "%z").tzinfo).astimezone(UTC)


def _iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def _iso_or_none(value: Any) -> str | None:
    parsed = _parse_time(value)
    return _iso(parsed) if parsed else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max((end - start).total_seconds(), 0.0), 3)


def _duration_seconds(value: Any) -> float | None:
    """A protobuf Duration as JSON (`"12.5s"`) or dict → seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return int(value.get("seconds", 0) or 0) + int(value.get("nanos", 0) or 0) / 1e9
    match = _DURATION.match(str(value))
    return float(match.group(1)) if match else None


def timeline(job: Any) -> dict[str, Any]:
    """When the job entered each state, and how long it spent queued, scheduled and running.

    Built from the `Job state is set from X to Y` status events. `queued_seconds` is the
    wait for capacity, `scheduled_seconds` mostly VM start and image pull (what Image
    Streaming shortens), `running_seconds` the tasks' run; a phase that has not ended is
    None. Times are RFC 3339 UTC strings, so the result is JSON-safe.
    """
    rest = as_rest(job)
    created = _parse_time(_get(rest, "createTime"))
    entered: dict[str, datetime] = {}
    transitions: list[dict[str, Any]] = []
    for event in status_events(rest):
        match = _TRANSITION.search(event["description"])
        if not match:
            continue
        moment = _parse_time(event["eventTime"])
        transitions.append({"from": match.group(1), "to": match.group(2), "time": event["eventTime"]})
        if moment is not None:
            entered.setdefault(match.group(2), moment)
    queued = entered.get(QUEUED) or created
    scheduled = entered.get(SCHEDULED)
    running = entered.get(RUNNING)
    finished = min((entered[s] for s in TERMINAL | {CANCELLATION_IN_PROGRESS} if s in entered), default=None)
    queue_end = min((t for t in (scheduled, running, finished) if t is not None), default=None)
    run_end = finished
    running_seconds = _seconds(running, run_end)
    if running_seconds is None and run_end is not None:
        running_seconds = _duration_seconds(_get(_get(rest, "status", {}), "runDuration"))
    return {
        "create_time": _iso(created) if created else None,
        "queued_at": _iso(queued) if queued else None,
        "scheduled_at": _iso(scheduled) if scheduled else None,
        "running_at": _iso(running) if running else None,
        "finished_at": _iso(finished) if finished else None,
        "states": {state: _iso(moment) for state, moment in entered.items()},
        "transitions": transitions,
        "queued_seconds": _seconds(queued, queue_end),
        "scheduled_seconds": _seconds(scheduled, running or (finished if scheduled else None)),
        "running_seconds": running_seconds,
        "total_seconds": _seconds(created or queued, finished),
    }


# --------------------------------------------------------------------------- failures


def _task_index(task: Mapping[str, Any]) -> int | None:
    match = _TASK_NAME.search(str(_get(task, "name", "")))
    return int(match.group(2)) if match else None


def _exit_code_text(code: int) -> str:
    meaning = RESERVED_EXIT_CODES.get(code)
    return f"exit code {code} ({meaning})" if meaning else f"exit code {code}"


def failure_details(job: Any, tasks: Iterable[Any] | None = None) -> dict[str, Any]:
    """Structured reason a job failed: what `exceptions.BatchJobFailedError` carries.

    `tasks` (REST dicts or `batch_v1.Task`s from ListTasks) adds per-task exit codes; the
    job's own events name at least the first failing task. JSON-safe.
    """
    rest = as_rest(job)
    state = state_of(rest)
    events = status_events(rest)
    by_task: dict[int, list[int]] = {}
    unattributed: list[int] = []
    failure_events: list[dict[str, Any]] = []

    def note(index: int | None, code: int | None) -> None:
        if code is None:
            return
        if index is None:
            if code not in unattributed:
                unattributed.append(code)
            return
        codes = by_task.setdefault(index, [])
        if code not in codes:
            codes.append(code)

    for event in events:
        description = event["description"]
        transition = _TRANSITION.search(description)
        is_failure = (
            (transition is not None and transition.group(2) in FAILURE | {CANCELLATION_IN_PROGRESS})
            or "exitCode" in event
            or "Batch Error" in description
            or bool(_TASK_INDEX.search(description))
        )
        if not is_failure:
            continue
        failure_events.append(event)
        index_match = _TASK_INDEX.search(description)
        index = int(index_match.group(1)) if index_match else None
        if index is not None:
            by_task.setdefault(index, [])
        codes = [int(c) for c in _EXIT_CODE.findall(description)]
        if "exitCode" in event and event["exitCode"] not in codes:
            codes.insert(0, event["exitCode"])
        for code in codes:
            if code != 0:
                note(index, code)

    for raw_task in tasks or ():
        task = as_rest(raw_task)
        index = _task_index(task)
        task_status = _get(task, "status", {})
        task_state = _enum_name(_get(task_status, "state"), TASK_STATES)
        task_events = [_event(e) for e in _get(task_status, "statusEvents", []) or []]
        codes = [e["exitCode"] for e in task_events if e.get("exitCode") not in (None, 0)]
        if task_state != FAILED and not codes:
            continue
        if index is not None:
            by_task.setdefault(index, [])
        for code in codes:
            note(index, code)
        for description in (e["description"] for e in task_events if e.get("exitCode") not in (None, 0)):
            for code in _EXIT_CODE.findall(description):
                if int(code) != 0:
                    note(index, int(code))

    attributed = {c for codes in by_task.values() for c in codes}
    unattributed = [c for c in unattributed if c not in attributed]
    exit_codes: list[int] = []
    for code in [c for codes in by_task.values() for c in codes] + unattributed:
        if code not in exit_codes:
            exit_codes.append(code)
    failed_indexes = sorted(by_task)
    counted = task_counts(rest).get(FAILED, 0)
    return {
        "state": state,
        "failed_tasks": max(counted, len(failed_indexes)),
        "failed_task_indexes": failed_indexes,
        "exit_codes": exit_codes,
        "task_exit_codes": {str(index): codes for index, codes in sorted(by_task.items())},
        "preempted": 50001 in exit_codes,
        "events": failure_events,
        "reason": _format_reason(state, by_task, unattributed, failure_events, counted),
    }


def _format_reason(
    state: str,
    by_task: Mapping[int, list[int]],
    unattributed: list[int],
    failure_events: list[dict[str, Any]],
    failed_count: int,
) -> str:
    if state not in FAILURE | {CANCELLATION_IN_PROGRESS} and not failure_events:
        return ""
    parts: list[str] = []
    if state in (CANCELLED, CANCELLATION_IN_PROGRESS):
        parts.append("the job was cancelled" if state == CANCELLED else "the job is being cancelled")
    elif state == DELETION_IN_PROGRESS:
        parts.append("the job is being deleted")
    for index, codes in sorted(by_task.items()):
        if codes:
            parts.append(f"task {index} failed with " + ", ".join(_exit_code_text(c) for c in codes))
        else:
            parts.append(f"task {index} failed")
    if unattributed:
        lead = "other task attempts exited with " if by_task else "tasks failed with "
        parts.append(lead + ", ".join(_exit_code_text(c) for c in unattributed))
    if failed_count > len(by_task) and by_task:
        parts.append(f"{failed_count} tasks failed in all")
    elif failed_count and not by_task and not unattributed:
        parts.append(f"{failed_count} task{'s' if failed_count != 1 else ''} failed")
    # The most telling event: the last one that is not a bare state change, else the last.
    detail = next(
        (
            e["description"]
            for e in reversed(failure_events)
            if e["description"] and not _BARE_TRANSITION.match(e["description"])
        ),
        failure_events[-1]["description"] if failure_events else "",
    )
    text = "; ".join(parts) if parts else f"the job ended {state}"
    if detail:
        text += f". Event: {detail}"
    return text[0].upper() + text[1:]


def failure_reason(job: Any, tasks: Iterable[Any] | None = None) -> str:
    """One line on why the job failed or was cancelled ("" when it did not)."""
    return str(failure_details(job, tasks)["reason"])


# --------------------------------------------------------------------------- summary


def summarize(job: Any, tasks: Iterable[Any] | None = None) -> dict[str, Any]:
    """The JSON-safe digest of a job that goes into XCom, trigger events and logs."""
    rest = as_rest(job)
    name = str(_get(rest, "name", "") or "")
    try:
        project, region, job_id = parse_job_name(name)
    except ValueError:
        project, region, job_id = "", "", name.rsplit("/", 1)[-1]
    uid = str(_get(rest, "uid", "") or "")
    state = state_of(rest)
    create_time = _iso_or_none(_get(rest, "createTime"))
    reason = failure_reason(rest, tasks) if state not in ACTIVE - {CANCELLATION_IN_PROGRESS} else ""
    return {
        "name": name,
        "uid": uid,
        "job_id": job_id,
        "project_id": project,
        "region": region,
        "state": state,
        "create_time": create_time,
        "update_time": _iso_or_none(_get(rest, "updateTime")),
        "run_duration_seconds": _duration_seconds(_get(_get(rest, "status", {}), "runDuration")),
        "task_counts": task_counts(rest),
        "timeline": timeline(rest),
        "console_url": console_url(name) if project else None,
        "logs_url": logs_url(project, uid, create_time) if project and uid else None,
        "reason": reason,
        "labels": {str(k): str(v) for k, v in (_get(rest, "labels", {}) or {}).items()},
    }


# --------------------------------------------------------------------------- waiting

#: What a waiter (trigger, sensor, operator) stops at by default.
DEFAULT_TARGET_STATES: tuple[str, ...] = (SUCCEEDED,)
DEFAULT_FAILURE_STATES: tuple[str, ...] = (FAILED, CANCELLED, DELETION_IN_PROGRESS)
#: The `status` of a wait's event; every one but "success" should fail the task.
EVENT_STATUSES = ("success", "failed", "cancelled", "deleted", "timeout", "error")


def outcome_of(
    state: str,
    target_states: Iterable[str] = DEFAULT_TARGET_STATES,
    failure_states: Iterable[str] = DEFAULT_FAILURE_STATES,
) -> str | None:
    """The event status a waiter ends with when the job is in `state`; None: keep waiting.

    A target state is "success"; CANCELLED (or CANCELLATION_IN_PROGRESS, when listed as
    a failure state) is "cancelled"; DELETION_IN_PROGRESS is "deleted"; any other failure
    state, and any terminal state that is not a target, is "failed". By default
    CANCELLATION_IN_PROGRESS is not final: the wait goes on until the job is CANCELLED.
    """
    if state in set(target_states):
        return "success"
    if state in set(failure_states) or state in TERMINAL:
        if state in (CANCELLED, CANCELLATION_IN_PROGRESS):
            return "cancelled"
        if state == DELETION_IN_PROGRESS:
            return "deleted"
        return "failed"
    return None


def wait_event(
    outcome: str,
    job_name: str,
    *,
    state: str | None = None,
    job: Any = None,
    tasks: Iterable[Any] | None = None,
    message: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The one result shape of every wait: the trigger's event payload and the sync waiter's return.

    `{"status", "state", "job_name", "job": summarize(job) | None, "message", **extra}`;
    JSON-safe. Without `message`, one is written from the outcome and the failure reason.
    """
    if outcome not in EVENT_STATUSES:
        raise ValueError(f"unknown wait outcome {outcome!r}; expected one of {EVENT_STATUSES}")
    summary = summarize(job, tasks) if job is not None else None
    if state is None and summary is not None:
        state = summary["state"]
    if message is None:
        if outcome == "deleted":
            message = f"Batch job {job_name} was deleted"
        elif outcome == "success":
            message = f"Batch job {job_name} is {state}"
        else:
            reason = (summary or {}).get("reason") or ""
            message = f"Batch job {job_name} ended {state}" + (f": {reason}" if reason else "")
    return {
        "status": outcome,
        "state": state,
        "job_name": job_name,
        "job": summary,
        "message": message,
        **extra,
    }


def adaptive_interval(
    state: str | None,
    seconds_in_state: float,
    *,
    fast: float = 5.0,
    pending_max: float = 30.0,
    running_min: float = 10.0,
    running_max: float = 60.0,
    young: float = 120.0,
    ramp: float = 600.0,
) -> float:
    """Seconds until the next read of a job (before jitter).

    Fast while the job waits for VMs and is young (that is when it starts, and when a
    streamed image makes the difference); slower for a job queued a long time; from
    `running_min` up to `running_max` as a running job ages past `ramp` seconds. A job
    being cancelled is read fast: it ends soon.
    """
    age = max(seconds_in_state, 0.0)
    if state == RUNNING:
        return running_min + (running_max - running_min) * min(age / ramp, 1.0)
    if state is None or state in PENDING:
        if age <= young:
            return fast
        return fast + (pending_max - fast) * min((age - young) / ramp, 1.0)
    return fast
