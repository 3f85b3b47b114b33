"""`google.longrunning.Operations` for DeleteJob and CancelJob.

An operation is done when its job reaches the end it was started for (gone, CANCELLED);
like jobs, `done` is computed from the clock when read, so `operation.result()` on the
real clients polls it exactly as it polls Batch.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud import batch_v1
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2

from airflow_batch_streaming.emulator.common import OPERATION_RE, invalid, not_found, now_ns, timestamp

SERVICE = "google.longrunning.Operations"
OperationMetadata = batch_v1.OperationMetadata.pb()


@dataclass
class OperationRecord:
    name: str
    verb: str
    target: str
    create_ns: int
    done_ns: int
    response: Any

    def render(self, now: int) -> operations_pb2.Operation:
        op = operations_pb2.Operation(name=self.name)
        meta = OperationMetadata(target=self.target, verb=self.verb, api_version="v1")
        meta.create_time.CopyFrom(timestamp(self.create_ns))
        if now >= self.done_ns:
            op.done = True
            meta.end_time.CopyFrom(timestamp(self.done_ns))
            packed = any_pb2.Any()
            packed.Pack(self.response)
            op.response.CopyFrom(packed)
        op.metadata.Pack(meta)
        return op


class OperationStore:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._ops: dict[str, OperationRecord] = {}
        self._by_request: dict[tuple[str, str, str], str] = {}

    def clear(self) -> None:
        with self.lock:
            self._ops.clear()
            self._by_request.clear()

    def start(
        self, *, verb: str, target: str, done_ns: int, request_id: str = ""
    ) -> operations_pb2.Operation:
        """Record an operation on `target` (a job name); a repeated request_id gets the first one."""
        project, location = target.split("/")[1], target.split("/")[3]
        with self.lock:
            if request_id:
                known = self._by_request.get((verb, target, request_id))
                if known is not None and known in self._ops:
                    return self._ops[known].render(now_ns())
            now = now_ns()
            name = (
                f"projects/{project}/locations/{location}/operations/"
                f"operation-{int(time.time() * 1000)}-{secrets.token_hex(6)}-{secrets.token_hex(4)}"
            )
            response: Any = empty_pb2.Empty() if verb == "delete" else batch_v1.CancelJobResponse.pb()()
            record = OperationRecord(name, verb, target, now, done_ns, response)
            self._ops[name] = record
            if request_id:
                self._by_request[(verb, target, request_id)] = name
            return record.render(now)

    def get(self, request: Any) -> operations_pb2.Operation:
        record = self._ops.get(request.name)
        if record is None:
            raise not_found(f"Operation {request.name} not found.")
        return record.render(now_ns())

    def wait(self, request: Any) -> operations_pb2.Operation:
        record = self._ops.get(request.name)
        if record is None:
            raise not_found(f"Operation {request.name} not found.")
        limit = request.timeout.seconds + request.timeout.nanos / 1e9 if request.HasField("timeout") else 60.0
        left = (record.done_ns - now_ns()) / 1e9
        if left > 0:
            time.sleep(min(left, limit))
        return record.render(now_ns())

    def list(self, request: Any) -> operations_pb2.ListOperationsResponse:
        prefix = request.name.rstrip("/")
        if prefix.endswith("/operations"):
            prefix = prefix[: -len("/operations")]
        if not prefix.startswith("projects/"):
            raise invalid(f"name must be projects/P/locations/L, not {request.name!r}")
        now = now_ns()
        with self.lock:
            ops = sorted(
                (r for r in self._ops.values() if r.name.startswith(prefix + "/")), key=lambda r: r.name
            )
        start = int(request.page_token) if request.page_token.isdigit() else 0
        size = request.page_size or 100
        response = operations_pb2.ListOperationsResponse()
        response.operations.extend(r.render(now) for r in ops[start : start + size])
        if start + size < len(ops):
            response.next_page_token = str(start + size)
        return response

    def delete(self, request: Any) -> empty_pb2.Empty:
        if not OPERATION_RE.match(request.name):
            raise invalid(f"bad operation name {request.name!r}")
        with self.lock:
            if self._ops.pop(request.name, None) is None:
                raise not_found(f"Operation {request.name} not found.")
        return empty_pb2.Empty()

    def cancel(self, request: Any) -> empty_pb2.Empty:
        """Accepted and ignored: Batch's own operations finish on their own."""
        if request.name not in self._ops:
            raise not_found(f"Operation {request.name} not found.")
        return empty_pb2.Empty()

    def handlers(
        self, wrap: Callable[[str, Callable[[Any], Any]], Callable[..., Any]]
    ) -> grpc.GenericRpcHandler:
        def unary(name: str, fn: Callable[[Any], Any], req: Any, resp: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                wrap(name, fn),
                request_deserializer=req.FromString,
                response_serializer=resp.SerializeToString,
            )

        o = operations_pb2
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "GetOperation": unary("GetOperation", self.get, o.GetOperationRequest, o.Operation),
                "ListOperations": unary(
                    "ListOperations", self.list, o.ListOperationsRequest, o.ListOperationsResponse
                ),
                "DeleteOperation": unary(
                    "DeleteOperation", self.delete, o.DeleteOperationRequest, empty_pb2.Empty
                ),
                "CancelOperation": unary(
                    "CancelOperation", self.cancel, o.CancelOperationRequest, empty_pb2.Empty
                ),
                "WaitOperation": unary("WaitOperation", self.wait, o.WaitOperationRequest, o.Operation),
            },
        )
