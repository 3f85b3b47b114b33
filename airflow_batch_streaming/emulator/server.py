"""The in-process emulator: one gRPC server for all services, one admin HTTP server."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from types import TracebackType
from typing import Any, NoReturn

import grpc

from airflow_batch_streaming.emulator.admin import AdminClient, AdminServer, Faults, Quota, Stats
from airflow_batch_streaming.emulator.batch import BatchService
from airflow_batch_streaming.emulator.common import ApiError, region_of_name
from airflow_batch_streaming.emulator.jobs import JobStore, Timings
from airflow_batch_streaming.emulator.logs import LoggingService, LogStore
from airflow_batch_streaming.emulator.operations import OperationStore
from airflow_batch_streaming.emulator.pubsub import PubSub
from airflow_batch_streaming.emulator.runner import Runner
from airflow_batch_streaming.emulator.service_usage import ServiceUsage

log = logging.getLogger(__name__)

# The same name as hooks.clients.EMULATOR_HOST_ENV; not imported, so that running the
# emulator never imports the hooks package (and Airflow with it).
EMULATOR_HOST_ENV = "BATCH_STREAMING_EMULATOR_HOST"
_READS = {"GetJob", "ListJobs", "GetTask", "ListTasks"}
_MUTATIONS = {"CreateJob", "DeleteJob", "CancelJob"}


class EmulatorState:
    """Everything the services share; `reset()` is `POST /v1/reset`."""

    def __init__(
        self,
        *,
        run_commands: bool,
        disabled_apis: Iterable[str],
        timings: Timings,
        max_processes: int | None,
        seed: int | None,
    ) -> None:
        self.logs = LogStore()
        self.secret_values: dict[str, str] = {}
        self.runner = Runner(self.logs, lambda: self.secret_values, max_processes) if run_commands else None
        self.timings = timings
        self.pubsub = PubSub(seed)
        self.jobs = JobStore(self.logs, timings, self.runner, self.pubsub)
        if self.runner is not None:
            self.runner.store = self.jobs
        self.operations = OperationStore()
        self.apis = ServiceUsage(disabled_apis)
        self.faults = Faults(seed)
        self.quota = Quota()
        self.stats = Stats()

    def reset(self) -> None:
        self.jobs.clear()
        self.jobs.timings = self.timings
        if self.runner is not None:
            self.runner.scheduler.clear()
        self.logs.clear()
        self.operations.clear()
        self.faults.clear()
        self.quota.reset()
        self.stats.reset()
        self.apis.reset()
        self.pubsub.reset()
        self.secret_values = {}

    def snapshot(self) -> dict[str, Any]:
        by_state = self.jobs.count_by_state()
        with self.stats.lock:
            calls, errors, peers = dict(self.stats.calls), dict(self.stats.errors), len(self.stats.peers)
        return {
            "calls": dict(sorted(calls.items())),
            "errors": dict(sorted(errors.items())),
            "connections": peers,
            "jobs": sum(by_state.values()),
            "jobs_by_state": by_state,
            "reads": self.quota.last_minute("reads"),
            "mutations": self.quota.last_minute("mutations"),
            "log_entries": len(self.logs),
            "processes": self.runner.running_processes() if self.runner is not None else 0,
        }

    def wrap(self, method: str, fn: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        """Stats, faults and quota around a handler; ApiError becomes the call's status."""
        kind = "reads" if method in _READS else "mutations" if method in _MUTATIONS else None
        if method == "ListLogEntries":
            kind = "logging_reads"

        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            self.stats.call(method, context.peer())
            fault = self.faults.take(method)
            if fault is not None and not fault.after_effect:
                self._abort(context, fault.status, fault.message)
            if kind is not None:
                if kind == "logging_reads":
                    names = list(request.resource_names)
                    scope = names[0].split("/")[1] if names and names[0].count("/") >= 1 else "-"
                else:
                    scope = region_of_name(getattr(request, "parent", "") or getattr(request, "name", ""))
                if not self.quota.allow(kind, scope):
                    what = {"reads": "Read requests", "mutations": "Mutation requests"}.get(
                        kind, "Read requests"
                    )
                    service = "logging.googleapis.com" if kind == "logging_reads" else "batch.googleapis.com"
                    self._abort(
                        context,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"Quota exceeded for quota metric '{what}' and limit '{what} per minute per "
                        f"{'project' if kind == 'logging_reads' else 'region'}' of service '{service}' "
                        f"for consumer '{scope}'.",
                    )
            try:
                response = fn(request)
            except ApiError as exc:
                self._abort(context, exc.code, exc.message)
            except Exception as exc:
                log.exception("emulator: %s failed", method)
                self._abort(context, grpc.StatusCode.INTERNAL, f"emulator error in {method}: {exc!r}")
            if fault is not None:
                self._abort(context, fault.status, fault.message)
            return response

        return handler

    def _abort(self, context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
        self.stats.error(code)
        context.abort(code, message)
        raise AssertionError("context.abort() returned")

    def admin_routes(self) -> dict[str, Callable[[Any], Any]]:
        def faults(body: Any) -> Any:
            for spec in body if isinstance(body, list) else [body]:
                self.faults.add(spec)
            return self.faults.describe()

        def clear_faults(_: Any) -> Any:
            self.faults.clear()
            return []

        def quota(body: Any) -> Any:
            return self.quota.configure(body or {})

        def secrets(body: Any) -> Any:
            if not isinstance(body, Mapping) or not all(isinstance(v, str) for v in body.values()):
                raise ValueError('secrets: {"projects/p/secrets/s/versions/1": "value", ...}')
            self.secret_values = {**self.secret_values, **body}
            return {"secrets": sorted(self.secret_values)}

        def apis(body: Any) -> Any:
            body = body or {}
            return {"disabled": self.apis.update(body.get("disable", ()), body.get("enable", ()))}

        def reset(_: Any) -> Any:
            self.reset()
            return {"reset": True}

        def timings(body: Any) -> Any:
            if body:
                if not isinstance(body, Mapping):
                    raise ValueError('timings: {"list_lag": 30, "queue": 0.3, ...} (seconds)')
                known = {f.name for f in dataclasses.fields(Timings)}
                unknown = sorted(set(body) - known)
                if unknown:
                    raise ValueError(f"unknown timings {unknown}; known: {', '.join(sorted(known))}")
                values = {k: float(v) for k, v in body.items()}
                if any(v < 0 for v in values.values()):
                    raise ValueError("timings must not be negative")
                self.jobs.timings = dataclasses.replace(self.jobs.timings, **values)
            return dataclasses.asdict(self.jobs.timings)

        def history(body: Any) -> Any:
            parts = str((body or {}).get("parent", "")).split("/")
            if len(parts) != 4 or parts[0] != "projects" or parts[2] != "locations":
                raise ValueError(
                    'history: {"parent": "projects/P/locations/L", "count": 20000, "age_seconds": 172800}'
                )
            count = self.jobs.seed_history(
                parts[1], parts[3], int(body.get("count", 0)), float(body.get("age_seconds", 2 * 86_400))
            )
            return {"jobs": count}

        return {
            "GET /v1/stats": lambda _: self.snapshot(),
            "POST /v1/history": history,
            "GET /v1/faults": lambda _: self.faults.describe(),
            "POST /v1/faults": faults,
            "DELETE /v1/faults": clear_faults,
            "GET /v1/quota": lambda _: self.quota.configure({}),
            "POST /v1/quota": quota,
            "POST /v1/secrets": secrets,
            "GET /v1/apis": lambda _: {"disabled": self.apis.update()},
            "POST /v1/apis": apis,
            "POST /v1/reset": reset,
            "GET /v1/timings": timings,
            "POST /v1/timings": timings,
            "GET /v1/healthz": lambda _: {"ok": True},
            **self.pubsub.admin_routes(),
        }


class Emulator(AdminClient):
    """Batch, Cloud Logging, Service Usage and LRO services in this process (threads).

        with Emulator() as emu:
            monkeypatch.setenv(*emu.env().popitem())   # or os.environ.update(emu.env())
            ...

    `timings` sets the default phase durations (labels override them per job).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_port: int = 0,
        run_commands: bool = False,
        disabled_apis: Iterable[str] = (),
        *,
        timings: Timings | None = None,
        max_workers: int = 32,
        max_processes: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.admin_port = admin_port
        self.run_commands = run_commands
        self.state = EmulatorState(
            run_commands=run_commands,
            disabled_apis=disabled_apis,
            timings=timings or Timings(),
            max_processes=max_processes,
            seed=seed,
        )
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._admin_server: AdminServer | None = None
        self._stopped = threading.Event()

    def start(self) -> Emulator:
        state = self.state
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="batch-emulator-rpc"
            ),
            options=[
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_generic_rpc_handlers(
            (
                BatchService(state.jobs, state.operations).handlers(state.wrap),
                state.operations.handlers(state.wrap),
                LoggingService(state.logs).handlers(state.wrap),
                state.apis.handlers(state.wrap),
                *state.pubsub.handlers(state.wrap),
            )
        )
        port = server.add_insecure_port(f"{self.host}:{self.port}")
        if not port:
            raise OSError(f"cannot listen on {self.host}:{self.port}")
        server.start()
        self._server, self.port = server, port
        self._admin_server = AdminServer(self.host, self.admin_port, state.admin_routes())
        self.admin_port = self._admin_server.port
        self._admin_server.start()
        return self

    def stop(self, grace: float | None = 0.5) -> None:
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        if self._admin_server is not None:
            self._admin_server.stop()
            self._admin_server = None
        if self.state.runner is not None:
            self.state.jobs.clear()
            self.state.runner.close()
        self.state.pubsub.close()
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until `stop()` (the CLI's main loop)."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
