"""One shared, quota-aware wait loop for every Batch job the triggers in a process wait on.

The triggerer runs thousands of triggers in one asyncio loop. If each polled on its own,
each would hold its own gRPC channel and spend its own reads, and 2,500 waiters polling
every 10 s would exhaust Batch's regional read quota (15,000/min, shared with everything
else in the project). Instead triggers call `await get_watcher(...).wait(job_name, ...)`:

- one `JobWatcher` per (event loop, connection, impersonation chain, endpoint), holding
  one hook and so one async client and one channel. grpc.aio channels belong to a loop,
  and `dag.test()` runs each trigger in a fresh `asyncio.run()` loop, hence the loop in
  the key; the client is made lazily inside that loop;
- one read per job however many waiters it has (coalescing);
- one loop (`_run` -> `_dispatch`) and one kind of round per (project, region), paced by
  `pacing.plan` (pure; see triggers/pacing.py): a round is either one ListJobs sweep
  (`pacing.sweep_filter`: `createTime >=` the oldest waited job, or only active jobs) or
  one GetJob per job, whichever costs fewer reads, every 1 to 3 s (the Google provider
  polls every 10 s), slower only as the fleet nears the process budget
  (`[batch_streaming] read_budget_per_minute` or env `BATCH_STREAMING_READ_BUDGET`,
  default 7,500 = half the regional quota), which a token bucket also enforces. A trigger's
  `poll_interval` caps its region's round interval;
- a new wait has no read of its own: it joins its region's next round, which comes at most
  `policy.floor` (1 s) after the last while a wait no read has answered is there. After a
  sweep, `pacing.read_in` is the one rule for a waited job the listing did not settle: it
  left the listing (ended or deleted) or was prompted: GetJob now; never listed (ListJobs
  lags creation, real-api-facts.md; or it predates the listing's `createTime` bound):
  GetJob once `policy.unlisted_grace` (8 s) has passed without any read answering for it;
- push: a wait with a `notification_topic` starts one `JobNotificationListener` (one
  subscription and stream per watcher and topic, hooks/pubsub.py). A message is a prompt
  to read that job, never its state, and only if its `NewJobState` could end a wait
  (`pacing.prompt_worth_read`: RUNNING does not end a wait for a terminal state). The
  prompts of a region are answered once per `prompt_window` (the first at once): by one
  sweep of the region when that costs fewer reads than a GetJob per prompted job, else by
  those GetJobs; a prompted job the sweep did not show in a state that ends its wait gets a
  GetJob (the listing may be behind the message). While the stream is healthy the region's
  rounds slow to pacing's push fallback rate (30 to 120 s), so a lost message delays an
  event, never loses it. A refused subscription logs one warning; the watcher keeps polling.

Failures stay local. A failed read of a job is retried with the hook's one policy
(`BatchStreamingHook.retry_delay`, giving up after `give_up_after` seconds of failures);
RESOURCE_EXHAUSTED also pauses the other reads of the same project and region (the quota
is regional), and no other. A failed sweep reads its region's jobs one by one at once
(GetJob works when ListJobs does not) and sweeps that region again only after
`sweep_off_seconds`. INVALID_ARGUMENT on the `createTime` filter falls back to the
active-states filter; on that one too, the region is read with GetJob only. NOT_FOUND
means deleted; other errors end the wait with a message.

The watcher holds its hook (and so the connection's credentials) for at most
`hook_max_age` seconds: a connection refreshed in Airflow reaches a busy watcher. It closes
its channel and listeners once idle for `idle_close_after` seconds; a trigger that reads after
its wait (failed tasks, a cancel) holds it open with `hook_in_use`, as closing a grpc.aio
channel cancels the calls in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airflow_batch_streaming import status
from airflow_batch_streaming.triggers import pacing

if TYPE_CHECKING:
    from google.cloud.batch_v1 import Job

    from airflow_batch_streaming.hooks.batch import BatchStreamingHook
    from airflow_batch_streaming.hooks.pubsub import JobNotificationListener, Prompt

log = logging.getLogger(__name__)

READ_BUDGET_ENV = "BATCH_STREAMING_READ_BUDGET"
#: Half of Batch's regional read quota (15,000/min), leaving room for everything else.
DEFAULT_READ_BUDGET_PER_MINUTE = 7500.0
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
    topic: str | None = None
    waiters: set[_Waiter] = field(default_factory=set)
    version: int = 0
    in_flight: bool = False
    job: Any = None
    state: str | None = None
    create_wall: float | None = None
    #: When the wait began (wall time): stands in for create_time until a read says it.
    since: float = field(default_factory=time.time)
    #: The last read that returned the job (wall time); `since` until one did.
    answered: float = 0.0
    listed: bool = False
    #: A GetJob is scheduled because no listing shows the job (`pacing.read_in`); a listing
    #: that shows it cancels that read.
    unlisted_read: bool = False
    errors: int = 0
    first_error_at: float | None = None

    def __post_init__(self) -> None:
        self.answered = self.answered or self.since

    def stops(self) -> set[str]:
        return set().union(*(w.stop_states for w in self.waiters))


@dataclass(eq=False)
class _Region:
    """One (project, region): its waited jobs and how its rounds went."""

    members: set[_Watched] = field(default_factory=set)
    last_round: float | None = None
    in_flight: bool = False
    pages: int = 1
    recent_refused: bool = False
    sweeps_refused: bool = False
    sweep_off_until: float = 0.0
    last_prompt_round: float = -math.inf
    prompted: set[_Watched] = field(default_factory=set)

    def can_sweep(self, now: float) -> bool:
        return not self.sweeps_refused and self.sweep_off_until <= now


def _state_name(pb_state: int) -> str:
    return status.STATES[pb_state] if 0 <= pb_state < len(status.STATES) else status.STATE_UNSPECIFIED


def _make_hook(gcp_conn_id: str, impersonation_chain: str | Sequence[str] | None) -> BatchStreamingHook:
    """The hook, imported and made off the event loop: importing it loads the Google provider
    (about 1 s), which on the loop blocks every trigger of the triggerer."""
    from airflow_batch_streaming.hooks.batch import BatchStreamingHook

    return BatchStreamingHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)


class JobWatcher:
    """Waits on Batch jobs for every trigger of one event loop and connection. See the module doc."""

    # Knobs: class attributes, so a deployment (or a test) can subclass or patch them.
    #: The pacing policy; its `budget_per_minute` is replaced by the process budget's.
    policy = pacing.Policy()
    max_in_flight = 64
    sweep_page_size = pacing.PAGE_SIZE
    sweep_off_seconds = 300.0
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
        self._by_id: dict[str, set[_Watched]] = {}
        self._regions: dict[str, _Region] = {}
        self._borrowed = 0  # callers using the hook outside a wait (`hook_in_use`)
        self._heap: list[tuple[float, int, int, _Watched]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._throttled_until: dict[str, float] = {}
        self._listeners: dict[str, JobNotificationListener] = {}
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

    @property
    def listeners(self) -> dict[str, JobNotificationListener]:
        """The notification listeners by topic (for stats and tests)."""
        return dict(self._listeners)

    async def get_hook(self) -> BatchStreamingHook:
        """The watcher's hook, made in a thread (reading the connection may block) and
        replaced once `hook_max_age` old, so changed credentials are read again."""
        async with self._hook_lock:
            old = self._hook
            if old is not None and time.monotonic() - self._hook_made > self.hook_max_age:
                self._hook = None
                self._spawn(self._close_later(old))  # reads in flight finish on it
            if self._hook is None:
                self._hook = await asyncio.to_thread(_make_hook, self.gcp_conn_id, self.impersonation_chain)
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
        notification_topic: str | None = None,
    ) -> WatchResult:
        """Wait until the job is in one of `stop_states` (terminal states always stop).

        `deadline` is an absolute `time.time()`; once it passes the result is "timeout"
        (but only after at least one fresh read, so a job that finished while nobody was
        watching is reported as finished). `poll_interval` caps the interval between reads
        of the job's region. `notification_topic`: the Pub/Sub topic the job publishes its
        state changes to (push). Cancelling the caller just stops waiting; the job is not
        touched.
        """
        project, region, job_id = status.parse_job_name(job_name)
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            raise RuntimeError("a JobWatcher is bound to the event loop it was made in; use get_watcher()")
        if self.closed:  # went idle and closed its channel since the caller got it
            return await get_watcher(self.gcp_conn_id, self.impersonation_chain).wait(
                job_name,
                stop_states=stop_states,
                deadline=deadline,
                poll_interval=poll_interval,
                notification_topic=notification_topic,
            )
        self.stats["waits"] += 1
        stops = frozenset(stop_states) | status.TERMINAL
        entry = self._jobs.get(job_name)
        if entry is None:
            entry = _Watched(job_name, f"projects/{project}/locations/{region}", job_id)
            self._jobs[job_name] = entry
            self._by_id.setdefault(job_id, set()).add(entry)
            self._regions.setdefault(entry.parent, _Region()).members.add(entry)  # read in its next round
        else:
            self.stats["coalesced"] += 1
            if entry.state is not None and entry.state in stops:
                return WatchResult("state", job_name, entry.state, entry.job)
        if notification_topic and entry.topic is None:
            entry.topic = notification_topic
            if notification_topic not in self._listeners:
                self._start_listener(notification_topic)
        waiter = _Waiter(stops, poll_interval, loop.create_future(), loop.create_future())
        if entry.job is not None:
            waiter.observed.set_result(None)  # the cached read is at most one round old
        entry.waiters.add(waiter)
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
        async with self.hook_in_use() as hook:
            return await hook.cancel_job_async(job_name)

    @contextlib.asynccontextmanager
    async def hook_in_use(self) -> AsyncIterator[BatchStreamingHook]:
        """The watcher's hook for a call of the caller's own, after its wait has ended: the
        watcher stays open meanwhile (closing the channel would cancel the call in flight)."""
        self._borrowed += 1
        try:
            yield await self.get_hook()
        finally:
            self._borrowed -= 1
            self._wake.set()

    # ------------------------------------------------------------------ push

    def _start_listener(self, topic: str) -> None:
        from airflow_batch_streaming.hooks.pubsub import JobNotificationListener

        listener = JobNotificationListener(topic, self._prompt, on_health=lambda _: self._wake.set())
        self._listeners[topic] = listener  # a refused one stays: one warning, then polling

        async def start() -> None:
            try:
                hook = await self.get_hook()
                listener.credentials = await asyncio.to_thread(hook._client_credentials)
                await listener.start()
            except Exception as exc:  # e.g. no credentials: push is an optimisation
                listener.refused = f"{type(exc).__name__}: {exc}"
                log.warning("Pub/Sub push on %s is off (%s); waiting falls back to polling", topic, exc)

        self._spawn(start())

    def _prompt(self, prompt: Prompt) -> None:
        """A job announced a state change: read it at once, or with the window's other prompts."""
        self.stats["prompts"] += 1
        for entry in self._by_id.get(prompt.job_id, ()):
            if not prompt.matches(entry.name, entry.job.uid if entry.job is not None else None):
                continue
            if not pacing.prompt_worth_read(prompt.new_state, entry.stops()):
                continue
            region = self._regions[entry.parent]
            region.prompted.add(entry)
            self._wake.set()

    def _push_healthy(self, region: _Region) -> bool:
        """Every waited job of the region is covered by a healthy notification stream."""
        for entry in region.members:
            listener = self._listeners.get(entry.topic) if entry.topic else None
            if listener is None or not listener.healthy:
                return False
        return True

    # ------------------------------------------------------------------ bookkeeping

    def _schedule(self, entry: _Watched, delay: float, *, unlisted: bool = False) -> None:
        """One GetJob of the job after `delay` (rounds in "get" mode, retries, `to_get`, prompts);
        replaces the one scheduled before, if any."""
        if self._jobs.get(entry.name) is entry:
            entry.version += 1
            entry.unlisted_read = unlisted
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), entry.version, entry))

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
            same_id = self._by_id.get(entry.job_id)
            if same_id is not None:
                same_id.discard(entry)
                if not same_id:
                    del self._by_id[entry.job_id]
            region = self._regions.get(entry.parent)
            if region is not None:
                region.members.discard(entry)
                region.prompted.discard(entry)
                if not region.members:
                    del self._regions[entry.parent]

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

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                if not self._jobs:
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.idle_close_after)
                    except TimeoutError:
                        if not self._jobs and not self._borrowed:
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
        listeners, self._listeners = list(self._listeners.values()), {}
        for listener in listeners:
            with contextlib.suppress(BaseException):  # best effort; the subscription expires anyway
                await listener.close()
        hook, self._hook = self._hook, None
        if hook is not None:
            try:
                await hook.aclose()
            except BaseException:  # closing on a shutting-down loop is best effort
                log.debug("closing the Batch client failed", exc_info=True)

    def _plans(self) -> dict[str, pacing.Plan]:
        policy = dataclasses.replace(self.policy, budget_per_minute=self.budget.per_minute)
        groups = {
            parent: pacing.Group(len(region.members), region.pages, push=self._push_healthy(region))
            for parent, region in self._regions.items()
        }
        plans = pacing.plan(groups, policy)
        for parent, planned in plans.items():
            region = self._regions[parent]
            mode, interval = planned.mode, planned.interval
            if not region.can_sweep(time.monotonic()):
                mode = "get"
            fixed = [w.poll_interval for e in region.members for w in e.waiters if w.poll_interval]
            interval = min([interval, *fixed])
            if (mode, interval) != (planned.mode, planned.interval):
                plans[parent] = pacing.Plan(mode, interval, planned.reads_per_round)
        return plans

    def _dispatch(self, now: float) -> float:
        """Start every due round and read the budget allows; seconds until one is due again."""
        soonest = min([3600.0, *(self._round(p, plan, now) for p, plan in self._plans().items())])
        return min(soonest, self._start_reads(now))

    def _round(self, parent: str, plan: pacing.Plan, now: float) -> float:
        """Start the region's round if one is due; seconds until one may be.

        A round is due `plan.interval` after the last one; sooner, `policy.floor` after it,
        while a wait no read has answered yet is there (new, or not listed yet: the first
        read is the region's next round, never a GetJob of its own); and the prompts'
        round `policy.prompt_window` after the last one. A prompts' round lists the region
        when that costs fewer reads than a GetJob per prompted job (and then counts as the
        region's round), else reads those jobs.
        """
        region = self._regions[parent]
        throttled = self._throttled_until.get(parent, 0.0)
        if region.in_flight or throttled > now:  # the sweep's end wakes us
            return max(throttled - now, 0.05)
        idle = [e for e in region.members if not e.in_flight]
        last = region.last_round
        due = [pacing.due_in(plan, last, now)]
        if any(e.job is None and not e.errors for e in idle):  # a wait no read has answered yet
            due.append(0.0 if last is None else max(0.0, last + min(plan.interval, self.policy.floor) - now))
        prompted = [e for e in region.prompted if not e.in_flight]  # one being read stays prompted
        if prompted:
            due.append(max(0.0, region.last_prompt_round + self.policy.prompt_window - now))
        if not idle or min(due) > 0:
            return max(min(due), 0.01) if idle else plan.interval
        if prompted and min(due[:-1]) > 0:  # only the prompts are due
            region.last_prompt_round = now
            self.stats["prompt_rounds"] += 1
            region.prompted.difference_update(prompted)
            mode, _ = pacing.reads_per_round(pacing.Group(len(prompted), region.pages))
            if mode == "get" or not region.can_sweep(time.monotonic()):
                for entry in prompted:
                    self._schedule(entry, 0.0)
                return self.policy.prompt_window
        else:
            region.prompted.difference_update(prompted)
            mode = plan.mode
        region.last_round = now
        self.stats["rounds"] += 1
        if mode == "get":
            for entry in idle:
                if not entry.errors:  # a failing read keeps its own retry delay
                    self._schedule(entry, 0.0)
        else:
            region.in_flight = True
            for entry in idle:
                entry.in_flight = True
            self._in_flight += 1
            self._spawn(self._sweep(parent, region, idle, set(prompted)))
        return plan.interval

    def _start_reads(self, now: float) -> float:
        """Start the GetJobs due, as the budget and `max_in_flight` allow; seconds until the next."""
        soonest = 3600.0
        # Retries, prompts, jobs a sweep did not answer for, rounds in "get" mode.
        while self._heap:
            next_at, _, version, entry = self._heap[0]
            if version != entry.version or self._jobs.get(entry.name) is not entry or entry.in_flight:
                heapq.heappop(self._heap)
                continue
            if next_at > now:
                return min(soonest, next_at - now)
            throttled = self._throttled_until.get(entry.parent, 0.0)
            if throttled > now:  # a quota error of this project and region: only its reads wait
                heapq.heappop(self._heap)
                self._schedule(entry, throttled - now)
                continue
            if self._in_flight >= self.max_in_flight:
                return min(soonest, 1.0)  # a finishing read wakes us sooner
            wait = self.budget.try_acquire()
            if wait > 0:
                self.stats["budget_waits"] += 1
                return min(soonest, wait)
            heapq.heappop(self._heap)
            entry.in_flight = True
            entry.unlisted_read = False
            self._in_flight += 1
            self._spawn(self._poll(entry))
        return soonest

    # ------------------------------------------------------------------ reading

    def _observe(self, entry: _Watched, job: Job) -> None:
        pb = type(job).pb(job)
        entry.state = _state_name(pb.status.state)
        if pb.create_time.seconds:
            entry.create_wall = pb.create_time.seconds + pb.create_time.nanos / 1e9
        entry.job = job
        entry.answered = time.time()
        entry.errors = 0
        entry.first_error_at = None
        for waiter in entry.waiters:
            if not waiter.observed.done():
                waiter.observed.set_result(None)
        result = WatchResult("state", entry.name, entry.state, job)
        self._resolve(entry, result, everyone=entry.state in status.TERMINAL)

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

    def _transient(self, entry: _Watched, exc: Exception) -> None:
        from google.api_core import exceptions as gexc

        from airflow_batch_streaming.hooks.batch import BatchStreamingHook

        self.stats["transient_errors"] += 1
        now = time.monotonic()
        entry.errors += 1
        entry.first_error_at = entry.first_error_at or now
        if now - entry.first_error_at > BatchStreamingHook.give_up_after:
            self._fail(
                entry,
                "error",
                f"the Batch API kept failing for {now - entry.first_error_at:.0f} s while reading "
                f"{entry.name}: {type(exc).__name__}: {exc}",
            )
            return
        delay = BatchStreamingHook.retry_delay(exc, min(entry.errors - 1, 10))
        self._schedule(entry, delay)
        if isinstance(exc, gexc.ResourceExhausted):
            # The read quota is the region's: the other reads of this project+region wait too.
            until = now + delay / 2
            self._throttled_until[entry.parent] = max(self._throttled_until.get(entry.parent, 0.0), until)
        if entry.errors == 1 or entry.errors % 10 == 0:
            log.warning(
                "Reading Batch job %s failed (%s: %s); retry %d in %.1f s",
                entry.name,
                type(exc).__name__,
                exc,
                entry.errors,
                delay,
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
            self._transient(entry, exc)
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

    def _read_one_by_one(self, members: list[_Watched]) -> None:
        for member in members:
            member.in_flight = False
            self._schedule(member, 0.0)

    async def _sweep(
        self, parent: str, region: _Region, members: list[_Watched], prompted: set[_Watched]
    ) -> None:
        """One listing of the region refreshes every member; `pacing.to_get` says which of
        those still waited on (missed, or `prompted` and not settled) need a GetJob, and when."""
        from google.api_core import exceptions as gexc

        try:
            hook = await self.get_hook()
            while True:
                chosen = pacing.sweep_filter(
                    [m.create_wall or m.since for m in members],
                    time.time(),
                    recent_refused=region.recent_refused,
                )
                try:
                    listed, pages = await self._list_all(hook, parent, chosen.filter)
                    break
                except gexc.InvalidArgument:
                    if not chosen.covers_finished:
                        raise
                    # The createTime filter is documented by use (dsub), not by Google: fall back.
                    log.info("ListJobs refused the createTime filter; sweeping %s by active states", parent)
                    region.recent_refused = True
        except asyncio.CancelledError:
            raise
        except (gexc.InvalidArgument, gexc.MethodNotImplemented, gexc.PermissionDenied) as exc:
            log.warning("Listing Batch jobs of %s failed (%s); reading jobs one by one", parent, exc)
            region.sweeps_refused = True
            self._read_one_by_one(members)
        except Exception as exc:
            # ListJobs failing (an outage, a quota) says nothing about GetJob: read the jobs
            # one by one now, with their own retries, and sweep this region again later.
            log.warning("Listing Batch jobs of %s failed (%s); reading jobs one by one", parent, exc)
            self.stats["sweep_errors"] += 1
            region.sweep_off_until = time.monotonic() + self.sweep_off_seconds
            self._read_one_by_one(members)
        else:
            self.stats["sweeps"] += 1
            region.pages = pages
            now = time.time()
            # What the members were before this listing, for `pacing.read_in`.
            before = {
                m: pacing.Waited(m.job_id, m.answered, m.listed, m in prompted)
                for m in members
                if self._jobs.get(m.name) is m
            }
            for member in before:
                member.in_flight = False
                seen = listed.get(member.job_id)
                if seen is not None:
                    member.listed = True
                    if member.unlisted_read:  # the listing answered: no GetJob for that
                        member.version += 1
                        member.unlisted_read = False
                    self.stats["swept_jobs"] += 1
                    self._observe_safely(member, seen)
            still = {m.job_id: (m, w) for m, w in before.items() if self._jobs.get(m.name) is m}
            grace = self.policy.unlisted_grace
            for job_id, delay in pacing.to_get(
                [w for _, w in still.values()], listed.keys(), now, grace
            ).items():
                self._schedule(still[job_id][0], delay, unlisted=delay > 0)
        finally:
            for member in members:
                member.in_flight = False
            region.in_flight = False
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
