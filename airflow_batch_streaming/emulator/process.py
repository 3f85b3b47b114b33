"""The emulator in a child process, so that its CPU is not charged to a benchmark's process."""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import IO

from airflow_batch_streaming.emulator.admin import AdminClient


class EmulatorProcess(AdminClient):
    """`python -m airflow_batch_streaming emulator ...`, started and stopped like `Emulator`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_port: int = 0,
        run_commands: bool = False,
        disabled_apis: Iterable[str] = (),
        *,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        startup_timeout: float = 60.0,
        stderr: int | IO[bytes] | None = subprocess.DEVNULL,
    ) -> None:
        self.host = host
        self.port = port
        self.admin_port = admin_port
        self.argv = [python, "-m", "airflow_batch_streaming", "emulator", "--host", host, "--port", str(port)]
        self.argv += ["--admin-port", str(admin_port)]
        if run_commands:
            self.argv.append("--run-commands")
        disabled = list(disabled_apis)
        if disabled:
            self.argv += ["--disable-api", *disabled]
        self.argv += list(extra_args)
        self.startup_timeout = startup_timeout
        self.stderr = stderr
        self.proc: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None

    def start(self) -> EmulatorProcess:
        proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.proc = proc
        lines: queue.Queue[str | None] = queue.Queue()

        def drain(stream: IO[str]) -> None:
            for line in stream:
                lines.put(line)
            lines.put(None)

        assert proc.stdout is not None
        self._drain = threading.Thread(target=drain, args=(proc.stdout,), daemon=True)
        self._drain.start()
        found: dict[str, int] = {}
        while len(found) < 2:
            try:
                line = lines.get(timeout=self.startup_timeout)
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"emulator did not start within {self.startup_timeout}s") from None
            if line is None:
                code = proc.wait()
                raise RuntimeError(f"emulator exited with code {code} before listening")
            for prefix, key in (("listening on ", "port"), ("admin on ", "admin_port")):
                if line.startswith(prefix):
                    found[key] = int(line.strip().rsplit(":", 1)[1])
        self.port, self.admin_port = found["port"], found["admin_port"]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            with contextlib.suppress(OSError):
                proc.stdout.close()
        self.proc = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
