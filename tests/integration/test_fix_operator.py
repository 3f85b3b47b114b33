"""`BatchStreamingImageFixOperator`: credentials from Airflow connections, the digest in XCom, idempotent."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from airflow_batch_streaming.operators import BatchStreamingImageFixOperator
from airflow_batch_streaming.testing.registry import GZIPPED_EMPTY_TAR, LocalRegistry, build_image, tar_layer
from airflow_batch_streaming.testing.token_registry import TokenRegistry, _call

TARGET = "us-central1-docker.pkg.dev/proj/repo/op:latest-fixed"


@pytest.fixture(scope="module")
def bearer() -> Iterator[TokenRegistry]:
    registry = TokenRegistry().start()
    yield registry
    registry.stop()


def test_operator_returns_the_fixed_digest_and_is_idempotent(
    monkeypatch: pytest.MonkeyPatch, auth_registry: LocalRegistry, bearer: TokenRegistry
) -> None:
    image = build_image([tar_layer({"app/run.sh": b"echo hi\n"}), GZIPPED_EMPTY_TAR])
    auth_registry.push_built("op/src", "v1", image)
    source = {"conn_type": "generic", "login": auth_registry.username, "password": auth_registry.password}
    target = {"conn_type": "generic", "login": bearer.username, "password": bearer.secret}
    monkeypatch.setenv("AIRFLOW_CONN_FIX_SOURCE_REGISTRY", json.dumps(source))
    monkeypatch.setenv("AIRFLOW_CONN_FIX_TARGET_REGISTRY", json.dumps(target))
    op = BatchStreamingImageFixOperator(
        task_id="fix",
        source_image=f"{auth_registry.host}/op/src:v1",
        target=TARGET,
        region="us-central1",
        source_conn_id="fix_source_registry",
        target_conn_id="fix_target_registry",
        target_registry_url=bearer.url,
    )
    with capture_logs() as logs:
        first = op.execute({})  # type: ignore[arg-type]
    shown = json.dumps(logs, default=str)
    assert "dropped-empty-layer" in shown  # the task log shows what changed...
    assert bearer.secret not in shown and str(auth_registry.password) not in shown  # ...and no secret
    assert first.startswith("us-central1-docker.pkg.dev/proj/repo/op@sha256:")
    assert first.split("@")[1] != image.digest  # the empty layer is gone
    token = bearer.tokens.issue(["repository:proj/repo/op:pull"])
    status, headers, body = _call(
        "GET",
        f"{bearer.url}/v2/proj/repo/op/manifests/latest-fixed",
        headers={"Authorization": f"Bearer {token}", "Accept": image.media_type},
    )
    assert status == 200 and headers["Docker-Content-Digest"] == first.split("@")[1]
    assert len(json.loads(body)["layers"]) == 1
    assert op.execute({}) == first  # type: ignore[arg-type]


def test_operator_is_cheap_to_construct_and_templated() -> None:
    op = BatchStreamingImageFixOperator(
        task_id="fix", source_image="{{ params.src }}", target=TARGET, region="us-central1"
    )
    assert "source_image" in op.template_fields and "target" in op.template_fields


def test_operator_default_credentials_path_within_one_registry(
    monkeypatch: pytest.MonkeyPatch, local_registry: LocalRegistry
) -> None:
    """No connection ids: Artifact Registry on both sides through the hook (anonymous under the
    emulator) and BATCH_STREAMING_REGISTRY_URL; one registry, so the layers are mounted."""
    monkeypatch.setenv("BATCH_STREAMING_EMULATOR_HOST", "127.0.0.1:9")
    monkeypatch.setenv("BATCH_STREAMING_REGISTRY_URL", local_registry.url)
    image = build_image([tar_layer({"a.txt": b"a"}), tar_layer({"b.txt": b"b"}), tar_layer({"a.txt": b"a"})])
    local_registry.push_built("proj/src/app", "v1", image)
    op = BatchStreamingImageFixOperator(
        task_id="fix",
        source_image="us-central1-docker.pkg.dev/proj/src/app:v1",
        target="us-central1-docker.pkg.dev/proj/dst",
        region="us-central1",
    )
    with capture_logs() as logs:
        written = op.execute({})  # type: ignore[arg-type]
    assert written.startswith("us-central1-docker.pkg.dev/proj/dst/app@sha256:")
    shown = json.dumps(logs, default=str)
    assert "dropped-duplicate-layer" in shown
    assert "blobs 1 uploaded, 2 mounted" in shown  # the new config up; both kept layers mounted
