"""Wait for a Batch job to reach a state: poke, reschedule, or deferred to the triggerer."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_batch_streaming import status
from airflow_batch_streaming._compat import AirflowSensorTimeout, conf
from airflow_batch_streaming.exceptions import BatchStreamingError
from airflow_batch_streaming.links import BatchJobConsoleLink, BatchJobLogsLink, persist_job_links
from airflow_batch_streaming.operators._common import (
    EVENT_STATUSES,
    check_log_lines,
    check_states,
    coerce_rendered,
    deleted_job,
    failed_job,
    is_not_found,
    raise_for_job,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_batch_streaming.hooks.batch import BatchStreamingHook

#: Extra seconds Airflow's deferral timeout waits past the trigger's own deadline.
DEFER_GRACE_SECONDS = 60.0


class BatchJobStateSensor(BaseSensorOperator):
    """Wait until a Batch job is in one of ``target_states``; fail if it reaches a failure state.

    Works in the three sensor styles: ``mode="poke"`` (holds a worker slot),
    ``mode="reschedule"`` (frees it between pokes) and ``deferrable=True`` (pokes once,
    then hands the wait to the triggerer). The sensor never cancels the job: it does not
    own it. A terminal state that is neither a target nor a failure state (e.g. SUCCEEDED
    while waiting for RUNNING) fails the sensor rather than waiting forever.

    :param job_name: full resource name ``projects/P/locations/R/jobs/J`` (templated; e.g.
        ``"{{ ti.xcom_pull(task_ids='submit')['name'] }}"``).
    :param target_states: states that end the wait successfully.
    :param failure_states: states that fail the sensor with ``BatchJobFailedError`` (or
        ``BatchJobCancelledError`` for CANCELLED / DELETION_IN_PROGRESS).
    :param deferrable: wait in the triggerer (``poke_interval`` becomes its poll interval).
        When the job has a ``JOB_STATE_CHANGED`` Pub/Sub notification (the job operator's
        ``notification_topic``), the triggerer listens on that topic too (push).
    :param failure_log_lines: how many of the job's last output lines a failure shows.
    :param gcp_conn_id: Airflow connection to Google Cloud.
    :param impersonation_chain: service account(s) to impersonate.
    :return: the job summary (as the job operator returns it).
    """

    template_fields: Sequence[str] = (
        "job_name",
        "target_states",
        "failure_states",
        "gcp_conn_id",
        "impersonation_chain",
    )
    template_fields_renderers = {"target_states": "json", "failure_states": "json"}
    operator_extra_links = (BatchJobConsoleLink(), BatchJobLogsLink())
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        job_name: str,
        target_states: Sequence[str] = (status.SUCCEEDED,),
        failure_states: Sequence[str] = (status.FAILED, status.CANCELLED, status.DELETION_IN_PROGRESS),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        failure_log_lines: int = 20,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.target_states = target_states
        self.failure_states = failure_states
        self.deferrable = deferrable
        self.failure_log_lines = failure_log_lines
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self._links_pushed = False
        self._topic: str | None = None  # the job's notification topic, from the last poke
        problems = check_states(target_states, failure_states) + check_log_lines(failure_log_lines)
        if problems:
            raise ValueError(f"task {self.task_id!r}: " + "; ".join(problems))

    @cached_property
    def hook(self) -> BatchStreamingHook:
        from airflow_batch_streaming.hooks.batch import BatchStreamingHook

        return BatchStreamingHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)

    def _check_rendered(self) -> None:
        # A templated list renders to text ("['RUNNING']" or "RUNNING,SUCCEEDED"): parse it back.
        self.target_states = _state_list(self.target_states)
        self.failure_states = _state_list(self.failure_states)
        problems = check_states(self.target_states, self.failure_states)
        try:
            status.parse_job_name(self.job_name)
        except ValueError as error:
            problems.insert(0, f"job_name: {error}")
        if problems:
            raise ValueError("; ".join(problems))

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow_batch_streaming.hooks.batch import is_transient

        self._check_rendered()
        try:
            job = self.hook.get_job(self.job_name)  # the hook's retries: the only layer
        except Exception as error:
            if is_not_found(error) and status.DELETION_IN_PROGRESS in self.failure_states:
                # Deleted since the last poke: fail as for DELETION_IN_PROGRESS.
                raise_for_job(
                    self.hook, deleted_job(self.job_name), log=self.log, log_lines=self.failure_log_lines
                )
            if not is_transient(error):
                raise
            self.log.warning("Reading job %s failed (%s); will poke again", self.job_name, error)
            return False
        summary = status.summarize(job)
        self._topic = status.notification_topic(job)
        if not self._links_pushed:
            persist_job_links(context, summary, project_id=summary["project_id"], region=summary["region"])
            self._links_pushed = True
        state = summary["state"]
        self.log.info("Job %s is %s", self.job_name, state)
        outcome = status.outcome_of(state, self.target_states, self.failure_states)
        if outcome == "success":
            return PokeReturnValue(is_done=True, xcom_value=summary)
        if state in self.failure_states:
            raise_for_job(self.hook, job, log=self.log, log_lines=self.failure_log_lines)
        if outcome is not None:
            raise BatchStreamingError(
                f"job {self.job_name} ended {state}, which is not one of the target states "
                f"{list(self.target_states)}: it will not change any more"
            )
        return False

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        started = time.time()
        result = self.poke(context)
        if result:
            return result.xcom_value if isinstance(result, PokeReturnValue) else None
        self._defer(started)
        return None  # pragma: no cover - defer() raises

    def _defer(self, started: float) -> None:
        from airflow_batch_streaming.triggers.batch import BatchJobStateTrigger

        end_time = started + self.timeout
        trigger = BatchJobStateTrigger(
            job_name=self.job_name,
            gcp_conn_id=self.gcp_conn_id,
            impersonation_chain=self.impersonation_chain,
            target_states=tuple(self.target_states),
            failure_states=tuple(self.failure_states),
            poll_interval=self.poke_interval or None,  # 0: the trigger's adaptive interval
            end_time=end_time,
            cancel_on_kill=False,
            cancel_on_timeout=False,
            notification_topic=self._topic,
        )
        self.log.info("Deferring: the triggerer waits for job %s", self.job_name)
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFER_GRACE_SECONDS),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: the summary on success, our error types otherwise."""
        if not event or not isinstance(event, Mapping):
            raise BatchStreamingError(
                f"resumed without a trigger event (got {event!r}); the job's state is unknown"
            )
        event_status = event.get("status")
        name = str(event.get("job_name") or self.job_name)
        if event_status not in EVENT_STATUSES:
            raise BatchStreamingError(f"unexpected trigger event for job {name}: {dict(event)!r}")
        if event_status == "success":
            summary = event.get("job")
            if not isinstance(summary, dict):
                summary = status.summarize(self.hook.get_job(name))
            self.log.info("Job %s is %s", name, summary.get("state"))
            return summary
        if event_status in ("failed", "cancelled", "deleted"):
            job = failed_job(self.hook, event, log=self.log)
            raise_for_job(self.hook, job, log=self.log, log_lines=self.failure_log_lines)
        if event_status == "timeout":
            raise AirflowSensorTimeout(
                f"job {name} did not reach {list(self.target_states)} within {self.timeout:g} s "
                f"(it is {event.get('state')}); {event.get('message') or ''}".rstrip("; ")
            )
        raise BatchStreamingError(f"waiting for job {name} failed: {event.get('message') or 'no message'}")


def _state_list(value: Any) -> Any:
    """A rendered state list: text of a list parsed back, a bare "A,B" split; else as given."""
    value = coerce_rendered(value)
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
