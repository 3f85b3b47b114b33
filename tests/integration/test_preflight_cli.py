"""`airflow-batch-streaming preflight` as a user runs it: a subprocess against a real registry.

Images are pushed to a local CNCF distribution registry under the repository path of an
Artifact Registry URI; `--registry-url` points the CLI at it (what the CLI contract
offers for exactly this). No Google credentials exist here: the registry needs none,
and the API check is either skipped or answered by the package's emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_batch_streaming.testing import (
    EMPTY_LAYER_KINDS,
    LocalRegistry,
    StaticRegistry,
    duplicate_layer_image,
    empty_layer_image,
    schema1_manifest,
    tar_layer,
)

REPO = "proj/repo/app"
AR = f"us-central1-docker.pkg.dev/{REPO}"


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter, with no Google credentials and no developer settings."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BATCH_STREAMING_", "GOOGLE_", "CLOUDSDK_"))
    }
    environ.update(
        {
            "NO_GCE_CHECK": "True",  # never wait for a metadata server
            "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/adc.json",
            "CLOUDSDK_CONFIG": "/nonexistent/gcloud",
        }
    )
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "airflow_batch_streaming", "preflight", *args],
        capture_output=True,
        text=True,
        env=environ,
        input=stdin,
        timeout=60,
        check=False,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """stdout must be exactly one JSON object, and no traceback anywhere."""
    assert "Traceback" not in result.stderr, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    assert set(data) == {"image", "location", "ok", "findings", "manifest"}
    assert set(data["manifest"]) == {"digest", "media_type", "layers"}
    for finding in data["findings"]:
        assert set(finding) == {"code", "severity", "message", "hint"}
        assert finding["severity"] in ("error", "warning")
    return data


def codes(data: dict[str, Any]) -> list[str]:
    return [f["code"] for f in data["findings"]]


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture(scope="module")
def images(registry: LocalRegistry) -> dict[str, str]:
    """Tag -> manifest digest, pushed once for the module."""
    good = [tar_layer({"app/main.py": b"print('hi')\n"}), tar_layer({"etc/conf": b"x=1\n"})]
    pushed = {
        "good": registry.push_image(REPO, "good", good),
        "oci": registry.push_image(REPO, "oci", good, oci=True),
        "dup": registry.push_built(REPO, "dup", duplicate_layer_image()),
        "amd64-only": registry.push_image(REPO, "amd64-only", good[:1]),
    }
    for kind in EMPTY_LAYER_KINDS:
        pushed[f"empty-{kind}"] = registry.push_built(REPO, f"empty-{kind}", empty_layer_image(kind))
    pushed["index"] = registry.push_index(REPO, "index", {"linux/amd64": pushed["amd64-only"]})
    return pushed


def check(registry: LocalRegistry, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        *args, "--location", "us-central1", "--registry-url", registry.url, "--json", "--no-api-check"
    )


@pytest.mark.registry
def test_a_good_image_passes(registry: LocalRegistry, images: dict[str, str]) -> None:
    result = check(registry, f"{AR}@{images['good']}")
    data = as_json(result)
    assert result.returncode == 0, result.stdout
    assert data == {
        "image": f"{AR}@{images['good']}",
        "location": "us-central1",
        "ok": True,
        "findings": [],
        "manifest": {
            "digest": images["good"],
            "media_type": "application/vnd.docker.distribution.manifest.v2+json",
            "layers": 2,
        },
    }
    assert result.stderr == ""


@pytest.mark.registry
def test_a_good_tag_passes_with_a_mutable_tag_warning(
    registry: LocalRegistry, images: dict[str, str]
) -> None:
    result = check(registry, f"{AR}:oci")
    data = as_json(result)
    assert result.returncode == 0
    assert data["ok"] is True
    assert codes(data) == ["mutable-tag"]
    assert f"{AR}@{images['oci']}" in data["findings"][0]["hint"]
    assert data["manifest"] == {
        "digest": images["oci"],
        "media_type": "application/vnd.oci.image.manifest.v1+json",
        "layers": 2,
    }


@pytest.mark.registry
def test_duplicate_layers_fail(registry: LocalRegistry, images: dict[str, str]) -> None:
    result = check(registry, f"{AR}@{images['dup']}")
    data = as_json(result)
    assert result.returncode == 1
    assert data["ok"] is False
    assert codes(data) == ["duplicate-layer"]
    assert "layer 2" in data["findings"][0]["message"]
    assert data["manifest"]["layers"] == 3


@pytest.mark.registry
def test_every_kind_of_empty_layer_fails(
    registry: LocalRegistry, images: dict[str, str], tmp_path: Path
) -> None:
    # One job with an image per kind of empty layer: one CLI run, one finding per image.
    uris = [f"{AR}@{images[f'empty-{kind}']}" for kind in EMPTY_LAYER_KINDS]
    job = {
        "taskGroups": [
            {
                "taskSpec": {
                    "runnables": [{"container": {"imageUri": u, "enableImageStreaming": True}} for u in uris]
                }
            }
        ],
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    }
    result = check(registry, "--job", write_job(tmp_path, job))
    data = as_json(result)
    assert result.returncode == 1
    assert codes(data) == ["empty-layer"] * len(EMPTY_LAYER_KINDS)
    for uri, finding in zip(uris, data["findings"], strict=True):
        assert finding["message"].startswith(f"{uri}: layer 1 ")
    assert data["image"] == uris[0]


@pytest.mark.registry
def test_an_index_without_the_vm_platform(registry: LocalRegistry, images: dict[str, str]) -> None:
    ok = check(registry, f"{AR}@{images['index']}")
    assert ok.returncode == 0, ok.stdout
    assert as_json(ok)["manifest"]["digest"] == images["amd64-only"]
    arm = check(registry, f"{AR}@{images['index']}", "--platform", "linux/arm64")
    assert arm.returncode == 1
    assert codes(as_json(arm)) == ["platform-not-found"]


@pytest.mark.registry
def test_a_missing_image(registry: LocalRegistry, images: dict[str, str]) -> None:
    result = check(registry, f"{AR}:no-such-tag")
    data = as_json(result)
    assert result.returncode == 1
    assert codes(data) == ["image-not-found", "mutable-tag"]
    assert data["manifest"] == {"digest": None, "media_type": None, "layers": None}


def test_an_unreachable_registry() -> None:
    result = run_cli(f"{AR}:x", "--location", "us-central1", "--registry-url", "http://127.0.0.1:9", "--json")
    assert result.returncode == 1
    assert codes(as_json(result))[0] == "registry-unreachable"


@pytest.mark.registry
def test_registry_auth_without_credentials() -> None:
    with LocalRegistry(password="s3cret") as locked:
        digest = locked.push_image(REPO, "v1", [tar_layer({"a": b"a"})])
        result = run_cli(
            f"{AR}@{digest}",
            "--location",
            "us-central1",
            "--registry-url",
            locked.url,
            "--json",
            "--no-api-check",
        )
    data = as_json(result)
    assert result.returncode == 1
    [finding] = data["findings"]
    assert finding["code"] == "registry-auth-failed"
    assert "gcloud auth application-default login" in finding["message"] + finding["hint"]


@pytest.mark.registry
def test_schema1_fails() -> None:
    layer = tar_layer({"a": b"a"})
    with StaticRegistry() as static:
        image = schema1_manifest(REPO, "old", [layer])
        static.serve_built(REPO, "old", image)
        result = run_cli(
            f"{AR}:old", "--location", "us-central1", "--registry-url", static.url, "--json", "--no-api-check"
        )
    data = as_json(result)
    assert result.returncode == 1
    assert codes(data) == ["manifest-schema1", "mutable-tag"]


def test_gcr_io_is_an_artifact_registry_gcr_io_repository() -> None:
    # Container Registry's hosts are Artifact Registry gcr.io repositories since 2025: located, not refused.
    ok = run_cli("gcr.io/proj/app@sha256:" + "a" * 64, "--location", "us-central1", "--no-registry", "--json")
    assert ok.returncode == 0
    assert codes(as_json(ok)) == ["gcr-io-host", "api-check-skipped"]
    far = run_cli(
        "gcr.io/proj/app@sha256:" + "a" * 64, "--location", "europe-west1", "--no-registry", "--json"
    )
    data = as_json(far)
    assert far.returncode == 1
    assert codes(data) == ["location-mismatch", "gcr-io-host", "api-check-skipped"]
    assert data["manifest"] == {"digest": None, "media_type": None, "layers": None}


@pytest.mark.registry
def test_location_mismatch(registry: LocalRegistry, images: dict[str, str]) -> None:
    result = run_cli(
        f"{AR}@{images['good']}",
        "--location",
        "europe-west1",
        "--registry-url",
        registry.url,
        "--json",
        "--no-api-check",
    )
    data = as_json(result)
    assert result.returncode == 1
    assert codes(data) == ["location-mismatch"]
    assert data["location"] == "europe-west1"
    assert data["manifest"]["digest"] == images["good"]  # the registry checks still ran


def test_invalid_image_uri() -> None:
    result = run_cli("Not An Image", "--location", "us-central1", "--no-registry", "--no-api-check", "--json")
    assert result.returncode == 1
    assert codes(as_json(result)) == ["invalid-image-uri"]


def write_job(tmp_path: Path, job: dict[str, Any]) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return str(path)


@pytest.mark.registry
def test_a_job_with_several_problems_gets_them_all(
    registry: LocalRegistry, images: dict[str, str], tmp_path: Path
) -> None:
    job = {
        "taskGroups": [
            {
                "taskSpec": {
                    "runnables": [
                        {
                            "container": {
                                "imageUri": f"{AR}:dup",
                                "enableImageStreaming": True,
                                "options": "--privileged",
                            }
                        },
                        {"container": {"imageUri": "ubuntu:22.04", "commands": ["true"]}},
                        {"container": {"imageUri": f"{AR}:dup", "enableImageStreaming": True}},
                    ]
                }
            }
        ],
        "allocationPolicy": {"instances": [{"policy": {"machineType": "e2-standard-4"}}]},
    }
    result = check(registry, "--job", write_job(tmp_path, job))
    data = as_json(result)
    assert result.returncode == 1
    assert codes(data) == [
        "unsupported-container-field",
        "mixed-runtimes",
        "duplicate-layer",
        "logs-disabled",
        "mutable-tag",
    ]
    assert data["image"] == f"{AR}:dup"
    assert data["manifest"]["digest"] == images["dup"]


@pytest.mark.registry
def test_a_job_from_stdin(registry: LocalRegistry, images: dict[str, str]) -> None:
    job = {
        "taskGroups": [
            {
                "taskSpec": {
                    "runnables": [
                        {"container": {"imageUri": f"{AR}@{images['good']}", "enableImageStreaming": True}}
                    ]
                }
            }
        ],
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    }
    result = run_cli(
        "--job",
        "-",
        "--location",
        "us-central1",
        "--registry-url",
        registry.url,
        "--no-api-check",
        "--json",
        stdin=json.dumps(job),
    )
    data = as_json(result)
    assert result.returncode == 0, result.stdout
    assert data["ok"] is True and data["findings"] == []


@pytest.mark.registry
def test_human_output(registry: LocalRegistry, images: dict[str, str]) -> None:
    result = run_cli(f"{AR}@{images['dup']}", "--location", "us-central1", "--registry-url", registry.url)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{AR}@{images['dup']} in us-central1: FAILED (1 error, 1 warning)")
    assert lines[1].startswith("ERROR duplicate-layer: layer 2")
    assert lines[2].startswith("  hint: ")
    assert lines[3].startswith("WARNING api-check-skipped: ")


def test_a_bad_registry_url_exits_2() -> None:
    result = run_cli(f"{AR}:x", "--location", "us-central1", "--registry-url", "ftp://registry.example")
    assert result.returncode == 2
    assert "--registry-url" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_an_unreadable_job_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("--job", str(tmp_path / "missing.json"), "--location", "us-central1")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "missing.json" in result.stderr and "Traceback" not in result.stderr
    as_json_error = run_cli("--job", str(tmp_path / "missing.json"), "--location", "us-central1", "--json")
    assert as_json_error.returncode == 2 and as_json_error.stderr == ""
    error = json.loads(as_json_error.stdout)
    assert error["ok"] is False and "missing.json" in error["error"]["message"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold an object"),
        ('{"taskGroups": "x"}', "taskGroups must be a list"),
    ],
)
def test_an_invalid_job_file_exits_2(tmp_path: Path, content: str, why: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(content)
    result = run_cli("--job", str(path), "--location", "us-central1", "--no-registry")
    assert result.returncode == 2
    assert why in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--location", "us-central1"],
        [f"{AR}:x"],
        [f"{AR}:x", "--job", "j.json", "--location", "us-central1"],
        [f"{AR}:x", "--location", "us-central1", "--platform", "amd64"],
        [f"{AR}:x", "--location", "us-central1", "--bogus"],
    ],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "usage:" in result.stderr and "Traceback" not in result.stderr


def test_help_exits_0() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for option in (
        "--job",
        "--location",
        "--project",
        "--registry-url",
        "--no-registry",
        "--no-api-check",
        "--platform",
        "--json",
    ):
        assert option in result.stdout


@pytest.mark.registry
def test_the_installed_command(registry: LocalRegistry, images: dict[str, str]) -> None:
    command = Path(sys.executable).parent / "airflow-batch-streaming"
    assert command.exists(), "the console script is not installed next to this interpreter"
    result = subprocess.run(
        [
            str(command),
            "preflight",
            f"{AR}@{images['good']}",
            "--location",
            "us-central1",
            "--registry-url",
            registry.url,
            "--no-api-check",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert as_json(result)["ok"] is True


@pytest.fixture(scope="module")
def emulator() -> Iterator[Any]:
    from airflow_batch_streaming.emulator import Emulator

    with Emulator(disabled_apis=["projects/off/services/containerfilesystem.googleapis.com"]) as emu:
        yield emu


@pytest.mark.emulator
@pytest.mark.parametrize(("project", "expected"), [("on", []), ("off", ["api-disabled"])])
def test_the_api_check_against_the_emulator(emulator: Any, project: str, expected: list[str]) -> None:
    result = run_cli(
        "quay.io/x/y@sha256:" + "a" * 64,
        "--location",
        "us-central1",
        "--no-registry",
        "--project",
        project,
        "--json",
        env=emulator.env(),
    )
    data = as_json(result)
    assert codes(data) == ["not-artifact-registry", *expected]
    if expected:
        hint = data["findings"][1]["hint"]
        assert "gcloud services enable containerfilesystem.googleapis.com --project off" in hint
        assert "VPC Service Controls" in hint


@pytest.mark.emulator
def test_an_api_check_that_cannot_run_is_a_warning() -> None:
    result = run_cli(
        f"{AR}@sha256:" + "a" * 64,
        "--location",
        "us-central1",
        "--no-registry",
        "--project",
        "p",
        "--json",
        env={"BATCH_STREAMING_EMULATOR_HOST": "127.0.0.1:9"},
    )
    data = as_json(result)
    assert result.returncode == 0
    [finding] = data["findings"]
    assert finding["code"] == "api-check-skipped"
    assert "project p" in finding["message"]


def test_the_api_check_without_credentials_is_a_warning() -> None:
    result = run_cli(
        f"{AR}@sha256:" + "a" * 64, "--location", "us-central1", "--no-registry", "--project", "p", "--json"
    )
    data = as_json(result)
    assert result.returncode == 0
    [finding] = data["findings"]
    assert finding["code"] == "api-check-skipped"
    assert "gcloud auth application-default login" in finding["message"]
