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
