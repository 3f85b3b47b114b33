"""Fleet: thousands of concurrent waits in one asyncio loop, ours against the Google provider's.

For each fleet size N and each side, against the package's Batch emulator (a child process):

1. a fresh child process imports the same modules for both sides (Airflow, grpc,
   `google.cloud.batch_v1`, both triggers, both hooks), records its CPU and RSS, and says
   it is ready;
2. the parent creates N jobs (one CreateJob each) that queue 1-5 s, schedule 1 s and run
   20-60 s (spread evenly, shuffled), so they finish at spread-out times;
3. the child runs N triggers concurrently in one `asyncio.run()` loop, as the triggerer
   does, and notes when each yields its event:
   - ours: `BatchJobStateTrigger(job_name)` (one shared `JobWatcher` per loop);
   - provider: `CloudBatchJobFinishedTrigger(job_name, project_id, location,
     polling_period_seconds=10)`, with one change so it can reach the emulator:
     `CloudBatchAsyncHook.get_conn()` builds its client with
     `airflow_batch_streaming.hooks.clients.batch_async_client()` (insecure channel,
     anonymous credentials) instead of `get_credentials()`. Still one hook, one client and
     one channel per trigger, as the provider does; its connection lookup in
     `GoogleBaseHook.__init__` is kept (from `AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT`);
4. the parent samples the emulator's stats every few seconds and afterwards reads each
   job's real finish time (its SUCCEEDED status event).

Measured: Batch reads (GetJob, ListJobs, GetTask, ListTasks calls the emulator served)
per minute over the wait, and the peak of the emulator's sliding-minute read count; the
child's CPU seconds and peak RSS (`getrusage`), beyond what it had after imports; gRPC
channels the child opened (`grpc.aio.*_channel` calls) and the connections the emulator
saw; the delay from each job's finish to its trigger's event.

The emulator enforces Batch's regional read quota (15,000/min) for our side. For the
provider's side the quota is switched off, so the benchmark measures its demand instead of
failing: on real Batch, 5,000 waits polling every 10 s (30,000 reads/min) would be throttled.

Sides: "ours" (polling, paced by triggers/pacing.py), "push" (ours with `notification_topic`:
the jobs notify a Pub/Sub topic on the emulator, the watcher listens) and "provider".

With `--history N` the emulator holds N jobs that finished two days ago in the same region
before each side starts (Batch keeps jobs 60 days): the watcher's listings must cost the same
reads per sweep with them as without (the section is then "fleet, with history").

Run: .venv/bin/python benchmarks/fleet.py [--jobs 1 10 40 300 1000 5000] [--quick]
     [--sides ours push provider] [--history 20000] [--note "..."]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, versions, write_section

PROJECT = "fleet-bench"
REGION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/repo/app:1.0"
SIDES = ("ours", "push", "provider")
#: The topic the push side's jobs notify and its watcher listens on.
TOPIC = f"projects/{PROJECT}/topics/fleet-bench"
READ_METHODS = ("GetJob", "ListJobs", "GetTask", "ListTasks")
PROVIDER_POLL_SECONDS = 10.0
SAMPLE_SECONDS = 5.0
#: Batch's regional read quota, which the emulator enforces by default.
BATCH_READ_QUOTA = 15_000


@dataclass(frozen=True)
class Profile:
    """How long the jobs take: queue, schedule and run phases in seconds (ranges spread evenly)."""

    name: str
    queue: tuple[float, float]
    schedule: float
    run: tuple[float, float]

    def describe(self) -> str:
        return (
            f"queue {self.queue[0]:g}-{self.queue[1]:g} s, schedule {self.schedule:g} s, "
            f"run {self.run[0]:g}-{self.run[1]:g} s"
        )


FULL = Profile("full", (1.0, 5.0), 1.0, (20.0, 60.0))
QUICK = Profile("quick", (1.0, 3.0), 1.0, (20.0, 40.0))


# --------------------------------------------------------------------------- the child


def _rusage() -> dict[str, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rss_now = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        rss_now = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return {"cpu": ru.ru_utime + ru.ru_stime, "maxrss_mib": ru.ru_maxrss / 1024, "rss_mib": rss_now}


def _emit(path: Path, payload: dict[str, Any]) -> None:
    """Results go to files: the child's stdout and stderr carry the triggers' logs."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)


def _count_channels(shared_connections: bool) -> dict[str, int]:
    """Count every grpc.aio channel the process opens from now on.

    Unless `shared_connections`, each channel also gets its own subchannel pool, hence its
    own TCP connection, as a client with its own TLS credentials has against Google
    (insecure channels with the same arguments would otherwise share one connection).
    """
    import grpc.aio

    counts = {"insecure": 0, "secure": 0}

    def wrap(kind: str, make: Any) -> Any:
        def channel(target: str, *args: Any, **kwargs: Any) -> Any:
            counts[kind] += 1
            if not shared_connections:
                options = list(kwargs.get("options") or [])
                kwargs["options"] = [*options, ("grpc.use_local_subchannel_pool", 1)]
            return make(target, *args, **kwargs)

        return channel

    grpc.aio.insecure_channel = wrap("insecure", grpc.aio.insecure_channel)
    grpc.aio.secure_channel = wrap("secure", grpc.aio.secure_channel)
    return counts


def _patch_provider_hook() -> None:
    """The provider's async hook, with its client pointed at the emulator (nothing else changed)."""
    from airflow.providers.google.cloud.hooks.cloud_batch import CloudBatchAsyncHook
    from airflow.providers.google.common.consts import CLIENT_INFO

    from airflow_batch_streaming.hooks.clients import batch_async_client

    def get_conn(self: CloudBatchAsyncHook) -> Any:
        if self._client is None:
            self._client = batch_async_client(client_info=CLIENT_INFO)
        return self._client

    CloudBatchAsyncHook.get_conn = get_conn  # type: ignore[method-assign]


def _make_trigger(side: str, name: str) -> Any:
    if side in ("ours", "push"):
        from airflow_batch_streaming.triggers import BatchJobStateTrigger

        return BatchJobStateTrigger(name, notification_topic=TOPIC if side == "push" else None)
    from airflow.providers.google.cloud.triggers.cloud_batch import CloudBatchJobFinishedTrigger

    return CloudBatchJobFinishedTrigger(
        job_name=name,
        project_id=PROJECT,
        location=REGION,
        gcp_conn_id="google_cloud_default",
        polling_period_seconds=PROVIDER_POLL_SECONDS,
        timeout=24 * 3600,
    )


async def _wait_one(trigger: Any) -> tuple[float, str, str]:
    """Run a trigger until its first event, as the triggerer does; when, which status, its message."""
    agen = trigger.run()
    try:
        event = await agen.__anext__()
    finally:
        await agen.aclose()
    status = str(event.payload.get("status"))
    message = "" if status == "success" else str(event.payload.get("message"))[:300]
    return time.time(), status, message


async def _fleet(side: str, names: list[str], deadline: float) -> dict[str, Any]:
    tasks = {asyncio.create_task(_wait_one(_make_trigger(side, name))): name for name in names}
    done, pending = await asyncio.wait(tasks, timeout=max(deadline - time.time(), 1.0))
    for task in pending:
        task.cancel()
    events: dict[str, tuple[float, str, str] | None] = {}
    errors: dict[str, str] = {}
    for task, name in tasks.items():
        if task in done and task.exception() is None:
            events[name] = task.result()
        else:
            events[name] = None
            if task in done:
                errors[name] = repr(task.exception())
    watcher_stats: list[dict[str, int]] = []
    budget: dict[str, float] = {}
    if side in ("ours", "push"):
        from airflow_batch_streaming.triggers import watcher

        watcher_stats = [
            {**w.stats, **{f"listener_{k}": v for lis in w.listeners.values() for k, v in lis.stats.items()}}
            for w in watcher.watchers()
        ]
        rb = watcher.read_budget()
        budget = {"per_minute": rb.per_minute, "granted": rb.granted, "waits": rb.waits}
    if pending:
        await asyncio.wait(pending, timeout=10)
    return {"events": events, "errors": errors, "watchers": watcher_stats, "budget": budget}


def child(side: str, out: Path, *, shared_connections: bool = False) -> int:
    """`fleet.py --child SIDE --child-out PATH`: imports, writes PATH.ready, reads the job list's
    path on stdin, runs the fleet, writes PATH.result."""
    # The same imports on both sides, so the baseline is the same and the figures after it
    # are what each design costs.
    import grpc  # noqa: F401
    from airflow.providers.google.cloud.hooks.cloud_batch import CloudBatchAsyncHook  # noqa: F401
    from airflow.providers.google.cloud.triggers.cloud_batch import CloudBatchJobFinishedTrigger  # noqa: F401
    from google.cloud import batch_v1  # noqa: F401

    from airflow_batch_streaming.hooks.batch import BatchStreamingHook  # noqa: F401
    from airflow_batch_streaming.triggers import BatchJobStateTrigger  # noqa: F401
    from airflow_batch_streaming.triggers import watcher as _watcher  # noqa: F401

    if side == "provider":
        _patch_provider_hook()
    channels = _count_channels(shared_connections)
    ready = _rusage()
    _emit(out.with_suffix(".ready"), {"ready": ready})
    line = sys.stdin.readline().strip()
    if not line:
        return 1
    job = json.loads(Path(line).read_text())
    names: list[str] = job["names"]
    start = _rusage()
    t0 = time.time()
    result = asyncio.run(_fleet(side, names, float(job["deadline"])))
    end = _rusage()
    _emit(
        out.with_suffix(".result"),
        {
            "side": side,
            "started": t0,
            "ended": time.time(),
            "ready": ready,
            "start": start,
            "end": end,
            "channels": channels,
            **result,
        },
    )
    return 0


# --------------------------------------------------------------------------- the emulator

#: gRPC's server takes at most 1,000 calls waiting for a handler thread (3,000 hard limit)
#: and cancels the others (the client sees CANCELLED). The provider's 5,000 triggers each
#: send a GetJob at the same moment every 10 s, which that limit would turn into error
#: events; the benchmark raises it so that the figures are the provider's demand, not the
#: emulator's capacity (`--emulator-default-limits` keeps it).
EMULATOR_SERVER_OPTIONS = [
    ("grpc.server.max_pending_requests", 100_000),
    ("grpc.server.max_pending_requests_hard_limit", 100_000),
]


def emulator_child(argv: list[str]) -> int:
    """`fleet.py --emulator-child ARGS`: the package's emulator CLI with EMULATOR_SERVER_OPTIONS."""
    import grpc

    make_server = grpc.server

    def server(*args: Any, **kwargs: Any) -> Any:
        kwargs["options"] = [*(kwargs.get("options") or []), *EMULATOR_SERVER_OPTIONS]
        return make_server(*args, **kwargs)

    grpc.server = server
    from airflow_batch_streaming.emulator.cli import main

    return main(argv)


def make_emulator(*, default_limits: bool) -> Any:
    """The emulator child process, not started yet (use it as a context manager)."""
    from airflow_batch_streaming.emulator import EmulatorProcess

    emu = EmulatorProcess()
    if not default_limits:
        # `python -m airflow_batch_streaming emulator OPTIONS` -> `python fleet.py --emulator-child OPTIONS`
        emu.argv = [emu.argv[0], str(Path(__file__).resolve()), "--emulator-child", *emu.argv[4:]]
    return emu


# --------------------------------------------------------------------------- the parent


@dataclass
class SideResult:
    side: str
    jobs: int
    created_seconds: float
    wait_seconds: float
    events: int
    ok_events: int
    statuses: dict[str, int]
    errors: list[str]
    reads: int
    reads_by_method: dict[str, int]
    reads_per_minute: float
    peak_reads_minute: int
    quota_errors: int
    cpu_seconds: float
    cpu_import_seconds: float
    ready_rss_mib: float
    peak_rss_mib: float
    channels: int
    connections: int
    delay_median: float
    delay_p95: float
    delay_max: float
    emulator_cpu_seconds: float
    log_bytes: int
    watchers: list[dict[str, int]] = field(default_factory=list)
    budget: dict[str, float] = field(default_factory=dict)
    reads_series: list[tuple[float, int]] = field(default_factory=list)

    @property
    def pages_per_sweep(self) -> float:
        sweeps = sum(w.get("sweeps", 0) for w in self.watchers)
        return sum(w.get("list_jobs", 0) for w in self.watchers) / sweeps if sweeps else float("nan")

    @property
    def log_kib(self) -> float:
        return self.log_bytes / 1024

    @property
    def rss_growth_mib(self) -> float:
        return max(self.peak_rss_mib - self.ready_rss_mib, 0.0)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process (seconds), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _await_file(path: Path, proc: subprocess.Popen[str], timeout: float) -> dict[str, Any] | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            result: dict[str, Any] = json.loads(path.read_text())
            return result
        if proc.poll() is not None:
            return json.loads(path.read_text()) if path.exists() else None
        time.sleep(0.2)
    return None


def _plan(n: int, profile: Profile, seed: int) -> list[dict[str, str]]:
    """Labels for n jobs: queue and run times spread evenly over their ranges, shuffled."""
    rng = random.Random(seed)
    runs = [profile.run[0] + (profile.run[1] - profile.run[0]) * i / max(n - 1, 1) for i in range(n)]
    queues = [profile.queue[0] + (profile.queue[1] - profile.queue[0]) * i / max(n - 1, 1) for i in range(n)]
    rng.shuffle(runs)
    rng.shuffle(queues)
    return [
        {
            "emulator-queue-ms": str(round(q * 1000)),
            "emulator-schedule-ms": str(round(profile.schedule * 1000)),
            "emulator-run-ms": str(round(r * 1000)),
            "benchmark": "fleet",
        }
        for q, r in zip(queues, runs, strict=True)
    ]


async def _create_jobs(
    prefix: str, labels: list[dict[str, str]], concurrency: int = 64, *, notify: bool = False
) -> list[str]:
    from google.cloud import batch_v1

    from airflow_batch_streaming.hooks.clients import batch_async_client

    client = batch_async_client()
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, job_labels: dict[str, str]) -> str:
        job = batch_v1.Job(
            task_groups=[
                batch_v1.TaskGroup(
                    task_count=1,
                    task_spec=batch_v1.TaskSpec(
                        runnables=[
                            batch_v1.Runnable(
                                container=batch_v1.Runnable.Container(
                                    image_uri=IMAGE, commands=["true"], enable_image_streaming=True
                                )
                            )
                        ]
                    ),
                )
            ],
            labels=job_labels,
            notifications=[
                batch_v1.JobNotification(pubsub_topic=TOPIC, message={"type_": "JOB_STATE_CHANGED"})
            ]
            if notify
            else [],
        )
        async with sem:
            created = await client.create_job(parent=PARENT, job_id=f"{prefix}-{i:05d}", job=job)
        return str(created.name)

    try:
        return list(await asyncio.gather(*(one(i, lab) for i, lab in enumerate(labels))))
    finally:
        await client.transport.close()


def _finish_times(names: Sequence[str]) -> dict[str, float]:
    """Each job's SUCCEEDED (or other terminal) time, from its status events."""
    from google.cloud import batch_v1

    from airflow_batch_streaming.hooks.clients import batch_client

    wanted = set(names)
    client = batch_client()
    finished: dict[str, float] = {}
    for job in client.list_jobs(request=batch_v1.ListJobsRequest(parent=PARENT, page_size=1000)):
        if job.name not in wanted:
            continue
        pb = batch_v1.Job.pb(job)
        for event in pb.status.status_events:
            if " to SUCCEEDED" in event.description or " to FAILED" in event.description:
                finished[job.name] = event.event_time.seconds + event.event_time.nanos / 1e9
    client.transport.close()
    return finished


@contextlib.contextmanager
def _sampler(emu: Any, series: list[tuple[float, int]]) -> Iterator[None]:
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(SAMPLE_SECONDS):
            with contextlib.suppress(Exception):
                series.append((time.time(), int(emu.stats()["reads"].get(REGION, 0))))

    thread = threading.Thread(target=run, name="fleet-sampler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def run_side(
    emu: Any,
    side: str,
    n: int,
    *,
    profile: Profile,
    seed: int,
    workdir: Path,
    shared_connections: bool,
    history: int = 0,
) -> SideResult:
    emu.reset()
    if history:
        emu.history(PARENT, history)  # finished two days ago: before any createTime bound
    if side == "provider":
        emu.quota(reads_per_minute=None)  # measure its demand; real Batch would throttle it
    if side == "push":
        from google.cloud import pubsub_v1

        os.environ["PUBSUB_EMULATOR_HOST"] = emu.target
        pubsub_v1.PublisherClient().create_topic(name=TOPIC)
    log_path = workdir / f"{side}-{n}.log"
    env = {
        **os.environ,
        "BATCH_STREAMING_EMULATOR_HOST": emu.target,
        "PUBSUB_EMULATOR_HOST": emu.target,
        "AIRFLOW_HOME": str(workdir / "airflow-home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps({"conn_type": "google_cloud_platform"}),
        "NO_GCE_CHECK": "True",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("BATCH_STREAMING_READ_BUDGET", None)
    out_path = workdir / f"{side}-{n}.out"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", side, "--child-out", str(out_path)]
            + (["--shared-connections"] if shared_connections else []),
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
    assert proc.stdin is not None
    if _await_file(out_path.with_suffix(".ready"), proc, 300) is None:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{side} child did not start; see {log_path}:\n{log_path.read_text()[-3000:]}")

    labels = _plan(n, profile, seed)
    t_create = time.perf_counter()
    names = asyncio.run(_create_jobs(f"fleet-{side[:4]}-{n}", labels, notify=side == "push"))
    created_seconds = time.perf_counter() - t_create
    before = emu.stats()
    emu_cpu0 = _proc_cpu(emu.proc.pid)
    longest = profile.queue[1] + profile.schedule + profile.run[1]
    deadline = time.time() + longest + 300.0
    jobs_file = workdir / f"{side}-{n}.json"
    jobs_file.write_text(json.dumps({"names": names, "deadline": deadline}))
    series: list[tuple[float, int]] = []
    print(
        f"[{side} x {n}] {n} jobs created in {created_seconds:.1f} s; waiting ...",
        file=sys.stderr,
        flush=True,
    )
    with _sampler(emu, series):
        proc.stdin.write(f"{jobs_file}\n")
        proc.stdin.flush()
        try:
            proc.wait(timeout=deadline - time.time() + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    after = emu.stats()
    emu_cpu = _proc_cpu(emu.proc.pid) - emu_cpu0
    out = _await_file(out_path.with_suffix(".result"), proc, 5)
    if proc.returncode != 0 or out is None:
        raise RuntimeError(
            f"{side} child failed (exit {proc.returncode}); see {log_path}:\n{log_path.read_text()[-3000:]}"
        )
    finished = _finish_times(names)

    events: dict[str, list[Any] | None] = out["events"]
    # Delays of the events that report the job's end; an error event is not one.
    delays = [
        ev[0] - finished[name]
        for name, ev in events.items()
        if ev is not None and ev[1] == "success" and name in finished
    ]
    statuses: dict[str, int] = {}
    messages: dict[str, int] = {}
    for ev in events.values():
        key = "missing" if ev is None else str(ev[1])
        statuses[key] = statuses.get(key, 0) + 1
        if ev is not None and ev[2]:
            messages[ev[2]] = messages.get(ev[2], 0) + 1
    last_event = max((ev[0] for ev in events.values() if ev is not None), default=out["ended"])
    wait_seconds = max(last_event - out["started"], 1e-9)
    reads_by_method = {
        m: after["calls"].get(m, 0) - before["calls"].get(m, 0)
        for m in READ_METHODS
        if after["calls"].get(m, 0) - before["calls"].get(m, 0)
    }
    reads = sum(reads_by_method.values())
    errors = [f"{name}: {err}" for name, err in list(out["errors"].items())[:5]]
    errors += [f"{count} x {msg!r}" for msg, count in sorted(messages.items(), key=lambda kv: -kv[1])[:5]]
    return SideResult(
        side=side,
        jobs=n,
        created_seconds=created_seconds,
        wait_seconds=wait_seconds,
        events=sum(1 for ev in events.values() if ev is not None),
        ok_events=statuses.get("success", 0),
        statuses=statuses,
        errors=errors,
        reads=reads,
        reads_by_method=reads_by_method,
        reads_per_minute=reads / (wait_seconds / 60.0),
        peak_reads_minute=max((v for _, v in series), default=0),
        quota_errors=int(after["errors"].get("RESOURCE_EXHAUSTED", 0)),
        cpu_seconds=out["end"]["cpu"] - out["start"]["cpu"],
        cpu_import_seconds=out["ready"]["cpu"],
        ready_rss_mib=out["ready"]["maxrss_mib"],
        peak_rss_mib=out["end"]["maxrss_mib"],
        channels=sum(out["channels"].values()),
        connections=int(after["connections"]) - int(before["connections"]),
        delay_median=statistics.median(delays) if delays else float("nan"),
        delay_p95=_percentile(delays, 0.95),
        delay_max=max(delays, default=float("nan")),
        emulator_cpu_seconds=emu_cpu,
        log_bytes=log_path.stat().st_size,
        watchers=out["watchers"],
        budget=out["budget"],
        reads_series=[(round(t - out["started"], 1), v) for t, v in series],
    )


# --------------------------------------------------------------------------- report


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def _cells(sides: list[SideResult | None], fmt: str, attr: str) -> list[str]:
    return [fmt.format(getattr(r, attr)) if r is not None else "-" for r in sides]


ROWS = [
    ("success events (one per job expected)", "{:,}", "ok_events", False),
    ("Batch reads in all", "{:,}", "reads", True),
    ("Batch reads per minute (mean over the wait)", "{:,.0f}", "reads_per_minute", True),
    ("Batch reads, peak sliding minute", "{:,}", "peak_reads_minute", True),
    ("finish-to-event delay, median (s)", "{:.2f}", "delay_median", True),
    ("finish-to-event delay, p95 (s)", "{:.2f}", "delay_p95", True),
    ("finish-to-event delay, max (s)", "{:.2f}", "delay_max", True),
    ("CPU seconds during the wait", "{:.1f}", "cpu_seconds", True),
    ("peak RSS growth beyond the import baseline (MiB)", "{:.0f}", "rss_growth_mib", True),
    ("gRPC channels opened", "{:,}", "channels", True),
    ("connections the emulator saw", "{:,}", "connections", True),
    ("emulator CPU seconds serving the waits", "{:.1f}", "emulator_cpu_seconds", True),
    ("wall time from the first wait to the last event (s)", "{:.0f}", "wait_seconds", True),
]


def summary_table(results: dict[int, dict[str, SideResult]]) -> str:
    """One line per fleet size: reads and delays of the three sides (for the README)."""
    lines = [
        "| waits | reads: polling / push / provider | median delay (s): polling / push / provider "
        "| p95 delay (s): polling / push / provider | max delay (s): polling / push / provider "
        "| CPU s: polling / push / provider | RSS growth MiB: polling / push / provider "
        "| channels: polling / push / provider | reads ÷ provider's: polling / push |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, by_side in sorted(results.items()):
        sides = [by_side.get(side) for side in SIDES]
        cols = [
            " / ".join(_cells(sides, fmt, attr))
            for fmt, attr in (
                ("{:,}", "reads"),
                ("{:.2f}", "delay_median"),
                ("{:.2f}", "delay_p95"),
                ("{:.2f}", "delay_max"),
                ("{:.1f}", "cpu_seconds"),
                ("{:.0f}", "rss_growth_mib"),
                ("{:,}", "channels"),
            )
        ]
        prov = by_side.get("provider")
        ratios = " / ".join(
            _ratio(r.reads, prov.reads) if r is not None and prov is not None else "-" for r in sides[:2]
        )
        lines.append(f"| {n:,} | " + " | ".join(cols) + f" | {ratios} |")
    return "\n".join(lines)


def render(
    results: dict[int, dict[str, SideResult]],
    profile: Profile,
    budget: float,
    *,
    history: int = 0,
    load: str = "",
    note: str = "",
) -> str:
    lines = [
        f"Jobs: one task each; {profile.describe()} (spread evenly, shuffled); one CreateJob per job "
        "before the waits start. Each side runs in a fresh child process with the same imports; "
        "CPU and RSS growth are counted from the end of the imports. "
        f"Provider: `CloudBatchJobFinishedTrigger`, `polling_period_seconds={PROVIDER_POLL_SECONDS:g}`, "
        "its hook's `get_conn()` pointed at the emulator (one client and channel per trigger, as "
        "it does), emulator read quota off for it (its demand, not what real Batch would allow). "
        f"Polling: `BatchJobStateTrigger` defaults (pacing, read budget {budget:,.0f}/min), emulator quota "
        f"{BATCH_READ_QUOTA:,}/min as on Batch. Push: the same with `notification_topic` (the jobs "
        "notify the topic JOB_STATE_CHANGED, the emulator publishes each state change as it happens, "
        "the watcher holds one subscription and stream; its channels include Pub/Sub's). "
        "Reads = Batch read calls (GetJob, ListJobs, GetTask, ListTasks) the emulator served; Pub/Sub "
        "calls are not Batch reads. Delay = trigger event time - the job's SUCCEEDED status event time. "
        "Channels = `grpc.aio` channels made in the child; each gets its own TCP connection, as "
        "clients with their own TLS credentials have against Google. "
        f"{versions('apache-airflow', 'apache-airflow-providers-google', 'google-cloud-batch', 'google-cloud-pubsub', 'grpcio')}.",
        "",
        (
            f"History: {history:,} jobs that finished two days ago are in the region before each side "
            "starts (emulator `POST /v1/history`); compare ListJobs pages per sweep with the section "
            "without them."
            if history
            else 'History: none (see the section "fleet, with history" for 20,000 finished jobs).'
        ),
        "",
        f"Machine load (1-minute load average, 2 cores) at the start and end of the run: {load}."
        + (f" {note}" if note else ""),
        "",
        "Summary:",
        "",
        summary_table(results),
        "",
    ]
    for n, by_side in sorted(results.items()):
        ours, push, prov = (by_side.get(side) for side in SIDES)
        lines += [f"### {n:,} concurrent waits", ""]
        lines += [
            "| measure | polling | push | provider | polling/provider | push/provider |",
            "|---|---|---|---|---|---|",
        ]
        for label, fmt, attr, ratio in ROWS:
            cells = _cells([ours, push, prov], fmt, attr)
            ratios = [
                _ratio(getattr(r, attr), getattr(prov, attr)) if ratio and r and prov else "-"
                for r in (ours, push)
            ]
            lines.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
        for side in (ours, push, prov):
            if side is None:
                continue
            detail = f"- {side.side}: statuses {side.statuses}; reads by method {side.reads_by_method}"
            if side.quota_errors:
                detail += f"; RESOURCE_EXHAUSTED answers: {side.quota_errors:,}"
            if side.errors:
                detail += f"; non-success events (count x message): {side.errors}"
            if side.watchers:
                detail += (
                    f"; ListJobs pages per sweep {side.pages_per_sweep:.2f}; watcher stats {side.watchers}; "
                    f"read budget {side.budget}"
                )
            lines.append(detail)
        if prov:
            lines.append("")
            verdicts = []
            if ours:
                verdicts.append(
                    f"polling: median and p95 delay at or below the provider's: {ours.delay_median:.2f} / "
                    f"{ours.delay_p95:.2f} s vs {prov.delay_median:.2f} / {prov.delay_p95:.2f} s -> "
                    f"{_verdict(ours.delay_median <= prov.delay_median and ours.delay_p95 <= prov.delay_p95)}; "
                    f"reads at most 1/10: {_ratio(ours.reads, prov.reads)} -> "
                    f"{_verdict(ours.reads <= prov.reads / 10)}"
                )
            if push:
                verdicts.append(
                    f"push: median delay at most 1 s: {push.delay_median:.2f} s -> "
                    f"{_verdict(push.delay_median <= 1.0)}; reads at most 1/100: "
                    f"{_ratio(push.reads, prov.reads)} -> {_verdict(push.reads <= prov.reads / 100)}"
                )
            lines.append(f"Targets at {n:,}: " + "; ".join(verdicts) + ".")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--jobs", type=int, nargs="+", default=None, help="fleet sizes (default 1 10 40 300 1000 5000)"
    )
    parser.add_argument(
        "--history", type=int, default=0, help="finished jobs seeded into the region before each side"
    )
    parser.add_argument("--note", default="", help="a sentence for the results (e.g. what else ran)")
    parser.add_argument(
        "--section", default=None, help='RESULTS.md section (default "fleet", or "fleet, with history")'
    )
    parser.add_argument("--quick", action="store_true", help="200 jobs running 20-40 s (a smoke run)")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument(
        "--shared-connections",
        action="store_true",
        help="let gRPC share one TCP connection between the provider's identical insecure channels "
        "(default: one connection per channel, as with TLS credentials against Google)",
    )
    parser.add_argument(
        "--emulator-default-limits",
        action="store_true",
        help="keep gRPC's default pending-call limit in the emulator (the provider at 5,000 then gets "
        "CANCELLED answers)",
    )
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--emulator-child"]:
        return emulator_child(sys.argv[2:])
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.child_out, shared_connections=args.shared_connections)

    profile = QUICK if args.quick else FULL
    sizes = args.jobs or ([200] if args.quick else [1, 10, 40, 300, 1000, 5000])
    load_start = os.getloadavg()[0]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(sizes) + 1024  # the provider opens a connection per trigger; the emulator inherits this
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))

    from airflow_batch_streaming.hooks.clients import EMULATOR_HOST_ENV

    results: dict[int, dict[str, SideResult]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp,
        make_emulator(default_limits=args.emulator_default_limits) as emu,
    ):
        os.environ[EMULATOR_HOST_ENV] = emu.target
        for n in sizes:
            for side in args.sides:
                res = run_side(
                    emu,
                    side,
                    n,
                    profile=profile,
                    seed=args.seed,
                    workdir=Path(tmp),
                    shared_connections=args.shared_connections,
                    history=args.history,
                )
                results.setdefault(n, {})[side] = res
                summary = {k: v for k, v in asdict(res).items() if k != "reads_series"}
                print(json.dumps(summary), file=sys.stderr, flush=True)
    budgets = [r.budget.get("per_minute", 0.0) for sizes_ in results.values() for r in sizes_.values()]
    load = f"{load_start:.2f} / {os.getloadavg()[0]:.2f}"
    body = render(
        results, profile, max(budgets, default=0.0) or 7500.0, history=args.history, load=load, note=args.note
    )
    command = ".venv/bin/python benchmarks/fleet.py"
    if args.quick:
        command += " --quick"
    if args.jobs:
        command += " --jobs " + " ".join(map(str, sizes))
    if list(args.sides) != list(SIDES):
        command += " --sides " + " ".join(args.sides)
    if args.shared_connections:
        command += " --shared-connections"
    if args.emulator_default_limits:
        command += " --emulator-default-limits"
    if args.history:
        command += f" --history {args.history}"
    if args.section:
        command += f" --section {json.dumps(args.section)}"
    if not (args.no_write or args.quick):  # a quick run is a smoke test: printed only
        write_section(args.section or ("fleet, with history" if args.history else "fleet"), body, command)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
