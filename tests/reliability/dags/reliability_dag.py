"""The reliability guarantees under real Airflow, in one `airflow dags test` run.

`lost_create` runs first and meets the fault the test sets on the emulator (its CreateJob
answer is lost); then, side by side: a flaky job retried by Airflow, a sync and a deferred
task whose timeout expires, and a task that reads its image from a registry with a token
and passes a Secret Manager variable to the job. Project, image, registry token file and
the flaky job's marker come from the environment the test sets.
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import DAG

from airflow_batch_streaming.operators import BatchStreamingJobOperator

PROJECT = os.environ.get("REL_PROJECT", "rel-project")
REGION = os.environ.get("REL_REGION", "us-central1")
IMAGE = os.environ.get("REL_IMAGE", f"{REGION}-docker.pkg.dev/{PROJECT}/repo/app:1.0")
MARKER = os.environ.get("REL_FLAKY_MARKER", "/tmp/reliability-flaky-marker")
SECRET_REF = os.environ.get("REL_SECRET_REF", f"projects/{PROJECT}/secrets/db-password/versions/1")
#: The first 16 hex digits of the secret's SHA-256: the job checks its value against it.
SECRET_SHA256_PREFIX = os.environ.get("REL_SECRET_SHA256_PREFIX", "")
SH = ["/bin/sh", "-c"]


class TokenJobOperator(BatchStreamingJobOperator):
    """The job operator with a registry access token, as its hook has on GCP.

    Under the emulator the hook has no credentials and so no token; this one reads it from
    a file, so the token is in no environment variable and no argument.
    """

    @cached_property
    def hook(self) -> Any:
        from airflow_batch_streaming.hooks.batch import BatchStreamingHook

        class TokenHook(BatchStreamingHook):
            def registry_token(self) -> str | None:
                return Path(os.environ["REL_REGISTRY_TOKEN_FILE"]).read_text().strip()

        return TokenHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)


with DAG(dag_id="reliability", schedule=None, catchup=False) as dag:
    common: dict[str, Any] = {
        "project_id": PROJECT,
        "region": REGION,
        "image_uri": IMAGE,
        "poll_interval": 0.5,
    }
    lost_create = BatchStreamingJobOperator(
        task_id="lost_create", commands=[*SH, "echo created once"], preflight=False, **common
    )
    flaky_retry = BatchStreamingJobOperator(
        task_id="flaky_retry",
        commands=[
            *SH,
            f'if [ -e "{MARKER}" ]; then echo "second try: ok"; else touch "{MARKER}"; exit 3; fi',
        ],
        preflight=False,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **common,
    )
    timeout_sync = BatchStreamingJobOperator(
        task_id="timeout_sync", commands=[*SH, "sleep 60"], preflight=False, timeout=3, **common
    )
    timeout_deferred = BatchStreamingJobOperator(
        task_id="timeout_deferred",
        commands=[*SH, "sleep 60"],
        preflight=False,
        timeout=3,
        deferrable=True,
        **common,
    )
    with_secrets = TokenJobOperator(
        task_id="with_secrets",
        commands=[
            *SH,
            f'test "$(printf %s "$DB_PASSWORD" | sha256sum | cut -c1-16)" = "{SECRET_SHA256_PREFIX}" '
            '&& echo "the password checks out"',
        ],
        environment={"GREETING": "hello"},
        secret_environment={"DB_PASSWORD": SECRET_REF},
        **common,
    )
    lost_create >> [flaky_retry, timeout_sync, timeout_deferred, with_secrets]
