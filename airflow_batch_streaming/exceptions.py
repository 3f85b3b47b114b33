"""The package's exceptions: one type per kind of failure, each with structured details.

DAG authors catch these by type, and failure callbacks read their attributes instead of
parsing messages. Pure: importable without Airflow or the Google libraries. Each type
pickles with its details (Airflow may pickle an exception across processes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_batch_streaming.preflight import Report

# Batch's task exit code for a Spot VM that was preempted.
PREEMPTED_EXIT_CODE = 50001


class BatchStreamingError(Exception):
    """Base of every error this package raises on purpose.

    Pickles with its message and every attribute, including ones added after
    construction, without calling `__init__` again.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(vars(self))))


def _rebuild(
    cls: type[BatchStreamingError], args: tuple[Any, ...], state: dict[str, Any]
) -> BatchStreamingError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    vars(error).update(state)
    return error


class PreflightFailedError(BatchStreamingError):
    """The preflight found errors: the job would not stream (or would not run) as asked."""

    def __init__(self, report: Report) -> None:
        self.report = report
        problems = report.errors or report.warnings  # warnings fail only with fail_on_warnings
        kind = "error" if report.errors else "warning"
        subject = report.image or "the job"
        lines = [f"preflight of {subject} in {report.location} failed with {_count(len(problems), kind)}:"]
        lines += [f"  {finding.code}: {finding.message}" for finding in problems]
        super().__init__("\n".join(lines))

    @property
    def findings(self) -> list[dict[str, str]]:
        """Every finding (errors and warnings) as JSON-safe dicts."""
        return [finding.to_dict() for finding in self.report.findings]


class BatchJobFailedError(BatchStreamingError):
    """The Batch job ended FAILED.

    `failed_tasks` is the number of failed tasks, `exit_codes` the distinct task exit
    codes seen, `events` the job's status events (as dicts or strings), `reason` a
    one-line explanation and `output` the last lines the job logged.
    """

    def __init__(
        self,
        job_name: str,
        state: str = "FAILED",
        failed_tasks: int = 0,
        exit_codes: Iterable[int] = (),
        events: Sequence[Any] = (),
        *,
        reason: str = "",
        output: Sequence[str] = (),
    ) -> None:
        self.job_name = job_name
        self.state = state
        self.failed_tasks = failed_tasks
        self.exit_codes = tuple(exit_codes)
        self.events = list(events)
        self.reason = reason
        self.output = list(output)
        message = f"Batch job {job_name} ended {state}"
        if failed_tasks:
            message += f": {_count(failed_tasks, 'task')} failed"
        if self.exit_codes:
            message += f" (exit codes {', '.join(str(code) for code in self.exit_codes)})"
        if self.preempted:
            message += f"; exit code {PREEMPTED_EXIT_CODE} means a Spot VM was preempted"
        last = _last_event(self.events)
        if last:
            message += f". Last event: {last}"
        super().__init__(_with_details(message, reason, self.output))

    @property
    def preempted(self) -> bool:
        """Whether a task failed because its Spot VM was preempted."""
        return PREEMPTED_EXIT_CODE in self.exit_codes


class BatchJobCancelledError(BatchStreamingError):
    """The Batch job was cancelled (or is being deleted) before it finished."""

    def __init__(
        self,
        job_name: str,
        state: str = "CANCELLED",
        events: Sequence[Any] = (),
        *,
        reason: str = "",
        output: Sequence[str] = (),
    ) -> None:
        self.job_name = job_name
        self.state = state
        self.events = list(events)
        self.reason = reason
        self.output = list(output)
        message = f"Batch job {job_name} ended {state}"
        last = _last_event(self.events)
        if last:
            message += f". Last event: {last}"
        super().__init__(_with_details(message, reason, self.output))


class BatchJobTimeoutError(BatchStreamingError):
    """The job did not finish within `timeout` seconds; `cancelled` tells whether we cancelled it."""

    def __init__(self, job_name: str, timeout: float, cancelled: bool = False) -> None:
        self.job_name = job_name
        self.timeout = timeout
        self.cancelled = cancelled
        outcome = "it was cancelled" if cancelled else "it was left running"
        super().__init__(f"Batch job {job_name} did not finish within {timeout:g} s; {outcome}")


def _with_details(message: str, reason: str, output: Sequence[str]) -> str:
    lines = [message]
    if reason:
        lines.append(reason)
    if output:
        lines.append("Last lines of the job's output:")
        lines += [f"  {line}" for line in output]
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _last_event(events: Sequence[Any]) -> str:
    """A status event's description (Batch's `statusEvents[].description`), if any."""
    if not events:
        return ""
    event = events[-1]
    if isinstance(event, dict):
        return str(event.get("description") or event.get("type") or "")
    return str(event)
