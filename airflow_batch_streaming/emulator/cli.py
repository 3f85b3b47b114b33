"""`airflow-batch-streaming emulator`: serve until SIGINT or SIGTERM.

The first two lines on stdout are `listening on HOST:PORT` and `admin on HOST:PORT`, so a
parent process (or a person) learns the ports chosen for `--port 0` / `--admin-port 0`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from airflow_batch_streaming.emulator.jobs import Timings


def _parser() -> argparse.ArgumentParser:
    defaults = Timings()
    p = argparse.ArgumentParser(
        prog="airflow-batch-streaming emulator",
        description="Local Google Cloud Batch, Cloud Logging and Service Usage (gRPC) with a JSON admin API.",
        epilog="Job outcomes without --run-commands come from job labels: see "
        "airflow_batch_streaming/emulator/README.md. Clients use it when "
        "BATCH_STREAMING_EMULATOR_HOST=HOST:PORT is set.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="gRPC port (default 0: a free port)")
    p.add_argument("--admin-port", type=int, default=0, help="admin HTTP port (default 0: a free port)")
    p.add_argument("--run-commands", action="store_true", help="run each task's commands as local processes")
    p.add_argument(
        "--disable-api",
        action="extend",
        nargs="+",
        default=[],
        metavar="SERVICE",
        help="services GetService reports DISABLED (e.g. containerfilesystem.googleapis.com)",
    )
    p.add_argument("--max-workers", type=int, default=32, help="gRPC worker threads (default 32)")
    p.add_argument("--max-processes", type=int, default=None, help="tasks run at once with --run-commands")
    for phase in ("queue", "schedule", "run", "cancel", "delete"):
        p.add_argument(
            f"--{phase}-seconds",
            type=float,
            default=getattr(defaults, phase),
            help=f"default {phase} phase duration (default {getattr(defaults, phase)})",
        )
    p.add_argument(
        "--list-lag-seconds",
        type=float,
        default=defaults.list_lag,
        help="seconds before ListJobs shows a new job and ListTasks a scheduled job's tasks, as "
        "Google's eventually consistent lists do (default 0)",
    )
    p.add_argument(
        "--pubsub-topic",
        action="append",
        default=[],
        metavar="projects/P/topics/T",
        help="create this Pub/Sub topic at start (repeatable), e.g. for notification_topic",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for rate-based faults")
    p.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    from airflow_batch_streaming.emulator.server import Emulator

    emulator = Emulator(
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        run_commands=args.run_commands,
        disabled_apis=args.disable_api,
        timings=Timings(
            queue=args.queue_seconds,
            schedule=args.schedule_seconds,
            run=args.run_seconds,
            cancel=args.cancel_seconds,
            delete=args.delete_seconds,
            list_lag=args.list_lag_seconds,
        ),
        max_workers=args.max_workers,
        max_processes=args.max_processes,
        seed=args.seed,
    )
    from airflow_batch_streaming.emulator.common import ApiError
    from airflow_batch_streaming.emulator.pubsub import Topic

    try:
        for topic in args.pubsub_topic:
            emulator.state.pubsub.create_topic(Topic(name=topic))
    except ApiError as exc:
        sys.stderr.write(f"airflow-batch-streaming emulator: --pubsub-topic: {exc.message}\n")
        return 2
    try:
        emulator.start()
    except OSError as exc:
        sys.stderr.write(f"airflow-batch-streaming emulator: {exc}\n")
        return 1
    sys.stdout.write(f"listening on {emulator.target}\nadmin on {emulator.host}:{emulator.admin_port}\n")
    sys.stdout.flush()

    def stop(signum: int, frame: FrameType | None) -> None:
        emulator.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not emulator.wait(timeout=0.5):
        pass
    return 0
