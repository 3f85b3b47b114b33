"""The filter language subset shared by ListJobs, ListTasks and ListLogEntries."""

from __future__ import annotations

import pytest

from airflow_batch_streaming.emulator import filters
from airflow_batch_streaming.emulator.filters import FilterError, Nanos, Severity, parse_rfc3339

pytestmark = pytest.mark.emulator


class Rec:
    def __init__(self, **fields: object) -> None:
        self.fields = fields

    def lookup(self, path: tuple[str, ...]) -> object:
        value: object = self.fields
        for part in path:
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value


ENTRY = Rec(
    logName="projects/p/logs/batch_task_logs",
    labels={"job_uid": "abc-123", "task_id": "task/abc-123-group0-0/0/0", "batch.googleapis.com/job_id": "x"},
    severity=Severity(500),
    timestamp=parse_rfc3339("2024-05-01T12:00:00.5Z"),
    resource={"type": "batch.googleapis.com/Job"},
    textPayload="Traceback: boom",
)


def match(text: str, record: Rec = ENTRY) -> bool:
    return filters.matches(filters.parse(text), record)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "",
        'logName="projects/p/logs/batch_task_logs"',
        "labels.job_uid=abc-123",
        'logName="projects/p/logs/batch_task_logs" labels.job_uid=abc-123',  # Google's C++ sample
        'logName=("projects/p/logs/batch_agent_logs" OR "projects/p/logs/batch_task_logs")',
        "severity>=ERROR AND severity<CRITICAL",
        "severity=500",
        'timestamp>="2024-05-01T12:00:00Z" AND timestamp<"2024-05-01T12:00:01Z"',
        "timestamp>=2024-05-01T11:00:00+00:00",
        'timestamp>="2024-05-01T13:59:00+02:00"',
        'NOT labels.job_uid="other"',
        '-resource.type="gce_instance"',
        'labels."batch.googleapis.com/job_id"="x"',
        "labels.task_id:*",
        'textPayload:"traceback"',
        'textPayload=~"^Trace.*boom$"',
        'labels.job_uid="zzz" OR severity>=WARNING',
        '(labels.job_uid="zzz" OR labels.job_uid="abc-123") AND resource.type="batch.googleapis.com/Job"',
        'log_id("batch_task_logs")',
    ],
)
def test_matching_filters(text: str) -> None:
    assert match(text)


@pytest.mark.parametrize(
    "text",
    [
        'logName="projects/p/logs/batch_agent_logs"',
        "severity<ERROR",
        'timestamp>"2024-05-01T12:00:00.5Z"',
        "labels.missing=1",
        "labels.missing:*",
        'NOT labels.job_uid="abc-123"',
        # OR binds tighter than AND, as in both query languages.
        'labels.job_uid="zzz" AND labels.job_uid="abc-123" OR severity>=ERROR',
    ],
)
def test_non_matching_filters(text: str) -> None:
    assert not match(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"free text"', "free-text"),
        ("boom", "free-text"),
        ("labels.a=(1 AND 2)", "value list"),
        ("(labels.a=1", "missing"),
        ('labels.a="x', "unterminated"),
        ("labels.a=", "missing value"),
        ('textPayload=~"("', "regular expression"),
    ],
)
def test_unsupported_syntax_is_refused(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        match(text)


def test_bad_literals_are_refused_at_evaluation() -> None:
    with pytest.raises(FilterError, match="RFC 3339"):
        match('timestamp>="yesterday"')
    with pytest.raises(FilterError, match="severity"):
        match("severity>=LOUD")


def test_unknown_fields_are_refused_by_the_service() -> None:
    def check(path: tuple[str, ...]) -> None:
        if path[0] != "labels":
            raise FilterError(f"unsupported field {path}")

    with pytest.raises(FilterError, match="unsupported field"):
        filters.parse("colour=red", check)


def test_required_values_finds_top_level_equalities() -> None:
    node = filters.parse('labels.job_uid=("a" OR "b") AND severity>=ERROR')
    assert filters.required_values(node, ("labels", "job_uid")) == {"a", "b"}
    assert filters.required_values(filters.parse("NOT labels.job_uid=a"), ("labels", "job_uid")) is None


def test_rfc3339_round_trip() -> None:
    nanos = parse_rfc3339("2024-05-01T12:00:00.123456789Z")
    assert isinstance(nanos, Nanos)
    assert filters.format_rfc3339(nanos) == "2024-05-01T12:00:00.123456789Z"
    assert parse_rfc3339("2024-05-01") == parse_rfc3339("2024-05-01T00:00:00Z")
