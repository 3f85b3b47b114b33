"""`google.api.serviceusage.v1.ServiceUsage`: every API is ENABLED except the disabled ones.

Disabled services are named `containerfilesystem.googleapis.com` (every project),
`containerfilesystem` (the same, short), or `projects/P/services/NAME` (one project).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from google.cloud import service_usage_v1

from airflow_batch_streaming.emulator.common import invalid

SERVICE = "google.api.serviceusage.v1.ServiceUsage"
ServicePb = service_usage_v1.Service.pb()
GetServiceRequest = service_usage_v1.GetServiceRequest.pb()
BatchGetServicesRequest = service_usage_v1.BatchGetServicesRequest.pb()
BatchGetServicesResponse = service_usage_v1.BatchGetServicesResponse.pb()
DISABLED, ENABLED = 1, 2

_TITLES = {
    "containerfilesystem.googleapis.com": "Container File System API",
    "batch.googleapis.com": "Batch API",
    "logging.googleapis.com": "Cloud Logging API",
    "artifactregistry.googleapis.com": "Artifact Registry API",
    "serviceusage.googleapis.com": "Service Usage API",
}


def normalize(name: str) -> str:
    name = name.strip()
    if name.startswith("projects/"):
        return name
    return name if "." in name else f"{name}.googleapis.com"


class ServiceUsage:
    def __init__(self, disabled: Iterable[str] = ()) -> None:
        self.lock = threading.Lock()
        self.initial = frozenset(normalize(n) for n in disabled)
        self.disabled: set[str] = set(self.initial)

    def reset(self) -> None:
        with self.lock:
            self.disabled = set(self.initial)

    def update(self, disable: Iterable[str] = (), enable: Iterable[str] = ()) -> list[str]:
        with self.lock:
            self.disabled |= {normalize(n) for n in disable}
            self.disabled -= {normalize(n) for n in enable}
            return sorted(self.disabled)

    def _service(self, name: str) -> Any:
        parts = name.split("/")
        if (
            len(parts) != 4
            or parts[0] not in ("projects", "folders", "organizations")
            or parts[2] != "services"
        ):
            raise invalid(f"name {name!r} must be projects/PROJECT/services/SERVICE")
        if not parts[1] or not parts[3]:
            raise invalid(f"name {name!r} must be projects/PROJECT/services/SERVICE")
        service = parts[3]
        with self.lock:
            off = service in self.disabled or name in self.disabled
        result = ServicePb(name=name, parent=f"{parts[0]}/{parts[1]}", state=DISABLED if off else ENABLED)
        result.config.name = service
        result.config.title = _TITLES.get(service, service)
        return result

    def get_service(self, request: Any) -> Any:
        return self._service(request.name)

    def batch_get_services(self, request: Any) -> Any:
        if len(request.names) > 30:
            raise invalid("at most 30 names per BatchGetServices call")
        response = BatchGetServicesResponse()
        for name in request.names:
            if not name.startswith(request.parent + "/services/"):
                raise invalid(f"{name!r} is not under parent {request.parent!r}")
            response.services.append(self._service(name))
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
                "GetService": unary("GetService", self.get_service, GetServiceRequest, ServicePb),
                "BatchGetServices": unary(
                    "BatchGetServices",
                    self.batch_get_services,
                    BatchGetServicesRequest,
                    BatchGetServicesResponse,
                ),
            },
        )
