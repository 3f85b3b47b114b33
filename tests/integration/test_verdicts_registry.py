"""Issue 11's verdict classes against real images in the real `docker-registry`.

Every image here is pushed over the OCI distribution API and read back by the real
`RegistryClient` through the checker, as the CLI and the operators do. What the real
registry refuses to store (a manifest naming a foreign layer whose blob is elsewhere)
and auth flows it cannot play (an anonymous Bearer token) come from StaticRegistry.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import time
from typing import Any

import pytest

from airflow_batch_streaming import checker, oci
from airflow_batch_streaming.preflight import Report
from airflow_batch_streaming.registry import RegistryClient
from airflow_batch_streaming.testing import (
    LocalRegistry,
    StaticRegistry,
    build_artifact,
    build_image,
    build_index,
    push_built,
    random_layer,
    tar_layer,
)
from airflow_batch_streaming.testing.registry import Layer as BuildLayer

pytestmark = [pytest.mark.registry, pytest.mark.usefixtures("fresh_registry_cache")]

AR = "us-central1-docker.pkg.dev"
REAL = tar_layer({"app/hello.txt": b"hello\n"})


def codes(report: Report) -> list[str]:
    return [f.code for f in report.findings]


def errors(report: Report) -> list[str]:
    return [f.code for f in report.errors]


def push(registry: LocalRegistry, name: str, image: Any) -> str:
    """Push under proj/repo/NAME and return the Artifact Registry URI (pinned by digest)."""
    digest = push_built(registry.url, f"proj/repo/{name}", "v1", image)
    return f"{AR}/proj/repo/{name}@{digest}"


def check(registry: LocalRegistry | StaticRegistry, uri: str, **kwargs: Any) -> tuple[Report, RegistryClient]:
    client = RegistryClient(base_url=registry.url)
    return checker.check_image(uri, "us-central1", registry=client, **kwargs), client


def job(uri: str, **allocation: Any) -> dict[str, Any]:
    rest: dict[str, Any] = {
        "taskGroups": [
            {"taskSpec": {"runnables": [{"container": {"imageUri": uri, "enableImageStreaming": True}}]}}
        ],
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    }
    if allocation:
        rest["allocationPolicy"] = allocation
    return rest


def machine(machine_type: str) -> dict[str, Any]:
    return {"instances": [{"policy": {"machineType": machine_type}}]}


# ------------------------------------------------------------------ 1. platform, always


@pytest.mark.parametrize("oci_format", [False, True], ids=["docker", "oci"])
@pytest.mark.parametrize(
    ("platform", "amd64_vms", "arm_vms"),
    [
        ("linux/arm64", ["platform-mismatch"], []),
        ("linux/arm64/v8", ["platform-mismatch"], []),
        ("linux/amd64", [], ["platform-mismatch"]),
        ("linux/arm/v7", ["platform-mismatch"], ["platform-mismatch"]),
        ("windows/amd64", ["platform-mismatch"], ["platform-mismatch"]),
        ("linux/s390x", ["platform-mismatch"], ["platform-mismatch"]),
    ],
)
def test_single_architecture_images(
    local_registry: LocalRegistry, oci_format: bool, platform: str, amd64_vms: list[str], arm_vms: list[str]
) -> None:
    name = f"single-{platform.replace('/', '-')}-{'oci' if oci_format else 'docker'}"
    uri = push(local_registry, name, build_image([REAL], oci=oci_format, platform=platform))
    report, _ = check(local_registry, uri)
    assert errors(report) == amd64_vms
    for machine_type in ("e2-standard-4", "n2-standard-8"):
        client = RegistryClient(base_url=local_registry.url)
        assert (
            errors(checker.check_job(job(uri, **machine(machine_type)), "us-central1", registry=client))
            == amd64_vms
        )
    for machine_type in ("t2a-standard-4", "c4a-standard-8", "n4a-standard-2"):
        client = RegistryClient(base_url=local_registry.url)
        assert (
            errors(checker.check_job(job(uri, **machine(machine_type)), "us-central1", registry=client))
            == arm_vms
        )
    if amd64_vms:
        [finding] = report.errors
        assert platform.split("/", maxsplit=1)[0] in finding.message and "linux/amd64" in finding.message
        assert "linux/amd64 was assumed" in finding.message


def test_an_index_without_the_platform_states_the_assumption(local_registry: LocalRegistry) -> None:
    index = build_index({"linux/arm64": build_image([REAL], oci=True, platform="linux/arm64")})
    uri = push(local_registry, "arm-only-index", index)
    client = RegistryClient(base_url=local_registry.url)
    [finding] = checker.check_job(job(uri), "us-central1", registry=client).findings
    assert (finding.code, finding.severity) == ("platform-not-found", "error")
    assert "no machine type" in finding.message and "Batch then picks an x86 one" in finding.message
    template = {"instances": [{"instanceTemplate": "projects/p/global/instanceTemplates/arm"}]}
    client = RegistryClient(base_url=local_registry.url)
    report = checker.check_job(job(uri, **template), "us-central1", registry=client)
    [finding] = report.findings
    assert (finding.code, finding.severity) == ("platform-not-found", "warning")  # the template may be Arm
    assert "instance template" in finding.message and report.ok


# ------------------------------------------------------------------ 2. only container images


ARTIFACTS = {
    "helm-chart": build_artifact(
        "application/vnd.cncf.helm.config.v1+json",
        [
            (
                "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                tar_layer({"chart/Chart.yaml": b"name: c\n"}),
            )
        ],
        config=b'{"name": "c", "version": "1.0.0"}',
    ),
    "spdx-sbom": build_artifact(
        oci.MEDIA_TYPE_OCI_EMPTY,
        [("application/spdx+json", b'{"spdxVersion": "SPDX-2.3"}')],
        artifact_type="application/spdx+json",
    ),
    "cyclonedx-sbom": build_artifact(
        oci.MEDIA_TYPE_OCI_EMPTY,
        [("application/vnd.cyclonedx+json", b'{"bomFormat": "CycloneDX"}')],
        artifact_type="application/vnd.cyclonedx+json",
    ),
    "cosign-signature": build_artifact(
        oci.MEDIA_TYPE_OCI_CONFIG,
        [("application/vnd.dev.cosign.simplesigning.v1+json", b'{"critical": {}}')],
        config=b'{"architecture": "", "os": "", "rootfs": {"type": "layers", "diff_ids": []}}',
    ),
    "wasm-module": build_artifact(
        "application/vnd.wasm.config.v0+json",
        [("application/vnd.wasm.content.layer.v1+wasm", b"\0asm\1\0\0\0")],
    ),
    "generic-artifact": build_artifact(
        oci.MEDIA_TYPE_OCI_EMPTY,
        [("application/octet-stream", b"data")],
        artifact_type="application/vnd.acme.rocket",
    ),
    "artifact-without-layers": build_artifact(
        oci.MEDIA_TYPE_OCI_EMPTY, [], artifact_type="application/vnd.acme.attestation"
    ),
}


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_artifacts_are_not_container_images(local_registry: LocalRegistry, name: str) -> None:
    uri = push(local_registry, name, ARTIFACTS[name])
    report, _ = check(local_registry, uri)
    assert codes(report) == ["not-a-container-image"]
    assert not report.ok


# ------------------------------------------------------------------ 3. empty layers by content


def _tar(pax: dict[str, str] | None = None, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt, **({"pax_headers": pax} if pax else {})):
        pass
    return raw.getvalue()


EMPTY_VARIANTS: dict[str, tuple[bytes, str]] = {
    "tarfile-10240-gzip": (gzip.compress(_tar(), mtime=0), oci.MEDIA_TYPE_OCI_LAYER),
    "go-1024-gzip-level1": (gzip.compress(bytes(1024), compresslevel=1, mtime=5), oci.MEDIA_TYPE_OCI_LAYER),
    "block-factor-4": (gzip.compress(bytes(2048), mtime=0), oci.MEDIA_TYPE_OCI_LAYER),
    "block-factor-64": (gzip.compress(bytes(512 * 64), mtime=0), oci.MEDIA_TYPE_OCI_LAYER),
    "gzip-level-0": (gzip.compress(_tar(), compresslevel=0, mtime=0), oci.MEDIA_TYPE_OCI_LAYER),
    "two-gzip-members": (gzip.compress(bytes(512)) + gzip.compress(bytes(512)), oci.MEDIA_TYPE_OCI_LAYER),
    "pax-global-header-only": (
        gzip.compress(_tar(pax={"comment": "no files"}), mtime=0),
        oci.MEDIA_TYPE_OCI_LAYER,
    ),
    "gnu-format": (gzip.compress(_tar(fmt=tarfile.GNU_FORMAT), mtime=0), oci.MEDIA_TYPE_DOCKER_LAYER),
    "uncompressed-10240": (_tar(), oci.MEDIA_TYPE_OCI_LAYER_TAR),
}


def _diff_id(blob: bytes) -> str:
    raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("name", sorted(EMPTY_VARIANTS))
@pytest.mark.parametrize("truthful_config", [True, False], ids=["diff-id", "content-only"])
def test_every_empty_archive_is_an_empty_layer(
    local_registry: LocalRegistry, name: str, truthful_config: bool
) -> None:
    blob, media_type = EMPTY_VARIANTS[name]
    # content-only: the config names another diff_id, so only reading the blob can tell.
    fake = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    layer = BuildLayer(blob, media_type=media_type, diff_id=_diff_id(blob) if truthful_config else fake)
    uri = push(
        local_registry,
        f"empty-{name}-{'diff' if truthful_config else 'content'}",
        build_image([REAL, layer], oci=True),
    )
    report, client = check(local_registry, uri)
    assert errors(report) == ["empty-layer"], report.format_text()
    assert "layer 1 " in report.errors[0].message
    assert client.bytes_read < 64 * 1024


def _zstd_rle(size: int) -> bytes:
    """A zstd frame of `size` zero bytes, written by hand (one RLE block): no zstd module needed."""
    header = bytes([0x28, 0xB5, 0x2F, 0xFD, 0x60]) + (size - 256).to_bytes(2, "little")
    return header + ((size << 3) | (1 << 1) | 1).to_bytes(3, "little") + b"\0"


@pytest.mark.parametrize("size", [1024, 10240])
def test_a_zstd_empty_archive_is_found_by_its_diff_id(local_registry: LocalRegistry, size: int) -> None:
    blob = _zstd_rle(size)
    layer = BuildLayer(
        blob,
        media_type=oci.MEDIA_TYPE_OCI_LAYER_ZSTD,
        diff_id=f"sha256:{hashlib.sha256(bytes(size)).hexdigest()}",
    )
    uri = push(local_registry, f"empty-zstd-{size}", build_image([REAL, layer], oci=True))
    report, _ = check(local_registry, uri)
    assert errors(report) == ["empty-layer"]


def test_large_layers_are_never_read(local_registry: LocalRegistry) -> None:
    big = random_layer(3 * 1024 * 1024, seed=11)
    uri = push(local_registry, "big-layer", build_image([REAL, big], oci=True))
    report, client = check(local_registry, uri)
    assert report.ok and codes(report) == []
    assert client.bytes_read < 64 * 1024  # manifest, config and the small layer only


# ------------------------------------------------------------------ foreign layers (static fixture)


@pytest.mark.parametrize("media_type", sorted(oci.FOREIGN_LAYER_TYPES))
def test_foreign_layers(static_registry: StaticRegistry, media_type: str) -> None:
    foreign = BuildLayer(
        tar_layer({"Files/windows.dll": b"MZ"}),
        media_type=media_type,
        urls=("https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:00",),
    )
    image = build_image([foreign, REAL], platform="linux/amd64")
    blobs = {d: b for d, b in image.blobs.items() if b != foreign.data}  # the foreign blob lives elsewhere
    static_registry.serve_built(
        "proj/repo/app", "v1", type(image)(image.manifest, image.media_type, image.digest, blobs)
    )
    report, _ = check(static_registry, f"{AR}/proj/repo/app@{image.digest}")
    assert errors(report) == ["foreign-layer"]
    assert "mcr.microsoft.com" in report.errors[0].message
    assert not any("Files" in r.path for r in static_registry.requests)


# ------------------------------------------------------------------ 4. gcr.io repositories


@pytest.mark.parametrize(
    ("host", "inside", "outside"),
    [
        ("gcr.io", "us-east1", "europe-west1"),
        ("eu.gcr.io", "europe-west1", "us-east1"),
        ("asia.gcr.io", "asia-east1", "us-east1"),
    ],
)
def test_gcr_io_repositories_are_read_and_located(
    local_registry: LocalRegistry, host: str, inside: str, outside: str
) -> None:
    digest = push_built(local_registry.url, "proj/app", "v1", build_image([REAL]))
    uri = f"{host}/proj/app@{digest}"
    report = checker.check_image(uri, inside, registry=RegistryClient(base_url=local_registry.url))
    assert codes(report) == ["gcr-io-host"] and report.ok
    assert report.manifest.digest == digest  # read from the registry like any Artifact Registry image
    report = checker.check_image(uri, outside, registry=RegistryClient(base_url=local_registry.url))
    assert codes(report) == ["location-mismatch", "gcr-io-host"]


# ------------------------------------------------------------------ 5. public repositories


def _no_credentials() -> str:
    raise PermissionError("no usable Google Application Default Credentials")


def test_a_public_repository_is_read_anonymously(static_registry: StaticRegistry) -> None:
    static_registry.require_bearer(token="anonymous-token", password=None)
    image = build_image([REAL], oci=True)
    static_registry.serve_built("proj/public/app", "v1", image)
    client = RegistryClient(base_url=static_registry.url, token_provider=_no_credentials)
    report = checker.check_image(f"{AR}/proj/public/app@{image.digest}", "us-central1", registry=client)
    assert report.ok and codes(report) == []
    assert "authorization" not in static_registry.requests_to("/token")[0].headers


def test_a_private_repository_without_credentials_says_both(static_registry: StaticRegistry) -> None:
    static_registry.require_bearer(token="t", password="ya29.the-right-one")
    image = build_image([REAL], oci=True)
    static_registry.serve_built("proj/private/app", "v1", image)
    client = RegistryClient(base_url=static_registry.url, token_provider=_no_credentials)
    report = checker.check_image(f"{AR}/proj/private/app@{image.digest}", "us-central1", registry=client)
    [finding] = report.findings
    assert finding.code == "registry-auth-failed"
    assert (
        "read anonymously because" in finding.message and "Application Default Credentials" in finding.message
    )


# ------------------------------------------------------------------ 8. an overall deadline


def test_an_overall_deadline_names_the_request_that_timed_out(static_registry: StaticRegistry) -> None:
    static_registry.serve_hang("/v2/proj/repo/slow/manifests/v1")
    client = RegistryClient(base_url=static_registry.url, timeout=30)
    client.deadline = time.monotonic() + 1.0
    client.deadline_label = "the --timeout of 1s"
    started = time.monotonic()
    report = checker.check_image(f"{AR}/proj/repo/slow:v1", "us-central1", registry=client)
    assert time.monotonic() - started < 5
    [finding] = report.errors
    assert finding.code == "registry-unreachable"
    assert "the --timeout of 1s ran out while waiting for" in finding.message
    assert "/v2/proj/repo/slow/manifests/v1" in finding.message
