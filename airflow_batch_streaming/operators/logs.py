"""Copy a Batch job's own output from Cloud Logging into the Airflow task log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_batch_streaming import status
from airflow_batch_streaming.operators._common import (
    SEVERITY_ORDER,
    entry_fields,
    entry_prefix,
    is_dynamic,
    is_error_severity,
    log_filter,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_batch_streaming.hooks.batch import BatchStreamingHook


class BatchJobLogsOperator(BaseOperator):
    """Fetch a job's task logs (and optionally the Batch agent's) into this task's log.

    Each entry becomes one line ``[task N] text``; ERROR and worse (a task's stderr) are
    logged at warning level. The query always has an explicit time bound (the job's
    creation, or ``start_time``) because without one Cloud Logging only searches the last
    24 hours; it reads at most ``max_entries`` entries, oldest first. Cloud Logging's read
    quota is small: RESOURCE_EXHAUSTED is waited out with exponential backoff (the hook
    retries it with a longer backoff than other errors) instead of failing the task.

    :param job_name: full resource name ``projects/P/locations/R/jobs/J`` (templated).
    :param include_agent_logs: also fetch ``batch_agent_logs`` (the agent's view of VM
        start-up, image pull and task runs).
    :param max_entries: cap on entries read; the result says when it was reached.
    :param min_severity: only entries at least this severe (``INFO``, ``WARNING``,
        ``ERROR``, ...).
    :param start_time: RFC 3339 lower bound on entry timestamps; default the job's
        creation time.
    :param last_lines: how many of the last lines the result keeps.
    :param gcp_conn_id: Airflow connection to Google Cloud.
    :param impersonation_chain: service account(s) to impersonate.
    :return: ``{"job_name", "entries", "by_severity", "last_lines", "truncated", "filter"}``.
    """

    template_fields: Sequence[str] = (
        "job_name",
        "min_severity",
        "start_time",
        "gcp_conn_id",
        "impersonation_chain",
    )
    ui_color = "#fef7e0"

    def __init__(
        self,
        *,
        job_name: str,
        include_agent_logs: bool = False,
        max_entries: int = 1000,
        min_severity: str | None = None,
        start_time: str | None = None,
        last_lines: int = 20,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.include_agent_logs = include_agent_logs
        self.max_entries = max_entries
        self.min_severity = min_severity
        self.start_time = start_time
        self.last_lines = last_lines
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        problems = self._problems()
        if problems:
            raise ValueError(f"task {self.task_id!r}: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if (
            not isinstance(self.max_entries, int)
            or isinstance(self.max_entries, bool)
            or self.max_entries < 1
        ):
            problems.append(f"max_entries must be a positive integer, got {self.max_entries!r}")
        if not isinstance(self.last_lines, int) or isinstance(self.last_lines, bool) or self.last_lines < 0:
            problems.append(f"last_lines must be a non-negative integer, got {self.last_lines!r}")
        severity = self.min_severity
        if severity and not is_dynamic(severity) and str(severity).upper() not in SEVERITY_ORDER:
            problems.append(f"min_severity must be one of {', '.join(SEVERITY_ORDER)}, got {severity!r}")
        start = self.start_time
        if start and not is_dynamic(start):
            try:
                datetime.fromisoformat(str(start).replace("Z", "+00:00"))
            except ValueError:
                problems.append(f"start_time must be an RFC 3339 timestamp, got {start!r}")
        if isinstance(self.job_name, str) and not is_dynamic(self.job_name):
            try:
                status.parse_job_name(self.job_name)
            except ValueError as error:
                problems.append(f"job_name: {error}")
        return problems

    @cached_property
    def hook(self) -> BatchStreamingHook:
        from airflow_batch_streaming.hooks.batch import BatchStreamingHook

        return BatchStreamingHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)

    def execute(self, context: Context) -> dict[str, Any]:
        problems = self._problems()
        if problems:
            raise ValueError("; ".join(problems))
        summary = status.summarize(self.hook.get_job(self.job_name))
        project_id, uid = summary["project_id"], summary["uid"]
        since = self.start_time or summary["create_time"]
        if not (uid and since):
            raise ValueError(f"job {self.job_name} has no uid or create time yet: its logs cannot be queried")
        query = log_filter(
            uid,
            since,
            include_agent_logs=self.include_agent_logs,
            min_severity=str(self.min_severity).upper() if self.min_severity else None,
        )
        self.log.info("Reading the logs of job %s (state %s): %s", self.job_name, summary["state"], query)
        # One entry past the cap tells "exactly max_entries" from "truncated".
        entries = self.hook.list_log_entries(
            project_id,
            query,
            order_by="timestamp asc",
            max_entries=self.max_entries + 1,
            page_size=min(self.max_entries + 1, 1000),
        )
        truncated = len(entries) > self.max_entries
        by_severity: dict[str, int] = {}
        tail: list[str] = []
        for entry in entries[: self.max_entries]:
            fields = entry_fields(entry)
            line = f"{entry_prefix(fields)} {fields['text']}"
            severity = fields["severity"]
            by_severity[severity] = by_severity.get(severity, 0) + 1
            if is_error_severity(severity):
                self.log.warning("%s", line)
            else:
                self.log.info("%s", line)
            tail.append(line)
            if len(tail) > self.last_lines:
                del tail[0]
        count = min(len(entries), self.max_entries)
        if truncated:
            self.log.warning(
                "Stopped after max_entries=%d entries; the job wrote more (see Logs Explorer: %s)",
                self.max_entries,
                summary["logs_url"],
            )
        self.log.info("%d log entries of job %s", count, self.job_name)
        return {
            "job_name": self.job_name,
            "entries": count,
            "by_severity": dict(sorted(by_severity.items(), key=lambda kv: _rank(kv[0]))),
            "last_lines": tail if self.last_lines else [],
            "truncated": truncated,
            "filter": query,
        }


def _rank(severity: str) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)
