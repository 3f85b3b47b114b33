"""A whole Airflow deployment on loopback, for the full-stack tests.

`run_stack(executor)` creates a fresh PostgreSQL database, migrates it, and starts
api-server, dag-processor, scheduler and two triggerers (plus a Celery worker for
CeleryExecutor), each in its own process group with its output in a log file under a
temporary AIRFLOW_HOME. Push is on as a user would deploy it (issue 14): the emulator
serves the Pub/Sub topic `TOPIC`, `[batch_streaming] notification_topic` names it and
`PUBSUB_EMULATOR_HOST` points google-cloud-pubsub at the emulator; the two triggerers are an
HA pair with room for one trigger each, so two overlapping waits are held by different ones.
`Stack` talks to the deployment over the public REST API with a token from the simple auth
manager. The Batch emulator (running task commands as local
processes) and a local registry holding the demo images stand in for Google. Everything
started is stopped, and the database dropped, whatever happens.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg2
import pytest
from psycopg2 import sql

from airflow_batch_streaming.emulator import EmulatorProcess
from airflow_batch_streaming.testing.demo_images import push_demo_images
from airflow_batch_streaming.testing.registry import LocalRegistry

ROOT = Path(__file__).resolve().parents[2]
REPO_DAGS = ROOT / "dags"
TEST_DAGS = Path(__file__).resolve().parent / "dags"
BIN = Path(sys.executable).parent
PROJECT = "demo-project"
REGION = "us-central1"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
USERNAME = "admin"
#: A job stays QUEUED this long in the emulator, so the sensor that starts after `submit`
#: finds it unfinished and has to defer (it pokes 3-15 s after the submit on a 2-core machine).
EMULATOR_QUEUE_SECONDS = 30
STARTUP_TIMEOUT = 240.0
LOG_TAIL_LINES = 80
EXECUTORS = ("LocalExecutor", "CeleryExecutor")
#: Push: the topic the jobs notify (created in the emulator), `[batch_streaming] notification_topic`.
TOPIC = f"projects/{PROJECT}/topics/batch-job-states"
#: An HA pair; named in start order, which is also the order of their Airflow job IDs.
TRIGGERERS = ("triggerer-1", "triggerer-2")
#: The DAGs the tests trigger: unpaused once loaded (every other DAG stays paused).
DAG_IDS = ("example_image_streaming", "example_streaming_fanout", "example_failing_job")
#: What each executor needs beyond the package's own dependencies: (module, distribution).
REQUIREMENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "LocalExecutor": (("asyncpg", "asyncpg"),),
    "CeleryExecutor": (
        ("asyncpg", "asyncpg"),
        ("airflow.providers.celery", "apache-airflow-providers-celery"),
    ),
}
#: Log-entry keys that repeat the task instance's identity on every line.
_CONTEXT_KEYS = frozenset(
    {
        "event",
        "timestamp",
        "level",
        "logger",
        "dag_id",
        "task_id",
        "run_id",
        "ti_id",
        "map_index",
        "try_number",
        "filename",
        "lineno",
    }
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(cannot read {path}: {error})"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- database


def _admin_connection() -> Any:
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (unique name), dropped afterwards; yields its name."""
    name = f"abs_fullstack_{secrets.token_hex(6)}"
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                (name,),
            )
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.close()


# --------------------------------------------------------------------------- processes


@dataclass
class Component:
    """One Airflow process (and its children, in their own process group)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """Ask the process group to stop (SIGTERM)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def finish(self, timeout: float) -> None:
        """Wait up to `timeout` for the leader, then SIGKILL whatever is left of the group."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        # Children (task supervisors, celery pool workers) may outlive the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


@dataclass
class Stack:
    """A running deployment and a small authenticated client for its REST API."""

    executor: str
    home: Path
    env: dict[str, str]
    base_url: str
    images: dict[str, str]
    emulator: EmulatorProcess
    components: list[Component] = field(default_factory=list)
    token: str = ""
    #: Airflow job ID of each triggerer -> its component name.
    triggerer_ids: dict[int, str] = field(default_factory=dict)
    #: Pub/Sub subscription -> the triggerers seen streaming it (`record_subscribers`).
    stream_owners: dict[str, set[str]] = field(default_factory=dict)

    # ---- processes

    def airflow(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run an `airflow` CLI command to completion with the stack's environment."""
        return subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> Component:
        log = self.home / "process-logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(BIN / "airflow"), *args],
                env={**self.env, **(env or {})},
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        component = Component(name, proc, log)
        self.components.append(component)
        return component

    def stop(self, timeout: float = 20.0, names: Collection[str] | None = None) -> None:
        """Stop every component (or those `names`): SIGTERM all (task runners first), SIGKILL
        what is left after `timeout`."""
        stopping = [c for c in reversed(self.components) if names is None or c.name in names]
        for component in stopping:
            component.terminate()
        deadline = time.monotonic() + timeout
        for component in stopping:
            component.finish(max(deadline - time.monotonic(), 0.0))

    def record_subscribers(self) -> None:
        """Note which triggerer streams which Pub/Sub subscription right now.

        The emulator reports each open StreamingPull's gRPC peer (`ipv4:127.0.0.1:PORT`); the
        triggerer whose process holds a TCP connection from that port to the emulator is its
        reader. Called on every poll of a run: a listener's stream stays open from its first
        wait until its watcher has been idle for a minute.
        """
        readers: dict[int, str] = {}
        for component in self.components:
            if component.name not in TRIGGERERS or not component.alive():
                continue
            with contextlib.suppress(psutil.Error):
                leader = psutil.Process(component.proc.pid)
                for proc in [leader, *leader.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        for conn in proc.net_connections(kind="tcp"):
                            if conn.raddr and conn.raddr.port == self.emulator.port:
                                readers[conn.laddr.port] = component.name
        for sub in self.emulator.pubsub_subscriptions():
            for peer in sub["open_streams"]:
                reader = readers.get(int(peer.rsplit(":", 1)[1]))
                if reader is not None:
                    self.stream_owners.setdefault(sub["name"], set()).add(reader)

    def trigger_holders(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> set[str]:
        """The triggerers that ran try 1's trigger: each writes `<try log>.trigger.<its job ID>.log`."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder /= f"map_index={map_index}"
        ids = {int(p.name.rsplit(".", 2)[-2]) for p in folder.glob("attempt=1.log.trigger.*.log")}
        return {self.triggerer_ids.get(i, f"unknown triggerer job {i}") for i in ids}

    def diagnostics(self, lines: int = LOG_TAIL_LINES) -> str:
        """The tail of every component's log, for a failure report."""
        parts = []
        for c in self.components:
            status = "running" if c.alive() else f"exited {c.proc.returncode}"
            parts.append(
                f"----- {c.name} ({status}), last {lines} lines of {c.log} -----\n{_tail(c.log, lines)}"
            )
        parts.append("(set BATCH_STREAMING_KEEP_FULLSTACK_HOME=1 to keep these files after the run)")
        return "\n".join(parts)

    # ---- REST API

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.base_url}{path}", headers=headers, timeout=60, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """A `/api/v2` call that must succeed; returns its JSON."""
        response = self.request(method, f"/api/v2{path}", **kwargs)
        assert response.is_success, f"{method} /api/v2{path}: {response.status_code} {response.text[:2000]}"
        return response.json()

    def login(self) -> None:
        """Get a JWT for the admin user from the simple auth manager's generated password file."""
        password_file = self.home / "simple_auth_manager_passwords.json.generated"
        password = json.loads(password_file.read_text())[USERNAME]
        response = httpx.post(
            f"{self.base_url}/auth/token", json={"username": USERNAME, "password": password}, timeout=30
        )
        assert response.status_code == 201, f"POST /auth/token: {response.status_code} {response.text}"
        self.token = response.json()["access_token"]

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Trigger a manual run; returns its run ID."""
        body = {"logical_date": None, "conf": dict(conf or {})}
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)
        return str(run["dag_run_id"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        found = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return list(found["task_instances"])

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 360.0,
        on_poll: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the run until it ends (or `timeout`, only a bound against hanging); returns it."""
        deadline = time.monotonic() + timeout
        while True:
            self.record_subscribers()
            run: dict[str, Any] = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if on_poll is not None:
                on_poll(self.task_instances(dag_id, run_id))
            if run["state"] in ("success", "failed"):
                return run
            dead = [c.name for c in self.components if not c.alive()]
            assert not dead, f"{', '.join(dead)} exited while {dag_id} was running"
            assert time.monotonic() < deadline, f"{dag_id} run {run_id} still {run['state']} after {timeout}s"
            time.sleep(2)

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """The task instance's history: one entry per try."""
        found = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries",
            params={"map_index": map_index},
        )
        return list(found["task_instances"])

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> str:
        """A try's whole log (worker and triggerer parts) as text, one line per entry."""
        found = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": True},
            headers={"Accept": "application/json"},
        )
        return "\n".join(_log_line(entry) for entry in found.get("content") or [])


def _log_line(entry: Any) -> str:
    """One log entry of the logs API as a line: time, level, message, then any extra fields."""
    if not isinstance(entry, Mapping):
        return str(entry)
    extra = {k: v for k, v in entry.items() if k not in _CONTEXT_KEYS}
    tail = f" {json.dumps(extra, default=str)}" if extra else ""
    return f"{entry.get('timestamp', '')} [{entry.get('level', '')}] {entry.get('event', '')}{tail}"


def missing_requirements(executor: str) -> list[str]:
    """The distributions `executor` needs that are not installed."""
    return [dist for module, dist in REQUIREMENTS[executor] if importlib.util.find_spec(module) is None]


def _health(stack: Stack) -> Any:
    try:
        response = httpx.get(f"{stack.base_url}/api/v2/monitor/health", timeout=5)
        return response.json() if response.is_success else response.text
    except (httpx.HTTPError, ValueError) as error:
        return repr(error)


def _wait_until(stack: Stack, what: str, ready: Callable[[], Any], timeout: float = STARTUP_TIMEOUT) -> Any:
    """Poll `ready()` until it returns something truthy; fail early if a component exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [f"{c.name} (exit code {c.proc.returncode})" for c in stack.components if not c.alive()]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}")
        result = ready()
        if result:
            return result
        time.sleep(2)
    raise RuntimeError(f"no {what} within {timeout}s")


def _all_healthy(stack: Stack) -> bool:
    health = _health(stack)
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return isinstance(health, dict) and all((health.get(p) or {}).get("status") == "healthy" for p in parts)


def _triggerer_jobs(stack: Stack) -> list[int]:
    """The Airflow job IDs of the live triggerers, ascending."""
    found = stack.api("GET", "/jobs", params={"job_type": "TriggererJob", "is_alive": True, "limit": 100})
    return sorted(int(job["id"]) for job in found["jobs"])


def _dags_loaded(stack: Stack) -> bool:
    errors = stack.api("GET", "/importErrors")["import_errors"]
    assert not errors, f"DAG import errors: {json.dumps(errors, indent=1)}"
    found = {d["dag_id"] for d in stack.api("GET", "/dags", params={"limit": 100})["dags"]}
    return set(DAG_IDS) <= found


def _airflow_env(executor: str, home: Path, database: str, port: int) -> dict[str, str]:
    """What every component shares: configuration, secrets, database, ports."""
    from cryptography.fernet import Fernet

    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BATCH_STREAMING_", "GOOGLE_"))
    }
    bundles = [
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(path)},
        }
        for name, path in (("dags-folder", REPO_DAGS), ("fullstack-test-dags", TEST_DAGS))
    ]
    base_url = f"http://127.0.0.1:{port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"
            ),
            # `dags/` is the DAGs folder; the failing-job DAG comes in a second local bundle.
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_DAGS),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(64),
            # One JWT secret for all: task tokens are signed by one process, checked by another.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            # One trigger per triggerer: two overlapping waits are held by the two triggerers.
            "AIRFLOW__TRIGGERER__CAPACITY": "1",
            "AIRFLOW__BATCH_STREAMING__NOTIFICATION_TOPIC": TOPIC,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
            "NO_GCE_CHECK": "True",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if executor == "CeleryExecutor":
        env.update(
            {
                "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
                "AIRFLOW__CELERY__RESULT_BACKEND": (
                    f"db+postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"
                ),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
                # A broker queue of this run's own: no other run's leftover message is picked up.
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"abs-{database}",
            }
        )
    return env


def _start_airflow(stack: Stack, port: int) -> None:
    """Start the components in dependency order and wait until the tests can trigger DAGs."""
    stack.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port))
    # Task runners report to the api-server: start them once it answers.
    _wait_until(stack, "answer from the api-server", lambda: isinstance(_health(stack), dict))
    stack.login()
    stack.start("dag-processor", "dag-processor")
    stack.start("scheduler", "scheduler")
    if stack.executor == "CeleryExecutor":
        stack.start("celery-worker", "celery", "worker")
    # One after the other, so that the job IDs name them; each with its own log server port.
    for count, name in enumerate(TRIGGERERS, 1):
        stack.start(name, "triggerer", env={"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port())})
        _wait_until(stack, f"{name} registered", lambda n=count: len(_triggerer_jobs(stack)) == n)
    stack.triggerer_ids = dict(zip(_triggerer_jobs(stack), TRIGGERERS, strict=True))
    _wait_until(stack, "healthy scheduler, triggerers and dag-processor", lambda: _all_healthy(stack))
    _wait_until(stack, f"DAGs {', '.join(DAG_IDS)} loaded", lambda: _dags_loaded(stack))
    for dag_id in DAG_IDS:
        stack.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})


@contextlib.contextmanager
def run_stack(executor: str) -> Iterator[Stack]:
    """The emulator, the registry and a whole Airflow deployment; all stopped afterwards.

    Set BATCH_STREAMING_KEEP_FULLSTACK_HOME=1 to keep the AIRFLOW_HOME (logs) for a look.
    """
    if missing := missing_requirements(executor):
        pytest.fail(f"{executor} on PostgreSQL needs {', '.join(missing)}: add to the `test` extra")
    if not _reachable(PG_HOST, PG_PORT):
        pytest.fail(
            f"PostgreSQL is not listening on {PG_HOST}:{PG_PORT}; start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
    if executor == "CeleryExecutor" and not _reachable("127.0.0.1", 6379):
        pytest.fail("Redis is not listening on 127.0.0.1:6379 (the CeleryExecutor variant's broker)")
    registry = LocalRegistry().start()  # a missing docker-registry fails: `make test` installs it
    home = Path(tempfile.mkdtemp(prefix=f"abs-fullstack-{executor.lower()}-"))
    try:
        extra = ["--queue-seconds", str(EMULATOR_QUEUE_SECONDS), "--pubsub-topic", TOPIC]
        with EmulatorProcess(run_commands=True, extra_args=extra) as emulator, fresh_database() as db:
            images = push_demo_images(registry.url, project=PROJECT, location=REGION)
            port = _free_port()
            env = _airflow_env(executor, home, db, port)
            env.update(
                {
                    **emulator.env(),
                    "PUBSUB_EMULATOR_HOST": emulator.target,
                    "BATCH_STREAMING_REGISTRY_URL": registry.url,
                    "BATCH_STREAMING_EXAMPLE_PROJECT": PROJECT,
                    "BATCH_STREAMING_EXAMPLE_REGION": REGION,
                    "BATCH_STREAMING_EXAMPLE_IMAGE": images["good"],
                }
            )
            stack = Stack(executor, home, env, f"http://127.0.0.1:{port}", images, emulator)
            migrated = stack.airflow("db", "migrate")
            output = migrated.stdout[-3000:] + migrated.stderr[-3000:]
            assert migrated.returncode == 0, f"airflow db migrate failed:\n{output}"
            try:
                try:
                    _start_airflow(stack, port)
                except Exception as error:
                    raise RuntimeError(f"{error}\n{stack.diagnostics()}") from error
                yield stack
            finally:
                stack.stop()
    finally:
        registry.stop()
        if not os.environ.get("BATCH_STREAMING_KEEP_FULLSTACK_HOME"):
            shutil.rmtree(home, ignore_errors=True)
