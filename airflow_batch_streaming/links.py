"""Extra links: the Batch job in the Cloud console and its logs in Logs Explorer.

Airflow 3's API server does not call ``get_link``: it shows whatever string is stored in
XCom under each link's ``xcom_key`` (the worker stores ``get_link``'s result there when
the task ends). So the operator and the sensor push the URLs themselves as soon as the
job is known (:func:`persist_job_links`), which makes the buttons work while the task
is still running or deferred; ``get_link`` then just returns that stored URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

#: XCom key holding ``{name, uid, job_id, project_id, region, console_url, logs_url}``
#: of the job a task submitted or watches; downstream tasks can pull it.
BATCH_JOB_XCOM_KEY = "batch_job"


class _BatchJobUrlLink(BaseOperatorLink):
    """A link whose URL the task pushed to XCom under :attr:`xcom_key`."""

    key: ClassVar[str]

    @property
    def xcom_key(self) -> str:
        return self.key

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key=self.key)
        return value if isinstance(value, str) else ""


class BatchJobConsoleLink(_BatchJobUrlLink):
    """The job's page in the Google Cloud console."""

    name = "Batch Job"
    key = "batch_job_console_url"


class BatchJobLogsLink(_BatchJobUrlLink):
    """The job's task logs in Logs Explorer."""

    name = "Batch Job Logs"
    key = "batch_job_logs_url"


def job_xcom_value(
    summary: Mapping[str, Any], *, project_id: str | None, region: str | None
) -> dict[str, Any]:
    """The small, stable description of a job that tasks share through XCom."""
    return {
        "name": summary.get("name"),
        "uid": summary.get("uid"),
        "job_id": summary.get("job_id"),
        "project_id": project_id,
        "region": region,
        "console_url": summary.get("console_url"),
        "logs_url": summary.get("logs_url"),
    }


def persist_job_links(
    context: Context, summary: Mapping[str, Any], *, project_id: str | None, region: str | None
) -> dict[str, Any]:
    """Push the job description and both link URLs for the running task instance."""
    ti = context["ti"]
    value = job_xcom_value(summary, project_id=project_id, region=region)
    ti.xcom_push(key=BATCH_JOB_XCOM_KEY, value=value)
    if value["console_url"]:
        ti.xcom_push(key=BatchJobConsoleLink.key, value=value["console_url"])
    if value["logs_url"]:
        ti.xcom_push(key=BatchJobLogsLink.key, value=value["logs_url"])
    return value
