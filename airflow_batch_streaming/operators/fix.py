"""Make an image streamable where the job runs, as its own task: `fix >> job`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_batch_streaming.hooks.batch import BatchStreamingHook
    from airflow_batch_streaming.registry_push import RegistryWriter


class BatchStreamingImageFixOperator(BaseOperator):
    """Write a streamable copy of ``source_image`` into Artifact Registry and return its digest reference.

    Copies the image into ``target`` (an Artifact Registry image or repository whose location
    serves ``region``), dropping empty layers and dropping or re-serialising duplicate ones
    without changing the container's files (see `airflow_batch_streaming.doctor`). Idempotent:
    the same source digest and target write nothing the second time and return the same
    digest. Fails when the result would still not stream (the preflight report says why).
    Use the result as ``image_uri="{{ ti.xcom_pull('fix') }}"`` in a `BatchStreamingJobOperator`.

    :param source_image: any image reference (Docker Hub, GHCR, another AR repository...).
    :param target: ``LOCATION-docker.pkg.dev/PROJECT/REPO[/NAME[:TAG]]``; a tag is moved to the result.
    :param region: the region the job's VMs run in.
    :param platform: fix only this platform of an index (default: every platform).
    :param source_conn_id: Airflow connection with the source registry's login and password.
        Without it: Google credentials for an Artifact Registry source, else the Docker config
        file's ``auths`` (``docker_config``), else anonymous.
    :param target_conn_id: a connection with login/password for the target instead of the Google
        credentials (``oauth2accesstoken`` + the hook's access token).
    :param source_registry_url: read the source's host from this URL instead.
    :param target_registry_url: write the target's host to this URL instead.
    :param docker_config: path of a Docker ``config.json`` (default: ``$DOCKER_CONFIG`` or ``~/.docker``).
    :param gcp_conn_id: Airflow connection to Google Cloud.
    :param impersonation_chain: service account(s) to impersonate.
    :return: the written image as ``HOST/PROJECT/REPO/NAME@sha256:...``.
    """

    template_fields: Sequence[str] = (
        "source_image",
        "target",
        "region",
        "platform",
        "source_registry_url",
        "target_registry_url",
        "gcp_conn_id",
        "impersonation_chain",
    )
    ui_color = "#fef7e0"

    def __init__(
        self,
        *,
        source_image: str,
        target: str,
        region: str,
        platform: str | None = None,
        source_conn_id: str | None = None,
        target_conn_id: str | None = None,
        source_registry_url: str | None = None,
        target_registry_url: str | None = None,
        docker_config: str | None = None,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_image = source_image
        self.target = target
        self.region = region
        self.platform = platform
        self.source_conn_id = source_conn_id
        self.target_conn_id = target_conn_id
        self.source_registry_url = source_registry_url
        self.target_registry_url = target_registry_url
        self.docker_config = docker_config
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain

    @cached_property
    def hook(self) -> BatchStreamingHook:
        from airflow_batch_streaming.hooks.batch import BatchStreamingHook

        return BatchStreamingHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)

    def _writer(self, uri: str, conn_id: str | None, url: str | None) -> RegistryWriter:
        from airflow_batch_streaming.image import ImageReferenceError, parse_image_uri
        from airflow_batch_streaming.registry_push import RegistryWriter, docker_config_auth

        if conn_id:
            from airflow.sdk import BaseHook

            conn = BaseHook.get_connection(conn_id)
            password = conn.password or ""
            return RegistryWriter(
                username=conn.login or "oauth2accesstoken", token_provider=lambda: password, base_url=url
            )
        try:
            ref = parse_image_uri(uri)
        except ImageReferenceError:
            return RegistryWriter(base_url=url)  # fix_image reports the bad reference
        if ref.is_artifact_registry:
            return RegistryWriter(token_provider=self.hook.registry_token, base_url=url)
        creds = docker_config_auth(ref.host, self.docker_config)
        if creds is not None:
            user, secret = creds
            token: Callable[[], str | None] = lambda: secret  # noqa: E731
            return RegistryWriter(username=user, token_provider=token, base_url=url)
        return RegistryWriter(base_url=url)

    def execute(self, context: Context) -> str:
        from airflow_batch_streaming import doctor

        result = doctor.fix_image(
            self.source_image,
            self.target,
            self.region,
            platform=self.platform or None,
            source_client=self._writer(self.source_image, self.source_conn_id, self.source_registry_url),
            target_client=self._writer(self.target, self.target_conn_id, self.target_registry_url),
        )
        self.log.info("Fix:\n%s", result.format_text())
        if result.preflight is not None:
            result.preflight.raise_for_errors()
        return result.target
