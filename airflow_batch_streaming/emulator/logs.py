"""`google.logging.v2.LoggingServiceV2`: an in-memory log store shaped like Batch's logs.

Batch writes a job's logs only when `logsPolicy.destination` is `CLOUD_LOGGING` (off by
default in the API), to `projects/P/logs/batch_task_logs` (runnable stdout at INFO, stderr
at ERROR) and `projects/P/logs/batch_agent_logs` (the agent's own lines), on the monitored
resource `batch.googleapis.com/Job`, labelled `job_uid`, `task_id`
(`task/{uid}-group0-{index}/{attempt}/0`) and `task_group_name`, plus the job's labels.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
from google.cloud.logging_v2 import types as logging_types
from google.protobuf import json_format

from airflow_batch_streaming.emulator import filters
from airflow_batch_streaming.emulator.common import (
    decode_token,
    encode_token,
    invalid,
    now_ns,
    project_id,
    timestamp,
    timestamp_ns,
)

LogEntry = logging_types.LogEntry.pb()
WriteLogEntriesRequest = logging_types.WriteLogEntriesRequest.pb()
WriteLogEntriesResponse = logging_types.WriteLogEntriesResponse.pb()
ListLogEntriesRequest = logging_types.ListLogEntriesRequest.pb()
ListLogEntriesResponse = logging_types.ListLogEntriesResponse.pb()
ListLogsRequest = logging_types.ListLogsRequest.pb()
ListLogsResponse = logging_types.ListLogsResponse.pb()

SERVICE = "google.logging.v2.LoggingServiceV2"
TASK_LOGS = "batch_task_logs"
AGENT_LOGS = "batch_agent_logs"
BATCH_RESOURCE = "batch.googleapis.com/Job"
INFO, ERROR = 200, 500
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50

_ROOTS = {
    "logName": "logName",
    "log_name": "logName",
    "severity": "severity",
    "timestamp": "timestamp",
    "receiveTimestamp": "receiveTimestamp",
    "receive_timestamp": "receiveTimestamp",
    "insertId": "insertId",
    "insert_id": "insertId",
    "textPayload": "textPayload",
    "text_payload": "textPayload",
    "jsonPayload": "jsonPayload",
    "json_payload": "jsonPayload",
    "protoPayload": "protoPayload",
    "labels": "labels",
    "resource": "resource",
    "trace": "trace",
    "spanId": "spanId",
    "span_id": "spanId",
    "traceSampled": "traceSampled",
    "operation": "operation",
    "sourceLocation": "sourceLocation",
    "httpRequest": "httpRequest",
    "split": "split",
}


_KINDS = {
    "timestamp": "nanos",
    "receiveTimestamp": "nanos",
    "receive_timestamp": "nanos",
    "severity": "severity",
}


def check_path(path: filters.Path) -> None:
    if path[0] not in _ROOTS:
        raise filters.FilterError(
            f"unsupported field {'.'.join(path)!r} in a log filter; supported: logName, severity, "
            "timestamp, receiveTimestamp, insertId, textPayload, jsonPayload.*, labels.*, "
            "resource.type, resource.labels.*, trace, spanId, operation.*, sourceLocation.*"
        )


class LogRecord:
    """One stored entry with the fields filters read most, unpacked once."""

    __slots__ = ("entry", "job_uid", "key", "labels", "log_name", "project", "severity", "ts", "visible")

    def __init__(self, entry: Any, seq: int, visible: int, labels: dict[str, str] | None = None) -> None:
        self.entry = entry
        self.ts = timestamp_ns(entry.timestamp)
        self.key = (self.ts, seq)
        self.visible = visible
        self.log_name: str = entry.log_name
        self.project = self.log_name.split("/")[1] if self.log_name.count("/") >= 3 else ""
        self.severity = filters.Severity(entry.severity)
        self.labels: dict[str, str] = dict(entry.labels) if labels is None else labels
        self.job_uid = self.labels.get("job_uid")

    def lookup(self, path: filters.Path) -> filters.Value | None:
        root = _ROOTS.get(path[0], path[0])
        rest = path[1:]
        if root == "logName" and not rest:
            return self.log_name
        if root == "severity" and not rest:
            return self.severity
        if root == "timestamp" and not rest:
            return filters.Nanos(self.ts)
        if root == "labels":
            return self.labels.get(rest[0]) if len(rest) == 1 else None
        if root == "textPayload" and not rest:
            return self.entry.text_payload if self.entry.HasField("text_payload") else None
        if root == "resource" and rest == ("type",):
            return str(self.entry.resource.type)
        if root == "resource" and len(rest) == 2 and rest[0] == "labels":
            return self.entry.resource.labels.get(rest[1])
        if root == "receiveTimestamp" and not rest:
            return filters.Nanos(timestamp_ns(self.entry.receive_timestamp))
        return _dig(json_format.MessageToDict(self.entry), (root, *rest))


def _dig(data: Any, path: filters.Path) -> filters.Value | None:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    if isinstance(data, str | int | float | bool):
        return data
    return None


class LogStore:
    """Entries in arrival order, with an index on `labels.job_uid` (how Batch logs are read)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._records: list[LogRecord] = []
        self._by_uid: dict[str, list[LogRecord]] = {}
        self._seq = 0

    def add(self, entry: Any, visible: int | None = None, labels: dict[str, str] | None = None) -> LogRecord:
        """Store an entry; `visible` is when ListLogEntries starts returning it (default now).

        `labels`, when given, must equal the entry's (it saves re-reading them from the proto).
        """
        now = now_ns()
        if not entry.HasField("timestamp"):
            entry.timestamp.CopyFrom(timestamp(now))
        if not entry.HasField("receive_timestamp"):
            entry.receive_timestamp.CopyFrom(timestamp(max(now, timestamp_ns(entry.timestamp))))
        with self.lock:
            self._seq += 1
            if not entry.insert_id:
                entry.insert_id = f"emu{self._seq:012x}"
            record = LogRecord(entry, self._seq, now if visible is None else visible, labels)
            self._records.append(record)
            if record.job_uid:
                self._by_uid.setdefault(record.job_uid, []).append(record)
        return record

    def drop_after(self, job_uid: str, after: int) -> None:
        """Forget a job's not-yet-visible entries (the plan changed: cancelled or deleted)."""
        with self.lock:
            doomed = {id(r) for r in self._by_uid.get(job_uid, ()) if r.visible > after}
            if doomed:
                self._records = [r for r in self._records if id(r) not in doomed]
                self._by_uid[job_uid] = [r for r in self._by_uid[job_uid] if id(r) not in doomed]

    def clear(self) -> None:
        with self.lock:
            self._records.clear()
            self._by_uid.clear()

    def __len__(self) -> int:
        return len(self._records)

    def query(
        self,
        projects: set[str],
        node: filters.Node | None,
        descending: bool,
        page_size: int,
        after: tuple[int, int] | None,
    ) -> tuple[list[LogRecord], tuple[int, int] | None]:
        uids = filters.required_values(node, ("labels", "job_uid"))
        with self.lock:
            if uids is not None:
                candidates: list[LogRecord] = [r for uid in uids for r in self._by_uid.get(uid, ())]
            else:
                candidates = list(self._records)
        now = now_ns()
        found = [
            r
            for r in candidates
            if r.visible <= now
            and r.project in projects
            and (after is None or (r.key < after if descending else r.key > after))
            and filters.matches(node, r)
        ]
        found.sort(key=lambda r: r.key, reverse=descending)
        page = found[:page_size]
        return page, (page[-1].key if len(found) > page_size else None)

    def log_names(self, project: str) -> list[str]:
        with self.lock:
            return sorted({r.log_name for r in self._records if r.project == project})


def batch_entry(
    *,
    project: str,
    location: str,
    job_uid: str,
    job_name: str,
    job_labels: Mapping[str, str],
    log_id: str,
    text: str,
    severity: int,
    ts: int,
    task_id: str | None,
    generic_resource: bool = False,
) -> tuple[Any, dict[str, str]]:
    """A LogEntry as Batch writes it for one line of a task's (or the agent's) output, and its labels."""
    entry = LogEntry(log_name=f"projects/{project}/logs/{log_id}", text_payload=text, severity=severity)
    entry.timestamp.CopyFrom(timestamp(ts))
    if generic_resource:
        entry.resource.type = "generic_task"
        entry.resource.labels.update(
            {"project_id": project, "location": location, "namespace": "", "job": job_uid,
             "task_id": task_id or ""}
        )  # fmt: skip
    else:
        entry.resource.type = BATCH_RESOURCE
        entry.resource.labels.update({"job_id": job_uid, "location": location, "resource_container": project})
    labels = {**job_labels, "job_uid": job_uid, "task_group_name": f"{job_name}/taskGroups/group0"}
    if task_id:
        labels["task_id"] = task_id
    entry.labels.update(labels)
    return entry, labels


def _projects(resource_names: Iterable[str]) -> set[str]:
    projects = set()
    for name in resource_names:
        parts = name.split("/")
        if len(parts) >= 2 and parts[0] == "projects" and parts[1]:
            # A project number is translated; entries are stored under the project ID (logging.v2
            # LogEntry.logName). A number inside a filter's logName is not: it matches nothing.
            projects.add(project_id(parts[1]))
        else:
            raise invalid(
                f"unsupported resource name {name!r}: the emulator serves projects/PROJECT "
                "(and projects/PROJECT/locations/L/buckets/B/views/V)"
            )
    return projects


class LoggingService:
    def __init__(self, store: LogStore) -> None:
        self.store = store

    def write_log_entries(self, request: Any) -> Any:
        entries = []
        for i, given in enumerate(request.entries):
            entry = LogEntry()
            entry.CopyFrom(given)
            if not entry.log_name:
                entry.log_name = request.log_name
            if not entry.HasField("resource") and request.HasField("resource"):
                entry.resource.CopyFrom(request.resource)
            for key, value in request.labels.items():
                if key not in entry.labels:
                    entry.labels[key] = value
            parts = entry.log_name.split("/")
            if len(parts) < 4 or parts[2] != "logs" or not parts[1]:
                raise invalid(
                    f"entries[{i}]: log_name {entry.log_name!r} is not projects/PROJECT/logs/LOG_ID"
                )
            if not entry.HasField("resource") or not entry.resource.type:
                raise invalid(f"entries[{i}]: a monitored resource is required")
            entries.append(entry)
        if not request.dry_run:
            for entry in entries:
                self.store.add(entry)
        return WriteLogEntriesResponse()

    def list_log_entries(self, request: Any) -> Any:
        if not request.resource_names:
            raise invalid("resource_names is required")
        projects = _projects(request.resource_names)
        order = request.order_by.strip().lower()
        if order not in ("", "timestamp", "timestamp asc", "timestamp desc"):
            raise invalid(f'order_by must be "timestamp asc" or "timestamp desc", not {request.order_by!r}')
        descending = order == "timestamp desc"
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            raise invalid(f"page_size must be between 0 and {MAX_PAGE_SIZE}, not {request.page_size}")
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        try:
            node = filters.parse(request.filter, check_path)
            filters.check_literals(node, _KINDS)
        except filters.FilterError as exc:
            raise invalid(f"invalid filter: {exc}") from None
        scope = f"{sorted(projects)}|{request.filter}|{descending}"
        after = None
        if request.page_token:
            key = decode_token(request.page_token, scope)
            after = (int(key[0]), int(key[1]))
        try:
            page, next_key = self.store.query(projects, node, descending, page_size, after)
        except filters.FilterError as exc:
            raise invalid(f"invalid filter: {exc}") from None
        response = ListLogEntriesResponse()
        response.entries.extend(r.entry for r in page)
        if next_key is not None:
            response.next_page_token = encode_token(list(next_key), scope)
        return response

    def list_logs(self, request: Any) -> Any:
        names = [request.parent, *request.resource_names] if request.parent else list(request.resource_names)
        response = ListLogsResponse()
        for project in sorted(_projects(names)):
            response.log_names.extend(self.store.log_names(project))
        return response

    def handlers(
        self, wrap: Callable[[str, Callable[[Any], Any]], Callable[..., Any]]
    ) -> grpc.GenericRpcHandler:
        def unary(name: str, fn: Callable[[Any], Any], req: Any, resp: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                wrap(name, fn),
                request_deserializer=req.FromString,
                response_serializer=resp.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "WriteLogEntries": unary(
                    "WriteLogEntries", self.write_log_entries, WriteLogEntriesRequest, WriteLogEntriesResponse
                ),
                "ListLogEntries": unary(
                    "ListLogEntries", self.list_log_entries, ListLogEntriesRequest, ListLogEntriesResponse
                ),
                "ListLogs": unary("ListLogs", self.list_logs, ListLogsRequest, ListLogsResponse),
            },
        )
