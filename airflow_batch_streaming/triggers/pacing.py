"""How often the watcher reads Batch, and with which ListJobs filter: pure arithmetic.

The watcher waits on jobs grouped by (project, region), the unit Batch's read quota
(15,000/min per region) counts in. For each group it either sweeps (one ListJobs listing
refreshes every waited job) or reads each job with GetJob, whichever costs fewer reads per
round. This module decides, from numbers only, how far apart those rounds are:

- The goal is to be told of a finished job no later than the Google provider's trigger,
  which reads each job every 10 s (`polling_period_seconds=10`), so its delay is uniform on
  0..10 s (median 5 s, p95 9.5 s). A round at most every `ceiling` (3 s) gives a median
  of at most 1.5 s and a p95 of at most 2.9 s, at every fleet size the budget allows.
- Reads cost: a group may spend at most `reads_ratio` (1/10) of what a provider-like poll
  of its waits would, but never sweeps faster than `floor` (1 s) nor slower than `ceiling`
  because of it. With one ListJobs page per sweep, that means a sweep every
  `10 s * pages / (0.1 * waits)`: 3 s for 1..33 waits, 2.5 s at 40, the 1 s floor from 100.
  Below about 33 waits a group cannot have both a delay under the provider's and 1/10 of
  its reads by polling (a job needs at least one read, a round every 3 s costs more than
  a tenth of a 10 s poll of few jobs); the delay wins, the read budget being free there.
- The process budget (`[batch_streaming] read_budget_per_minute`) is a hard cap: when the
  rounds wanted by every group together would exceed it (less `headroom`, kept for one-off
  GetJobs), every interval is stretched by the same factor, so groups slow down only as the
  fleet grows toward the budget.
- With push (Pub/Sub job notifications) rounds are only a fallback for lost messages:
  the same rule with `push_reads_ratio` (1/100) between `push_floor` (30 s) and
  `push_ceiling` (120 s). Prompts are answered per group once per `prompt_window` (1 s):
  one round for all the jobs prompted in that window, a listing when it costs fewer reads
  than a GetJob each (`reads_per_round(Group(prompted_jobs, pages))`).

The second half builds the sweep's ListJobs filter from filters the real API is known to
accept (real-api-facts.md, "ListJobs filter": dsub's `(status.state="..." OR ...)`,
`labels."k" = "v"` and `createTime >= "..."`, AND-ed in parentheses); `update_time` is not
used, there being no public evidence the API accepts it. Then `to_get` says which waited
jobs a listing left unanswered need a GetJob of their own, and when.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

from airflow_batch_streaming import status

K = TypeVar("K", bound=Hashable)

#: The Google provider's trigger polls each job every 10 s (CloudBatchJobFinishedTrigger).
PROVIDER_INTERVAL = 10.0
#: ListJobs `page_size` the sweeps ask for. Google documents no maximum for Batch's ListJobs
#: (real-api-facts.md has none; the discovery document says only "Page size"): 1,000 is an
#: assumption (Cloud Logging's documented maximum; the emulator caps there too). A server
#: that answers with smaller pages costs more pages per sweep, which `Group.pages` learns
#: from the last sweep, so rounds stay within the budget either way.
PAGE_SIZE = 1000


@dataclass(frozen=True)
class Policy:
    """The knobs; the defaults beat the provider's delay, with 1/10 of its reads from 40 waits."""

    budget_per_minute: float = 7500.0
    floor: float = 1.0
    ceiling: float = 3.0
    reads_ratio: float | None = 0.1
    headroom: float = 0.1
    push_reads_ratio: float = 0.01
    push_floor: float = 30.0
    push_ceiling: float = 120.0
    prompt_window: float = 1.0
    #: A waited job no listing shows gets a GetJob once this long without an answer (`read_in`):
    #: ListJobs lags CreateJob on the real API (real-api-facts.md), and it is under the
    #: provider's 10 s poll, so such a job is still read as often as the provider would.
    unlisted_grace: float = 8.0
    provider_interval: float = PROVIDER_INTERVAL

    def __post_init__(self) -> None:
        problems = []
        if not self.budget_per_minute > 0:
            problems.append(f"budget_per_minute must be > 0, got {self.budget_per_minute}")
        if not 0 < self.floor <= self.ceiling <= self.push_ceiling:
            problems.append(
                f"need 0 < floor <= ceiling <= push_ceiling, got {self.floor}, {self.ceiling}, "
                f"{self.push_ceiling}"
            )
        if not self.floor <= self.push_floor <= self.push_ceiling:
            problems.append(f"need floor <= push_floor <= push_ceiling, got push_floor={self.push_floor}")
        if not self.prompt_window >= 0:
            problems.append(f"prompt_window must be >= 0, got {self.prompt_window}")
        if self.reads_ratio is not None and not self.reads_ratio > 0:
            problems.append(f"reads_ratio must be > 0 or None, got {self.reads_ratio}")
        if not self.push_reads_ratio > 0:
            problems.append(f"push_reads_ratio must be > 0, got {self.push_reads_ratio}")
        if not self.unlisted_grace > 0:
            problems.append(f"unlisted_grace must be > 0, got {self.unlisted_grace}")
        if not 0 <= self.headroom < 1:
            problems.append(f"headroom must be in [0, 1), got {self.headroom}")
        if problems:
            raise ValueError("invalid pacing policy: " + "; ".join(problems))

    @property
    def usable_per_second(self) -> float:
        """Reads per second the rounds may spend (the rest is for one-off GetJobs)."""
        return self.budget_per_minute * (1.0 - self.headroom) / 60.0


@dataclass(frozen=True)
class Group:
    """What the watcher knows of one (project, region).

    `waits`: distinct jobs waited on there. `pages`: ListJobs pages the group's sweep took
    last time (1 until a sweep said otherwise). `push`: a healthy notification stream
    covers these jobs.
    """

    waits: int
    pages: int = 1
    push: bool = False


@dataclass(frozen=True)
class Plan:
    """`mode` "sweep": one listing every `interval` s; "get": one GetJob per job every `interval` s."""

    mode: Literal["sweep", "get"]
    interval: float
    reads_per_round: int

    @property
    def reads_per_second(self) -> float:
        return self.reads_per_round / self.interval


def reads_per_round(group: Group) -> tuple[Literal["sweep", "get"], int]:
    """Sweep when the listing costs fewer reads than a GetJob each (a tie goes to GetJob,
    the consistent read: ListJobs can miss a job created moments ago)."""
    pages = max(group.pages, 1)
    return ("sweep", pages) if pages < group.waits else ("get", group.waits)


def wanted_interval(group: Group, policy: Policy) -> float:
    """The interval a group asks for before the budget is applied, in [floor, ceiling]."""
    _, cost = reads_per_round(group)
    floor, ceiling, ratio = (
        (policy.push_floor, policy.push_ceiling, policy.push_reads_ratio)
        if group.push
        else (policy.floor, policy.ceiling, policy.reads_ratio)
    )
    if ratio is None:
        return floor
    # A provider-like poll reads waits / provider_interval per second; spend `ratio` of it.
    cost_interval = cost * policy.provider_interval / (ratio * group.waits)
    return max(floor, min(ceiling, cost_interval))


def plan(groups: Mapping[K, Group], policy: Policy | None = None) -> dict[K, Plan]:
    """The round interval of every group with waits; never over the budget."""
    policy = policy or Policy()
    wanted: dict[K, tuple[Literal["sweep", "get"], int, float]] = {}
    for key, group in groups.items():
        if group.waits <= 0:
            continue
        mode, cost = reads_per_round(group)
        wanted[key] = (mode, cost, wanted_interval(group, policy))
    demand = sum(cost / interval for _, cost, interval in wanted.values())
    stretch = max(1.0, demand / policy.usable_per_second)
    return {
        key: Plan(mode, interval * stretch if stretch > 1.0 else interval, cost)
        for key, (mode, cost, interval) in wanted.items()
    }


def due_in(plan_: Plan, last_round_at: float | None, now: float) -> float:
    """Seconds until the group's next round (0: now). A group never read is due at once."""
    if last_round_at is None:
        return 0.0
    return max(0.0, last_round_at + plan_.interval - now)


# --------------------------------------------------------------------------- filters

#: States in which a job can still change; a sweep of these misses nothing that is moving.
ACTIVE_STATES: tuple[str, ...] = (
    status.QUEUED,
    status.SCHEDULED,
    status.RUNNING,
    status.CANCELLATION_IN_PROGRESS,
)
#: How far back a `createTime >=` listing may reach before it costs more than it saves:
#: a region keeps finished jobs 60 days, and such a listing pages over every job created
#: since its bound, finished or not.
RECENT_WINDOW = 6 * 3600.0
#: Clock skew between this host and Batch allowed for in a `createTime >=` bound.
CREATE_TIME_MARGIN = 120.0


def _quote(value: str) -> str:
    if '"' in value or "\\" in value:
        raise ValueError(f"a filter value cannot contain quotes or backslashes: {value!r}")
    return f'"{value}"'


def active_filter() -> str:
    """`status.state="QUEUED" OR ...`: the shape dsub and ClusterFuzz use on the real API."""
    return " OR ".join(f"status.state={_quote(state)}" for state in ACTIVE_STATES)


def rfc3339(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(math.floor(epoch_seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def recent_filter(created_since: float) -> str:
    """Every job created since then, whatever its state (dsub's `createTime >= "..."`)."""
    return f"createTime >= {_quote(rfc3339(created_since))}"


def with_labels(flt: str, labels: Mapping[str, str] | None) -> str:
    """AND label clauses onto a filter, each part in parentheses as dsub builds them."""
    parts = [f"labels.{_quote(k)} = {_quote(v)}" for k, v in sorted((labels or {}).items())]
    if not parts:
        return flt
    return " AND ".join(f"({p})" for p in [flt, *parts])


@dataclass(frozen=True)
class SweepFilter:
    """A sweep's listing. `covers_finished`: a waited job that ended is in it too, so one
    missing from it is deleted or not listed yet; otherwise missing means "read it once"."""

    filter: str
    covers_finished: bool


def sweep_filter(
    create_times: Iterable[float | None],
    now: float,
    *,
    labels: Mapping[str, str] | None = None,
    recent_window: float = RECENT_WINDOW,
    recent_refused: bool = False,
) -> SweepFilter:
    """The cheapest listing that refreshes a group of waited jobs.

    `create_times`: each waited job's `create_time` (epoch s), or when its wait began if no
    read has said it yet (a job exists before its wait; None: `now`). When every job
    is younger than `recent_window`, `createTime >= oldest - margin` lists them all, ended
    or not, so jobs that finish cost no GetJob each; its cost is bounded by the jobs created
    in the region since, never by the 60 days of history. Otherwise (or once the API has
    refused that filter: `recent_refused`) only active jobs are listed.
    """
    times = [now if t is None else t for t in create_times]
    oldest = min(times, default=now)
    if not recent_refused and now - oldest <= recent_window:
        return SweepFilter(with_labels(recent_filter(oldest - CREATE_TIME_MARGIN), labels), True)
    return SweepFilter(with_labels(active_filter(), labels), False)


@dataclass(frozen=True)
class Waited:
    """A waited job as a listing sees it. `answered` (epoch s): the last read that returned
    it (the wait's start until one did). `listed`: an earlier listing returned it.
    `prompted`: a notification since its last read said it may have ended its wait."""

    name: str
    answered: float
    listed: bool = False
    prompted: bool = False


def read_in(job: Waited, listed: bool, now: float, grace: float = Policy.unlisted_grace) -> float | None:
    """After a listing, when a job that is still waited on needs a GetJob of its own.

    None: never (the listing answered for it). 0: now. Otherwise in that many seconds,
    unless a listing shows it first. The rules, in order:
    - prompted: the listing did not settle what the prompt announced (missing, or shown in
      a state that ends no wait): it may be behind the message; GetJob is consistent;
    - listed: answered;
    - listed before, missing now: it left the listing (from an active-only listing it ended;
      from any listing it may have been deleted); GetJob tells;
    - never listed: ListJobs may not show it yet, or it was created before the listing's
      `createTime` bound; GetJob it once `grace` has passed without an answer.
    """
    if job.prompted:
        return 0.0
    if listed:
        return None
    if job.listed:
        return 0.0
    return max(0.0, job.answered + grace - now)


def to_get(
    waited: Iterable[Waited], listed: Collection[str], now: float, grace: float = Policy.unlisted_grace
) -> dict[str, float]:
    """The waited jobs a listing left needing a GetJob, with `read_in` seconds each."""
    out: dict[str, float] = {}
    for job in waited:
        delay = read_in(job, job.name in listed, now, grace)
        if delay is not None and job.name not in out:
            out[job.name] = delay
    return out


def prompt_worth_read(new_state: str | None, stop_states: Iterable[str]) -> bool:
    """Whether a notification should make the watcher read the job now.

    The message is a prompt, never the state (delivery is at least once and unordered), but
    its `NewJobState` says whether a read could end a wait: a job announced RUNNING to
    waiters that stop only at terminal states is left to the next round. An absent or
    unknown state is always worth a read.
    """
    if not new_state or new_state not in status.STATES:
        return True
    return new_state in status.TERMINAL or new_state in set(stop_states)
