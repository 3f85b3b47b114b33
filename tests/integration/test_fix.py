"""`fix` against two real docker-registry instances: one behind Basic auth, one behind a Bearer realm.

Every case checks the result the way a runtime would see it: the written image passes the
preflight, and applying its layer stack (whiteouts included) gives, path by path, the
filesystem the source's stack gives.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_batch_streaming import doctor, oci
from airflow_batch_streaming.registry import MEDIA_TYPE_OCI_INDEX, RegistryError
from airflow_batch_streaming.registry_push import RegistryWriter
from airflow_batch_streaming.testing.registry import (
    EMPTY_LAYER_KINDS,
    GZIPPED_EMPTY_TAR,
    BuiltImage,
    LocalRegistry,
    StaticRegistry,
    build_image,
    build_index,
    diff_id,
    empty_layer_image,
    random_layer,
    schema1_manifest,
    sha256_digest,
    tar_layer,
)
from airflow_batch_streaming.testing.token_registry import (
    TarEntry,
    TokenRegistry,
    _call,
    apply_layers,
    fetch_blob,
    layer_of,
)

REGION = "us-central1"
TARGET = "us-central1-docker.pkg.dev/proj/repo"

A = layer_of([TarEntry("etc", "dir", mode=0o755), ("etc/a.txt", b"a\n"), ("etc/keep.txt", b"keep\n")])
B_UNRELATED = layer_of([TarEntry("etc", "dir", mode=0o755), ("etc/b.txt", b"b\n")])
B_DELETES = layer_of([("etc/.wh.a.txt", b"")])
B_CHANGES = layer_of([("etc/a.txt", b"changed\n")])
C = layer_of([("opt/c.txt", b"c\n")])


@pytest.fixture(scope="module")
def bearer() -> Iterator[TokenRegistry]:
    registry = TokenRegistry().start()
    yield registry
    registry.stop()


def writer(registry: LocalRegistry, **kwargs: Any) -> RegistryWriter:
    return RegistryWriter(token_provider=registry.token_provider, base_url=registry.url, **kwargs)


_counter = iter(range(10_000))


def fix(
    source: LocalRegistry,
    image: BuiltImage,
    target: LocalRegistry,
    *,
    tag: str | None = "fixed",
    repo: str | None = None,
    push: bool = True,
    **kwargs: Any,
) -> tuple[doctor.FixResult, RegistryWriter, RegistryWriter, str]:
    """Push ``image`` to ``source`` (unless told not to) and fix it into ``target``."""
    repo = repo or f"src/img{next(_counter)}"
    if push:
        source.push_built(repo, "v1", image)
    name = f"{TARGET}/out{next(_counter)}" + (f":{tag}" if tag else "")
    src, dst = writer(source), writer(target, chunk_size=kwargs.pop("chunk_size", 32 * 1024 * 1024))
    result = doctor.fix_image(
        f"docker.io/{repo}:v1", name, REGION, source_client=src, target_client=dst, **kwargs
    )
    return result, src, dst, repo


def read_manifest(registry: LocalRegistry, repository: str, digest: str) -> dict[str, Any]:
    client = writer(registry)
    from airflow_batch_streaming.image import parse_image_uri

    raw = client.get_manifest(parse_image_uri(f"docker.io/{repository}@{digest}"))
    return raw.json()


def target_repo(result: doctor.FixResult) -> tuple[str, str]:
    name, digest = result.target.split("@")
    return name.split("/", 1)[1], digest


def source_layers(image: BuiltImage) -> list[bytes]:
    doc = json.loads(image.manifest)
    return [image.blobs[d["digest"]] for d in doc["layers"]]


def assert_same_filesystem(
    image: BuiltImage, registry: LocalRegistry, repository: str, digest: str
) -> dict[str, Any]:
    """Apply both stacks; also check the config's diff_ids and history against the layers."""
    manifest = read_manifest(registry, repository, digest)
    layers = [fetch_blob(registry, repository, d["digest"]) for d in manifest["layers"]]
    assert apply_layers(layers) == apply_layers(source_layers(image))
    config = json.loads(fetch_blob(registry, repository, manifest["config"]["digest"]))
    from airflow_batch_streaming.testing.registry import diff_id

    assert config["rootfs"]["diff_ids"] == [diff_id(layer) for layer in layers]
    layered = [h for h in config.get("history", []) if not h.get("empty_layer")]
    assert len(layered) == len(layers)
    return manifest


def codes(result: doctor.FixResult) -> list[str]:
    return [c.code for c in result.changes]


def layer_size(image: BuiltImage, index: int) -> int:
    return int(json.loads(image.manifest)["layers"][index]["size"])


# --------------------------------------------------------------------------- each defect alone


@pytest.mark.parametrize("kind", EMPTY_LAYER_KINDS)
@pytest.mark.parametrize("oci", [False, True], ids=["docker", "oci"])
def test_empty_layer_dropped_across_registries(
    kind: str, oci: bool, auth_registry: LocalRegistry, bearer: TokenRegistry
) -> None:
    image = empty_layer_image(kind, oci=oci)
    result, _src, dst, _ = fix(auth_registry, image, bearer)
    assert result.ok, result.format_text()
    assert codes(result) == ["copied", "dropped-empty-layer"]
    repo, digest = target_repo(result)
    manifest = assert_same_filesystem(image, bearer, repo, digest)
    assert manifest["mediaType"] == json.loads(image.manifest)["mediaType"]
    assert len(manifest["layers"]) == 1
    config = json.loads(fetch_blob(bearer, repo, manifest["config"]["digest"]))
    assert [h.get("empty_layer", False) for h in config["history"]] == [False, True]
    # Across registries every kept blob is uploaded once: the real layer and the new config.
    assert dst.bytes_uploaded == layer_size(image, 0) + manifest["config"]["size"]
    assert result.stats.blobs_uploaded == 2 and result.stats.blobs_mounted == 0
    assert result.stats.header_bytes_read == 0  # no duplicate: no tar read


def empty_archive(form: str) -> bytes:
    """An empty tar none of the known digests names, gzipped at level 9."""
    buf = io.BytesIO()
    if form == "pax-global-header":  # no entries, only a pax global header: its diff_id is not all zeros
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "x"}):
            pass
    else:  # Python's tarfile (like GNU tar) pads an empty archive to one 10,240-byte record
        with tarfile.open(fileobj=buf, mode="w"):
            pass
    return gzip.compress(buf.getvalue(), compresslevel=9, mtime=0)


@pytest.mark.parametrize("form", ["tarfile-10240", "pax-global-header"])
def test_empty_archive_known_by_content_only_is_dropped(
    form: str, auth_registry: LocalRegistry, bearer: TokenRegistry
) -> None:
    empty = empty_archive(form)
    assert sha256_digest(empty) not in oci.EMPTY_LAYER_DIGESTS
    if form == "pax-global-header":
        assert diff_id(empty) not in oci.empty_tar_diff_ids()  # only reading the blob tells
    image = build_image([A, empty, C])
    result, *_ = fix(auth_registry, image, bearer)
    assert result.ok, result.format_text()
    assert codes(result) == ["copied", "dropped-empty-layer"]
    assert f"layer 1 ({sha256_digest(empty)}" in result.changes[1].message
    repo, digest = target_repo(result)
    if form == "pax-global-header":
        # Python's tarfile cannot open a global-header-only archive (what `git archive` of an
        # empty tree writes); GNU tar lists it as empty, so the source filesystem is A then C.
        listed = subprocess.run(["tar", "-tz"], input=empty, capture_output=True, check=True)
        assert listed.stdout == b""
        manifest = read_manifest(bearer, repo, digest)
        written = [fetch_blob(bearer, repo, d["digest"]) for d in manifest["layers"]]
        assert apply_layers(written) == apply_layers([A, C])
    else:
        manifest = assert_same_filesystem(image, bearer, repo, digest)
    assert [d["digest"] for d in manifest["layers"]] == [sha256_digest(A), sha256_digest(C)]


def test_content_check_never_reads_a_large_layer(auth_registry: LocalRegistry, bearer: TokenRegistry) -> None:
    image = build_image([random_layer(300_000, seed=3), empty_archive("pax-global-header"), C])
    result, src, _dst, _ = fix(auth_registry, image, bearer, dry_run=True)
    assert codes(result) == ["copied", "dropped-empty-layer"]
    # The manifest, the config and the two small layers were read; the 300 kB one was not.
    assert src.bytes_read < layer_size(image, 0)
    assert src.bytes_read >= layer_size(image, 1) + layer_size(image, 2)


def test_duplicate_dropped_when_nothing_in_between_touches_it(
    auth_registry: LocalRegistry, bearer: TokenRegistry
) -> None:
    image = build_image([A, B_UNRELATED, A])
    result, _src, _dst, _ = fix(auth_registry, image, bearer)
    assert result.ok, result.format_text()
    assert codes(result) == ["copied", "dropped-duplicate-layer"]
    repo, digest = target_repo(result)
    manifest = assert_same_filesystem(image, bearer, repo, digest)
    assert [d["digest"] for d in manifest["layers"]] == [
        d["digest"] for d in json.loads(image.manifest)["layers"][:2]
    ]
    # The headers of the repeated layer and of the one in between were read, each once, whole.
    assert result.stats.header_bytes_read == layer_size(image, 0) + layer_size(image, 1)


@pytest.mark.parametrize("between", [B_DELETES, B_CHANGES], ids=["deletes", "changes"])
@pytest.mark.parametrize("oci", [False, True], ids=["docker", "oci"])
def test_duplicate_rewritten_when_a_layer_in_between_touches_its_file(
    between: bytes, oci: bool, auth_registry: LocalRegistry, bearer: TokenRegistry
) -> None:
    image = build_image([A, between, A], oci=oci)
    result, _src, dst, _ = fix(auth_registry, image, bearer)
    assert result.ok, result.format_text()
    assert codes(result) == ["copied", "rewrote-duplicate-layer"]
    assert "etc/a.txt" in result.changes[1].message
    repo, digest = target_repo(result)
    manifest = assert_same_filesystem(image, bearer, repo, digest)
    digests = [d["digest"] for d in manifest["layers"]]
    assert len(set(digests)) == 3
    assert manifest["layers"][2]["mediaType"] == manifest["layers"][0]["mediaType"]
    # Uploaded: two original layers, the rewritten one (its new size), the config.
    assert (
        dst.bytes_uploaded
        == layer_size(image, 0)
        + layer_size(image, 1)
        + sum(d["size"] for d in manifest["layers"][2:])
        + manifest["config"]["size"]
    )


def test_every_defect_combined(auth_registry: LocalRegistry, bearer: TokenRegistry) -> None:
    from airflow_batch_streaming.testing.registry import GZIPPED_EMPTY_TAR

    image = build_image([A, GZIPPED_EMPTY_TAR, B_CHANGES, A, C, A])
    result, *_ = fix(auth_registry, image, bearer)
    assert result.ok, result.format_text()
    assert codes(result) == [
        "copied",
        "dropped-empty-layer",
        "rewrote-duplicate-layer",
        "dropped-duplicate-layer",
    ]
    assert "repeats layer 3" in result.changes[3].message  # measured from the last copy, the rewrite
    repo, digest = target_repo(result)
    manifest = assert_same_filesystem(image, bearer, repo, digest)
    assert len(manifest["layers"]) == 4


def test_index_with_two_platforms(auth_registry: LocalRegistry, bearer: TokenRegistry) -> None:
    amd = empty_layer_image("gzip-empty-tar", oci=True)
    arm = build_image([A, B_DELETES, A], oci=True, platform="linux/arm64")
    index = build_index({"linux/amd64": amd, "linux/arm64": arm}, oci=True)
    result, *_ = fix(auth_registry, index, bearer)
    assert result.ok, result.format_text()
    assert sorted(codes(result)) == sorted(["copied", "dropped-empty-layer", "rewrote-duplicate-layer"])
    repo, digest = target_repo(result)
    written = read_manifest(bearer, repo, digest)
    assert written["mediaType"] == MEDIA_TYPE_OCI_INDEX
    assert [m["platform"]["architecture"] for m in written["manifests"]] == ["amd64", "arm64"]
    for entry, child in zip(written["manifests"], (amd, arm), strict=True):
        assert_same_filesystem(child, bearer, repo, entry["digest"])


def test_index_only_one_platform(auth_registry: LocalRegistry, bearer: TokenRegistry) -> None:
    amd = build_image([A], oci=False)
    arm = build_image([C, B_UNRELATED, C], platform="linux/arm64")
    index = build_index({"linux/amd64": amd, "linux/arm64": arm}, oci=False)
    result, *_ = fix(auth_registry, index, bearer, platform="linux/arm64")
    assert result.ok, result.format_text()
    assert "platform-dropped" in codes(result)
    repo, digest = target_repo(result)
    written = read_manifest(bearer, repo, digest)
    assert [m["platform"]["architecture"] for m in written["manifests"]] == ["arm64"]
    assert_same_filesystem(arm, bearer, repo, written["manifests"][0]["digest"])


def test_single_platform_image_is_checked_for_the_given_platform(
    auth_registry: LocalRegistry, bearer: TokenRegistry
) -> None:
    image = build_image([C, empty_archive("tarfile-10240")], platform="linux/arm64")
    result, *_ = fix(auth_registry, image, bearer, platform="linux/arm64")
    assert result.ok, result.format_text()
    assert codes(result) == ["copied", "dropped-empty-layer"]
    # Without --platform the preflight assumes linux/amd64 VMs: the written arm64 image is refused.
    result, *_ = fix(auth_registry, image, bearer)
    assert not result.ok and result.exit_code == 1
    assert result.preflight is not None
    assert [f.code for f in result.preflight.errors] == ["platform-mismatch"]


# --------------------------------------------------------------------------- copy only, idempotency


@pytest.mark.parametrize("oci", [False, True], ids=["docker", "oci"])
def test_streamable_image_is_copied_unchanged_then_second_run_writes_nothing(
    oci: bool, auth_registry: LocalRegistry, bearer: TokenRegistry
) -> None:
    image = build_image([A, C], oci=oci)
    result, src, dst, repo = fix(auth_registry, image, bearer)
    assert result.ok and codes(result) == ["unchanged"]
    assert result.target.endswith("@" + image.digest)  # byte for byte: the same digest
    layers_total = layer_size(image, 0) + layer_size(image, 1)
    config_size = json.loads(image.manifest)["config"]["size"]
    assert dst.bytes_uploaded == layers_total + config_size
    assert src.bytes_read >= layers_total + config_size
    out_repo, digest = target_repo(result)
    assert_same_filesystem(image, bearer, out_repo, digest)

    # Again, to the same tag: nothing written, the same digest.
    tag_target = result.target.split("@")[0] + ":fixed"
    src2, dst2 = writer(auth_registry), writer(bearer)
    again = doctor.fix_image(
        f"docker.io/{repo}:v1", tag_target, REGION, source_client=src2, target_client=dst2
    )
    assert again.target == result.target
    assert dst2.bytes_uploaded == 0
    assert (again.stats.blobs_uploaded, again.stats.blobs_mounted, again.stats.manifests_written) == (0, 0, 0)
    assert again.stats.blobs_present == 3


def test_rewrite_is_deterministic_so_a_second_run_writes_nothing(
    auth_registry: LocalRegistry, bearer: TokenRegistry
) -> None:
    image = build_image([A, B_DELETES, A])
    result, _, _, repo = fix(auth_registry, image, bearer, tag="stable")
    name = result.target.split("@")[0] + ":stable"
    dst2 = writer(bearer)
    again = doctor.fix_image(
        f"docker.io/{repo}:v1", name, REGION, source_client=writer(auth_registry), target_client=dst2
    )
    assert again.target == result.target
    assert dst2.bytes_uploaded == 0 and again.stats.manifests_written == 0


def test_same_registry_mounts_instead_of_uploading(bearer: TokenRegistry) -> None:
    image = build_image([A, C, random_layer(200_000, seed=3)])
    result, src, dst, repo = fix(bearer, image, bearer)
    assert result.ok, result.format_text()
    assert result.stats.blobs_mounted == 4 and result.stats.blobs_uploaded == 0
    assert dst.bytes_uploaded == 0
    assert src.bytes_read < 20_000  # manifest, config, token answers: no layer bytes
    # The token for the mount carried pull on the source repository (distribution demands it).
    assert any(f"repository:{repo}:pull" in scopes for scopes in bearer.tokens.scopes)
    out_repo, digest = target_repo(result)
    assert_same_filesystem(image, bearer, out_repo, digest)


def test_same_registry_fix_uploads_only_the_new_config(bearer: TokenRegistry) -> None:
    image = empty_layer_image("zero-size")
    result, _src, dst, _ = fix(bearer, image, bearer)
    out_repo, digest = target_repo(result)
    manifest = assert_same_filesystem(image, bearer, out_repo, digest)
    assert dst.bytes_uploaded == manifest["config"]["size"]
    assert result.stats.blobs_mounted == 1


def test_large_layer_goes_up_in_chunks(auth_registry: LocalRegistry, bearer: TokenRegistry) -> None:
    image = build_image([random_layer(300_000, seed=7), C])
    result, _src, dst, _ = fix(auth_registry, image, bearer, chunk_size=64 * 1024)
    assert result.ok, result.format_text()
    assert (
        dst.bytes_uploaded
        == layer_size(image, 0) + layer_size(image, 1) + json.loads(image.manifest)["config"]["size"]
    )
    # 300 kB in 64 KiB chunks: 4 PATCHes and a final PUT, plus POST and HEAD per blob.
    assert dst.requests >= 5
    out_repo, digest = target_repo(result)
    assert_same_filesystem(image, bearer, out_repo, digest)


def test_bearer_source_to_basic_target(auth_registry: LocalRegistry, bearer: TokenRegistry) -> None:
    image = build_image([A, B_CHANGES, A], oci=True)
    result, *_ = fix(bearer, image, auth_registry)
    assert result.ok, result.format_text()
    out_repo, digest = target_repo(result)
    assert_same_filesystem(image, auth_registry, out_repo, digest)


# --------------------------------------------------------------------------- refusals


def test_dry_run_writes_nothing(auth_registry: LocalRegistry, bearer: TokenRegistry) -> None:
    image = build_image([A, B_DELETES, A])
    result, _src, dst, _ = fix(auth_registry, image, bearer, dry_run=True)
    assert result.dry_run and result.preflight is None
    assert codes(result) == ["copied", "rewrote-duplicate-layer"]
    assert dst.bytes_uploaded == 0 and result.stats.manifests_written == 0
    repo, digest = target_repo(result)
    token = bearer.tokens.issue([f"repository:{repo}:pull"])
    status, _, _ = _call(
        "GET", f"{bearer.url}/v2/{repo}/manifests/{digest}", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 404
    assert dst.requests == 0  # the target registry was not even asked


def test_target_in_the_wrong_location_is_refused_before_any_write(
    auth_registry: LocalRegistry, bearer: TokenRegistry
) -> None:
    auth_registry.push_built("src/wrongloc", "v1", build_image([A]))
    dst = writer(bearer)
    with pytest.raises(doctor.FixError) as caught:
        doctor.fix_image(
            "docker.io/src/wrongloc:v1",
            "europe-west1-docker.pkg.dev/proj/repo/x:t",
            REGION,
            source_client=writer(auth_registry),
            target_client=dst,
        )
    assert caught.value.exit_code == 2 and caught.value.code == "location-mismatch"
    assert dst.requests == 0


def test_not_artifact_registry_target_is_bad_input() -> None:
    with pytest.raises(doctor.FixError) as caught:
        doctor.fix_image("docker.io/library/busybox:1", "ghcr.io/me/busybox:1", REGION)
    assert caught.value.exit_code == 2 and caught.value.code == "not-artifact-registry"


def schema1_image(layers: list[bytes], v1: list[dict[str, Any]]) -> BuiltImage:
    """A schema 1 manifest over ``layers`` (oldest first) with the v1 history given newest first."""
    built = schema1_manifest("old/img", "v1", layers)
    doc = json.loads(built.manifest)
    doc["history"] = [{"v1Compatibility": json.dumps(v)} for v in v1]
    body = json.dumps(doc, indent=3).encode()
    return BuiltImage(body, built.media_type, sha256_digest(body), built.blobs)


def test_schema1_is_converted_then_fixed(static_registry: StaticRegistry, bearer: TokenRegistry) -> None:
    layers = [A, GZIPPED_EMPTY_TAR, B_CHANGES, A]
    v1 = [
        {
            "id": f"{n}" * 64,
            "os": "linux",
            "architecture": "amd64",
            "created": "2016-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/sh"], "Env": ["A=1"]},
            "container_config": {"Cmd": ["/bin/sh", "-c", f"step {n}"]},
            **({"throwaway": True} if n == 1 else {}),
        }
        for n in (3, 2, 1, 0)  # newest first; step 1 (the empty tar) is a throwaway
    ]
    image = schema1_image(layers, v1)
    static_registry.serve_built("old/img", "v1", image)
    src, dst = RegistryWriter(base_url=static_registry.url), writer(bearer)
    result = doctor.fix_image(
        "docker.io/old/img:v1", f"{TARGET}/old:v1", REGION, source_client=src, target_client=dst
    )
    assert result.ok, result.format_text()
    assert codes(result) == ["copied", "converted-schema1", "rewrote-duplicate-layer"]
    repo, digest = target_repo(result)
    manifest = read_manifest(bearer, repo, digest)
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    written = [fetch_blob(bearer, repo, d["digest"]) for d in manifest["layers"]]
    assert apply_layers(written) == apply_layers(layers)
    config = json.loads(fetch_blob(bearer, repo, manifest["config"]["digest"]))
    assert config["config"] == {"Cmd": ["/bin/sh"], "Env": ["A=1"]} and config["architecture"] == "amd64"
    assert config["rootfs"]["diff_ids"] == [diff_id(b) for b in written]
    assert [h.get("empty_layer", False) for h in config["history"]] == [False, True, False, False]
    assert config["history"][0]["created_by"] == "/bin/sh -c step 0"


def test_schema1_without_the_v1_metadata_is_not_fixable(
    static_registry: StaticRegistry, bearer: TokenRegistry
) -> None:
    image = schema1_image([tar_layer({"a": b"a"})], [{"id": "1" * 64}])  # no os, no architecture
    doc = json.loads(image.manifest)
    doc.pop("architecture")
    body = json.dumps(doc).encode()
    static_registry.serve_built(
        "old/img", "v1", BuiltImage(body, image.media_type, sha256_digest(body), image.blobs)
    )
    src = RegistryWriter(base_url=static_registry.url)
    with pytest.raises(doctor.FixError) as caught:
        doctor.fix_image(
            "docker.io/old/img:v1",
            f"{TARGET}/old:v1",
            REGION,
            source_client=src,
            target_client=writer(bearer),
        )
    assert caught.value.exit_code == 1 and caught.value.code == "manifest-schema1"
    assert "os and architecture" in caught.value.message
    assert "skopeo copy --format v2s2" in caught.value.hint


def test_wrong_credentials_never_show_the_secret(auth_registry: LocalRegistry, bearer: TokenRegistry) -> None:
    auth_registry.push_built("src/secret", "v1", build_image([A]))
    secret = "s3cr3t-" + "x" * 20
    dst = RegistryWriter(token_provider=lambda: secret, base_url=bearer.url)
    with pytest.raises(RegistryError) as caught:
        doctor.fix_image(
            "docker.io/src/secret:v1",
            f"{TARGET}/s:v1",
            REGION,
            source_client=writer(auth_registry),
            target_client=dst,
        )
    assert caught.value.code == "registry-auth-failed"
    assert secret not in str(caught.value) and secret not in repr(caught.value)


def test_blob_stream_redirect_drops_the_token_across_hosts(static_registry: StaticRegistry) -> None:
    from airflow_batch_streaming.image import parse_image_uri
    from airflow_batch_streaming.testing.registry import CannedResponse

    static_registry.require_basic(password="ya29.redirect-5ecret")
    image = build_image([A])
    static_registry.serve_built("proj/app", "v1", image)
    layer = json.loads(image.manifest)["layers"][0]["digest"]
    storage = f"/storage/{layer}"
    # Same host first (keeps credentials), then to "another host" (a signed storage URL).
    static_registry.serve_redirect(f"/v2/proj/app/blobs/{layer}", f"/v2/moved/{layer}")
    static_registry.serve_redirect(
        f"/v2/moved/{layer}", f"http://localhost:{static_registry.port}{storage}?X-Goog-Signature=s"
    )
    static_registry.route(storage, CannedResponse(200, A))
    client = RegistryWriter(token_provider=lambda: "ya29.redirect-5ecret", base_url=static_registry.url)
    with client.open_blob(parse_image_uri("docker.io/proj/app:v1"), layer) as stream:
        assert stream.read() == A
    assert "authorization" in static_registry.requests_to(f"/v2/moved/{layer}")[0].headers
    assert "authorization" not in static_registry.requests_to(storage)[0].headers
