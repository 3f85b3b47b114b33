"""Pieces the operators and the sensor share: argument handling, waiting, failures, logs.

Kept free of the Google client libraries at import time (DAG files import the operators);
anything that needs them imports them inside the function that runs on a worker.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_batch_streaming import status
from airflow_batch_streaming.exceptions import (
    BatchJobCancelledError,
    BatchJobFailedError,
    BatchStreamingError,
)

if TYPE_CHECKING:
    from airflow_batch_streaming.hooks.batch import BatchStreamingHook

#: Event statuses `BatchJobStateTrigger` yields.
EVENT_STATUSES = status.EVENT_STATUSES
#: Seconds after a job ends during which its last log lines may still be on their way into
#: Cloud Logging (ingestion is not instant); `tail_output` re-reads within this window.
LOG_INGESTION_SECONDS = 15.0
LOG_REREAD_SECONDS = 2.0

#: Longest `timeout` / `poll_interval` accepted: far beyond any job, and a deadline still a date.
MAX_DURATION_SECONDS = 100 * 365 * 24 * 3600

_TASK_INDEX = re.compile(r"group\d+-(\d+)(?:/|$)")


# --------------------------------------------------------------------------- arguments


def is_dynamic(value: Any) -> bool:
    """Whether a constructor argument is only known at run time (Jinja or an XComArg)."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_dynamic(k) or is_dynamic(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(is_dynamic(item) for item in value)
    # XComArg, ObjectStoragePath-like resolvables and other objects Airflow resolves late.
    return hasattr(value, "resolve") and hasattr(value, "iter_references")


def coerce_rendered(value: Any) -> Any:
    """Turn a list or dict that Jinja rendered to text back into the list or dict.

    Without ``render_template_as_native_obj`` a template such as ``"{{ params.command }}"``
    renders to ``"['sh', '-c', 'echo hi']"``; for arguments that must be a list or a
    mapping that text is parsed (JSON first, then a Python literal). Anything that does
    not parse is returned unchanged, for the spec to report.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")) and not (
        text.startswith("{") and text.endswith("}")
    ):
        return value
    for parse in (json.loads, ast.literal_eval):
        try:
            parsed = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(parsed, list | dict | tuple):
            return parsed
    return value


def as_seconds(value: float | timedelta | None, name: str) -> float | None:
    """A duration argument (seconds or timedelta) as seconds; None stays None.

    Bounded (finite, at most `MAX_DURATION_SECONDS`) so that a deadline made from it is a
    date, a `timedelta` and a JSON number: NaN, infinity or 10**300 would otherwise only
    fail when the task defers or sleeps.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        raise ValueError(f"{name} must be a number of seconds or a timedelta, got {value!r}")
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if seconds < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{name} must be at most {MAX_DURATION_SECONDS} seconds (100 years), got {value!r}")
    return seconds


def check_log_lines(value: Any) -> list[str]:
    """Problems with `failure_log_lines` (how many output lines a failure message shows)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return []
    return [f"failure_log_lines must be a non-negative integer, got {value!r}"]


def check_states(target_states: Any, failure_states: Any) -> list[str]:
    """Problems with the state lists a waiter is given (unknown names, overlaps)."""
    problems: list[str] = []
    lists: dict[str, list[str]] = {}
    for name, states in (("target_states", target_states), ("failure_states", failure_states)):
        if is_dynamic(states):
            continue
        if isinstance(states, str) or not isinstance(states, Iterable):
            problems.append(f"{name} must be a list of job state names, got {states!r}")
            continue
        lists[name] = [str(s) for s in states]
        unknown = [s for s in lists[name] if s not in status.STATES]
        if unknown:
            problems.append(
                f"{name} has unknown states {unknown}: use some of {', '.join(status.STATES[1:])}"
            )
    if "target_states" in lists and not lists["target_states"]:
        problems.append("target_states is empty: the waiter would never finish")
    overlap = set(lists.get("target_states", ())) & set(lists.get("failure_states", ()))
    if overlap:
        problems.append(f"states {sorted(overlap)} are both target and failure states")
    return problems


# --------------------------------------------------------------------------- API calls


def is_not_found(error: BaseException) -> bool:
    """NOT_FOUND from the API: the job does not exist (any more), i.e. it was deleted."""
    return any(cls.__name__ == "NotFound" for cls in type(error).__mro__)


def deleted_job(name: str) -> dict[str, Any]:
    """A job that no longer exists, as `raise_for_job` takes it (it raises `BatchJobCancelledError`)."""
    return {"name": name, "status": {"state": status.DELETION_IN_PROGRESS}}


# --------------------------------------------------------------------------- failures


def failure_error(
    job: Any,
    tasks: Iterable[Any] | None = None,
    output: Sequence[str] = (),
) -> BatchStreamingError:
    """The exception for a job that ended without succeeding, with its reason and output."""
    rest = status.as_rest(job)
    details = status.failure_details(rest, tasks)
    name = str(rest.get("name") or "")
    state = details["state"]
    if state in (status.CANCELLED, status.CANCELLATION_IN_PROGRESS, status.DELETION_IN_PROGRESS):
        return BatchJobCancelledError(name, state, details["events"], reason=details["reason"], output=output)
    return BatchJobFailedError(
        name,
        state,
        details["failed_tasks"],
        details["exit_codes"],
        details["events"],
        reason=details["reason"],
        output=output,
    )


def failed_job(hook: BatchStreamingHook, event: Mapping[str, Any], *, log: logging.Logger | Any) -> Any:
    """The job a failure event is about, re-read for the status events the event leaves out.

    A deleted job may be gone, and a read may fail: then the event's own summary is used.
    """
    name = str(event.get("job_name") or "")
    raw = event.get("job")
    summary: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    state = str(event.get("state") or summary.get("state") or "")
    if event.get("status") == "deleted":
        state = status.DELETION_IN_PROGRESS  # gone (or going), whatever state it was last seen in
    else:
        try:
            job = status.as_rest(hook.get_job(name))
        except Exception as error:
            log.warning("Could not re-read job %s: %s", name, error)
        else:
            if status.state_of(job) in status.TERMINAL - {status.SUCCEEDED}:
                return job
    return {
        "name": summary.get("name") or name,
        "uid": summary.get("uid") or "",
        "createTime": summary.get("create_time"),
        "status": {"state": state or status.FAILED},
    }


def raise_for_job(
    hook: BatchStreamingHook,
    job: Any,
    *,
    log: logging.Logger | Any,
    log_lines: int,
) -> NoReturn:
    """Raise the right error for a job that ended without succeeding.

    Reads what the failure message needs and the waiter does not have: the job's tasks
    (exit codes per task) and the tail of its output. Either read failing only makes the
    message shorter.
    """
    rest = status.as_rest(job)
    name = str(rest.get("name") or "")
    tasks: list[Any] | None = None
    state = status.state_of(rest)
    if state == status.FAILED:
        try:
            tasks = list(hook.list_tasks(name))
        except Exception as error:
            log.warning("Could not list the tasks of %s: %s", name, error)
    output: list[str] = []
    if log_lines > 0 and state != status.DELETION_IN_PROGRESS:
        try:
            output = tail_output(hook, rest, log_lines)
        except Exception as error:
            log.warning("Could not read the output of %s from Cloud Logging: %s", name, error)
    raise failure_error(rest, tasks, output)


# --------------------------------------------------------------------------- logs


def log_filter(
    uid: str,
    since: str,
    *,
    include_agent_logs: bool = False,
    min_severity: str | None = None,
) -> str:
    """The Cloud Logging filter for a job's logs, always with an explicit time bound.

    Without a ``timestamp`` term the Python logging client adds ``timestamp >= now - 24h``.
    Logs are named with ``log_id(...)``, not ``logName="projects/P/logs/..."``: entries are
    stored under the project ID, and a job name may carry the project number, which such a
    ``logName`` never matches (logging.v2 LogEntry.logName). The project goes only in the
    request's resource names, where Logging translates a number. ``labels.job_uid`` is the
    job key Google's own batch-job-logs sample filters on.
    """
    names = [f'log_id("{status.TASK_LOG}")']
    if include_agent_logs:
        names.append(f'log_id("{status.AGENT_LOG}")')
    terms = [
        names[0] if len(names) == 1 else f"({' OR '.join(names)})",
        f'labels.job_uid="{uid}"',
        f'timestamp>="{since}"',
    ]
    if min_severity:
        terms.append(f"severity>={min_severity.upper()}")
    return " AND ".join(terms)


def entry_fields(entry: Any) -> dict[str, Any]:
    """``{timestamp, severity, text, labels, log}`` of a log entry in any client's shape."""
    if isinstance(entry, Mapping):
        payload = entry.get("textPayload", entry.get("text_payload"))
        if payload is None:
            payload = entry.get("jsonPayload", entry.get("json_payload", entry.get("payload")))
        severity = entry.get("severity")
        labels = entry.get("labels") or {}
        timestamp = entry.get("timestamp")
        log_name = entry.get("logName", entry.get("log_name", ""))
    else:
        payload = getattr(entry, "payload", None)
        if payload is None:
            payload = getattr(entry, "text_payload", None) or getattr(entry, "json_payload", None)
        severity = getattr(entry, "severity", None)
        labels = getattr(entry, "labels", None) or {}
        timestamp = getattr(entry, "timestamp", None)
        log_name = getattr(entry, "log_name", "") or ""
    if isinstance(payload, Mapping):
        text = str(payload.get("message", "")) or json.dumps(dict(payload), default=str, sort_keys=True)
    else:
        text = "" if payload is None else str(payload)
    return {
        "timestamp": timestamp,
        "severity": _severity_name(severity),
        "text": text.rstrip("\n"),
        "labels": dict(labels),
        "log": str(log_name),
    }


_SEVERITIES = {
    0: "DEFAULT",
    100: "DEBUG",
    200: "INFO",
    300: "NOTICE",
    400: "WARNING",
    500: "ERROR",
    600: "CRITICAL",
    700: "ALERT",
    800: "EMERGENCY",
}
SEVERITY_ORDER = tuple(_SEVERITIES.values())


def _severity_name(severity: Any) -> str:
    if severity is None or severity == "":
        return "DEFAULT"
    if isinstance(severity, int) and not isinstance(severity, bool):
        return _SEVERITIES.get(severity, str(severity))
    text = str(getattr(severity, "name", severity)).rsplit(".", 1)[-1].upper()
    if text.isdigit():
        return _SEVERITIES.get(int(text), text)
    return text


def is_error_severity(severity: str) -> bool:
    return severity in SEVERITY_ORDER and SEVERITY_ORDER.index(severity) >= SEVERITY_ORDER.index("ERROR")


def entry_prefix(fields: Mapping[str, Any]) -> str:
    """``[task N]`` for task output, ``[agent]`` for the Batch agent's own lines."""
    if str(fields.get("log", "")).endswith(status.AGENT_LOG):
        return "[agent]"
    task_id = str(fields.get("labels", {}).get("task_id", ""))
    match = _TASK_INDEX.search(task_id)
    if match:
        return f"[task {match.group(1)}]"
    return f"[{task_id}]" if task_id else "[task ?]"


def tail_output(
    hook: BatchStreamingHook, job: Any, lines: int, *, sleep: Callable[[float], None] = time.sleep
) -> list[str]:
    """The last ``lines`` lines the job's tasks wrote, oldest first.

    A job that ended moments ago may still have lines on their way into Cloud Logging:
    while fewer than ``lines`` were found and the end is less than `LOG_INGESTION_SECONDS`
    old, read again after `LOG_REREAD_SECONDS`, until a read finds nothing new (a few
    more reads of Logging's small quota, only right after a job ends).
    """
    summary = status.summarize(job)
    project_id, uid, since = summary["project_id"], summary["uid"], summary["create_time"]
    if not (project_id and uid and since):
        return []
    ended = _timestamp(summary.get("update_time"))

    def read() -> list[Any]:
        return list(
            hook.list_log_entries(
                project_id,
                log_filter(uid, since),
                order_by="timestamp desc",
                max_entries=lines,
                page_size=min(max(lines, 1), 1000),
            )
        )[:lines]

    entries, before = read(), -1
    while ended is not None and before < len(entries) < lines and time.time() - ended < LOG_INGESTION_SECONDS:
        sleep(LOG_REREAD_SECONDS)
        before, entries = len(entries), read()
    out = []
    for entry in entries:
        fields = entry_fields(entry)
        out.append(f"{entry_prefix(fields)} {fields['text']}")
    out.reverse()
    return out


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
