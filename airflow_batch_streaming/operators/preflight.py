"""Check, as its own task, that an image or a job would stream on Batch."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_batch_streaming import checker
from airflow_batch_streaming.operators._common import coerce_rendered, is_dynamic

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_batch_streaming.hooks.batch import BatchStreamingHook


class BatchStreamingPreflightOperator(BaseOperator):
    """Run the Image Streaming preflight for an image or a whole job; fail on any error.

    Checks everything that can be known before submission: the image reference and its
    Artifact Registry location against the VMs' region, the manifest the VMs would run
    (schema, platform, empty or duplicate layers), unsupported container fields, and that
    the Container File System API is enabled in the project. The task log shows the full
    report; the task fails listing every error (and, with ``fail_on_warnings``, warning).

    :param project_id: project whose Container File System API is checked.
    :param region: region (or zone) the job's VMs run in.
    :param image_uri: the image to check (give this or ``job``).
    :param job: a job to check: REST JSON dict or text, or a ``batch_v1.Job`` (templated,
        shown as JSON).
    :param platform: ``linux/amd64`` or ``linux/arm64``; by default derived from the job's
        machine type (amd64 for an image alone).
    :param fail_on_warnings: also fail on warnings (e.g. a tag instead of a digest).
    :param fail_on_errors: fail on error findings (default). ``False`` returns the report
        anyway, for a downstream task that judges several reports together (a gate).
    :param check_api: check that the Container File System API is enabled.
    :param gcp_conn_id: Airflow connection to Google Cloud.
    :param impersonation_chain: service account(s) to impersonate.
    :return: the report as a dict: ``{image, location, ok, findings: [{code, severity,
        message, hint}], manifest}``.
    """

    template_fields: Sequence[str] = (
        "project_id",
        "region",
        "image_uri",
        "job",
        "platform",
        "gcp_conn_id",
        "impersonation_chain",
    )
    template_fields_renderers = {"job": "json"}
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        project_id: str,
        region: str,
        image_uri: str | None = None,
        job: Any = None,
        platform: str | None = None,
        fail_on_warnings: bool = False,
        fail_on_errors: bool = True,
        check_api: bool = True,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (image_uri is None) == (job is None):
            raise ValueError(f"task {self.task_id!r}: give exactly one of image_uri and job")
        self.project_id = project_id
        self.region = region
        self.image_uri = image_uri
        self.job = job
        self.platform = platform
        self.fail_on_warnings = fail_on_warnings
        self.fail_on_errors = fail_on_errors
        self.check_api = check_api
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain

    @cached_property
    def hook(self) -> BatchStreamingHook:
        from airflow_batch_streaming.hooks.batch import BatchStreamingHook

        return BatchStreamingHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)

    def prepare_template(self) -> None:
        # A batch_v1.Job is opaque to Jinja: as REST JSON its nested strings render too.
        if self.job is not None and not isinstance(self.job, dict | str) and not is_dynamic(self.job):
            from airflow_batch_streaming.spec import job_to_rest

            self.job = job_to_rest(self.job)

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self.hook
        options: dict[str, Any] = {
            "project": self.project_id or None,
            "platform": self.platform or None,
            "registry": hook.registry_client(),
            "api_check": hook.is_service_enabled if self.check_api else None,
        }
        if self.job is not None:
            report = checker.check_job(coerce_rendered(self.job), self.region, **options)
        else:
            report = checker.check_image(self.image_uri or "", self.region, **options)
        self.log.info("Preflight:\n%s", report.format_text())
        if self.fail_on_errors:
            report.raise_for_errors(fail_on_warnings=self.fail_on_warnings)
        return report.to_dict()
