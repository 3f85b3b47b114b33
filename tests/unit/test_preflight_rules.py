"""The preflight's pure rules, the report, and the checker with injected fakes."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_batch_streaming import preflight
from airflow_batch_streaming.checker import check_image, check_job
from airflow_batch_streaming.exceptions import PreflightFailedError
from airflow_batch_streaming.preflight import (
    EMPTY_BLOB,
    EMPTY_TAR,
    GZIPPED_EMPTY_TAR,
    OCI_EMPTY_JSON,
    Finding,
    ManifestSummary,
    Report,
    api_findings,
    check_containers,
    check_logs_policy,
    check_manifest,
    check_mixed_runtimes,
    check_reference,
)
from airflow_batch_streaming.registry import Layer, ManifestInfo, RegistryError
from airflow_batch_streaming.spec import SpecError
from airflow_batch_streaming.testing import tar_layer

AR = "us-central1-docker.pkg.dev/proj/repo/app"
DIGEST = "sha256:" + "ab" * 32
PINNED = f"{AR}@{DIGEST}"


def codes(findings: list[Finding] | Report) -> list[str]:
    items = findings.findings if isinstance(findings, Report) else findings
    return [f.code for f in items]


def runnable(image: str = PINNED, streaming: bool = True, **fields: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"imageUri": image, **fields}
    if streaming:
        container["enableImageStreaming"] = True
    return {"container": container}


def job(*runnables: dict[str, Any], logs: bool = True, **extra: Any) -> dict[str, Any]:
    rest: dict[str, Any] = {"taskGroups": [{"taskSpec": {"runnables": list(runnables or [runnable()])}}]}
    if logs:
        rest["logsPolicy"] = {"destination": "CLOUD_LOGGING"}
    rest.update(extra)
    return rest


# ---------------------------------------------------------------- check_reference


def test_a_pinned_artifact_registry_image_in_its_region_passes() -> None:
    assert check_reference(PINNED, "us-central1") == []


@pytest.mark.parametrize("uri", ["", "   ", "UPPER/Case:", "a@sha256:short", "https://x.io/a"])
def test_invalid_image_uri(uri: str) -> None:
    [finding] = check_reference(uri, "us-central1")
    assert finding.code == "invalid-image-uri"
    assert finding.severity == "error"
    assert finding.hint


def test_a_non_string_image_uri_is_invalid() -> None:
    assert codes(check_reference(None, "us-central1")) == ["invalid-image-uri"]
    assert codes(check_reference(42, "us-central1")) == ["invalid-image-uri"]


@pytest.mark.parametrize(
    "uri",
    [
        f"mirror.gcr.io/library/app@{DIGEST}",
        f"ubuntu@{DIGEST}",
        f"docker.io/library/ubuntu@{DIGEST}",
        f"quay.io/org/app@{DIGEST}",
        f"us-central1-docker.pkg.dev.example.com/p/r/i@{DIGEST}",
    ],
)
def test_not_artifact_registry(uri: str) -> None:
    [finding] = check_reference(uri, "us-central1")
    assert finding.code == "not-artifact-registry"
    assert "Artifact Registry" in finding.message
    assert "docker.pkg.dev" in finding.hint
    assert "airflow-batch-streaming fix SOURCE --to REGION-docker.pkg.dev/PROJECT/REPO" in finding.hint


def test_location_mismatch_between_regions() -> None:
    [finding] = check_reference(PINNED, "europe-west1")
    assert finding.code == "location-mismatch"
    assert "us-central1" in finding.message and "europe-west1" in finding.message
    assert "europe-west1" in finding.hint and "the europe multi-region" in finding.hint
    fix = f"airflow-batch-streaming fix {PINNED} --to europe-west1-docker.pkg.dev/PROJECT/REPO"
    assert f"`{fix} --location europe-west1`" in finding.hint


def test_a_multi_region_repository_serves_its_regions() -> None:
    uri = f"us-docker.pkg.dev/proj/repo/app@{DIGEST}"
    assert check_reference(uri, "us-east1") == []
    assert codes(check_reference(uri, "northamerica-northeast1")) == ["location-mismatch"]


def test_a_region_missing_from_the_table_names_the_override() -> None:
    [finding] = check_reference(f"europe-docker.pkg.dev/p/r/i@{DIGEST}", "europe-west2")
    assert finding.code == "location-mismatch"
    assert "multi-region" in finding.message
    assert '{"europe": ["europe-west2"]}' in finding.hint
    assert (
        check_reference(
            f"europe-docker.pkg.dev/p/r/i@{DIGEST}", "europe-west2", overrides={"europe": ["europe-west2"]}
        )
        == []
    )


def test_a_bad_override_env_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_STREAMING_MULTI_REGIONS", "{oops")
    assert codes(check_reference(PINNED, "us-central1")) == ["invalid-location"]


def test_location_is_skipped_when_the_region_is_unknown() -> None:
    assert check_reference(PINNED, None) == []


def test_check_reference_normalises_the_vm_location() -> None:
    assert check_reference(PINNED, "zones/us-central1-c") == []
    assert codes(check_reference(PINNED, "the moon")) == ["invalid-location"]


def test_mutable_tag_is_a_warning_with_the_digest_to_pin() -> None:
    [finding] = check_reference(f"{AR}:v1", "us-central1", digest=DIGEST)
    assert (finding.code, finding.severity) == ("mutable-tag", "warning")
    assert "'v1'" in finding.message
    assert f"{AR}@{DIGEST}" in finding.hint
    [latest] = check_reference(AR, "us-central1")
    assert "'latest'" in latest.message


@pytest.mark.parametrize(
    ("host", "served", "outside"),
    [
        ("gcr.io", "us-east1", "europe-west1"),
        ("us.gcr.io", "us-central1", "asia-east1"),
        ("eu.gcr.io", "europe-west4", "us-central1"),
        ("asia.gcr.io", "asia-northeast1", "europe-west1"),
    ],
)
def test_gcr_io_is_an_artifact_registry_repository_checked_by_location(
    host: str, served: str, outside: str
) -> None:
    # Container Registry's hosts are Artifact Registry gcr.io repositories since 2025.
    uri = f"{host}/p/app@{DIGEST}"
    [warning] = check_reference(uri, served)
    assert (warning.code, warning.severity) == ("gcr-io-host", "warning")
    assert f"-docker.pkg.dev/p/{host}/app@{DIGEST}" in warning.hint
    assert "not Artifact Registry" not in warning.message
    assert codes(check_reference(uri, outside)) == ["location-mismatch", "gcr-io-host"]


# ---------------------------------------------------------------- job rules


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("options", "--network=host"),
        ("blockExternalNetwork", True),
        ("username", "user"),
        ("password", "projects/p/secrets/s/versions/1"),
        ("block_external_network", True),
    ],
)
def test_unsupported_container_field(field: str, value: Any) -> None:
    [finding] = check_containers(job(runnable(**{field: value})))
    assert finding.code == "unsupported-container-field"
    camel = "blockExternalNetwork" if field == "block_external_network" else field
    assert f"container.{camel}" in finding.message
    assert "task group 0, runnable 0" in finding.message
    assert finding.hint


def test_unset_or_default_container_fields_pass() -> None:
    rest = job(runnable(options="", blockExternalNetwork=False, username="", password=None, commands=["x"]))
    assert check_containers(rest) == []


def test_non_streaming_containers_may_use_every_field() -> None:
    assert check_containers(job(runnable(streaming=False, options="--privileged", username="u"))) == []


def test_every_unsupported_field_of_every_runnable_is_reported() -> None:
    rest = job(
        runnable(options="--privileged", username="u", password="p"),
        {"script": {"text": "echo"}},
        runnable(blockExternalNetwork=True),
    )
    findings = check_containers(rest)
    assert len(findings) == 4
    where = [f.message.split("): ")[0] + ")" for f in findings]
    assert where == [f"task group 0, runnable 0 ({PINNED})"] * 3 + [f"task group 0, runnable 2 ({PINNED})"]
    assert [f.message.split("container.")[1].split(" ")[0] for f in findings] == [
        "options",
        "username",
        "password",
        "blockExternalNetwork",
    ]


def test_mixed_runtimes() -> None:
    rest = job(runnable(), {"script": {"text": "echo hi"}}, runnable("ubuntu:22.04", streaming=False))
    [finding] = check_mixed_runtimes(rest)
    assert finding.code == "mixed-runtimes"
    assert "runnable 0" in finding.message and "runnable 2" in finding.message
    assert check_mixed_runtimes(job(runnable(), {"script": {"text": "x"}})) == []
    assert check_mixed_runtimes(job(runnable(streaming=False))) == []


def test_mixed_runtimes_across_task_groups() -> None:
    rest = {
        "taskGroups": [
            {"taskSpec": {"runnables": [runnable()]}},
            {"taskSpec": {"runnables": [runnable(streaming=False)]}},
        ]
    }
    assert codes(check_mixed_runtimes(rest)) == ["mixed-runtimes"]


@pytest.mark.parametrize(
    "policy",
    [None, {}, {"destination": "DESTINATION_UNSPECIFIED"}, {"destination": "PATH", "logsPath": "/mnt/x"}],
)
def test_logs_disabled(policy: dict[str, str] | None) -> None:
    rest = job(logs=False)
    if policy is not None:
        rest["logsPolicy"] = policy
    [finding] = check_logs_policy(rest)
    assert (finding.code, finding.severity) == ("logs-disabled", "warning")
    assert "CLOUD_LOGGING" in finding.hint


def test_logs_to_cloud_logging_pass() -> None:
    assert check_logs_policy(job()) == []
    assert check_logs_policy({"logs_policy": {"destination": "CLOUD_LOGGING"}}) == []


# ---------------------------------------------------------------- api_findings


def test_api_check_not_asked_is_silent() -> None:
    assert api_findings("p", None) == []
    assert check_image(PINNED, "us-central1", project="p", api_check=None).findings == ()


def test_api_check_without_project_is_skipped() -> None:
    [finding] = api_findings(None, True)
    assert (finding.code, finding.severity) == ("api-check-skipped", "warning")
    assert "--project" in finding.hint


def test_api_enabled_and_disabled() -> None:
    assert api_findings("p", True) == []
    [finding] = api_findings("my project", False)
    assert (finding.code, finding.severity) == ("api-disabled", "error")
    assert "gcloud services enable containerfilesystem.googleapis.com --project 'my project'" in finding.hint


def test_a_failing_api_check_is_skipped_with_its_reason() -> None:
    def boom(project: str) -> bool:
        raise PermissionError("no credentials here")

    [finding] = check_image(PINNED, "us-central1", project="p", api_check=boom).findings
    assert (finding.code, finding.severity) == ("api-check-skipped", "warning")
    assert "PermissionError: no credentials here" in finding.message


# ---------------------------------------------------------------- report


def test_report_shape_and_verdict() -> None:
    report = Report(
        "img",
        "us-central1",
        [Finding("a", "warning", "w", "hw"), Finding("b", "error", "e", "he")],
        ManifestSummary(DIGEST, "application/vnd.oci.image.manifest.v1+json", 3),
    )
    assert not report.ok
    assert codes(report.errors) == ["b"] and codes(report.warnings) == ["a"]
    data = report.to_dict()
    assert data == {
        "image": "img",
        "location": "us-central1",
        "ok": False,
        "findings": [
            {"code": "a", "severity": "warning", "message": "w", "hint": "hw"},
            {"code": "b", "severity": "error", "message": "e", "hint": "he"},
        ],
        "manifest": {
            "digest": DIGEST,
            "media_type": "application/vnd.oci.image.manifest.v1+json",
            "layers": 3,
        },
    }
    assert json.loads(json.dumps(data)) == data
    assert Report.from_dict(data) == report


def test_an_empty_report_is_ok_with_null_manifest() -> None:
    report = Report("img", "us-central1")
    assert report.ok
    assert report.to_dict()["manifest"] == {"digest": None, "media_type": None, "layers": None}
    assert report.format_text() == "img in us-central1: OK (0 errors, 0 warnings)"


def test_format_text() -> None:
    report = Report(
        "img",
        "us-central1",
        [Finding("bad", "error", "it is bad", "fix it"), Finding("meh", "warning", "so so")],
        ManifestSummary(DIGEST, "m", 2),
    )
    assert report.format_text().splitlines() == [
        f"img in us-central1: FAILED (1 error, 1 warning) [manifest {DIGEST}, 2 layers]",
        "ERROR bad: it is bad",
        "  hint: fix it",
        "WARNING meh: so so",
    ]


def test_preflight_failed_error_lists_every_error() -> None:
    findings = [Finding("x", "error", "first"), Finding("y", "error", "second"), Finding("z", "warning", "w")]
    report = Report("img", "r", findings)
    with pytest.raises(PreflightFailedError) as info:
        report.raise_for_errors()
    assert str(info.value).splitlines() == [
        "preflight of img in r failed with 2 errors:",
        "  x: first",
        "  y: second",
    ]
    assert info.value.report is report
    assert [f["code"] for f in info.value.findings] == ["x", "y", "z"]
    again = pickle.loads(pickle.dumps(info.value))
    assert again.report == report and str(again) == str(info.value)
    assert preflight.PreflightFailed is PreflightFailedError


def test_warnings_fail_only_when_asked() -> None:
    report = Report("img", "r", [Finding("z", "warning", "w")])
    report.raise_for_errors()
    with pytest.raises(PreflightFailedError, match="failed with 1 warning:\n  z: w"):
        report.raise_for_errors(fail_on_warnings=True)


# ---------------------------------------------------------------- check_manifest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def manifest(
    layers: list[tuple[str, int]] | None = None,
    diff_ids: list[str] | None = None,
    media_type: str = OCI_MANIFEST,
    schema_version: int = 2,
    index_digest: str | None = None,
) -> ManifestInfo:
    layers = [(digest(1), 100), (digest(2), 200)] if layers is None else layers
    if diff_ids is None and schema_version == 2:
        diff_ids = [digest(1000 + i) for i in range(len(layers))]
    return ManifestInfo(
        digest=DIGEST,
        media_type=media_type,
        schema_version=schema_version,
        layers=tuple(Layer(d, size, LAYER_TYPE) for d, size in layers),
        diff_ids=None if diff_ids is None else tuple(diff_ids),
        platform="linux/amd64",
        index_digest=index_digest,
    )


def test_a_clean_manifest_passes() -> None:
    assert check_manifest(manifest()) == []
    assert check_manifest(manifest(diff_ids=None)) == []  # an artifact config has no diff_ids


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
    ],
)
def test_schema1_is_reported_alone(media_type: str) -> None:
    info = manifest([(GZIPPED_EMPTY_TAR, 32)] * 3, media_type=media_type, schema_version=1)
    [finding] = check_manifest(info)
    assert finding.code == "manifest-schema1"
    assert "skopeo copy --format v2s2" in finding.hint


@pytest.mark.parametrize(
    ("layer", "size", "why"),
    [
        (GZIPPED_EMPTY_TAR, 32, "gzipped empty tar"),
        (EMPTY_TAR, 1024, "1024 zero bytes"),
        (OCI_EMPTY_JSON, 2, "OCI empty JSON"),
        (EMPTY_BLOB, 0, "zero-byte blob"),
        (digest(9), 0, "blob of size 0"),
    ],
)
def test_empty_layers(layer: str, size: int, why: str) -> None:
    [finding] = check_manifest(manifest([(digest(1), 100), (layer, size)]))
    assert finding.code == "empty-layer"
    assert finding.message.startswith(f"layer 1 ({layer}, {size} bytes) is empty")
    assert why in finding.message
    assert "FROM scratch" in finding.hint
    assert "airflow-batch-streaming fix SOURCE --to" in finding.hint


def test_an_empty_tar_diff_id_is_an_empty_layer() -> None:
    [finding] = check_manifest(manifest(diff_ids=[digest(1000), EMPTY_TAR]))
    assert finding.code == "empty-layer"
    assert "layer 1" in finding.message and "diff_id" in finding.message


def test_history_empty_layer_entries_are_not_layers() -> None:
    # A config's history may mark steps `empty_layer`: they have no blob, so the manifest
    # and rootfs.diff_ids simply do not list them; nothing to report.
    assert check_manifest(manifest([(digest(1), 100)], diff_ids=[digest(1000)])) == []


def test_duplicate_layer_digests() -> None:
    info = manifest(
        [(digest(1), 100), (digest(2), 200), (digest(1), 100)], diff_ids=[digest(7), digest(8), digest(7)]
    )
    [finding] = check_manifest(info)
    assert finding.code == "duplicate-layer"
    assert finding.message.startswith(f"layer 2 ({digest(1)}) repeats layer 0")
    assert "COPY/ADD" in finding.hint
    assert "airflow-batch-streaming fix SOURCE --to" in finding.hint


def test_duplicate_diff_ids_with_different_blobs() -> None:
    info = manifest([(digest(1), 100), (digest(2), 101)], diff_ids=[digest(7), digest(7)])
    [finding] = check_manifest(info)
    assert finding.code == "duplicate-layer"
    assert f"layer 1 has the same content (diff_id {digest(7)}) as layer 0" in finding.message


def test_every_layer_problem_is_reported() -> None:
    info = manifest(
        [
            (digest(1), 100),
            (GZIPPED_EMPTY_TAR, 32),
            (digest(1), 100),
            (GZIPPED_EMPTY_TAR, 32),
            (digest(3), 5),
        ],
        diff_ids=[digest(7), EMPTY_TAR, digest(7), EMPTY_TAR, digest(9)],
    )
    assert codes(check_manifest(info)) == ["empty-layer", "empty-layer", "duplicate-layer", "duplicate-layer"]


def test_a_config_that_disagrees_with_the_manifest() -> None:
    assert codes(check_manifest(manifest(diff_ids=[digest(7)]))) == ["manifest-invalid"]


# ---------------------------------------------------------------- orchestrators


class FakeRegistry:
    """Answers `inspect` from a table: a ManifestInfo or a RegistryError per URI."""

    def __init__(self, answers: dict[str, ManifestInfo | RegistryError] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, str]] = []
        self.blobs: list[str] = []

    def inspect(self, ref: Any, platform: str = "linux/amd64") -> ManifestInfo:
        self.calls.append((str(ref), platform))
        answer = self.answers.get(str(ref), manifest())
        if isinstance(answer, RegistryError):
            raise answer
        return answer

    def read_blob(self, ref: Any, digest: str, *, limit: int) -> bytes:
        self.blobs.append(digest)
        return tar_layer({"app/file": b"content"})


def fake(answers: dict[str, ManifestInfo | RegistryError] | None = None) -> Any:
    return FakeRegistry(answers)


def test_check_image_good() -> None:
    registry = fake()
    report = check_image(PINNED, "us-central1", registry=registry)
    assert report.ok and report.findings == ()
    assert registry.blobs == [digest(1), digest(2)]  # both layers are small: read to judge content
    assert report.manifest == ManifestSummary(DIGEST, OCI_MANIFEST, 2)
    assert registry.calls == [(PINNED, "linux/amd64")]
    assert report.image == PINNED and report.location == "us-central1"


def test_check_image_without_registry_has_no_manifest() -> None:
    report = check_image(PINNED, "zones/us-central1-b")
    assert report.ok
    assert report.manifest == ManifestSummary()
    assert report.location == "zones/us-central1-b"


def test_check_image_pins_the_index_digest() -> None:
    index = "sha256:" + "cd" * 32
    report = check_image(f"{AR}:v1", "us-central1", registry=fake({f"{AR}:v1": manifest(index_digest=index)}))
    [finding] = report.findings
    assert finding.code == "mutable-tag"
    assert f"{AR}@{index}" in finding.hint


@pytest.mark.parametrize(
    "code",
    [
        "image-not-found",
        "registry-auth-failed",
        "registry-unreachable",
        "platform-not-found",
        "manifest-invalid",
    ],
)
def test_registry_errors_become_findings(code: str) -> None:
    registry = fake({PINNED: RegistryError(code, "it went wrong", "do this")})
    report = check_image(PINNED, "us-central1", registry=registry)
    message = "it went wrong"
    if code == "platform-not-found":  # the assumption is stated, not hidden
        message += " (linux/amd64 was assumed: no platform given)"
    assert report.findings == (Finding(code, "error", message, "do this"),)
    assert report.manifest == ManifestSummary()


def test_registry_is_not_asked_about_other_hosts() -> None:
    registry = fake()
    report = check_image("quay.io/p/app:1", "us-central1", registry=registry)
    assert codes(report) == ["not-artifact-registry", "mutable-tag"]
    assert registry.calls == []


def test_an_invalid_location_is_a_finding() -> None:
    report = check_image(PINNED, "mars")
    assert codes(report) == ["invalid-location"]
    assert report.location == "mars"


def test_an_invalid_platform_is_a_finding_and_skips_the_registry() -> None:
    registry = fake()
    report = check_image(PINNED, "us-central1", platform="amd64", registry=registry)
    assert codes(report) == ["invalid-platform"]
    assert registry.calls == []


def test_check_image_with_api_check() -> None:
    assert codes(check_image(PINNED, "us-central1", api_check=lambda p: False)) == ["api-check-skipped"]
    report = check_image(PINNED, "us-central1", project="p", api_check=lambda p: False)
    assert codes(report) == ["api-disabled"]


def test_a_job_with_every_problem_gets_every_finding() -> None:
    gcr = "quay.io/p/legacy:1"
    rest = job(
        runnable(f"{AR}:v1", options="--privileged", username="u"),
        runnable(gcr, blockExternalNetwork=True),
        runnable("ubuntu:22.04", streaming=False),
        runnable(f"{AR}:v1"),  # the same image again: inspected once
        logs=False,
        allocationPolicy={
            "location": {"allowedLocations": ["zones/europe-west1-b"]},
            "instances": [{"policy": {"machineType": "t2a-standard-4"}}],
        },
    )
    registry = fake(
        {f"{AR}:v1": manifest([(digest(1), 10), (digest(1), 10)], diff_ids=[digest(5), digest(5)])}
    )
    report = check_job(rest, "us-central1", project="p", registry=registry, api_check=lambda p: False)
    assert codes(report) == [
        "location-outside-job-region",
        "location-mismatch",
        "not-artifact-registry",
        "unsupported-container-field",
        "unsupported-container-field",
        "unsupported-container-field",
        "mixed-runtimes",
        "platform-mismatch",  # the fake image is amd64, t2a is Arm
        "duplicate-layer",
        "api-disabled",
        "logs-disabled",
        "mutable-tag",
        "mutable-tag",
    ]
    assert registry.calls == [(f"{AR}:v1", "linux/arm64")]  # t2a is Arm; gcr.io is never asked
    assert report.image == f"{AR}:v1"
    assert report.manifest.layers == 2
    by_code = {f.code: f for f in report.findings}
    assert "europe-west1" in by_code["location-mismatch"].message
    assert by_code["duplicate-layer"].message.startswith(f"{AR}:v1: layer 1")  # several images: named
    assert not report.ok


def test_an_explicit_platform_wins_over_the_machine_type() -> None:
    rest = job(allocationPolicy={"instances": [{"policy": {"machineType": "c4a-standard-4"}}]})
    registry = fake()
    check_job(rest, "us-central1", platform="linux/amd64", registry=registry)
    assert registry.calls == [(PINNED, "linux/amd64")]
    check_job(rest, "us-central1", registry=registry)
    assert registry.calls[-1] == (PINNED, "linux/arm64")


def test_an_instance_template_says_which_platform_was_assumed() -> None:
    rest = job(
        allocationPolicy={"instances": [{"instanceTemplate": "projects/p/global/instanceTemplates/t"}]}
    )
    registry = fake()
    report = check_job(rest, "us-central1", registry=registry)
    (assumed,) = [f for f in report.findings if f.code == "platform-assumed"]
    assert (
        assumed.severity == "warning" and "linux/amd64" in assumed.message and "linux/arm64" in assumed.hint
    )
    assert registry.calls == [(PINNED, "linux/amd64")]
    explicit = check_job(rest, "us-central1", platform="linux/arm64", registry=registry)
    assert "platform-assumed" not in {f.code for f in explicit.findings}  # nothing assumed


def test_check_job_accepts_json_text_and_protos() -> None:
    rest = job()
    assert check_job(json.dumps(rest), "us-central1").ok
    from airflow_batch_streaming.spec import rest_to_job

    report = check_job(rest_to_job(rest), "us-central1")
    assert report.ok and report.image == PINNED


def test_check_job_tolerates_snake_case() -> None:
    rest = {
        "task_groups": [
            {
                "task_spec": {
                    "runnables": [
                        {"container": {"image_uri": PINNED, "enable_image_streaming": True, "options": "-x"}}
                    ]
                }
            }
        ],
        "logs_policy": {"destination": "CLOUD_LOGGING"},
    }
    assert codes(check_job(rest, "us-central1")) == ["unsupported-container-field"]


def test_a_job_without_streaming_containers_is_a_warning() -> None:
    report = check_job(
        job(runnable("ubuntu:22.04", streaming=False)), "us-central1", api_check=lambda p: False
    )
    assert codes(report) == ["no-streaming-containers"]
    assert report.ok and report.image == "ubuntu:22.04"


def test_allowed_locations_spanning_regions() -> None:
    rest = job(
        allocationPolicy={"location": {"allowedLocations": ["zones/us-central1-a", "zones/us-east1-b"]}}
    )
    report = check_job(rest, "us-central1")
    assert codes(report) == ["multiple-regions"]


def test_a_streaming_container_without_image_is_refused_like_the_api() -> None:
    rest = job({"container": {"enableImageStreaming": True, "commands": ["x"]}})
    with pytest.raises(SpecError, match=r"container\.imageUri is required"):
        check_job(rest, "us-central1", registry=fake())


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", '{"taskGroups": 3}', b"\xff"])
def test_unreadable_jobs_raise_spec_error(bad: str | bytes) -> None:
    with pytest.raises(SpecError):
        check_job(bad, "us-central1")


# ---------------------------------------------------------------- hypothesis: never crash

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "imageUri",
        "enableImageStreaming",
        "options",
        "username",
        "blockExternalNetwork",
        "commands",
        "image_uri",
    ]
)
_container = st.dictionaries(
    _keys, _json | st.just(True) | st.just(PINNED) | st.just("gcr.io/x/y"), max_size=4
)
_runnable = st.one_of(_json, st.fixed_dictionaries({"container": _container}))
_group = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"taskSpec": st.fixed_dictionaries({"runnables": st.lists(_runnable, max_size=3)})}
    ),
)
_job = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"taskGroups": st.one_of(_json, st.lists(_group, max_size=2))},
        optional={"logsPolicy": _json, "allocationPolicy": _json},
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_job, st.sampled_from(["us-central1", "zones/us-central1-a", "nowhere", ""]))
def test_check_job_never_crashes(rest: Any, location: str) -> None:
    for form in (rest, json.dumps(rest)):
        try:
            report = check_job(form, location, api_check=lambda p: True)
        except SpecError:
            continue
        assert isinstance(report, Report)
        assert json.loads(json.dumps(report.to_dict())) == report.to_dict()
        report.format_text()


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.text(max_size=60), st.from_regex(r"[a-z0-9-]{1,12}-docker\.pkg\.dev/[a-z0-9./:@_-]{0,40}"))
)
def test_check_image_never_crashes(uri: str) -> None:
    report = check_image(uri, "us-central1")
    assert isinstance(report, Report)
    assert report.to_dict()["image"] == uri
