"""`BatchJobStateTrigger`: wait in the triggerer until a Batch job reaches a state.

The trigger does not poll by itself: it asks the process-wide `JobWatcher`
(`triggers/watcher.py`), which shares one client, one poll per job and a read budget
between all triggers of the triggerer. Importing this module is cheap (no Google client,
no grpc), so operators may import it at module level.

It yields exactly one event and returns::

    {"status": "success" | "failed" | "cancelled" | "deleted" | "timeout" | "error",
     "state": "<JobStatus.State name>" | None,
     "job_name": "projects/P/locations/R/jobs/J",
     "job": status.summarize(job) | None,     # JSON-safe: state, timeline, urls, reason
     "message": "..."}

Status by state: a state in `target_states` is "success"; CANCELLED is "cancelled";
DELETION_IN_PROGRESS, or the job no longer existing, is "deleted"; any other state in
`failure_states`, and any other terminal state, is "failed". CANCELLATION_IN_PROGRESS is
not final: the trigger keeps waiting until the job is CANCELLED (and reports
"cancelled"), unless it is listed in `failure_states`. Every status except "success"
means the task should fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_batch_streaming import status

DEFAULT_TARGET_STATES = status.DEFAULT_TARGET_STATES
DEFAULT_FAILURE_STATES = status.DEFAULT_FAILURE_STATES
#: Seconds a cancel (on timeout or kill) may take, retries included.
CANCEL_TIMEOUT = 60.0


def _states(values: Sequence[str] | str, what: str) -> tuple[str, ...]:
    items = (values,) if isinstance(values, str) else tuple(values)
    unknown = [v for v in items if v not in status.STATES]
    if unknown:
        raise ValueError(f"{what} has unknown job states {unknown}; known: {', '.join(status.STATES[1:])}")
    return items


class BatchJobStateTrigger(BaseTrigger):
    """Fires once the Batch job `job_name` reaches a target, failure or terminal state.

    :param job_name: the job's full name, ``projects/P/locations/R/jobs/J``.
    :param target_states: states that count as success.
    :param failure_states: states that end the wait as a failure (terminal states always end it).
    :param poll_interval: seconds between reads of this job; None adapts (5 s while queued,
        up to 60 s for a long-running job).
    :param end_time: absolute deadline (``time.time()`` seconds). Absolute, so a triggerer
        restart does not reset it. None waits without limit.
    :param cancel_on_kill: cancel the job when a user marks, clears or kills the deferred task.
    :param cancel_on_timeout: cancel the job when `end_time` passes.
    :param notification_topic: the Pub/Sub topic the job publishes JOB_STATE_CHANGED
        notifications to: the watcher listens on it and reads the job when told (push),
        polling only as a fallback. None: polling only.
    """

    def __init__(
        self,
        job_name: str,
        *,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        target_states: Sequence[str] = DEFAULT_TARGET_STATES,
        failure_states: Sequence[str] = DEFAULT_FAILURE_STATES,
        poll_interval: float | None = None,
        end_time: float | None = None,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        notification_topic: str | None = None,
    ) -> None:
        super().__init__()
        status.parse_job_name(job_name)
        self.job_name = job_name
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = (
            impersonation_chain
            if impersonation_chain is None or isinstance(impersonation_chain, str)
            else list(impersonation_chain)
        )
        self.target_states = _states(target_states, "target_states")
        self.failure_states = _states(failure_states, "failure_states")
        overlap = set(self.target_states) & set(self.failure_states)
        if overlap:
            raise ValueError(f"states {sorted(overlap)} are both target and failure states")
        if poll_interval is not None and poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.poll_interval = float(poll_interval) if poll_interval is not None else None
        self.end_time = float(end_time) if end_time is not None else None
        self.cancel_on_kill = bool(cancel_on_kill)
        self.cancel_on_timeout = bool(cancel_on_timeout)
        self.notification_topic = notification_topic or None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_name": self.job_name,
                "gcp_conn_id": self.gcp_conn_id,
                "impersonation_chain": self.impersonation_chain,
                "target_states": list(self.target_states),
                "failure_states": list(self.failure_states),
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "cancel_on_kill": self.cancel_on_kill,
                "cancel_on_timeout": self.cancel_on_timeout,
                "notification_topic": self.notification_topic,
            },
        )

    def _watcher(self) -> Any:
        from airflow_batch_streaming.triggers.watcher import get_watcher

        return get_watcher(self.gcp_conn_id, self.impersonation_chain)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self.log.info(
            "Waiting for Batch job %s to reach %s%s",
            self.job_name,
            "/".join(self.target_states),
            f" (deadline {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(self.end_time))} UTC)"
            if self.end_time
            else "",
        )
        try:
            result = await self._watcher().wait(
                self.job_name,
                stop_states=set(self.target_states) | set(self.failure_states),
                deadline=self.end_time,
                poll_interval=self.poll_interval,
                notification_topic=self.notification_topic,
            )
            event = await self._event(result)
        except Exception as exc:  # CancelledError is a BaseException: it propagates
            self.log.exception("Waiting for Batch job %s failed", self.job_name)
            event = self._payload(
                "error", None, None, f"waiting for the job failed: {type(exc).__name__}: {exc}"
            )
        self.log.info("Batch job %s: %s (%s)", self.job_name, event["status"], event["message"])
        yield TriggerEvent(event)

    async def _event(self, result: Any) -> dict[str, Any]:
        state: str | None = result.state
        if result.outcome == "deleted":
            return self._payload("deleted", state, None, f"Batch job {self.job_name} no longer exists")
        if result.outcome == "error":
            return self._payload("error", state, result.job, result.message)
        if result.outcome == "timeout":
            cancelled = False
            if self.cancel_on_timeout:
                try:
                    async with asyncio.timeout(CANCEL_TIMEOUT):
                        cancelled = await self._watcher().cancel(self.job_name)
                except Exception as exc:  # TimeoutError included: the event must still fire
                    self.log.warning(
                        "Cancelling Batch job %s after the timeout failed: %s", self.job_name, exc
                    )
            outcome = "it was cancelled" if cancelled else "it was left as it is"
            return self._payload(
                "timeout",
                state,
                result.job,
                f"Batch job {self.job_name} did not finish before the deadline "
                f"(last state {state}); {outcome}",
                cancelled=cancelled,
            )
        kind = status.outcome_of(state or "", self.target_states, self.failure_states) or "failed"
        tasks = await self._failed_tasks() if state == status.FAILED else None
        return self._payload(kind, state, result.job, None, tasks=tasks)

    async def _failed_tasks(self) -> list[Any] | None:
        """The failed tasks (for exit codes); best effort, one read."""
        try:
            watcher = self._watcher()
            async with watcher.hook_in_use() as hook:
                await watcher.budget.acquire()
                return list(
                    await hook.list_tasks_async(self.job_name, filter=f'status.state="{status.FAILED}"')
                )
        except Exception as exc:
            self.log.info("Could not list the failed tasks of %s: %s", self.job_name, exc)
            return None

    def _payload(
        self,
        kind: str,
        state: str | None,
        job: Any,
        message: str | None,
        *,
        tasks: list[Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        try:
            return status.wait_event(
                kind, self.job_name, state=state, job=job, tasks=tasks, message=message, **extra
            )
        except Exception as exc:  # a summary is a nicety; the event must still fire
            self.log.warning("Could not summarize Batch job %s: %s", self.job_name, exc)
            return status.wait_event(kind, self.job_name, state=state, message=message or kind, **extra)

    async def on_kill(self) -> None:
        """Cancel the job when a user kills, marks or clears the deferred task (Airflow 3.3+)."""
        if not self.cancel_on_kill:
            return
        async with asyncio.timeout(CANCEL_TIMEOUT):
            cancelled = await self._watcher().cancel(self.job_name)
        self.log.info(
            "Task killed: %s Batch job %s",
            "cancelled" if cancelled else "nothing to cancel for",
            self.job_name,
        )
