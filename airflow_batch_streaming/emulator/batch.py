"""`google.cloud.batch.v1.BatchService` over the job store.

Requests are checked the way Batch checks them (resource names, the job ID rule, request
IDs, required fields, labels and their limits, allowed locations inside the job's region),
every problem reported in one INVALID_ARGUMENT; a retry count beyond 10 is OUT_OF_RANGE with
Google's words. A project number works wherever a project ID does.
GetJob and ListJobs answer with pre-serialized jobs, so polling thousands of jobs costs
little more than the bytes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.cloud import batch_v1
from google.longrunning import operations_pb2

from airflow_batch_streaming.emulator import filters
from airflow_batch_streaming.emulator.common import (
    JOB_RE,
    PARENT_RE,
    TASK_GROUP_RE,
    TASK_RE,
    ApiError,
    decode_token,
    encode_token,
    invalid,
    not_found,
    now_ns,
    with_project_id,
)
from airflow_batch_streaming.emulator.jobs import (
    JOB_ID_RE,
    JobRecord,
    JobStore,
    JobView,
    TaskView,
    check_job_path,
    check_task_path,
)
from airflow_batch_streaming.emulator.operations import OperationStore

SERVICE = "google.cloud.batch.v1.BatchService"
DEFAULT_PAGE_SIZE = 100
#: An assumption, not a documented fact: Google gives no maximum for Batch's list page sizes.
#: Larger requests are capped here (never rejected), as list APIs that document a cap do.
MAX_PAGE_SIZE = 1000
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_ORDERS = {
    "": ("seq", False),
    "name": ("name", False),
    "name asc": ("name", False),
    "name desc": ("name", True),
    "create_time": ("seq", False),
    "create_time asc": ("seq", False),
    "create_time desc": ("seq", True),
}
_LOCATION = re.compile(r"^(regions|zones)/[a-z]+-[a-z]+\d+(-[a-z])?$")
#: Docs "Organize resources using labels": at most 63 custom labels; `batch-` keys are Batch's.
MAX_LABELS = 63
_RESERVED_LABEL_PREFIXES = ("goog-", "google-", "batch-")
MAX_RETRY_COUNT = 10

CreateJobRequest = batch_v1.CreateJobRequest.pb()
GetJobRequest = batch_v1.GetJobRequest.pb()
ListJobsRequest = batch_v1.ListJobsRequest.pb()
DeleteJobRequest = batch_v1.DeleteJobRequest.pb()
CancelJobRequest = batch_v1.CancelJobRequest.pb()
ListTasksRequest = batch_v1.ListTasksRequest.pb()
ListTasksResponse = batch_v1.ListTasksResponse.pb()
GetTaskRequest = batch_v1.GetTaskRequest.pb()


def serialize(message: Any) -> bytes:
    """Pass cached bytes through; serialize messages."""
    return message if isinstance(message, bytes) else bytes(message.SerializeToString())


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def check_request_id(request_id: str) -> None:
    if not request_id:
        return
    try:
        value = uuid.UUID(request_id)
    except ValueError:
        raise invalid(f"request_id {request_id!r} must be a valid UUID") from None
    if value.int == 0:
        raise invalid("request_id must not be the zero UUID")


def check_retry_counts(request: Any) -> None:
    """Google answers an out-of-range retry count with its own code and words (recorded)."""
    for group in request.job.task_groups:
        count = group.task_spec.max_retry_count
        if not 0 <= count <= MAX_RETRY_COUNT:
            raise ApiError(
                grpc.StatusCode.OUT_OF_RANGE,
                f"max_retry_count with value {count} is not in between 0 and {MAX_RETRY_COUNT}",
            )


def label_problems(labels: Any, where: str) -> list[str]:
    problems: list[str] = []
    if len(labels) > MAX_LABELS:
        problems.append(f"{where}: at most {MAX_LABELS} custom labels are allowed, got {len(labels)}")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            problems.append(f"{where}: key {key!r} must match [a-z][a-z0-9_-]{{0,62}}")
        elif key.startswith(_RESERVED_LABEL_PREFIXES):
            problems.append(f"{where}: key {key!r} uses a reserved prefix (goog-, google-, batch-)")
        if not _LABEL_VALUE.match(value):
            problems.append(f"{where}[{key!r}]: value {value!r} must match [a-z0-9_-]{{0,63}}")
    return problems


def location_region(loc: str) -> str:
    """`regions/R` -> R, `zones/R-x` -> R."""
    kind, _, name = loc.partition("/")
    return name.rsplit("-", 1)[0] if kind == "zones" else name


def job_problems(request: Any, location: str = "") -> list[str]:
    """Everything Batch would refuse in a CreateJobRequest, all at once."""
    problems: list[str] = []
    if request.job_id and not JOB_ID_RE.match(request.job_id):
        problems.append(
            f"job_id {request.job_id!r} must be at most 63 characters, start with a lowercase letter, and "
            "contain only lowercase letters, digits and '-' (not as the last character): "
            "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
        )
    if not request.HasField("job"):
        return [*problems, "job is required"]
    job = request.job
    if len(job.task_groups) != 1:
        problems.append(f"job.task_groups: exactly one task group is supported, got {len(job.task_groups)}")
    if job.priority < 0 or job.priority >= 100:
        problems.append(f"job.priority must be in [0, 100), got {job.priority}")
    problems += label_problems(job.labels, "job.labels")
    problems += label_problems(job.allocation_policy.labels, "job.allocation_policy.labels")
    if job.logs_policy.destination == 2 and not job.logs_policy.logs_path:
        problems.append("job.logs_policy.logs_path is required when destination is PATH")
    outside: list[str] = []
    for loc in job.allocation_policy.location.allowed_locations:
        if not _LOCATION.match(loc):
            problems.append(
                f"job.allocation_policy.location.allowed_locations: {loc!r} is not regions/R or zones/Z"
            )
        elif location and location_region(loc) != location:
            outside.append(loc)
    if outside:
        # LocationPolicy.allowedLocations (batch.v1): since 2026-07-31 "the specified region or
        # zones must be in the same region in which the job is created ... causes an error".
        problems.append(
            f"job.allocation_policy.location.allowed_locations: {', '.join(outside)} not in the job's "
            f"region {location}: the specified region or zones must be in the same region in which "
            "the job is created"
        )
    for g, group in enumerate(job.task_groups):
        where = f"job.task_groups[{g}]"
        if not group.HasField("task_spec"):
            problems.append(f"{where}.task_spec is required")
            continue
        if group.task_count < 0 or group.task_count > 100_000:
            problems.append(f"{where}.task_count must be in [1, 100000], got {group.task_count}")
        if group.parallelism < 0:
            problems.append(f"{where}.parallelism must not be negative")
        spec = group.task_spec
        if not spec.runnables:
            problems.append(f"{where}.task_spec.runnables: at least one runnable is required")
        for r, runnable in enumerate(spec.runnables):
            rwhere = f"{where}.task_spec.runnables[{r}]"
            kind = runnable.WhichOneof("executable")
            if kind is None:
                problems.append(f"{rwhere}: one of container, script or barrier is required")
            elif kind == "container" and not runnable.container.image_uri:
                problems.append(f"{rwhere}.container.image_uri is required")
            elif kind == "script" and not (runnable.script.text or runnable.script.path):
                problems.append(f"{rwhere}.script: text or path is required")
        for p, policy in enumerate(spec.lifecycle_policies):
            if policy.action not in (1, 2):
                problems.append(
                    f"{where}.task_spec.lifecycle_policies[{p}].action must be RETRY_TASK or FAIL_TASK"
                )
    return problems


class BatchService:
    def __init__(self, store: JobStore, operations: OperationStore) -> None:
        self.store = store
        self.operations = operations

    def create_job(self, request: Any) -> bytes:
        m = PARENT_RE.match(request.parent)
        if not m:
            raise invalid(f"parent {request.parent!r} must be projects/PROJECT/locations/LOCATION")
        if m.group(2) == "-":
            raise invalid("parent: a job is created in one location, not '-'")
        check_request_id(request.request_id)
        check_retry_counts(request)
        problems = job_problems(request, m.group(2))
        if problems:
            raise invalid("; ".join(problems))
        return self.store.create(m.group(1), m.group(2), request.job_id, request.job, request.request_id)

    def _record(self, name: str) -> JobRecord:
        if not JOB_RE.match(name):
            raise invalid(f"name {name!r} must be projects/PROJECT/locations/LOCATION/jobs/JOB")
        return self.store.get(with_project_id(name), now_ns())

    def get_job(self, request: Any) -> bytes:
        record = self._record(request.name)
        with self.store.lock:
            return record.render(now_ns())[1]

    def list_jobs(self, request: Any) -> bytes:
        m = PARENT_RE.match(with_project_id(request.parent))
        if not m:
            raise invalid(
                f"parent {request.parent!r} must be projects/PROJECT/locations/LOCATION (or locations/-)"
            )
        order = " ".join(request.order_by.replace("createTime", "create_time").split()).lower()
        if order not in _ORDERS:
            raise invalid(
                'order_by must be one of "name", "name desc", "create_time", "create_time desc"; '
                f"not {request.order_by!r}"
            )
        by, descending = _ORDERS[order]
        if request.page_size < 0:
            raise invalid("page_size must not be negative")
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        try:
            node = filters.parse(request.filter, check_job_path)
            filters.check_literals(
                node,
                {
                    "create_time": "nanos",
                    "createTime": "nanos",
                    "update_time": "nanos",
                    "updateTime": "nanos",
                },
            )
        except filters.FilterError as exc:
            raise invalid(f"invalid filter: {exc}") from None
        scope = f"jobs|{request.parent}|{request.filter}|{order}"
        after = decode_token(request.page_token, scope) if request.page_token else None

        def key(r: JobRecord) -> list[Any]:
            return [r.name] if by == "name" else [r.create_ns, r.seq]

        now = now_ns()
        records = list(self.store.records(m.group(1), m.group(2), now))
        if by == "name":
            records.sort(key=lambda r: r.name)
        if descending:
            records.reverse()
        found: list[JobRecord] = []
        try:
            for record in records:
                if after is not None and (key(record) >= after if descending else key(record) <= after):
                    continue
                if filters.matches(node, JobView(record, now)):
                    found.append(record)
                    if len(found) > page_size:
                        break
        except filters.FilterError as exc:
            raise invalid(f"invalid filter: {exc}") from None
        page = found[:page_size]
        with self.store.lock:
            parts = [_field(1, r.render(now)[1]) for r in page]
        if len(found) > page_size:
            parts.append(_field(2, encode_token(key(page[-1]), scope).encode()))
        return b"".join(parts)

    def delete_job(self, request: Any) -> operations_pb2.Operation:
        self._record(request.name)
        check_request_id(request.request_id)
        done = self.store.delete(request.name)
        return self.operations.start(
            verb="delete", target=request.name, done_ns=done, request_id=request.request_id
        )

    def cancel_job(self, request: Any) -> operations_pb2.Operation:
        self._record(request.name)
        check_request_id(request.request_id)
        done = self.store.cancel(request.name)
        return self.operations.start(
            verb="cancel", target=request.name, done_ns=done, request_id=request.request_id
        )

    def _group(self, parent: str) -> JobRecord:
        m = TASK_GROUP_RE.match(parent)
        if not m:
            raise invalid(f"{parent!r} must be projects/P/locations/L/jobs/J/taskGroups/G")
        record = self._record(m.group(1))
        if m.group(2) != "group0":
            raise not_found(f"Task group {parent} not found.")
        return record

    def list_tasks(self, request: Any) -> Any:
        record = self._group(request.parent)
        try:
            node = filters.parse(request.filter, check_task_path)
        except filters.FilterError as exc:
            raise invalid(f"invalid filter: {exc}") from None
        if request.page_size < 0:
            raise invalid("page_size must not be negative")
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        scope = f"tasks|{request.parent}|{request.filter}"
        start = int(decode_token(request.page_token, scope)[0]) + 1 if request.page_token else 0
        now = now_ns()
        response = ListTasksResponse()
        if not self.store.tasks_listed(record, now):
            return response  # recorded: ListTasks answers {} while a job is QUEUED
        with self.store.lock:
            last = None
            for index in range(start, record.task_count):
                if not filters.matches(node, TaskView(record, index, now)):
                    continue
                if len(response.tasks) == page_size:
                    response.next_page_token = encode_token([last], scope)
                    break
                response.tasks.append(record.render_task(index, now))
                last = index
        return response

    def get_task(self, request: Any) -> Any:
        m = TASK_RE.match(request.name)
        if not m:
            raise invalid(f"name {request.name!r} must be projects/P/locations/L/jobs/J/taskGroups/G/tasks/T")
        record = self._group(f"{m.group(1)}/taskGroups/{m.group(2)}")
        index = m.group(3)
        if (
            not index.isdigit()
            or int(index) >= record.task_count
            or not self.store.tasks_listed(record, now_ns())
        ):
            raise not_found(f"Resource '{request.name}' was not found")
        with self.store.lock:
            return record.render_task(int(index), now_ns())

    def handlers(
        self, wrap: Callable[[str, Callable[[Any], Any]], Callable[..., Any]]
    ) -> grpc.GenericRpcHandler:
        def unary(name: str, fn: Callable[[Any], Any], req: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                wrap(name, fn), request_deserializer=req.FromString, response_serializer=serialize
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "CreateJob": unary("CreateJob", self.create_job, CreateJobRequest),
                "GetJob": unary("GetJob", self.get_job, GetJobRequest),
                "ListJobs": unary("ListJobs", self.list_jobs, ListJobsRequest),
                "DeleteJob": unary("DeleteJob", self.delete_job, DeleteJobRequest),
                "CancelJob": unary("CancelJob", self.cancel_job, CancelJobRequest),
                "ListTasks": unary("ListTasks", self.list_tasks, ListTasksRequest),
                "GetTask": unary("GetTask", self.get_task, GetTaskRequest),
            },
        )
