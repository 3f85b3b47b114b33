"""What the reliability tests share: a task-instance stand-in, operator factory, trigger runner.

The operators are driven the way Airflow drives them: `execute(context)` on a worker;
when it defers, the trigger runs to its one event (in the test's event loop, or a fresh
one as a triggerer process would) and a *new* operator instance gets `execute_complete`.
A worker or triggerer "dying" is a new instance (or a trigger rebuilt from its serialized
form) picking up where the old one stopped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from airflow.triggers.base import BaseTrigger

from airflow_batch_streaming import status
from airflow_batch_streaming._compat import TaskDeferred
from airflow_batch_streaming.emulator import Emulator, Timings
from airflow_batch_streaming.hooks.batch import BatchStreamingHook
from airflow_batch_streaming.operators import BatchStreamingJobOperator
from airflow_batch_streaming.triggers import BatchJobStateTrigger

PROJECT = "rel-project"
REGION = "us-central1"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/repo/app:1.0"
FAST = Timings(queue=0.05, schedule=0.05, run=0.2, cancel=0.1, delete=0.1)
SH = ["/bin/sh", "-c"]
#: States in which a job still holds (or waits for) VMs: none may be left after a test.
LIVE_STATES = frozenset({"QUEUED", "SCHEDULED", "RUNNING", "CANCELLATION_IN_PROGRESS"})


class WorkerDied(BaseException):
    """Raised in place of a wait: the worker process is gone (like SystemExit, not an Exception)."""


def dies_when_waiting(op: BatchStreamingJobOperator) -> BatchStreamingJobOperator:
    """`op` whose worker is lost as it starts to wait or defer: the job exists, nobody waits on it."""

    def died(*_: Any, **__: Any) -> NoReturn:
        raise WorkerDied("the worker was lost")

    op._wait = died  # type: ignore[method-assign]
    op._defer = died  # type: ignore[method-assign]
    return op


class TI:
    """The slice of a RuntimeTaskInstance the operators use (XComs kept in memory)."""

    def __init__(
        self,
        task_id: str = "task",
        try_number: int = 1,
        *,
        dag_id: str = "rel_dag",
        run_id: str = "manual__1",
        map_index: int = -1,
    ) -> None:
        self.dag_id = dag_id
        self.task_id = task_id
        self.run_id = run_id
        self.map_index = map_index
        self.try_number = try_number
        self.xcoms: dict[str, Any] = {}

    def next_try(self) -> TI:
        """The same task instance, one try later (XComs are cleared between tries, as in Airflow)."""
        return TI(
            self.task_id,
            self.try_number + 1,
            dag_id=self.dag_id,
            run_id=self.run_id,
            map_index=self.map_index,
        )

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get(key)

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


class StateStore:
    """Airflow 3.3's `task_state_store`: survives the tries of one task instance."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


def ctx(ti: TI, store: StateStore | None = None) -> Any:
    context: dict[str, Any] = {"ti": ti, "task_instance": ti, "run_id": ti.run_id}
    if store is not None:
        context["task_state_store"] = store
    return context


def job_op(task_id: str = "task", **kwargs: Any) -> BatchStreamingJobOperator:
    """A job operator as a DAG would declare it; no preflight unless asked (no registry here)."""
    args: dict[str, Any] = {
        "task_id": task_id,
        "project_id": PROJECT,
        "region": REGION,
        "image_uri": IMAGE,
        "preflight": False,
        "poll_interval": 0.1,
        **kwargs,
    }
    return BatchStreamingJobOperator(**args)


async def first_event(trigger: BaseTrigger) -> dict[str, Any]:
    """What the triggerer does with a trigger: run it to its one event."""
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger yielded nothing")


def run_trigger(trigger: BaseTrigger) -> dict[str, Any]:
    """Run a trigger in a fresh event loop, as a triggerer process (or `dags test`) would."""
    return asyncio.run(first_event(trigger))


def defer(op: BatchStreamingJobOperator, context: Any) -> BatchJobStateTrigger:
    """`execute` that must defer: the trigger it handed to the triggerer."""
    try:
        result = op.execute(context)
    except TaskDeferred as deferred:
        assert deferred.method_name == "execute_complete"
        trigger = deferred.trigger
        assert isinstance(trigger, BatchJobStateTrigger)
        return trigger
    raise AssertionError(f"execute returned {result!r} instead of deferring")


def rebuild(trigger: BaseTrigger) -> BaseTrigger:
    """The trigger a (restarted) triggerer makes from its row in the metadata database.

    `Trigger.from_object` is what Airflow stores when a task defers (`serialize()`, with
    the kwargs encrypted); the triggerer imports the class path and calls it with the
    decrypted kwargs.
    """
    from airflow.models.trigger import Trigger

    row = Trigger.from_object(trigger)
    module, _, name = row.classpath.rpartition(".")
    made: BaseTrigger = getattr(importlib.import_module(module), name)(**row.kwargs)
    return made


def wait_state(hook: BatchStreamingHook, name: str, states: Iterable[str], timeout: float = 30.0) -> str:
    wanted = set(states)
    deadline = time.monotonic() + timeout
    while True:
        state = status.state_of(hook.get_job(name))
        if state in wanted:
            return state
        assert time.monotonic() < deadline, f"{name} stuck in {state}, expected {sorted(wanted)}"
        time.sleep(0.03)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def live_jobs(emu: Emulator) -> dict[str, int]:
    """Jobs the emulator still runs (or queues): what a test must not leave behind."""
    by_state: Mapping[str, int] = emu.stats()["jobs_by_state"]
    return {state: n for state, n in by_state.items() if state in LIVE_STATES and n}


def settle(emu: Emulator, timeout: float = 15.0) -> dict[str, int]:
    """Wait until no job is live; the final `jobs_by_state` (cancellations take a moment)."""
    wait_until(lambda: not live_jobs(emu), timeout, "every job to end")
    return {state: n for state, n in emu.stats()["jobs_by_state"].items() if n}


def run_task(make: Callable[[], Any], ti: TI, store: StateStore | None = None) -> Any:
    """One try of a task, as Airflow runs it: `execute`, and when it defers, the trigger to its
    event and `execute_complete` on a new operator instance (a resumed task is a new object)."""
    context = ctx(ti, store)
    try:
        return make().execute(context)
    except TaskDeferred as deferred:
        event = run_trigger(deferred.trigger)
        return make().execute_complete(context, event)


def flaky_command(marker: str) -> list[str]:
    """Fails (exit 3) the first time it runs, succeeds afterwards: a job worth retrying."""
    script = (
        f'if [ -e "{marker}" ]; then echo "second run: ok"; '
        f'else touch "{marker}"; echo "first run: failing"; exit 3; fi'
    )
    return [*SH, script]


# --------------------------------------------------------------------------- secrets
#: A registry access token and a Secret Manager value: neither may show up in any output.
REGISTRY_TOKEN = "ya29.reliability-registry-T0ken-5f3a9c"
SECRET_REF = f"projects/{PROJECT}/secrets/db-password/versions/1"
SECRET_VALUE = "s3cr3t-value-xyz-7d41"
#: Every form in which they could leak (Basic auth sends base64 of user:token).
LEAK_FORMS = (
    REGISTRY_TOKEN,
    base64.b64encode(f"oauth2accesstoken:{REGISTRY_TOKEN}".encode()).decode(),
    SECRET_VALUE,
)
#: A fingerprint of the secret (not the secret): what the job checks it received.
SECRET_SHA256_PREFIX = hashlib.sha256(SECRET_VALUE.encode()).hexdigest()[:16]
#: Checks the secret arrived intact and says so without showing it (and without "{#",
#: which Jinja would take for a comment in a templated argument).
USES_SECRET = [
    *SH,
    f'test "$(printf %s "$DB_PASSWORD" | sha256sum | cut -c1-16)" = "{SECRET_SHA256_PREFIX}" '
    '&& echo "the password checks out"',
]


def assert_no_leak(*texts: object) -> None:
    for text in texts:
        rendered = text if isinstance(text, str) else repr(text)
        for secret in LEAK_FORMS:
            assert secret not in rendered, f"a secret leaked into: ...{rendered[:400]}"


@dataclass(frozen=True)
class AirflowRun:
    """What one `airflow dags test reliability` left behind, read once it was over."""

    returncode: int
    output: str  # the command's stdout and stderr
    logs: str  # every file under AIRFLOW_HOME/logs
    run: dict[str, Any]  # the metadata database: run state, task states, XComs
    stats: dict[str, Any]  # the emulator's, once no job was left running
    jobs: dict[str, list[dict[str, Any]]]  # each task's jobs (REST JSON), by the airflow-task label
