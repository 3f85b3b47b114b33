"""`--run-commands`: each task runs its runnables as local processes.

A container runnable runs `[entrypoint] + commands` (just `commands` when there is no
entrypoint; the image's own entrypoint is unknown here), a script runnable `/bin/sh -c TEXT`
(or `/bin/sh PATH`), a barrier nothing. Argument lists are passed as they are: no shell is
added. The image itself is not pulled; the process runs on this machine, in a fresh temporary
directory, with the emulator's PATH, HOME and locale, the variables Batch sets
(`BATCH_TASK_INDEX`, `BATCH_TASK_COUNT`, `BATCH_TASK_RETRY_ATTEMPT`, `BATCH_JOB_UID`,
`BATCH_JOB_ID`, `BATCH_HOSTS_FILE`) and the job's variables (task spec, per-task
`task_environments`, runnable; secret variables from `POST /v1/secrets`).

Exit codes decide task states as on Batch: `ignore_exit_status` runnables never fail a task,
`always_run` runnables run after a failure, `background` runnables are stopped when the task
ends, `max_run_duration` (and a runnable's `timeout`) kills the process and fails the attempt
with 50005, `max_retry_count` and lifecycle policies decide retries. Stdout lines become
`batch_task_logs` entries at INFO, stderr lines at ERROR, the agent's lines go to
`batch_agent_logs`, each written as the line arrives. A bounded pool of worker threads runs
the tasks (`parallelism` per job is honoured); other jobs wait for a free worker, and stay
SCHEDULED until their first task gets one.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow_batch_streaming.emulator.common import duration_ns, now_ns
from airflow_batch_streaming.emulator.jobs import (
    GENERIC_FAILURE,
    TIMED_OUT,
    JobRecord,
    JobState,
    RunState,
    TaskState,
    failure_detail,
    should_retry,
    task_failure_text,
)
from airflow_batch_streaming.emulator.logs import AGENT_LOGS, ERROR, INFO, TASK_LOGS, LogStore

if TYPE_CHECKING:
    from airflow_batch_streaming.emulator.jobs import JobStore

_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SYSTEMROOT")
_MAX_LINE = 256 * 1024


class Scheduler:
    """One thread that calls functions at given times (a heap, not a timer per job)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="batch-emulator-scheduler", daemon=True)
        self._thread.start()

    def call_at(self, t_ns: int, fn: Callable[[], None]) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (t_ns, self._seq, fn))
            self._cond.notify()

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._heap and self._heap[0][0] <= now_ns():
                        break
                    wait = (self._heap[0][0] - now_ns()) / 1e9 if self._heap else None
                    self._cond.wait(timeout=wait)
                if self._closed:
                    return
                _t, _seq, fn = heapq.heappop(self._heap)
            with contextlib.suppress(Exception):
                fn()


class Runner:
    def __init__(
        self,
        logs: LogStore,
        secrets: Callable[[], Mapping[str, str]],
        max_processes: int | None = None,
    ) -> None:
        self.logs = logs
        self.secrets = secrets
        self.store: JobStore | None = None
        self.scheduler = Scheduler()
        workers = max_processes or max(4, (os.cpu_count() or 2) * 2)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch-emulator-task")
        self._closed = False

    @property
    def lock(self) -> threading.RLock:
        assert self.store is not None
        return self.store.lock

    def close(self) -> None:
        self._closed = True
        self.scheduler.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def schedule(self, record: JobRecord, at_ns: int) -> None:
        self.scheduler.call_at(at_ns, lambda: self._start(record))

    def running_processes(self) -> int:
        assert self.store is not None
        with self.lock:
            return sum(len(r.run.processes) for r in self.store.jobs.values() if r.run is not None)

    def stop_job(self, record: JobRecord) -> None:
        """Kill the job's processes (the caller has marked it stopped, under the lock)."""
        if record.run is not None:
            for proc in list(record.run.processes):
                _kill(proc)

    # -- scheduling tasks --

    def _start(self, record: JobRecord) -> None:
        with self.lock:
            if record.stopped or self._closed:
                return
            record.run = RunState(pending=list(range(record.task_count)))
            self._dispatch(record)

    def _dispatch(self, record: JobRecord) -> None:
        run = record.run
        assert run is not None
        while run.pending and run.failure is None and len(run.running) < record.parallelism:
            index = run.pending.pop(0)
            run.running.add(index)
            self.pool.submit(self._task, record, index)
        if not run.running and (not run.pending or run.failure is not None):
            now = now_ns()
            for index in run.pending:
                record.set_task(
                    now, index, TaskState.UNEXECUTED, "Task state is updated from PENDING to UNEXECUTED."
                )
            run.pending.clear()
            if run.failure is None:
                record.set_state(now, JobState.SUCCEEDED)
            else:
                record.set_state(now, JobState.FAILED, failure_detail(*run.failure))
            assert self.store is not None
            self.store.notify(record)

    def _task(self, record: JobRecord, index: int) -> None:
        attempt = 0
        try:
            while True:
                with self.lock:
                    if record.stopped:
                        return
                    previous = "PENDING" if attempt == 0 else "FAILED"
                    now = now_ns()
                    if record.state_at(now) == JobState.SCHEDULED:
                        # Only now has a process slot: a job waiting for one stays SCHEDULED.
                        record.set_state(now, JobState.RUNNING)
                        assert self.store is not None
                        self.store.notify(record)
                    record.set_task(
                        now, index, TaskState.ASSIGNED, f"Task state is updated from {previous} to ASSIGNED."
                    )
                    record.set_task(
                        now, index, TaskState.RUNNING, "Task state is updated from ASSIGNED to RUNNING."
                    )
                try:
                    code = self._attempt(record, index, attempt)
                except Exception as exc:  # a bug here must fail the task, not pass it
                    self._agent(record, record.task_id(index, attempt), f"emulator error: {exc!r}", ERROR)
                    code = GENERIC_FAILURE
                with self.lock:
                    if code is None or record.stopped:
                        return
                    now = now_ns()
                    if code == 0:
                        record.set_task(
                            now,
                            index,
                            TaskState.SUCCEEDED,
                            "Task state is updated from RUNNING to SUCCEEDED.",
                            0,
                        )
                        break
                    text = task_failure_text(record.zone, record.instance(index, attempt), code)
                    record.set_task(now, index, TaskState.FAILED, text, code)
                    record.event(now, text, task_state=TaskState.FAILED, exit_code=code)
                    if should_retry(record.spec, code, attempt):
                        attempt += 1
                        continue
                    assert record.run is not None
                    if record.run.failure is None:
                        record.run.failure = (index, text)
                    break
        finally:
            with self.lock:
                if record.run is not None:
                    record.run.running.discard(index)
                    if not record.stopped and not self._closed:
                        self._dispatch(record)

    # -- one attempt of one task --

    def _attempt(self, record: JobRecord, index: int, attempt: int) -> int | None:
        """Run the task's runnables; the attempt's exit code, or None when the job was stopped."""
        task_id = record.task_id(index, attempt)
        started = time.monotonic()
        max_run = duration_ns(record.spec.max_run_duration) / 1e9
        deadline = started + max_run if max_run else None
        workdir = tempfile.mkdtemp(prefix="batch-emulator-")
        hosts_file = os.path.join(workdir, "batch-hosts")
        with open(hosts_file, "w") as fh:
            fh.write("127.0.0.1\n")
        background: list[tuple[subprocess.Popen[bytes], threading.Thread]] = []
        failed: int | None = None
        try:
            base_env = {k: os.environ[k] for k in _PASSED_THROUGH if k in os.environ}
            base_env.update(record.spec.environments)
            layers = [record.spec.environment]
            group = record.base.task_groups[0]
            if index < len(group.task_environments):
                layers.append(group.task_environments[index])
            for r, runnable in enumerate(record.spec.runnables):
                if failed is not None and not runnable.always_run:
                    continue
                if deadline is not None and time.monotonic() >= deadline:
                    failed = TIMED_OUT if failed is None else failed
                    break
                kind = runnable.WhichOneof("executable")
                if kind == "barrier" or kind is None:
                    continue
                env, problem = self._environment(base_env, [*layers, runnable.environment])
                if problem:
                    self._agent(record, task_id, problem, ERROR)
                    failed = GENERIC_FAILURE if failed is None else failed
                    continue
                env.update(
                    BATCH_TASK_INDEX=str(index),
                    BATCH_TASK_COUNT=str(record.task_count),
                    BATCH_TASK_RETRY_ATTEMPT=str(attempt),
                    BATCH_JOB_UID=record.uid,
                    BATCH_JOB_ID=record.job_id,
                    BATCH_HOSTS_FILE=hosts_file,
                )
                argv = _argv(runnable)
                if not argv:
                    self._agent(record, task_id, f"Task {task_id} runnable {r} has nothing to run.", ERROR)
                    failed = GENERIC_FAILURE if failed is None else failed
                    continue
                self._agent(record, task_id, f"Task {task_id} runnable {r} started.", INFO)
                limit = deadline
                timeout = duration_ns(runnable.timeout) / 1e9
                if timeout:
                    limit = min(limit or float("inf"), time.monotonic() + timeout)
                try:
                    proc = subprocess.Popen(
                        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        env=env, cwd=workdir, start_new_session=True,
                    )  # fmt: skip
                except OSError as exc:
                    code = 126 if isinstance(exc, PermissionError) else 127
                    self._line(record, task_id, f"exec {argv[0]}: {exc.strerror}", ERROR)
                    self._agent(
                        record, task_id, f"Task {task_id} runnable {r} exited with status {code}.", INFO
                    )
                    if not runnable.ignore_exit_status and failed is None:
                        failed = code
                    continue
                with self.lock:
                    if record.stopped or record.run is None:
                        _kill(proc)
                        return None
                    record.run.processes.add(proc)
                if runnable.background:
                    pump = threading.Thread(
                        target=self._pump, args=(record, task_id, proc, None), daemon=True
                    )
                    pump.start()
                    background.append((proc, pump))
                    continue
                code_or_none = self._pump(record, task_id, proc, limit)
                if code_or_none is None:
                    return None
                self._agent(
                    record, task_id, f"Task {task_id} runnable {r} exited with status {code_or_none}.", INFO
                )
                if code_or_none != 0 and not runnable.ignore_exit_status and failed is None:
                    failed = code_or_none
                if code_or_none == TIMED_OUT and deadline is not None and time.monotonic() >= deadline:
                    break
            return failed or 0
        finally:
            for proc, pump in background:
                _kill(proc)
                pump.join(timeout=5)
            with self.lock:
                if record.run is not None:
                    record.run.processes.difference_update(p for p, _ in background)
            shutil.rmtree(workdir, ignore_errors=True)

    def _environment(self, base: Mapping[str, str], layers: list[Any]) -> tuple[dict[str, str], str | None]:
        env = dict(base)
        secrets = self.secrets()
        for layer in layers:
            env.update(layer.variables)
            for var, ref in layer.secret_variables.items():
                if ref not in secrets:
                    return env, (
                        f"Failed to access secret version {ref} for environment variable {var}: "
                        "not found (the emulator resolves secrets set with POST /v1/secrets)."
                    )
                env[var] = secrets[ref]
            if layer.encrypted_variables.cipher_text:
                return env, "encrypted_variables (Cloud KMS) are not supported by the emulator."
        return env, None

    def _pump(
        self, record: JobRecord, task_id: str, proc: subprocess.Popen[bytes], limit: float | None
    ) -> int | None:
        """Turn the process's output into log entries line by line; its exit code, or None if stopped."""
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        buffers = {proc.stdout.fileno(): b"", proc.stderr.fileno(): b""}
        severity = {proc.stdout.fileno(): INFO, proc.stderr.fileno(): ERROR}
        for stream in (proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream.fileno(), selectors.EVENT_READ)
        timed_out = False
        try:
            while sel.get_map():
                if record.stopped:
                    _kill(proc)
                    return None
                wait = 0.1
                if limit is not None:
                    left = limit - time.monotonic()
                    if left <= 0:
                        timed_out = True
                        _kill(proc)
                        break
                    wait = min(wait, left)
                for key, _ in sel.select(timeout=wait):
                    fd = int(key.fd)
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(fd)
                        if buffers[fd]:
                            self._line(record, task_id, buffers[fd].decode("utf-8", "replace"), severity[fd])
                            buffers[fd] = b""
                        continue
                    data = buffers[fd] + chunk
                    *lines, rest = data.split(b"\n")
                    if len(rest) > _MAX_LINE:
                        lines.append(rest)
                        rest = b""
                    buffers[fd] = rest
                    for line in lines:
                        self._line(
                            record, task_id, line.rstrip(b"\r").decode("utf-8", "replace"), severity[fd]
                        )
            code = proc.wait()
        finally:
            sel.close()
            proc.stdout.close()
            proc.stderr.close()
            with self.lock:
                if record.run is not None:
                    record.run.processes.discard(proc)
        if record.stopped:
            return None
        if timed_out:
            proc.wait()
            return TIMED_OUT
        return code if code >= 0 else 128 - code

    def _line(self, record: JobRecord, task_id: str, text: str, severity: int) -> None:
        record.log(self.logs, TASK_LOGS, text, severity=severity, ts=now_ns(), task_id=task_id)

    def _agent(self, record: JobRecord, task_id: str, text: str, severity: int) -> None:
        record.log(self.logs, AGENT_LOGS, text, severity=severity, ts=now_ns(), task_id=task_id)


def _argv(runnable: Any) -> list[str]:
    if runnable.HasField("container"):
        container = runnable.container
        commands = list(container.commands)
        return [container.entrypoint, *commands] if container.entrypoint else commands
    script = runnable.script
    if script.text:
        return ["/bin/sh", "-c", script.text]
    if script.path:
        return ["/bin/sh", script.path]
    return []


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
