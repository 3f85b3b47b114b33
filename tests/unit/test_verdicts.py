"""Issue 11's verdict classes, on the pure rules: no registry, no network.

Each class is tried with more spellings than the issue's examples: platforms, artifacts,
empty archives by content, gcr.io hosts, job files the API would refuse, and the same
value spelled several ways for JobSpec, the preflight and the operator's parse-time check.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib
from typing import Any

import pytest

from airflow_batch_streaming import checker, jobschema, locations, oci, preflight
from airflow_batch_streaming.oci import Layer, ManifestInfo
from airflow_batch_streaming.spec import JobSpec, SpecError

AR = "us-central1-docker.pkg.dev/proj/repo/app"
DIGEST = "sha256:" + "ab" * 32
PINNED = f"{AR}@{DIGEST}"


def codes(findings: Any) -> list[str]:
    items = findings.findings if isinstance(findings, preflight.Report) else findings
    return [f.code for f in items]


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def info(
    *,
    platform: str | None = "linux/amd64",
    config: str | None = oci.MEDIA_TYPE_OCI_CONFIG,
    layer_types: tuple[str, ...] = (oci.MEDIA_TYPE_OCI_LAYER,),
    artifact_type: str | None = None,
    sizes: tuple[int, ...] | None = None,
    diff_ids: tuple[str, ...] | None = None,
    urls: tuple[str, ...] = (),
) -> ManifestInfo:
    sizes = sizes or tuple(1000 + i for i in range(len(layer_types)))
    layers = tuple(
        Layer(digest(i + 1), size, t, urls)
        for i, (t, size) in enumerate(zip(layer_types, sizes, strict=True))
    )
    return ManifestInfo(
        DIGEST,
        oci.MEDIA_TYPE_OCI_MANIFEST,
        2,
        layers,
        diff_ids if diff_ids is not None else tuple(digest(100 + i) for i in range(len(layers))),
        platform,
        None,
        config_media_type=config,
        artifact_type=artifact_type,
    )


# ------------------------------------------------------------------ 1. platform, always


@pytest.mark.parametrize(
    ("image", "vms", "expected"),
    [
        ("linux/arm64", "linux/amd64", "platform-mismatch"),
        ("linux/arm64/v8", "linux/amd64", "platform-mismatch"),
        ("linux/amd64", "linux/arm64", "platform-mismatch"),
        ("linux/arm/v7", "linux/arm64", "platform-mismatch"),
        ("linux/386", "linux/amd64", "platform-mismatch"),
        ("linux/s390x", "linux/amd64", "platform-mismatch"),
        ("linux/ppc64le", "linux/amd64", "platform-mismatch"),
        ("windows/amd64", "linux/amd64", "platform-mismatch"),
        ("windows/arm64", "linux/arm64", "platform-mismatch"),
        ("linux/amd64", "linux/amd64", None),
        ("linux/x86_64", "linux/amd64", None),
        ("linux/arm64", "linux/arm64", None),
        ("linux/aarch64", "linux/arm64", None),
        ("linux/arm64/v8", "linux/arm64", None),
        ("linux/amd64/v3", "linux/amd64", None),  # a bare VM platform runs any variant
        ("LINUX/AMD64", "linux/amd64", None),
    ],
)
def test_single_architecture_images_are_checked(image: str, vms: str, expected: str | None) -> None:
    found = preflight.check_platform(info(platform=image), vms)
    assert codes(found) == ([expected] if expected else [])
    if expected:
        assert found[0].severity == "error"
        assert f"--platform {vms}" in found[0].hint
    if image.startswith("windows"):
        assert "Windows image" in found[0].message


def test_an_image_config_without_a_platform_is_not_judged() -> None:
    assert preflight.check_platform(info(platform=None), "linux/arm64") == []


@pytest.mark.parametrize(
    ("machine_type", "platform", "certain"),
    [
        *[(f"{family}-standard-4", "linux/arm64", True) for family in ("t2a", "c4a", "n4a")],
        ("a4x-highgpu-4g", "linux/arm64", True),
        ("zones/us-central1-a/machineTypes/c4a-highcpu-8", "linux/arm64", True),
        *[
            (f"{family}-standard-4", "linux/amd64", True)
            for family in sorted(locations.X86_MACHINE_FAMILIES - {"custom"})
        ],
        ("custom-4-16384", "linux/amd64", True),
        ("n2-custom-4-16384", "linux/amd64", True),
        ("zz9-future-8", "linux/amd64", False),  # a family the tables do not list yet
    ],
)
def test_vm_platform_from_the_machine_type(machine_type: str, platform: str, certain: bool) -> None:
    rest = {"allocationPolicy": {"instances": [{"policy": {"machineType": machine_type}}]}}
    found, note, is_certain = locations.vm_platform(rest)
    assert (found, is_certain) == (platform, certain)
    assert ("assumed" in note) is (not certain)


def test_no_machine_type_or_an_instance_template_says_amd64_was_assumed() -> None:
    platform, note, certain = locations.vm_platform({})
    assert (platform, certain) == ("linux/amd64", True)
    assert "linux/amd64 was assumed" in note and "no machine type" in note
    rest = {
        "allocationPolicy": {"instances": [{"instanceTemplate": "projects/p/global/instanceTemplates/t"}]}
    }
    platform, note, certain = locations.vm_platform(rest)
    assert (platform, certain) == ("linux/amd64", False)
    assert "instance template" in note


def test_an_uncertain_platform_is_a_warning_that_says_so() -> None:
    [finding] = preflight.check_platform(info(platform="linux/arm64"), "linux/amd64", note="N", certain=False)
    assert (finding.code, finding.severity) == ("platform-mismatch", "warning")
    assert "(N)" in finding.message


# ------------------------------------------------------------------ 2. only container images


@pytest.mark.parametrize(
    ("config", "layer_types", "artifact_type"),
    [
        (
            "application/vnd.cncf.helm.config.v1+json",
            ("application/vnd.cncf.helm.chart.content.v1.tar+gzip",),
            None,
        ),
        (oci.MEDIA_TYPE_OCI_EMPTY, ("application/spdx+json",), "application/spdx+json"),
        (oci.MEDIA_TYPE_OCI_EMPTY, ("application/vnd.cyclonedx+json",), "application/vnd.cyclonedx+json"),
        (oci.MEDIA_TYPE_OCI_CONFIG, ("application/vnd.dev.cosign.simplesigning.v1+json",), None),
        (
            oci.MEDIA_TYPE_OCI_EMPTY,
            ("application/vnd.dev.sigstore.bundle.v0.3+json",),
            "application/vnd.dev.sigstore.bundle.v0.3+json",
        ),
        ("application/vnd.wasm.config.v0+json", ("application/vnd.wasm.content.layer.v1+wasm",), None),
        (
            "application/vnd.oci.image.config.v1+json",
            (oci.MEDIA_TYPE_OCI_LAYER,),
            "application/vnd.example+type",
        ),
        ("application/vnd.unknown.config.v1+json", (oci.MEDIA_TYPE_OCI_LAYER,), None),
        (oci.MEDIA_TYPE_OCI_EMPTY, (), "application/vnd.example.sbom"),
    ],
)
def test_artifacts_are_not_container_images(
    config: str, layer_types: tuple[str, ...], artifact_type: str | None
) -> None:
    manifest = info(config=config, layer_types=layer_types, artifact_type=artifact_type, platform=None)
    found = preflight.check_manifest(manifest, vm_platform="linux/amd64")
    assert codes(found) == ["not-a-container-image"]
    assert "not a container image" in found[0].message


@pytest.mark.parametrize("layer_type", sorted(oci.CONTAINER_LAYER_TYPES - oci.FOREIGN_LAYER_TYPES))
@pytest.mark.parametrize("config", sorted(oci.IMAGE_CONFIG_TYPES))
def test_every_image_flavour_is_a_container_image(layer_type: str, config: str) -> None:
    assert preflight.check_container_image(info(config=config, layer_types=(layer_type,))) == []


# ------------------------------------------------------------------ 3. empty layers by content


def _tar(
    members: dict[str, bytes] | None = None,
    *,
    fmt: int = tarfile.PAX_FORMAT,
    bufsize: int | None = None,
    pax: dict[str, str] | None = None,
) -> bytes:
    raw = io.BytesIO()
    kwargs: dict[str, Any] = {"format": fmt}
    if pax:
        kwargs["pax_headers"] = pax
    with tarfile.open(fileobj=raw, mode="w", **kwargs) as archive:
        for name, data in (members or {}).items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            archive.addfile(entry, io.BytesIO(data))
    data = raw.getvalue()
    if bufsize:  # another block factor: the end marker padded to that record size
        data = bytes(max(1024, -(-1024 // bufsize) * bufsize))
    return data


def _gzip_with_header(data: bytes, *, name: bytes = b"", comment: bytes = b"", extra: bytes = b"") -> bytes:
    flags = (4 if extra else 0) | (8 if name else 0) | (16 if comment else 0)
    header = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff"
    if extra:
        header += len(extra).to_bytes(2, "little") + extra
    if name:
        header += name + b"\0"
    if comment:
        header += comment + b"\0"
    body = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = body.compress(data) + body.flush()
    return header + deflated + zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little")


EMPTY_ARCHIVES = {
    "python tarfile (10240 bytes)": gzip.compress(_tar()),
    "go archive/tar (1024 bytes)": gzip.compress(bytes(1024)),
    **{f"block factor {n}": gzip.compress(bytes(512 * max(2, n))) for n in (1, 3, 4, 8, 16, 40, 64)},
    **{f"gzip level {level}": gzip.compress(_tar(), compresslevel=level) for level in range(10)},
    "gzip mtime set": gzip.compress(_tar(), mtime=1_700_000_000),
    "gzip file name and comment": _gzip_with_header(_tar(), name=b"layer.tar", comment=b"built by hand"),
    "gzip extra field": _gzip_with_header(bytes(1024), extra=b"AB\x02\x00hi"),
    "two gzip members": gzip.compress(bytes(512)) + gzip.compress(bytes(512)),
    "pax global header only": gzip.compress(_tar(pax={"comment": "no files"})),
    "gnu format": gzip.compress(_tar(fmt=tarfile.GNU_FORMAT)),
    "ustar format": gzip.compress(_tar(fmt=tarfile.USTAR_FORMAT)),
    "uncompressed 10240": _tar(),
    "uncompressed 1024": bytes(1024),
}


@pytest.mark.parametrize("name", sorted(EMPTY_ARCHIVES))
def test_an_empty_archive_is_empty_whatever_its_padding(name: str) -> None:
    blob = EMPTY_ARCHIVES[name]
    assert len(blob) <= oci.SMALL_LAYER_LIMIT
    assert oci.empty_layer_content(blob) is True
    layer = info(sizes=(len(blob),))
    [to_read] = preflight.layers_to_read(layer)
    found = preflight.check_empty_layers(layer, {to_read.digest: oci.empty_layer_content(blob)})
    assert codes(found) == ["empty-layer"]


@pytest.mark.parametrize(
    "blob",
    [
        gzip.compress(_tar({"a": b""})),  # one empty file is an entry
        gzip.compress(_tar({"dir/": b""})),
        gzip.compress(_tar({"a" * 150: b"x"}, fmt=tarfile.GNU_FORMAT)),  # a long-name entry
        _tar({"etc/x": b"hello"}),
    ],
)
def test_an_archive_with_an_entry_is_not_empty(blob: bytes) -> None:
    assert oci.empty_layer_content(blob) is False


@pytest.mark.parametrize("blob", [b"not a tar at all" * 40, b"\x1f\x8b broken gzip", b"abc"])
def test_unreadable_content_is_not_called_empty(blob: bytes) -> None:
    assert oci.empty_layer_content(blob) is None


@pytest.mark.parametrize("blocks", [1, 2, 3, 20, 21, 64, 2048])
def test_an_all_zero_tar_diff_id_is_empty_without_reading(blocks: int) -> None:
    import hashlib

    diff_id = "sha256:" + hashlib.sha256(bytes(512 * blocks)).hexdigest()
    manifest = info(sizes=(50_000,), diff_ids=(diff_id,))  # zstd or large: not read, the diff_id tells
    assert preflight.layers_to_read(manifest) == []
    assert codes(preflight.check_empty_layers(manifest)) == ["empty-layer"]


def test_large_layers_are_never_read() -> None:
    manifest = info(
        layer_types=(oci.MEDIA_TYPE_OCI_LAYER,) * 3, sizes=(oci.SMALL_LAYER_LIMIT + 1, 10**9, 700)
    )
    assert [layer.size for layer in preflight.layers_to_read(manifest)] == [700]


# ------------------------------------------------------------------ foreign layers


@pytest.mark.parametrize("layer_type", sorted(oci.FOREIGN_LAYER_TYPES))
def test_foreign_layers_are_reported(layer_type: str) -> None:
    manifest = info(layer_types=(layer_type,), urls=("https://mcr.microsoft.com/blob",))
    [finding] = preflight.check_foreign_layers(manifest)
    assert finding.code == "foreign-layer" and "outside Artifact Registry" in finding.message
    assert preflight.layers_to_read(manifest) == []


# ------------------------------------------------------------------ 4. Artifact Registry today


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"us-central1-docker.pkg.dev:443/proj/repo/app@{DIGEST}", []),
        (f"US-CENTRAL1-DOCKER.PKG.DEV/proj/repo/app@{DIGEST}", []),
        (f"us-central1-docker.pkg.dev.example.com/proj/repo/app@{DIGEST}", ["not-artifact-registry"]),
        (f"us-central1-docker.pkg.dev.evil/proj/repo/app@{DIGEST}", ["not-artifact-registry"]),
        (f"docker.pkg.dev/proj/repo/app@{DIGEST}", ["not-artifact-registry"]),
        (f"us-central1-docker.pkg.dev:5000/proj/repo/app@{DIGEST}", ["not-artifact-registry"]),
        ("us-central1-docker.pkg.dev", ["invalid-image-uri"]),
        ("us-central1-docker.pkg.dev/proj", ["invalid-image-uri"]),
        ("us-central1-docker.pkg.dev/proj/repo", ["invalid-image-uri"]),
        ("gcr.io", ["invalid-image-uri"]),
        ("gcr.io/proj", ["invalid-image-uri"]),
        (f"gcr.io/proj/app@{DIGEST}", ["gcr-io-host"]),
        (f"gcr.io:443/proj/app@{DIGEST}", ["gcr-io-host"]),
        (f"us.gcr.io/example.com/proj/app@{DIGEST}", ["gcr-io-host"]),
        (f"eu.gcr.io/proj/app@{DIGEST}", ["location-mismatch", "gcr-io-host"]),
        (f"mirror.gcr.io/library/app@{DIGEST}", ["not-artifact-registry"]),
        (f"k8s.gcr.io/pause@{DIGEST}", ["not-artifact-registry"]),
    ],
)
def test_artifact_registry_spellings(uri: str, expected: list[str]) -> None:
    found = preflight.check_reference(uri, "us-central1")
    assert codes(found) == expected
    for finding in found:
        assert "is not Artifact Registry" not in finding.message
        if finding.code == "invalid-image-uri" and "docker.pkg.dev" in uri:
            assert "path" in finding.message or "repository" in finding.message


# ------------------------------------------------------------------ 6. job files like the API


def _job(**container: Any) -> dict[str, Any]:
    return {
        "taskGroups": [{"taskSpec": {"runnables": [{"container": {"imageUri": PINNED, **container}}]}}],
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    }


@pytest.mark.parametrize(
    ("job", "mention"),
    [
        ({}, "taskGroups is required"),
        ({"taskGroups": []}, "taskGroups is required"),
        ({"taskGroups": [{}]}, "taskSpec is required"),
        ({"taskGroups": [{"taskSpec": {}}]}, "runnables is required"),
        ({"taskGroups": [{"taskSpec": {"runnables": []}}]}, "runnables is required"),
        ({"taskGroups": [{"taskSpec": {"runnables": [{}]}}]}, "needs a container, a script or a barrier"),
        (_job(imageUri2="x"), "no field 'imageUri2' (did you mean 'imageUri'?)"),
        ({**_job(), "taskGroup": []}, "no field 'taskGroup'"),
        (_job(commands="echo hi"), "commands must be a list"),
        (_job(enableImageStreaming="yes"), "must be true or false"),
        (_job(imageUri=5), "imageUri must be a string"),
        ({**_job(), "logsPolicy": {"destination": "STDOUT"}}, "destination must be one of"),
        ({**_job(), "logsPolicy": {"destination": 7}}, "destination must be one of"),
        ({**_job(), "priority": "high"}, "priority must be an integer"),
        ({**_job(), "priority": 2**70}, "priority must be an integer"),
        ({**_job(), "labels": ["a"]}, "labels must be an object"),
        (
            {
                **_job(),
                "taskGroups": [
                    {"taskSpec": {"runnables": [{"container": {"imageUri": PINNED}}], "maxRunDuration": 3600}}
                ],
            },
            "duration such as '3600s'",
        ),
        (
            {
                "taskGroups": [
                    {
                        "taskSpec": {
                            "runnables": [{"container": {"imageUri": PINNED}, "script": {"text": "x"}}]
                        }
                    }
                ]
            },
            "give only one of them",
        ),
        ({"taskGroups": [{}, {}]}, "supports only one"),
    ],
)
def test_jobs_the_api_would_refuse_are_invalid_input(job: dict[str, Any], mention: str) -> None:
    with pytest.raises(SpecError) as raised:
        checker.check_job(job, "us-central1")
    assert any(mention in problem for problem in raised.value.problems), raised.value.problems


def test_every_problem_of_a_job_is_listed() -> None:
    job = _job(imageUri2="x", commands="y", enableImageStreaming=3)
    job["taskGroups"][0]["taskCount"] = "many"
    with pytest.raises(SpecError) as raised:
        checker.check_job(job, "us-central1")
    assert len(raised.value.problems) == 4


@pytest.mark.parametrize(
    ("destination", "streaming"),
    [(1, True), ("CLOUD_LOGGING", "true"), (1, "true"), ("CLOUD_LOGGING", True)],
)
def test_enum_numbers_and_quoted_booleans_as_the_rest_api_takes_them(
    destination: Any, streaming: Any
) -> None:
    job = _job(enableImageStreaming=streaming)
    job["logsPolicy"] = {"destination": destination}
    report = checker.check_job(job, "us-central1")
    assert report.ok and codes(report) == []  # streams, logs reach Cloud Logging: no warning at all


def test_quoted_false_is_false() -> None:
    report = checker.check_job(_job(enableImageStreaming="false"), "us-central1")
    assert codes(report) == ["no-streaming-containers"]


def test_snake_case_proto_names_are_accepted() -> None:
    job = {
        "task_groups": [
            {
                "task_spec": {
                    "runnables": [{"container": {"image_uri": PINNED, "enable_image_streaming": True}}]
                }
            }
        ],
        "logs_policy": {"destination": "CLOUD_LOGGING"},
    }
    assert checker.check_job(job, "us-central1").ok


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(_job(enableImageStreaming=True)),
        "\ufeff" + json.dumps(_job(enableImageStreaming=True)),
        (
            "taskGroups:\n- taskSpec:\n    runnables:\n    - container:\n        imageUri: "
            + PINNED
            + "\n        enableImageStreaming: true\nlogsPolicy:\n  destination: CLOUD_LOGGING\n"
        ),
    ],
)
def test_json_yaml_and_a_byte_order_mark(text: str) -> None:
    for form in (text, text.encode("utf-8")):
        report = checker.check_job(form, "us-central1")
        assert report.ok and report.image == PINNED


@pytest.mark.parametrize(
    ("text", "mention"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested"),
        ('{"a":' * 5000 + "1" + "}" * 5000, "nested"),
        ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 200)), "nested"),
        ("[" * 30 + "]" * 30, "must hold an object"),
        ("x" * (jobschema.MAX_JOB_BYTES + 10), "at most"),
        ("", "empty"),
        ("{not json", "not valid JSON"),
        ("key: [unclosed", "neither JSON nor YAML"),
        ("- just\n- a list\n", "must hold an object"),
    ],
)
def test_hostile_or_broken_files_are_invalid_input(text: str, mention: str) -> None:
    with pytest.raises(SpecError) as raised:
        checker.validated_rest(text)
    assert mention in str(raised.value)


def test_bytes_that_are_not_utf8() -> None:
    with pytest.raises(SpecError, match="not UTF-8"):
        checker.validated_rest(b"\xff\xfe{}")


# ------------------------------------------------------------------ allowedLocations in the job's region


@pytest.mark.parametrize(
    ("allowed", "outside"),
    [
        (["zones/us-east1-b"], True),
        (["regions/us-east1"], True),
        ("zones/us-east1-b", True),
        (["us-east1"], True),
        (["zones/us-central1-a", "zones/us-central1-b"], False),
        (["regions/us-central1"], False),
        ("us-central1-f", False),
    ],
)
def test_allowed_locations_outside_the_job_region(allowed: Any, outside: bool) -> None:
    job = _job(enableImageStreaming=True)
    job["allocationPolicy"] = {
        "location": {"allowedLocations": allowed if isinstance(allowed, list) else [allowed]}
    }
    report = checker.check_job(job, "us-central1")
    assert ("location-outside-job-region" in codes(report)) is outside
    spec_problems = JobSpec(PINNED, allowed_locations=allowed).problems(region="us-central1")
    assert any("outside the job's region" in p for p in spec_problems) is outside


# ------------------------------------------------------------------ 7. one answer whatever the spelling


@pytest.mark.parametrize(
    "uri",
    [f" {PINNED}", f"{PINNED} ", f"\t{PINNED}\n", 5, None, "", "   ", ["x"], f"https://{PINNED}"],
)
def test_jobspec_and_the_preflight_agree_on_a_bad_image_uri(uri: Any) -> None:
    [finding] = preflight.check_reference(uri, "us-central1")
    assert finding.code == "invalid-image-uri"
    problems = JobSpec(uri).problems()
    assert problems == [f"image_uri: {finding.message} ({finding.hint})"]
    if isinstance(uri, int):
        assert "must be a string" in finding.message and "empty" not in finding.message


@pytest.mark.parametrize("zone", ["us-central1-a", "us-central1-ai1a", "u-france-east1-a", "europe-west10-c"])
def test_one_zone_grammar_everywhere(zone: str) -> None:
    region = locations.region_of(zone)
    assert JobSpec(PINNED, allowed_locations=[zone]).problems(region=region) == []
    assert preflight.check_allowed_locations(
        {"allocationPolicy": {"location": {"allowedLocations": [f"zones/{zone}"]}}}, region
    ) == (region, [])


def test_a_region_the_table_may_lag_on_is_a_warning_only_at_parse_time() -> None:
    uri = f"us-docker.pkg.dev/p/r/i@{DIGEST}"
    [strict] = preflight.check_reference(uri, "us-east9", strict=True)
    [lenient] = preflight.check_reference(uri, "us-east9", strict=False)
    assert (strict.code, strict.severity) == ("location-mismatch", "error")
    assert (lenient.code, lenient.severity) == ("location-mismatch", "warning")
    # A certain mismatch stays an error at parse time too.
    [certain] = preflight.check_reference(uri, "europe-west1", strict=False)
    assert certain.severity == "error"
