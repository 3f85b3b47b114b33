"""Pieces every emulated service shares: errors, clocks, resource names and page tokens."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2


class ApiError(Exception):
    """Raised by a handler; the server turns it into the gRPC status the real API returns."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, message)


def now_ns() -> int:
    return time.time_ns()


def seconds_ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


def timestamp(nanos: int) -> timestamp_pb2.Timestamp:
    seconds, frac = divmod(nanos, 1_000_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=frac)


def timestamp_ns(ts: timestamp_pb2.Timestamp) -> int:
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


def duration(nanos: int) -> duration_pb2.Duration:
    seconds, frac = divmod(nanos, 1_000_000_000)
    return duration_pb2.Duration(seconds=seconds, nanos=frac)


def duration_ns(d: duration_pb2.Duration) -> int:
    return int(d.seconds) * 1_000_000_000 + int(d.nanos)


PARENT_RE = re.compile(r"^projects/([^/]+)/locations/([^/]+)$")
JOB_RE = re.compile(r"^projects/([^/]+)/locations/([^/]+)/jobs/([^/]+)$")
TASK_GROUP_RE = re.compile(r"^(projects/[^/]+/locations/[^/]+/jobs/[^/]+)/taskGroups/([^/]+)$")
TASK_RE = re.compile(r"^(projects/[^/]+/locations/[^/]+/jobs/[^/]+)/taskGroups/([^/]+)/tasks/([^/]+)$")
OPERATION_RE = re.compile(r"^projects/([^/]+)/locations/([^/]+)/operations/([^/]+)$")
LOCATION_RE = re.compile(r"(?:^|/)locations/([^/]+)")


_PROJECT_IDS: dict[str, str] = {}  # project number -> project ID, for every ID seen
_PROJECT_SEGMENT = re.compile(r"^projects/([^/]+)(/|$)")


def project_number(project: str) -> str:
    """The project's number: Google names jobs with it in status events and task groups.

    Deterministic (12 digits from the ID's hash) so that every emulator agrees; a number
    given as the project stays itself. Remembered so that a number can be turned back.
    """
    if project.isdigit():
        return project
    digest = int(hashlib.sha256(project.encode()).hexdigest()[:12], 16)
    number = str(100_000_000_000 + digest % 900_000_000_000)
    _PROJECT_IDS[number] = project
    return number


def project_id(project: str) -> str:
    """The project ID for an ID or a number the emulator has seen (unknown numbers stay)."""
    return _PROJECT_IDS.get(project, project)


def with_project_id(name: str) -> str:
    """`projects/NUMBER/...` -> `projects/ID/...`: Google accepts either form in a request."""
    m = _PROJECT_SEGMENT.match(name)
    if not m or not m.group(1).isdigit():
        return name
    return f"projects/{project_id(m.group(1))}{name[m.end(1) :]}"


def region_of_name(name: str) -> str:
    """The location segment of a Batch resource name (the unit Batch's quotas count in)."""
    m = LOCATION_RE.search(name)
    return m.group(1) if m else "global"


def encode_token(key: list[Any], scope: str) -> str:
    """An opaque page token bound to the query it came from (filter, order, parent)."""
    raw = json.dumps({"k": key, "s": _scope_hash(scope)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str, scope: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        key, got = data["k"], data["s"]
    except (ValueError, KeyError, TypeError):
        raise invalid(f"invalid page_token {token!r}") from None
    if got != _scope_hash(scope) or not isinstance(key, list):
        raise invalid("page_token does not belong to this query (parent, filter and order_by must match)")
    return key


def _scope_hash(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:16]
