"""Google API clients, pointed at the local emulator when `BATCH_STREAMING_EMULATOR_HOST` is set.

With the variable (`host:port`) every client gets a transport on an insecure gRPC channel to
that address and anonymous credentials; nothing else differs, so the same code paths run
against the emulator and against Google. Without it, the default transport and the given
credentials (or, for the sync clients, Application Default Credentials).

The async factories are plain functions: call them inside the event loop (a grpc.aio channel
belongs to the loop it is made in) with credentials already resolved, e.g.
`await asyncio.to_thread(hook.get_credentials)`. They refuse `credentials=None` outside the
emulator, because resolving default credentials is blocking I/O on the event loop.

Google libraries are imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.api_core.gapic_v1.client_info import ClientInfo
    from google.auth.credentials import Credentials
    from google.cloud.batch_v1 import BatchServiceAsyncClient, BatchServiceClient
    from google.cloud.logging_v2.services.logging_service_v2 import (
        LoggingServiceV2AsyncClient,
        LoggingServiceV2Client,
    )
    from google.cloud.service_usage_v1 import ServiceUsageAsyncClient, ServiceUsageClient

EMULATOR_HOST_ENV = "BATCH_STREAMING_EMULATOR_HOST"

# What the GAPIC transports set on the channels they make themselves.
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def emulator_host() -> str | None:
    """`host:port` of the emulator, or None when the clients go to Google."""
    value = os.environ.get(EMULATOR_HOST_ENV, "").strip()
    return value or None


def _emulated(transport_cls: Any, *, aio: bool, host: str) -> Callable[..., Any]:
    """A transport factory on an insecure channel (GAPIC clients accept a callable)."""

    def make(**kwargs: Any) -> Any:
        import grpc

        channel = (grpc.aio if aio else grpc).insecure_channel(host, options=_CHANNEL_OPTIONS)
        return transport_cls(channel=channel, **kwargs)

    return make


def _client_kwargs(
    transport_cls: Any, credentials: Credentials | None, client_info: ClientInfo | None, *, aio: bool
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if client_info is not None:
        kwargs["client_info"] = client_info
    host = emulator_host()
    if host:
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()
        kwargs["transport"] = _emulated(transport_cls, aio=aio, host=host)
        kwargs["client_options"] = {"api_endpoint": host}
    elif aio and credentials is None:
        raise ValueError(
            "async clients need credentials resolved off the event loop "
            "(e.g. `await asyncio.to_thread(hook.get_credentials)`)"
        )
    else:
        kwargs["credentials"] = credentials
    return kwargs


def batch_client(
    credentials: Credentials | None = None, client_info: ClientInfo | None = None
) -> BatchServiceClient:
    from google.cloud.batch_v1 import BatchServiceClient
    from google.cloud.batch_v1.services.batch_service.transports import BatchServiceGrpcTransport

    return BatchServiceClient(
        **_client_kwargs(BatchServiceGrpcTransport, credentials, client_info, aio=False)
    )


def batch_async_client(
    credentials: Credentials | None = None, client_info: ClientInfo | None = None
) -> BatchServiceAsyncClient:
    from google.cloud.batch_v1 import BatchServiceAsyncClient
    from google.cloud.batch_v1.services.batch_service.transports import BatchServiceGrpcAsyncIOTransport

    kwargs = _client_kwargs(BatchServiceGrpcAsyncIOTransport, credentials, client_info, aio=True)
    return BatchServiceAsyncClient(**kwargs)


def logging_client(
    credentials: Credentials | None = None, client_info: ClientInfo | None = None
) -> LoggingServiceV2Client:
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
    from google.cloud.logging_v2.services.logging_service_v2.transports import LoggingServiceV2GrpcTransport

    return LoggingServiceV2Client(
        **_client_kwargs(LoggingServiceV2GrpcTransport, credentials, client_info, aio=False)
    )


def logging_async_client(
    credentials: Credentials | None = None, client_info: ClientInfo | None = None
) -> LoggingServiceV2AsyncClient:
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2AsyncClient
    from google.cloud.logging_v2.services.logging_service_v2.transports import (
        LoggingServiceV2GrpcAsyncIOTransport,
    )

    kwargs = _client_kwargs(LoggingServiceV2GrpcAsyncIOTransport, credentials, client_info, aio=True)
    return LoggingServiceV2AsyncClient(**kwargs)


def service_usage_client(
    credentials: Credentials | None = None, client_info: ClientInfo | None = None
) -> ServiceUsageClient:
    from google.cloud.service_usage_v1 import ServiceUsageClient
    from google.cloud.service_usage_v1.services.service_usage.transports import ServiceUsageGrpcTransport

    return ServiceUsageClient(
        **_client_kwargs(ServiceUsageGrpcTransport, credentials, client_info, aio=False)
    )


def service_usage_async_client(
    credentials: Credentials | None = None, client_info: ClientInfo | None = None
) -> ServiceUsageAsyncClient:
    from google.cloud.service_usage_v1 import ServiceUsageAsyncClient
    from google.cloud.service_usage_v1.services.service_usage.transports import (
        ServiceUsageGrpcAsyncIOTransport,
    )

    kwargs = _client_kwargs(ServiceUsageGrpcAsyncIOTransport, credentials, client_info, aio=True)
    return ServiceUsageAsyncClient(**kwargs)
