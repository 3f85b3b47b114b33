"""`airflow-batch-streaming fix` end to end: exit codes, the JSON shape, credentials from a Docker config."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_batch_streaming.cli import main
from airflow_batch_streaming.testing.registry import (
    BuiltImage,
    LocalRegistry,
    StaticRegistry,
    build_image,
    empty_layer_image,
    schema1_manifest,
    sha256_digest,
    tar_layer,
)
from airflow_batch_streaming.testing.token_registry import TokenRegistry, _call

TARGET = "us-central1-docker.pkg.dev/proj/repo"


@pytest.fixture(scope="module")
def bearer() -> Iterator[TokenRegistry]:
    registry = TokenRegistry().start()
    yield registry
    registry.stop()


@pytest.fixture
def docker_config(tmp_path: Path, auth_registry: LocalRegistry, bearer: TokenRegistry) -> str:
    def entry(user: str, password: str) -> dict[str, str]:
        return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}

    assert auth_registry.password is not None
    config = {
        "auths": {
            auth_registry.host: entry(auth_registry.username, auth_registry.password),
            bearer.host: {"username": bearer.username, "password": bearer.secret},
        }
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["fix", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_fix_json_and_tag(
    capsys: pytest.CaptureFixture[str],
    auth_registry: LocalRegistry,
    bearer: TokenRegistry,
    docker_config: str,
) -> None:
    image = empty_layer_image("empty-tar-diff-id", oci=True)
    auth_registry.push_built("cli/app", "v1", image)
    code, out, err = run(
        capsys,
        f"{auth_registry.host}/cli/app:v1",
        "--to",
        f"{TARGET}/app:fixed",
        "--location",
        "us-central1-a",
        "--target-registry-url",
        bearer.url,
        "--docker-config",
        docker_config,
        "--json",
    )
    assert code == 0, out + err
    data = json.loads(out)
    assert data["source"] == f"{auth_registry.host}/cli/app:v1"
    assert data["target"].startswith(f"{TARGET}/app@sha256:")
    assert [c["code"] for c in data["changes"]] == ["copied", "dropped-empty-layer"]
    assert all(set(c) == {"code", "message"} for c in data["changes"])
    assert data["preflight"]["ok"] is True and data["preflight"]["manifest"]["layers"] == 1
    # The tag points at the written image.
    token = bearer.tokens.issue(["repository:proj/repo/app:pull"])
    status, headers, _ = _call(
        "HEAD",
        f"{bearer.url}/v2/proj/repo/app/manifests/fixed",
        headers={"Authorization": f"Bearer {token}", "Accept": image.media_type},
    )
    assert status == 200 and headers["Docker-Content-Digest"] == data["target"].split("@")[1]
    assert bearer.secret not in out + err and str(auth_registry.password) not in out + err


def test_target_repository_only_takes_the_source_name(
    capsys: pytest.CaptureFixture[str],
    auth_registry: LocalRegistry,
    bearer: TokenRegistry,
    docker_config: str,
) -> None:
    auth_registry.push_built("cli/named", "v1", build_image([tar_layer({"x": b"x"})]))
    code, out, err = run(
        capsys,
        f"{auth_registry.host}/cli/named:v1",
        "--to",
        TARGET,
        "--location",
        "us-central1",
        "--target-registry-url",
        bearer.url,
        "--docker-config",
        docker_config,
    )
    assert code == 0, out + err
    assert f"-> wrote {TARGET}/named@sha256:" in out
    assert "unchanged" in out


def test_dry_run_and_bad_location(
    capsys: pytest.CaptureFixture[str],
    auth_registry: LocalRegistry,
    bearer: TokenRegistry,
    docker_config: str,
) -> None:
    auth_registry.push_built("cli/dry", "v1", empty_layer_image("zero-size"))
    common = ["--target-registry-url", bearer.url, "--docker-config", docker_config, "--json"]
    code, out, _ = run(
        capsys,
        f"{auth_registry.host}/cli/dry:v1",
        "--to",
        f"{TARGET}/dry",
        "--location",
        "us-central1",
        "--dry-run",
        *common,
    )
    assert code == 0
    data = json.loads(out)
    assert data["dry_run"] is True and data["preflight"] is None and data["stats"]["bytes_uploaded"] == 0

    code, out, _ = run(
        capsys,
        f"{auth_registry.host}/cli/dry:v1",
        "--to",
        f"{TARGET}/dry",
        "--location",
        "europe-west4",
        *common,
    )
    assert code == 2
    assert json.loads(out)["error"]["code"] == "location-mismatch"

    code, out, err = run(capsys, "Not An Image", "--to", f"{TARGET}/dry", "--location", "us-central1")
    assert code == 2 and "invalid-source" in err


def test_schema1_exits_1_with_the_reason(
    capsys: pytest.CaptureFixture[str],
    static_registry: StaticRegistry,
    bearer: TokenRegistry,
    docker_config: str,
) -> None:
    built = schema1_manifest("old/img", "v1", [tar_layer({"a": b"a"})])
    doc = json.loads(built.manifest)
    doc["history"] = [{"v1Compatibility": "not json"}]
    body = json.dumps(doc).encode()
    static_registry.serve_built(
        "old/img", "v1", BuiltImage(body, built.media_type, sha256_digest(body), built.blobs)
    )
    code, out, _ = run(
        capsys,
        f"{static_registry.host}/old/img:v1",
        "--to",
        f"{TARGET}/old",
        "--location",
        "us-central1",
        "--target-registry-url",
        bearer.url,
        "--docker-config",
        docker_config,
        "--json",
    )
    assert code == 1
    error = json.loads(out)["error"]
    assert error["code"] == "manifest-schema1" and "schema 1" in error["message"]
