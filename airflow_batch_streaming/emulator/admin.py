"""The admin side: call statistics, injected faults, quotas, and the JSON HTTP API over them.

    GET  /v1/stats    {"calls": {"CreateJob": n, ...}, "jobs": n, "jobs_by_state": {...},
                       "connections": n, "reads": {"us-central1": n}, "mutations": {...},
                       "errors": {"UNAVAILABLE": n}, "log_entries": n, "processes": n}
    GET  /v1/faults   the active fault rules
    POST /v1/faults   {"method": "CreateJob", "code": "UNAVAILABLE", "count": 2, "after_effect": false}
                      {"method": "GetJob", "code": "UNAVAILABLE", "rate": 0.33, "seconds": 60}
                      (or a list of them; "method": "*" matches every method)
    DELETE /v1/faults clear them
    GET/POST /v1/quota {"reads_per_minute": 15000, "mutations_per_minute": 6000,
                       "logging_reads_per_minute": null}
    POST /v1/secrets  {"projects/p/secrets/s/versions/1": "value", ...}
    GET/POST /v1/apis {"disable": ["containerfilesystem.googleapis.com"], "enable": [...]}
    GET/POST /v1/timings {"list_lag": 30, "queue": 0.3, ...}: default phase seconds and how long
                      ListJobs/ListTasks lag behind creation (0 by default; Google lags)
    POST /v1/history  {"parent": "projects/p/locations/l", "count": 20000, "age_seconds": 172800}:
                      that many jobs created that long ago, long SUCCEEDED (an empty emulator only)
    POST /v1/reset    forget jobs, logs, operations, stats, faults, secrets; quotas, APIs and
                      timings to defaults
    GET  /v1/healthz
    GET  /v1/pubsub, /v1/pubsub/subscriptions; POST /v1/pubsub/faults, /v1/pubsub/advance
                      (emulator/pubsub.py)

`after_effect: true` lets the call take effect and then fails it: a lost response, the case
that makes request IDs necessary.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from airflow_batch_streaming.emulator.common import now_ns

READS_PER_MINUTE = 15_000
MUTATIONS_PER_MINUTE = 6_000
MINUTE_NS = 60 * 1_000_000_000


def method_name(method: str) -> str:
    """`/google.cloud.batch.v1.BatchService/GetJob`, `BatchService/GetJob` -> `GetJob`."""
    return method.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class Fault:
    method: str
    code: str
    count: int | None = None
    after_effect: bool = False
    rate: float | None = None
    until_ns: int | None = None
    message: str = ""

    @property
    def status(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.code]

    def describe(self) -> dict[str, Any]:
        data = asdict(self)
        until = data.pop("until_ns")
        data["seconds_left"] = None if until is None else max(0.0, (until - now_ns()) / 1e9)
        return data


class Faults:
    def __init__(self, seed: int | None = None) -> None:
        self.lock = threading.Lock()
        self.rules: list[Fault] = []
        self.rng = random.Random(seed)

    def add(self, spec: Mapping[str, Any]) -> Fault:
        if not isinstance(spec, Mapping) or not spec.get("method"):
            raise ValueError('a fault needs "method" (e.g. "CreateJob", or "*")')
        code = str(spec.get("code", "UNAVAILABLE")).upper()
        if code not in grpc.StatusCode.__members__ or code == "OK":
            raise ValueError(f"unknown gRPC status code {code!r}")
        rate, seconds, count = spec.get("rate"), spec.get("seconds"), spec.get("count")
        if rate is not None:
            if not 0 <= float(rate) <= 1:
                raise ValueError("rate must be between 0 and 1")
            if seconds is None or float(seconds) <= 0:
                raise ValueError('a "rate" fault needs "seconds" (how long it lasts)')
            if count is not None:
                raise ValueError('give "count" or "rate" + "seconds", not both')
        elif count is None:
            count = 1
        if count is not None and int(count) < 1:
            raise ValueError("count must be at least 1")
        fault = Fault(
            method=method_name(str(spec["method"])),
            code=code,
            count=None if count is None else int(count),
            after_effect=bool(spec.get("after_effect", False)),
            rate=None if rate is None else float(rate),
            until_ns=None if seconds is None else now_ns() + round(float(seconds) * 1e9),
            message=str(spec.get("message") or f"fault injected by the emulator ({code})"),
        )
        with self.lock:
            if "seed" in spec:
                self.rng.seed(spec["seed"])
            self.rules.append(fault)
        return fault

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def describe(self) -> list[dict[str, Any]]:
        with self.lock:
            now = now_ns()
            self.rules = [f for f in self.rules if f.until_ns is None or f.until_ns > now]
            return [f.describe() for f in self.rules]

    def take(self, method: str) -> Fault | None:
        """The fault this call suffers, if any (consuming one of a counted fault)."""
        if not self.rules:
            return None
        with self.lock:
            now = now_ns()
            for fault in list(self.rules):
                if fault.until_ns is not None and now >= fault.until_ns:
                    self.rules.remove(fault)
                    continue
                if fault.method not in (method, "*"):
                    continue
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.rules.remove(fault)
                    return fault
                if fault.rate is not None and self.rng.random() < fault.rate:
                    return fault
            return None


class Quota:
    """Per-region (Batch) and per-project (Logging) requests in a sliding minute."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.limits: dict[str, int | None] = {}
        self.windows: dict[tuple[str, str], deque[int]] = {}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.limits = {
                "reads_per_minute": READS_PER_MINUTE,
                "mutations_per_minute": MUTATIONS_PER_MINUTE,
                "logging_reads_per_minute": None,
            }
            self.windows = {}

    def configure(self, spec: Mapping[str, Any]) -> dict[str, int | None]:
        with self.lock:
            for key, value in spec.items():
                if key not in self.limits:
                    raise ValueError(f"unknown quota {key!r}; known: {', '.join(self.limits)}")
                if value is not None and (not isinstance(value, int) or value < 0):
                    raise ValueError(f"{key} must be a whole number or null")
                self.limits[key] = value
            return dict(self.limits)

    def allow(self, kind: str, scope: str) -> bool:
        """Count one request of `kind` (reads, mutations, logging_reads); False if over the limit."""
        limit = self.limits.get(f"{kind}_per_minute")
        now = now_ns()
        with self.lock:
            window = self.windows.setdefault((kind, scope), deque())
            while window and window[0] <= now - MINUTE_NS:
                window.popleft()
            if limit is not None and len(window) >= limit:
                return False
            window.append(now)
            return True

    def last_minute(self, kind: str) -> dict[str, int]:
        now = now_ns()
        with self.lock:
            return {
                scope: sum(1 for t in window if t > now - MINUTE_NS)
                for (k, scope), window in sorted(self.windows.items())
                if k == kind
            }


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.peers: set[str] = set()

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.errors.clear()
            self.peers.clear()

    def call(self, method: str, peer: str) -> None:
        with self.lock:
            self.calls[method] += 1
            self.peers.add(peer)

    def error(self, code: grpc.StatusCode) -> None:
        with self.lock:
            self.errors[code.name] += 1


# --- HTTP ---------------------------------------------------------------------------------

Route = Callable[[Any], Any]


class AdminServer:
    """A ThreadingHTTPServer answering JSON on the routes given (`"GET /v1/stats"` -> fn(body))."""

    def __init__(self, host: str, port: int, routes: Mapping[str, Route]) -> None:
        server_routes = dict(routes)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                route = server_routes.get(f"{self.command} {self.path.split('?')[0].rstrip('/')}")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if route is None:
                    self._send(404, {"error": f"no route {self.command} {self.path}"})
                    return
                try:
                    body = json.loads(raw) if raw.strip() else None
                    self._send(200, route(body))
                except (ValueError, TypeError, KeyError) as exc:
                    self._send(400, {"error": str(exc)})

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload, sort_keys=True).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="batch-emulator-admin",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


class AdminError(RuntimeError):
    pass


class AdminClient:
    """Addresses and admin-API helpers, shared by `Emulator` and `EmulatorProcess`."""

    host: str
    port: int
    admin_port: int

    @property
    def target(self) -> str:
        """`host:port` of the gRPC services, the value of BATCH_STREAMING_EMULATOR_HOST."""
        return f"{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    def env(self) -> dict[str, str]:
        """The environment that points the package's clients at this emulator."""
        return {"BATCH_STREAMING_EMULATOR_HOST": self.target}

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.admin_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AdminError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}") from None

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("GET", "/v1/stats")
        return result

    def fault(
        self,
        method: str,
        code: str = "UNAVAILABLE",
        count: int | None = None,
        *,
        after_effect: bool = False,
        rate: float | None = None,
        seconds: float | None = None,
        message: str | None = None,
    ) -> list[dict[str, Any]]:
        """Make the next `count` calls (or a `rate` of calls for `seconds`) of `method` fail."""
        spec: dict[str, Any] = {"method": method, "code": code, "after_effect": after_effect}
        for key, value in (("count", count), ("rate", rate), ("seconds", seconds), ("message", message)):
            if value is not None:
                spec[key] = value
        result: list[dict[str, Any]] = self._admin("POST", "/v1/faults", spec)
        return result

    def pubsub_subscriptions(self) -> list[dict[str, Any]]:
        """Every Pub/Sub subscription made since the last reset (`PubSub.subscriptions`)."""
        result: list[dict[str, Any]] = self._admin("GET", "/v1/pubsub/subscriptions")
        return result

    def clear_faults(self) -> None:
        self._admin("DELETE", "/v1/faults")

    def quota(self, **limits: int | None) -> dict[str, int | None]:
        """E.g. `quota(reads_per_minute=100)`; a None limit switches that quota off."""
        result: dict[str, int | None] = self._admin("POST", "/v1/quota", limits)
        return result

    def reset(self) -> None:
        self._admin("POST", "/v1/reset", {})

    def history(self, parent: str, count: int, age_seconds: float = 2 * 86_400) -> int:
        """Seed `count` finished jobs created `age_seconds` ago into an empty emulator."""
        result = self._admin(
            "POST", "/v1/history", {"parent": parent, "count": count, "age_seconds": age_seconds}
        )
        return int(result["jobs"])

    def timings(self, **seconds: float) -> dict[str, float]:
        """Change default timings now, e.g. `timings(list_lag=30)` (ListJobs/ListTasks lag)."""
        result: dict[str, float] = self._admin("POST", "/v1/timings", seconds)
        return result

    def secrets(self, values: Mapping[str, str]) -> None:
        """Values for `secret_variables` (`projects/p/secrets/s/versions/1` -> value)."""
        self._admin("POST", "/v1/secrets", dict(values))

    def set_apis(self, *, disable: list[str] | None = None, enable: list[str] | None = None) -> list[str]:
        result: list[str] = self._admin(
            "POST", "/v1/apis", {"disable": disable or [], "enable": enable or []}
        )["disabled"]
        return result
