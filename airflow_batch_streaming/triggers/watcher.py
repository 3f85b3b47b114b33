"""One shared, quota-aware poller for every Batch job the triggers in a process wait on.

The triggerer runs thousands of triggers in one asyncio loop. If each polled on its own,
each would hold its own gRPC channel and spend its own reads, and 2,500 waiters polling
every 10 s would exhaust Batch's regional read quota (15,000/min, shared with everything
else in the project). Instead triggers call `await get_watcher(...).wait(job_name, ...)`:

- one `JobWatcher` per (event loop, connection, impersonation chain, endpoint), holding
  one hook and so one async client and one channel. grpc.aio channels belong to a loop,
  and `dag.test()` runs each trigger in a fresh `asyncio.run()` loop, hence the loop in
  the key; the client is made lazily inside that loop;
- one poll per job however many waiters it has (coalescing);
- adaptive intervals per job: 5 s while it is queued or scheduled and young, growing to
  60 s as a running job ages past 10 minutes, ±20% jitter;
- a process-wide read budget (`[batch_streaming] read_budget_per_minute` or env
  `BATCH_STREAMING_READ_BUDGET`, default 7,500 = half the regional quota): a token
  bucket that delays polls rather than exceed it;
- when 20+ jobs of one project+region are watched, one ListJobs sweep of the region's
  *active* jobs refreshes them all; watched jobs missing from it are looked up in one
  listing of the jobs that ended lately (`update_time>=` the last time they were seen
  active, minus a margin), and any still missing are read with GetJob, which tells a
  finished job from a deleted one. A sweep that costs more pages than it saves turns
  sweeping off for the region for a while; a filter the API refuses turns that listing
  off for good (GetJob is always the correct fallback).

Failures stay local. A failed read of a job is retried with the hook's one policy
(`BatchStreamingHook.retry_delay`, giving up after `give_up_after` seconds of failures);
RESOURCE_EXHAUSTED also pauses the other reads of the same project and region (the quota
is regional), and no other. A failed sweep turns sweeping off for its region for a while
and reads its jobs one by one at once (GetJob works when ListJobs does not). NOT_FOUND
means deleted; other errors end the wait with a message.

The watcher holds its hook (and so the connection's credentials) for at most
`hook_max_age` seconds: a connection refreshed in Airflow reaches a busy watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airflow_batch_streaming import status

if TYPE_CHECKING:
    from google.cloud.batch_v1 import Job

    from airflow_batch_streaming.hooks.batch import BatchStreamingHook

log = logging.getLogger(__name__)

READ_BUDGET_ENV = "BATCH_STREAMING_READ_BUDGET"
#: Half of Batch's regional read quota (15,000/min), leaving room for everything else.
DEFAULT_READ_BUDGET_PER_MINUTE = 7500.0
#: The sweep lists only jobs that can still change.
ACTIVE_FILTER = " OR ".join(
    f'status.state="{state}"'
    for state in (status.QUEUED, status.SCHEDULED, status.RUNNING, status.CANCELLATION_IN_PROGRESS)
)

#: Jobs that ended since a time: what turns a watched job missing from the active listing
#: into its final state without a GetJob each.
FINISHED_FILTER = (
    "("
    + " OR ".join(
        f'status.state="{state}"'
        for state in (status.SUCCEEDED, status.FAILED, status.CANCELLED, status.DELETION_IN_PROGRESS)
    )
    + ') AND update_time>="{since}"'
)

Outcome = Literal["state", "deleted", "timeout", "error"]


@dataclass(frozen=True)
class WatchResult:
    """How a wait ended.

    `outcome` is "state" (the job reached a stop state or a terminal one: see `state`),
    "deleted" (NOT_FOUND), "timeout" (the deadline passed; `state` is the last one seen)
    or "error" (`message` says why). `job` is the last `batch_v1.Job` read, if any.
    """

    outcome: Outcome
    job_name: str
    state: str | None = None
    job: Any = None
    message: str = ""


# --------------------------------------------------------------------------- read budget


class ReadBudget:
    """A thread-safe token bucket (GCRA) shared by every watcher of the process.

    `try_acquire()` takes a read if one is available and returns 0, or returns how long to
    wait for the next one; callers wait instead of exceeding the budget.
    """

    def __init__(self, per_minute: float, burst_seconds: float = 2.0) -> None:
        self._lock = threading.Lock()
        self._tat = 0.0
        self.per_minute = 0.0
        self.burst_seconds = burst_seconds
        self.granted = 0
        self.waits = 0
        self.set_rate(per_minute)

    def set_rate(self, per_minute: float) -> None:
        with self._lock:
            self.per_minute = max(float(per_minute), 1.0)
            self._interval = 60.0 / self.per_minute
            burst = max(self.burst_seconds * self.per_minute / 60.0, 1.0)
            self._tolerance = (burst - 1.0) * self._interval

    def try_acquire(self) -> float:
        with self._lock:
            now = time.monotonic()
            tat = max(self._tat, now)
            allowed_at = tat - self._tolerance
            if allowed_at > now:
                self.waits += 1
                return allowed_at - now
            self._tat = tat + self._interval
            self.granted += 1
            return 0.0

    async def acquire(self) -> None:
        while (wait := self.try_acquire()) > 0:
            await asyncio.sleep(wait)


def configured_read_budget() -> float:
    """Reads per minute: env `BATCH_STREAMING_READ_BUDGET`, else Airflow config, else 7,500."""
    raw: str | None = os.environ.get(READ_BUDGET_ENV) or None
    if raw is None:
        try:
            from airflow.configuration import conf

            raw = conf.get("batch_streaming", "read_budget_per_minute", fallback=None)
        except Exception:
            raw = None
    try:
        value = float(raw) if raw not in (None, "") else DEFAULT_READ_BUDGET_PER_MINUTE
    except ValueError:
        log.warning("Ignoring read budget %r: not a number", raw)
        value = DEFAULT_READ_BUDGET_PER_MINUTE
    return value if value > 0 else DEFAULT_READ_BUDGET_PER_MINUTE


_budget: ReadBudget | None = None
_budget_lock = threading.Lock()


def read_budget() -> ReadBudget:
    global _budget
    with _budget_lock:
        if _budget is None:
            _budget = ReadBudget(configured_read_budget())
        return _budget


def reset_read_budget(per_minute: float | None = None) -> ReadBudget:
    """Replace the process budget (tests; or after changing the configuration)."""
    global _budget
    with _budget_lock:
        _budget = ReadBudget(per_minute if per_minute is not None else configured_read_budget())
        return _budget


# --------------------------------------------------------------------------- watcher


@dataclass(eq=False)
class _Waiter:
    stop_states: frozenset[str]
    poll_interval: float | None
    future: asyncio.Future[WatchResult]
    observed: asyncio.Future[None]


@dataclass(eq=False)
class _Watched:
    name: str
    parent: str
    job_id: str
    waiters: set[_Waiter] = field(default_factory=set)
    next_at: float = 0.0
    version: int = 0
    in_flight: bool = False
    force_get: bool = False
    job: Any = None
    state: str | None = None
    entered_wall: float | None = None
    first_seen_wall: float = field(default_factory=time.time)
    errors: int = 0
    first_error_at: float | None = None
    last_listed_wall: float | None = None


def _state_name(pb_state: int) -> str:
    return status.STATES[pb_state] if 0 <= pb_state < len(status.STATES) else status.STATE_UNSPECIFIED


def _entered_wall(pb: Any, state: str) -> float | None:
    """Epoch seconds at which the job entered `state`, from its status events."""
    marker = f" to {state}"
    found: float | None = None
    for event in pb.status.status_events:
        if marker in event.description and event.event_time.seconds:
            found = event.event_time.seconds + event.event_time.nanos / 1e9
    if found is None and state in status.PENDING and pb.create_time.seconds:
        found = pb.create_time.seconds + pb.create_time.nanos / 1e9
    return found


class JobWatcher:
    """Waits on Batch jobs for every trigger of one event loop and connection. See the module doc."""

    # Knobs: class attributes, so a deployment (or a test) can subclass or patch them.
    fast_interval = 5.0
    pending_max_interval = 30.0
    running_min_interval = 10.0
    running_max_interval = 60.0
    young_seconds = 120.0
    ramp_seconds = 600.0
    jitter = 0.2
    max_in_flight = 64
    sweep_min_jobs = 20
    sweep_page_size = 1000
    sweep_min_interval = 5.0
    sweep_off_seconds = 300.0
    finished_margin = 300.0
    first_poll_grace = 30.0
    idle_close_after = 60.0
    hook_max_age = 600.0

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        endpoint: str | None = None,
        budget: ReadBudget | None = None,
    ) -> None:
        self._loop_ref = weakref.ref(loop)
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self.endpoint = endpoint
        self.budget = budget or read_budget()
        self.stats: Counter[str] = Counter()
        self._jobs: dict[str, _Watched] = {}
        self._by_parent: dict[str, set[_Watched]] = {}
        self._heap: list[tuple[float, int, int, _Watched]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._throttled_until: dict[str, float] = {}
        self._sweeping: set[str] = set()
        self._last_sweep: dict[str, float] = {}
        self._sweep_off_until: dict[str, float] = {}
        self._sweeps_disabled = False
        self._finished_sweeps_disabled = False
        self._hook: BatchStreamingHook | None = None
        self._hook_made = 0.0
        self._hook_lock = asyncio.Lock()
        self.closed = False

    # ------------------------------------------------------------------ public

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop_ref()

    @property
    def watched(self) -> int:
        return len(self._jobs)

    async def get_hook(self) -> BatchStreamingHook:
        """The watcher's hook, made in a thread (reading the connection may block) and
        replaced once `hook_max_age` old, so changed credentials are read again."""
        async with self._hook_lock:
            old = self._hook
            if old is not None and time.monotonic() - self._hook_made > self.hook_max_age:
                self._hook = None
                self._spawn(self._close_later(old))  # reads in flight finish on it
            if self._hook is None:
                from airflow_batch_streaming.hooks.batch import BatchStreamingHook

                self._hook = await asyncio.to_thread(
                    BatchStreamingHook,
                    gcp_conn_id=self.gcp_conn_id,
                    impersonation_chain=self.impersonation_chain,
                )
                self._hook_made = time.monotonic()
                self.stats["hooks"] += 1
            return self._hook

    @staticmethod
    async def _close_later(hook: BatchStreamingHook) -> None:
        with contextlib.suppress(Exception):
            await asyncio.sleep(hook.call_timeout)
            await hook.aclose()

    async def wait(
        self,
        job_name: str,
        *,
        stop_states: Collection[str] = status.TERMINAL,
        deadline: float | None = None,
        poll_interval: float | None = None,
    ) -> WatchResult:
        """Wait until the job is in one of `stop_states` (terminal states always stop).

        `deadline` is an absolute `time.time()`; once it passes the result is "timeout"
        (but only after at least one fresh read, so a job that finished while nobody was
        watching is reported as finished). `poll_interval` fixes the interval (seconds,
        still jittered) instead of the adaptive one. Cancelling the caller just stops
        waiting; the job is not touched.
        """
        project, region, job_id = status.parse_job_name(job_name)
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            raise RuntimeError("a JobWatcher is bound to the event loop it was made in; use get_watcher()")
        if self.closed:  # went idle and closed its channel since the caller got it
            return await get_watcher(self.gcp_conn_id, self.impersonation_chain).wait(
                job_name, stop_states=stop_states, deadline=deadline, poll_interval=poll_interval
            )
        self.stats["waits"] += 1
        stops = frozenset(stop_states) | status.TERMINAL
        now = time.monotonic()
        entry = self._jobs.get(job_name)
        if entry is None:
            entry = _Watched(job_name, f"projects/{project}/locations/{region}", job_id, next_at=now)
            self._jobs[job_name] = entry
            self._by_parent.setdefault(entry.parent, set()).add(entry)
            self._push(entry)
        else:
            self.stats["coalesced"] += 1
            if entry.state is not None and entry.state in stops:
                return WatchResult("state", job_name, entry.state, entry.job)
        waiter = _Waiter(stops, poll_interval, loop.create_future(), loop.create_future())
        if entry.job is not None:
            waiter.observed.set_result(None)  # the cached read is at most one interval old
        entry.waiters.add(waiter)
        if poll_interval is not None and entry.next_at > now + poll_interval and not entry.in_flight:
            entry.next_at = now + poll_interval
            self._push(entry)
        self._ensure_running()
        self._wake.set()
        try:
            timeout = None if deadline is None else max(deadline - time.time(), 0.0)
            done, _ = await asyncio.wait({waiter.future}, timeout=timeout)
            if not done and not waiter.observed.done():
                # The deadline passed before we saw the job even once: look first.
                either: set[asyncio.Future[Any]] = {waiter.future, waiter.observed}
                await asyncio.wait(either, timeout=self.first_poll_grace, return_when=asyncio.FIRST_COMPLETED)
            if waiter.future.done():
                return waiter.future.result()
            return WatchResult(
                "timeout",
                job_name,
                entry.state,
                entry.job,
                f"the deadline passed while the job was {entry.state or 'not yet read'}",
            )
        finally:
            self._unregister(entry, waiter)

    async def cancel(self, job_name: str) -> bool:
        """Cancel the job if it is active (idempotent); whether a cancel was sent."""
        hook = await self.get_hook()
        return await hook.cancel_job_async(job_name)

    # ------------------------------------------------------------------ bookkeeping

    def _push(self, entry: _Watched) -> None:
        entry.version += 1
        heapq.heappush(self._heap, (entry.next_at, next(self._seq), entry.version, entry))

    def _unregister(self, entry: _Watched, waiter: _Waiter) -> None:
        entry.waiters.discard(waiter)
        for future in (waiter.future, waiter.observed):
            if not future.done():
                future.cancel()
        if not entry.waiters:
            self._forget(entry)

    def _forget(self, entry: _Watched) -> None:
        if self._jobs.get(entry.name) is entry:
            del self._jobs[entry.name]
            siblings = self._by_parent.get(entry.parent)
            if siblings is not None:
                siblings.discard(entry)
                if not siblings:
                    del self._by_parent[entry.parent]

    def _resolve(self, entry: _Watched, result: WatchResult, *, everyone: bool) -> None:
        for waiter in list(entry.waiters):
            wanted = everyone or (result.state is not None and result.state in waiter.stop_states)
            if wanted and not waiter.future.done():
                waiter.future.set_result(result)
        if everyone:
            self._forget(entry)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="batch-streaming-job-watcher"
            )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ scheduling

    def _interval(self, entry: _Watched) -> float:
        fixed = [w.poll_interval for w in entry.waiters if w.poll_interval]
        if fixed:
            base = float(min(fixed))
        else:
            base = status.adaptive_interval(
                entry.state,
                time.time() - (entry.entered_wall or entry.first_seen_wall),
                fast=self.fast_interval,
                pending_max=self.pending_max_interval,
                running_min=self.running_min_interval,
                running_max=self.running_max_interval,
                young=self.young_seconds,
                ramp=self.ramp_seconds,
            )
        return base * random.uniform(1.0 - self.jitter, 1.0 + self.jitter)

    def _sweepable(self, entry: _Watched, now: float) -> bool:
        if self._sweeps_disabled or entry.force_get:
            return False
        siblings = self._by_parent.get(entry.parent, ())
        return len(siblings) >= self.sweep_min_jobs and self._sweep_off_until.get(entry.parent, 0.0) <= now

    async def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                if not self._jobs:
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.idle_close_after)
                    except TimeoutError:
                        if not self._jobs:
                            return
                    continue
                try:
                    delay = self._dispatch(time.monotonic())
                except Exception as exc:  # a bug must not leave every trigger waiting forever
                    log.exception("The Batch job watcher failed; ending every wait with an error")
                    for entry in list(self._jobs.values()):
                        self._fail(entry, "error", f"internal error in the job watcher: {exc!r}")
                    continue
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), min(delay, 3600.0))
        finally:
            await self._close()

    async def _close(self) -> None:
        # Synchronously first: a wait() arriving while the channel closes gets a new watcher.
        self.closed = True
        _discard(self)
        for task in list(self._tasks):
            task.cancel()
        hook, self._hook = self._hook, None
        if hook is not None:
            try:
                await hook.aclose()
            except BaseException:  # closing on a shutting-down loop is best effort
                log.debug("closing the Batch client failed", exc_info=True)

    def _dispatch(self, now: float) -> float:
        """Start every due poll the budget allows; seconds until something is due again."""
        while self._heap:
            next_at, _, version, entry = self._heap[0]
            if version != entry.version or self._jobs.get(entry.name) is not entry or entry.in_flight:
                heapq.heappop(self._heap)
                continue
            if next_at > now:
                return next_at - now
            throttled = self._throttled_until.get(entry.parent, 0.0)
            if throttled > now:  # a quota error of this project and region: only its reads wait
                heapq.heappop(self._heap)
                entry.next_at = throttled
                self._push(entry)
                continue
            if self._in_flight >= self.max_in_flight:
                return 1.0  # a finishing poll wakes us sooner
            sweep = self._sweepable(entry, now)
            if sweep:
                if entry.parent in self._sweeping:
                    heapq.heappop(self._heap)
                    entry.next_at = now + 0.5
                    self._push(entry)
                    continue
                ready_at = self._last_sweep.get(entry.parent, -math.inf) + self.sweep_min_interval
                if ready_at > now:
                    heapq.heappop(self._heap)
                    entry.next_at = ready_at
                    self._push(entry)
                    continue
            wait = self.budget.try_acquire()
            if wait > 0:
                self.stats["budget_waits"] += 1
                return wait
            heapq.heappop(self._heap)
            if sweep:
                members = [e for e in self._by_parent[entry.parent] if not e.in_flight and not e.force_get]
                for member in members:
                    member.in_flight = True
                self._sweeping.add(entry.parent)
                self._in_flight += 1
                self._spawn(self._sweep(entry.parent, members))
            else:
                entry.in_flight = True
                self._in_flight += 1
                self._spawn(self._poll(entry))
        return 3600.0

    def _reschedule(self, entry: _Watched, delay: float) -> None:
        if self._jobs.get(entry.name) is entry:
            entry.next_at = time.monotonic() + delay
            self._push(entry)

    # ------------------------------------------------------------------ polling

    def _observe(self, entry: _Watched, job: Job) -> None:
        pb = type(job).pb(job)
        state = _state_name(pb.status.state)
        if state != entry.state:
            entry.state = state
            entry.entered_wall = _entered_wall(pb, state)
        entry.job = job
        entry.errors = 0
        entry.first_error_at = None
        entry.force_get = False
        for waiter in entry.waiters:
            if not waiter.observed.done():
                waiter.observed.set_result(None)
        result = WatchResult("state", entry.name, state, job)
        if state in status.TERMINAL:
            self._resolve(entry, result, everyone=True)
            return
        self._resolve(entry, result, everyone=False)
        self._reschedule(entry, self._interval(entry))

    def _observe_safely(self, entry: _Watched, job: Job) -> None:
        try:
            self._observe(entry, job)
        except Exception as exc:  # e.g. a job this code cannot read: end the wait, loudly
            log.exception("Could not read the state of Batch job %s", entry.name)
            self._fail(entry, "error", f"could not read the state of the job: {exc!r}")

    def _fail(self, entry: _Watched, outcome: Outcome, message: str) -> None:
        for waiter in entry.waiters:
            if not waiter.observed.done():
                waiter.observed.set_result(None)
        self._resolve(entry, WatchResult(outcome, entry.name, entry.state, entry.job, message), everyone=True)

    def _transient(self, entries: Collection[_Watched], exc: Exception) -> None:
        from google.api_core import exceptions as gexc

        from airflow_batch_streaming.hooks.batch import BatchStreamingHook

        self.stats["transient_errors"] += 1
        now = time.monotonic()
        delays: list[float] = []
        for entry in entries:
            entry.errors += 1
            entry.first_error_at = entry.first_error_at or now
            if now - entry.first_error_at > BatchStreamingHook.give_up_after:
                self._fail(
                    entry,
                    "error",
                    f"the Batch API kept failing for {now - entry.first_error_at:.0f} s while reading "
                    f"{entry.name}: {type(exc).__name__}: {exc}",
                )
                continue
            delay = BatchStreamingHook.retry_delay(exc, min(entry.errors - 1, 10))
            delays.append(delay)
            self._reschedule(entry, delay)
            if isinstance(exc, gexc.ResourceExhausted):
                # The read quota is the region's: the other reads of this project+region wait too.
                until = now + delay / 2
                self._throttled_until[entry.parent] = max(self._throttled_until.get(entry.parent, 0.0), until)
        first = next(iter(entries), None)
        if delays and first is not None and (first.errors == 1 or first.errors % 10 == 0):
            what = first.name if len(entries) == 1 else f"{len(entries)} jobs of {first.parent}"
            log.warning(
                "Reading Batch %s failed (%s: %s); retry %d in %.1f s",
                what,
                type(exc).__name__,
                exc,
                first.errors,
                min(delays),
            )

    async def _poll(self, entry: _Watched) -> None:
        from google.api_core import exceptions as gexc

        from airflow_batch_streaming.hooks.batch import TRANSIENT_ERRORS

        try:
            hook = await self.get_hook()
            self.stats["get_job"] += 1
            job = await hook.get_job_async(entry.name, attempts=1)
        except asyncio.CancelledError:
            raise
        except gexc.NotFound:
            entry.in_flight = False
            self._fail(entry, "deleted", f"Batch job {entry.name} does not exist (deleted)")
        except TRANSIENT_ERRORS as exc:
            entry.in_flight = False
            self._transient([entry], exc)
        except Exception as exc:
            entry.in_flight = False
            self.stats["errors"] += 1
            self._fail(entry, "error", f"{type(exc).__name__}: {exc}")
        else:
            entry.in_flight = False
            if self._jobs.get(entry.name) is entry:
                self._observe_safely(entry, job)
        finally:
            entry.in_flight = False
            self._in_flight -= 1
            self._wake.set()

    async def _list_all(self, hook: BatchStreamingHook, parent: str, flt: str) -> tuple[dict[str, Any], int]:
        """Every job of `parent` matching `flt`, by job ID; and the pages it took."""
        listed: dict[str, Any] = {}
        token, pages = "", 0
        while True:
            if pages:
                await self.budget.acquire()
            self.stats["list_jobs"] += 1
            jobs, token = await hook.list_jobs_page_async(
                parent, filter=flt, page_size=self.sweep_page_size, page_token=token, attempts=1
            )
            pages += 1
            for job in jobs:
                listed[job.name.rsplit("/", 1)[-1]] = job
            if not token:
                return listed, pages

    async def _recently_finished(
        self, hook: BatchStreamingHook, parent: str, missing: list[_Watched]
    ) -> tuple[dict[str, Any], int]:
        """Jobs of `parent` that ended lately: one listing instead of a GetJob per missing job.

        Best effort: if the API refuses the filter (or fails), the missing jobs are read
        one by one, which is always correct.
        """
        from google.api_core import exceptions as gexc

        if self._finished_sweeps_disabled or len(missing) < 2:
            return {}, 0
        since = min(m.last_listed_wall or m.first_seen_wall for m in missing) - self.finished_margin
        flt = FINISHED_FILTER.format(since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)))
        try:
            await self.budget.acquire()
            return await self._list_all(hook, parent, flt)
        except asyncio.CancelledError:
            raise
        except (gexc.InvalidArgument, gexc.MethodNotImplemented) as exc:
            log.info("Listing finished Batch jobs is not supported here (%s); reading them one by one", exc)
            self._finished_sweeps_disabled = True
        except Exception as exc:
            log.debug("Listing finished Batch jobs of %s failed: %s", parent, exc)
        return {}, 0

    def _read_one_by_one(self, members: list[_Watched]) -> None:
        for member in members:
            member.in_flight = False
            member.force_get = True
            self._reschedule(member, 0.0)

    async def _sweep(self, parent: str, members: list[_Watched]) -> None:
        from google.api_core import exceptions as gexc

        try:
            hook = await self.get_hook()
            started_wall = time.time()
            listed, pages = await self._list_all(hook, parent, ACTIVE_FILTER)
            missing = [m for m in members if m.job_id not in listed and self._jobs.get(m.name) is m]
            finished, more_pages = await self._recently_finished(hook, parent, missing)
            pages += more_pages
        except asyncio.CancelledError:
            raise
        except (gexc.InvalidArgument, gexc.MethodNotImplemented, gexc.PermissionDenied) as exc:
            # e.g. a filter the API refuses: GetJob still works; stop sweeping.
            log.warning("Listing Batch jobs of %s failed (%s); polling jobs one by one", parent, exc)
            self._sweeps_disabled = True
            self._read_one_by_one(members)
        except Exception as exc:
            # ListJobs failing (an outage, a quota) says nothing about GetJob: read the jobs
            # one by one now, with their own retries, and sweep this region again later.
            log.warning("Listing Batch jobs of %s failed (%s); polling jobs one by one", parent, exc)
            self.stats["sweep_errors"] += 1
            self._sweep_off_until[parent] = time.monotonic() + self.sweep_off_seconds
            self._read_one_by_one(members)
        else:
            self.stats["sweeps"] += 1
            self._last_sweep[parent] = time.monotonic()
            found = 0
            for member in members:
                member.in_flight = False
                if self._jobs.get(member.name) is not member:
                    continue
                seen = listed.get(member.job_id) or finished.get(member.job_id)
                if seen is not None:
                    found += 1
                    member.last_listed_wall = started_wall
                    self._observe_safely(member, seen)
                else:
                    # Deleted, ended long ago, or not listed yet: only GetJob can tell.
                    member.force_get = True
                    self._reschedule(member, 0.0)
            self.stats["swept_jobs"] += found
            self.stats["swept_finished"] += sum(1 for m in missing if m.job_id in finished)
            # Listing costs more reads than it saves (more pages than jobs it refreshed, while
            # enough jobs were watched): poll one by one for a while. A sweep of a few members
            # (the others being read already) proves nothing.
            if len(members) >= self.sweep_min_jobs and pages > max(found, 1):
                self._sweep_off_until[parent] = time.monotonic() + self.sweep_off_seconds
        finally:
            for member in members:
                member.in_flight = False
            self._sweeping.discard(parent)
            self._in_flight -= 1
            self._wake.set()


# --------------------------------------------------------------------------- registry

_watchers: dict[tuple[Any, ...], JobWatcher] = {}
_watchers_lock = threading.Lock()


def _chain_key(chain: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    if chain is None or isinstance(chain, str):
        return chain
    return tuple(chain)


def _discard(watcher: JobWatcher) -> None:
    with _watchers_lock:
        for key, value in list(_watchers.items()):
            if value is watcher:
                del _watchers[key]


def get_watcher(
    gcp_conn_id: str = "google_cloud_default", impersonation_chain: str | Sequence[str] | None = None
) -> JobWatcher:
    """The watcher of the running event loop for this connection (made on first use)."""
    from airflow_batch_streaming.hooks import clients

    loop = asyncio.get_running_loop()
    key = (id(loop), gcp_conn_id, _chain_key(impersonation_chain), clients.emulator_host())
    with _watchers_lock:
        for stale_key, stale in list(_watchers.items()):
            stale_loop = stale.loop
            if stale_loop is None or stale_loop.is_closed():
                del _watchers[stale_key]
        watcher = _watchers.get(key)
        if watcher is None or watcher.loop is not loop:
            watcher = JobWatcher(loop, gcp_conn_id, impersonation_chain, endpoint=key[3])
            _watchers[key] = watcher
        return watcher


def watchers() -> list[JobWatcher]:
    """Every live watcher of the process (for stats and tests)."""
    with _watchers_lock:
        return list(_watchers.values())
