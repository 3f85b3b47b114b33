"""Every reason an image or a Batch job would not stream, found before submission.

The rules are pure functions from values (an image URI, a REST job dict, a
`registry.ManifestInfo`) to `Finding`s, so they are tested without a network and a
DAG file can run them at parse time. `check_image` and `check_job` run all the rules
and the two checks that need I/O, which are injected: a `registry.RegistryClient`
reads manifests, and `api_check(project) -> bool` asks Service Usage whether the
Container File System API is enabled. Everything found is reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from airflow_batch_streaming import locations, spec
from airflow_batch_streaming.exceptions import PreflightFailedError
from airflow_batch_streaming.image import ImageReference, ImageReferenceError, parse_image_uri
from airflow_batch_streaming.registry import SCHEMA1_MEDIA_TYPES, ManifestInfo, RegistryClient, RegistryError

Severity = Literal["error", "warning"]
ERROR: Final = "error"
WARNING: Final = "warning"

CONTAINER_FILESYSTEM_API: Final = "containerfilesystem.googleapis.com"

# Finding codes. The CLI's JSON carries them; tests outside this repository rely on them.
INVALID_IMAGE_URI: Final = "invalid-image-uri"
NOT_ARTIFACT_REGISTRY: Final = "not-artifact-registry"
LOCATION_MISMATCH: Final = "location-mismatch"
INVALID_LOCATION: Final = "invalid-location"
INVALID_PLATFORM: Final = "invalid-platform"
MULTIPLE_REGIONS: Final = "multiple-regions"
UNSUPPORTED_CONTAINER_FIELD: Final = "unsupported-container-field"
MIXED_RUNTIMES: Final = "mixed-runtimes"
NO_STREAMING_CONTAINERS: Final = "no-streaming-containers"
MANIFEST_SCHEMA1: Final = "manifest-schema1"
MANIFEST_INVALID: Final = "manifest-invalid"
EMPTY_LAYER: Final = "empty-layer"
DUPLICATE_LAYER: Final = "duplicate-layer"
PLATFORM_NOT_FOUND: Final = "platform-not-found"
IMAGE_NOT_FOUND: Final = "image-not-found"
REGISTRY_AUTH_FAILED: Final = "registry-auth-failed"
REGISTRY_UNREACHABLE: Final = "registry-unreachable"
API_DISABLED: Final = "api-disabled"
API_CHECK_SKIPPED: Final = "api-check-skipped"
LOGS_DISABLED: Final = "logs-disabled"
MUTABLE_TAG: Final = "mutable-tag"
PLATFORM_ASSUMED: Final = "platform-assumed"

GZIPPED_EMPTY_TAR: Final = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
EMPTY_TAR: Final = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
OCI_EMPTY_JSON: Final = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EMPTY_BLOB: Final = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_LAYER_DIGESTS: Final[Mapping[str, str]] = {
    GZIPPED_EMPTY_TAR: "the gzipped empty tar archive",
    EMPTY_TAR: "an empty tar archive (1024 zero bytes)",
    OCI_EMPTY_JSON: "the OCI empty JSON blob `{}`",
    EMPTY_BLOB: "a zero-byte blob",
}

# A streaming container honours only imageUri, commands, entrypoint and volumes; Batch
# silently ignores these (REST name -> snake_case name, hint).
_IGNORED_CONTAINER_FIELDS: Final[tuple[tuple[str, str, str], ...]] = (
    (
        "options",
        "options",
        "Remove `options` (docker run flags such as --network, --privileged, -e): containerd runs a "
        "streaming container and ignores them. Set environment variables with the runnable's "
        "`environment` instead; if the job needs the flags, turn Image Streaming off for it.",
    ),
    (
        "blockExternalNetwork",
        "block_external_network",
        "Remove `blockExternalNetwork`. To keep the VMs off the internet, set "
        "allocationPolicy.network.networkInterfaces[].noExternalIpAddress (with Private Google Access "
        "on the subnet) or use VPC firewall rules.",
    ),
    (
        "username",
        "username",
        "Remove `username` and `password`: a streaming container is read from Artifact Registry with "
        "the job's service account. Grant it roles/artifactregistry.reader on the repository.",
    ),
    (
        "password",
        "password",
        "Remove `username` and `password`: a streaming container is read from Artifact Registry with "
        "the job's service account. Grant it roles/artifactregistry.reader on the repository.",
    ),
)

_EMPTY_LAYER_HINT: Final = (
    "Rebuild without empty layers. BuildKit (`docker buildx build`, Docker's default builder since "
    "23.0) records steps that change no files as history only; the legacy builder and some tools "
    "write them as empty layers. Fold steps that create no files (a RUN that only deletes or checks "
    "something, a COPY of an empty directory) into a neighbouring RUN, or squash the image: a final "
    "stage `FROM scratch` + `COPY --from=<build stage> / /` (re-declare ENV, WORKDIR, ENTRYPOINT, CMD), "
    "or `crane flatten`."
)
_DUPLICATE_LAYER_HINT: Final = (
    "Rebuild so that no two layers are identical: remove a repeated COPY/ADD of the same files, merge "
    "steps that produce the same content, and do not re-add files the base image already has in an "
    "identical layer. Squashing (a final `FROM scratch` + `COPY --from=<build stage> / /` stage, or "
    "`crane flatten`) also removes duplicates."
)
_SCHEMA1_HINT: Final = (
    "Docker manifest schema 1 is written only by very old clients. Rebuild and push with a current "
    "Docker or BuildKit (`docker buildx build --push`), or convert the stored image: "
    "`skopeo copy --format v2s2 docker://SRC docker://DEST`."
)
_COPY_TO_AR_HINT: Final = (
    "Copy the image into an Artifact Registry Docker repository in the VMs' region or a multi-region "
    "containing it (e.g. `crane copy SRC REGION-docker.pkg.dev/PROJECT/REPO/IMAGE:TAG`, or docker pull, "
    "tag and push) and use that URI."
)


@dataclass(frozen=True)
class Finding:
    """One reason the job would not stream (error) or might not behave as expected (warning)."""

    code: str
    severity: Severity
    message: str
    hint: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity, "message": self.message, "hint": self.hint}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        severity: Severity = "warning" if data.get("severity") == WARNING else "error"
        return cls(str(data["code"]), severity, str(data.get("message", "")), str(data.get("hint", "")))


def _error(code: str, message: str, hint: str = "") -> Finding:
    return Finding(code, "error", message, hint)


def _warning(code: str, message: str, hint: str = "") -> Finding:
    return Finding(code, "warning", message, hint)


@dataclass(frozen=True)
class ManifestSummary:
    """The manifest the VMs would run (after resolving an index to their platform)."""

    digest: str | None = None
    media_type: str | None = None
    layers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "media_type": self.media_type, "layers": self.layers}


@dataclass(frozen=True)
class Report:
    """All findings for one image (or one job's images) in one location.

    `image` is the checked image (for a job, its first streaming image); `location`
    the location the check was asked for.
    """

    image: str
    location: str
    findings: Sequence[Finding] = ()  # stored as a tuple
    manifest: ManifestSummary = field(default_factory=ManifestSummary)

    def __post_init__(self) -> None:
        object.__setattr__(self, "findings", tuple(self.findings))

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """The CLI's `--json` object (also what the preflight operator pushes to XCom)."""
        return {
            "image": self.image,
            "location": self.location,
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
            "manifest": self.manifest.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        manifest = data.get("manifest") or {}
        return cls(
            image=str(data.get("image", "")),
            location=str(data.get("location", "")),
            findings=tuple(Finding.from_dict(f) for f in data.get("findings", ())),
            manifest=ManifestSummary(
                manifest.get("digest"), manifest.get("media_type"), manifest.get("layers")
            ),
        )

    def format_text(self) -> str:
        n_err, n_warn = len(self.errors), len(self.warnings)
        verdict = "OK" if self.ok else "FAILED"
        counts = f"{n_err} error{'' if n_err == 1 else 's'}, {n_warn} warning{'' if n_warn == 1 else 's'}"
        header = f"{self.image or '(no streaming image)'} in {self.location}: {verdict} ({counts})"
        if self.manifest.digest:
            layers = "" if self.manifest.layers is None else f", {self.manifest.layers} layers"
            header += f" [manifest {self.manifest.digest}{layers}]"
        lines = [header]
        for finding in self.findings:
            lines.append(f"{finding.severity.upper()} {finding.code}: {finding.message}")
            if finding.hint:
                lines.append(f"  hint: {finding.hint}")
        return "\n".join(lines)

    def raise_for_errors(self, *, fail_on_warnings: bool = False) -> None:
        """Raise `PreflightFailedError` when there are errors (or, if asked, warnings)."""
        if self.errors or (fail_on_warnings and self.warnings):
            raise PreflightFailedError(self)


PreflightFailed = PreflightFailedError
"""The name ARCHITECTURE.md's preflight section uses; the class lives in `exceptions`."""


# --------------------------------------------------------------------------- pure rules


def check_reference(
    uri: Any,
    vm_region: str | None,
    *,
    overrides: Mapping[str, Iterable[str]] | None = None,
    digest: str | None = None,
) -> list[Finding]:
    """Rules on the reference alone: parseable, in Artifact Registry, in the VMs' location, pinned.

    `vm_region` None skips the location rule (the region itself was invalid and is
    reported elsewhere). `digest`, when the registry resolved the tag, goes into the
    mutable-tag hint.
    """
    if not isinstance(uri, str) or not uri.strip():
        return [
            _error(
                INVALID_IMAGE_URI,
                f"no image URI given ({_short(repr(uri))})",
                "Set imageUri to LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE[:TAG|@sha256:DIGEST].",
            )
        ]
    try:
        ref = parse_image_uri(uri)
    except ImageReferenceError as exc:
        return [
            _error(
                INVALID_IMAGE_URI,
                getattr(exc, "message", "") or f"invalid image URI {_short(uri)!r}: {exc}",
                getattr(exc, "hint", "")
                or "Use LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE[:TAG|@sha256:DIGEST].",
            )
        ]
    findings: list[Finding] = []
    if not ref.is_artifact_registry:
        findings.append(
            _error(
                NOT_ARTIFACT_REGISTRY,
                f"{uri} is on {ref.host}, not in Artifact Registry (LOCATION-docker.pkg.dev): "
                "Batch streams only images stored in Artifact Registry",
                _COPY_TO_AR_HINT,
            )
        )
    elif vm_region is not None and ref.ar_location:
        findings += _location_rule(uri, ref.ar_location, vm_region, overrides)
    findings += check_mutable_tag(ref, uri, digest=digest)
    return findings


def _location_rule(
    uri: str, repo_location: str, vm_region: str, overrides: Mapping[str, Iterable[str]] | None
) -> list[Finding]:
    try:
        table = locations.multi_region_table(overrides)
        vm_region = locations.region_of(vm_region)
    except locations.LocationError as exc:
        return [_error(INVALID_LOCATION, str(exc), exc.hint)]
    if locations.repository_serves(repo_location, vm_region, overrides):
        return []
    containing = [name for name, members in table.items() if vm_region in members]
    serving = " or ".join([vm_region, *(f"the {name} multi-region" for name in containing)])
    if repo_location in table:
        override = f'{locations.MULTI_REGIONS_ENV}=\'{{"{repo_location}": ["{vm_region}"]}}\''
        message = (
            f"{uri} is in the {repo_location} multi-region, which is not known to contain {vm_region} "
            "where the job's VMs run"
        )
        hint = (
            f"Use an image in a repository in {serving}, or run the VMs in a region of the "
            f"{repo_location} multi-region. If you know {vm_region} belongs to it (the built-in "
            f"table is conservative), add it: {override}."
        )
    else:
        message = f"{uri} is in {repo_location}, but the job's VMs run in {vm_region}"
        hint = (
            f"Image Streaming needs the VMs in the repository's location: use an image in a "
            f"repository in {serving}, or run the VMs in {repo_location}."
        )
    return [_error(LOCATION_MISMATCH, message, hint)]


def check_mutable_tag(ref: ImageReference, uri: str, *, digest: str | None = None) -> list[Finding]:
    """A tag can move between the check and the run: warn unless the URI pins a digest."""
    if ref.digest:
        return []
    tag = ref.tag or "latest"
    if digest:
        hint = f"Pin the digest that was checked: {ref.host}/{ref.repository}@{digest}."
    else:
        hint = (
            f"Refer to the image by digest, {ref.host}/{ref.repository}@sha256:...; `gcloud artifacts docker "
            f"images describe {uri} --format='value(image_summary.digest)'` prints it."
        )
    return [
        _warning(
            MUTABLE_TAG,
            f"{uri} names the tag {tag!r}, not a digest: the job may run another image than the one checked",
            hint,
        )
    ]


def _get(mapping: Any, camel: str, snake: str | None = None) -> Any:
    if not isinstance(mapping, Mapping):
        return None
    if camel in mapping:
        return mapping[camel]
    return mapping.get(snake) if snake else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class _ContainerRunnable:
    group: int
    index: int
    container: Mapping[str, Any]
    streaming: bool

    @property
    def image(self) -> Any:
        return _get(self.container, "imageUri", "image_uri")

    @property
    def where(self) -> str:
        image = self.image if isinstance(self.image, str) and self.image else "no imageUri"
        return f"task group {self.group}, runnable {self.index} ({_short(image)})"


def _container_runnables(rest_job: Any) -> Iterator[_ContainerRunnable]:
    """Every container runnable of every task group, in order; tolerant of any JSON shape."""
    for g, group in enumerate(_list(_get(rest_job, "taskGroups", "task_groups"))):
        runnables = _get(_get(group, "taskSpec", "task_spec"), "runnables")
        for r, runnable in enumerate(_list(runnables)):
            container = _get(runnable, "container")
            if isinstance(container, Mapping):
                streaming = _get(container, "enableImageStreaming", "enable_image_streaming") is True
                yield _ContainerRunnable(g, r, container, streaming)


def _is_set(value: Any) -> bool:
    return value not in (None, "", False, [], {})


def check_containers(rest_job: Mapping[str, Any]) -> list[Finding]:
    """Container fields Batch silently ignores on a streaming container: one finding each."""
    findings: list[Finding] = []
    for runnable in _container_runnables(rest_job):
        if not runnable.streaming:
            continue
        for camel, snake, hint in _IGNORED_CONTAINER_FIELDS:
            if _is_set(_get(runnable.container, camel, snake)):
                findings.append(
                    _error(
                        UNSUPPORTED_CONTAINER_FIELD,
                        f"{runnable.where}: container.{camel} is set, but Batch ignores it when Image "
                        "Streaming is on (a streaming container honours only imageUri, commands, "
                        "entrypoint and volumes)",
                        hint,
                    )
                )
    return findings


def check_mixed_runtimes(rest_job: Mapping[str, Any]) -> list[Finding]:
    """Streaming and non-streaming container runnables in one job are not supported."""
    runnables = list(_container_runnables(rest_job))
    streaming = [r for r in runnables if r.streaming]
    plain = [r for r in runnables if not r.streaming]
    if not streaming or not plain:
        return []
    return [
        _error(
            MIXED_RUNTIMES,
            "the job mixes streaming container runnables ("
            + "; ".join(r.where for r in streaming)
            + ") with non-streaming ones ("
            + "; ".join(r.where for r in plain)
            + "): Batch does not support both in one job",
            "Set enableImageStreaming: true on every container runnable (each image in Artifact "
            "Registry) or on none; script runnables may stay.",
        )
    ]


def check_logs_policy(rest_job: Mapping[str, Any]) -> list[Finding]:
    """Without CLOUD_LOGGING the task output is lost to Airflow (Batch's default keeps none)."""
    policy = _get(rest_job, "logsPolicy", "logs_policy")
    destination = _get(policy, "destination")
    if destination == "CLOUD_LOGGING":
        return []
    if destination == "PATH":
        where = f"to the path {_get(policy, 'logsPath', 'logs_path')!r}"
    else:
        where = "nowhere (destination unset: Batch keeps no logs)"
    return [
        _warning(
            LOGS_DISABLED,
            f"the job's logsPolicy sends task logs {where}, not to Cloud Logging",
            'Set "logsPolicy": {"destination": "CLOUD_LOGGING"} so that task output reaches Cloud '
            "Logging (log batch_task_logs) and Airflow can show it.",
        )
    ]


def check_manifest(info: ManifestInfo) -> list[Finding]:
    """Schema 1, empty layers, duplicate layers, in the manifest the VMs would run.

    Empty: a known empty digest, a size of 0, or an empty-tar diff_id. History entries
    marked `empty_layer` have no blob and are not layers. A schema 1 manifest is reported
    alone: its `fsLayers` hold an empty "throwaway" layer per history step by design.
    """
    media_type = info.media_type or ""
    if media_type in SCHEMA1_MEDIA_TYPES or info.schema_version == 1:
        return [
            _error(
                MANIFEST_SCHEMA1,
                f"the manifest {info.digest} is Docker manifest v2 schema 1 "
                f"({media_type or 'schemaVersion 1'}), which Image Streaming does not support",
                _SCHEMA1_HINT,
            )
        ]
    findings: list[Finding] = []
    layers = list(info.layers)
    diff_ids = list(info.diff_ids or ())
    if diff_ids and len(diff_ids) != len(layers):
        findings.append(
            _error(
                MANIFEST_INVALID,
                f"the image config lists {len(diff_ids)} diff_ids for {len(layers)} layers",
                "Rebuild and push the image; the manifest and its config disagree.",
            )
        )
    for i, layer in enumerate(layers):
        diff_id = diff_ids[i] if i < len(diff_ids) and len(diff_ids) == len(layers) else None
        why = EMPTY_LAYER_DIGESTS.get(layer.digest)
        if why is None and layer.size == 0:
            why = "a blob of size 0"
        if why is None and diff_id == EMPTY_TAR:
            why = "an empty tar archive (its diff_id is the empty tar)"
        if why:
            findings.append(
                _error(
                    EMPTY_LAYER,
                    f"layer {i} ({layer.digest}, {layer.size} bytes) is empty: {why}; "
                    "Image Streaming does not support images with empty layers",
                    _EMPTY_LAYER_HINT,
                )
            )
    first_digest: dict[str, int] = {}
    for i, layer in enumerate(layers):
        if layer.digest in first_digest:
            findings.append(
                _error(
                    DUPLICATE_LAYER,
                    f"layer {i} ({layer.digest}) repeats layer {first_digest[layer.digest]}; "
                    "Image Streaming does not support images with duplicate layers",
                    _DUPLICATE_LAYER_HINT,
                )
            )
        else:
            first_digest[layer.digest] = i
    first_diff: dict[str, int] = {}
    for i, diff_id in enumerate(diff_ids):
        if diff_id in first_diff:
            j = first_diff[diff_id]
            same_blob = i < len(layers) and j < len(layers) and layers[i].digest == layers[j].digest
            if not same_blob:  # the same blob twice is reported above already
                findings.append(
                    _error(
                        DUPLICATE_LAYER,
                        f"layer {i} has the same content (diff_id {diff_id}) as layer {j}; "
                        "Image Streaming does not support images with duplicate layers",
                        _DUPLICATE_LAYER_HINT,
                    )
                )
        else:
            first_diff[diff_id] = i
    return findings


def check_api(project: str | None, api_check: Callable[[str], bool] | None) -> list[Finding]:
    """Whether the Container File System API is enabled (VPC-SC cannot be read: see the hint)."""
    if api_check is None:
        return []
    if not project:
        return [
            _warning(
                API_CHECK_SKIPPED,
                f"the {CONTAINER_FILESYSTEM_API} check was skipped: no project given",
                "Pass the project (`--project P`, or project_id) to check that the Container File "
                "System API is enabled.",
            )
        ]
    try:
        enabled = api_check(project)
    except Exception as exc:  # any failure of the check is a skipped check, not a crash
        return [
            _warning(
                API_CHECK_SKIPPED,
                f"the {CONTAINER_FILESYSTEM_API} check in project {project} was skipped: {_reason(exc)}",
                "Check it yourself: `gcloud services list --enabled --project "
                f"{project} --filter=name:{CONTAINER_FILESYSTEM_API}`; the check needs the "
                "serviceusage.services.get permission and Application Default Credentials "
                "(`gcloud auth application-default login`).",
            )
        ]
    if enabled:
        return []
    return [
        _error(
            API_DISABLED,
            f"the Container File System API ({CONTAINER_FILESYSTEM_API}) is not enabled in project "
            f"{project}: Batch needs it to stream images",
            f"Enable it: `gcloud services enable {CONTAINER_FILESYSTEM_API} --project {project}`. If VPC "
            f"Service Controls protect the images, also add {CONTAINER_FILESYSTEM_API} to the service "
            "perimeter (this cannot be checked from here).",
        )
    ]


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- orchestration


def check_image(
    image_uri: str,
    location: str,
    *,
    project: str | None = None,
    platform: str | None = None,
    registry: RegistryClient | None = None,
    api_check: Callable[[str], bool] | None = None,
    overrides: Mapping[str, Iterable[str]] | None = None,
) -> Report:
    """Check one image for VMs in `location` (a region or zone)."""
    region, findings = _region(location)
    return _finish(
        [image_uri],
        location,
        region,
        findings,
        [],
        project=project,
        platform=platform or locations.AMD64,
        registry=registry,
        api_check=api_check,
        overrides=overrides,
    )


def check_job(
    job: Any,
    location: str,
    *,
    project: str | None = None,
    platform: str | None = None,
    registry: RegistryClient | None = None,
    api_check: Callable[[str], bool] | None = None,
    overrides: Mapping[str, Iterable[str]] | None = None,
) -> Report:
    """Check every streaming container runnable of a job created in `location`.

    `job` is a `batch_v1.Job`, its REST JSON as a Mapping, or a JSON string; anything
    `spec.job_to_rest` cannot read raises `spec.SpecError`.
    """
    rest = spec.job_to_rest(job)
    region, findings = _region(location)
    if locations.allowed_locations(rest):
        try:
            region = locations.vm_region(rest, location)
        except locations.MultipleRegionsError as exc:
            findings.append(_error(MULTIPLE_REGIONS, str(exc), exc.hint))
            region = None
        except locations.LocationError as exc:
            findings.append(
                _error(INVALID_LOCATION, f"allocationPolicy.location.allowedLocations: {exc}", exc.hint)
            )
            region = None
    runnables = list(_container_runnables(rest))
    images: list[Any] = []
    for runnable in runnables:  # distinct, in order; an imageUri of bad JSON may be unhashable
        if runnable.streaming and runnable.image not in images:
            images.append(runnable.image)
    job_findings = check_containers(rest) + check_mixed_runtimes(rest) + check_logs_policy(rest)
    if not images:
        first = next((r.image for r in runnables if isinstance(r.image, str)), "")
        job_findings.append(
            _warning(
                NO_STREAMING_CONTAINERS,
                "the job has no container runnable with enableImageStreaming: true; nothing streams",
                "Set enableImageStreaming: true on the job's container runnables (images in Artifact "
                "Registry) to stream them.",
            )
        )
        return _report(first, location, findings + job_findings, ManifestSummary())
    machine_platform = locations.platform_for_machine_type(locations.machine_type_of(rest))
    if platform is None and _uses_instance_template(rest):
        job_findings.append(
            _warning(
                PLATFORM_ASSUMED,
                "the job's VMs come from an instance template, which hides their machine type: "
                f"the image was checked for {machine_platform}",
                "If the template's machine type is Arm (t2a, c4a, n4a), run the preflight with "
                "platform='linux/arm64'.",
            )
        )
    return _finish(
        images,
        location,
        region,
        findings,
        job_findings,
        project=project,
        platform=platform or machine_platform,
        registry=registry,
        api_check=api_check,
        overrides=overrides,
    )


def _uses_instance_template(rest: Mapping[str, Any]) -> bool:
    policy = rest.get("allocationPolicy")
    instances = policy.get("instances") if isinstance(policy, Mapping) else None
    return any(isinstance(i, Mapping) and i.get("instanceTemplate") for i in instances or [])


def _region(location: str) -> tuple[str | None, list[Finding]]:
    try:
        return locations.region_of(location), []
    except locations.LocationError as exc:
        return None, [_error(INVALID_LOCATION, str(exc), exc.hint)]


def _finish(
    images: list[Any],
    location: str,
    region: str | None,
    findings: list[Finding],
    job_findings: list[Finding],
    *,
    project: str | None,
    platform: str,
    registry: RegistryClient | None,
    api_check: Callable[[str], bool] | None,
    overrides: Mapping[str, Iterable[str]] | None,
) -> Report:
    """Run the per-image rules on each distinct image once and assemble the report.

    Order: location problems, reference rules, job rules, registry and manifest
    findings, mutable tags, the API check; then errors before warnings.
    """
    if not _PLATFORM_RE.match(platform):
        findings = [
            *findings,
            _error(
                INVALID_PLATFORM,
                f"platform {_short(platform)!r} is not of the form os/arch[/variant]",
                "Give e.g. linux/amd64 or linux/arm64.",
            ),
        ]
        registry = None
    reference_findings: list[Finding] = []
    manifest_findings: list[Finding] = []
    tag_findings: list[Finding] = []
    summary = ManifestSummary()
    several = len(images) > 1
    for n, uri in enumerate(images):
        info, inspect_findings = _inspect(uri, platform, registry)
        prefix = f"{uri}: " if several else ""
        manifest_findings += [
            Finding(f.code, f.severity, prefix + f.message, f.hint) for f in inspect_findings
        ]
        pinned = (info.index_digest or info.digest) if info is not None else None
        for finding in check_reference(uri, region, overrides=overrides, digest=pinned):
            (tag_findings if finding.code == MUTABLE_TAG else reference_findings).append(finding)
        if n == 0 and info is not None:
            summary = ManifestSummary(info.digest, info.media_type, len(info.layers))
    api_findings = check_api(project, api_check)
    ordered = findings + reference_findings + job_findings + manifest_findings + tag_findings + api_findings
    first = images[0] if isinstance(images[0], str) else ""
    return _report(first, location, ordered, summary)


_PLATFORM_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){1,2}$")


def _report(image: str, location: str, findings: list[Finding], summary: ManifestSummary) -> Report:
    """Errors first, each group in the order found, without repeats."""
    unique = list(dict.fromkeys(findings))
    ordered = [f for f in unique if f.severity == ERROR] + [f for f in unique if f.severity != ERROR]
    return Report(image=image, location=location, findings=tuple(ordered), manifest=summary)


def _inspect(
    uri: Any, platform: str, registry: RegistryClient | None
) -> tuple[ManifestInfo | None, list[Finding]]:
    """Read the manifest of an Artifact Registry image; registry failures become findings."""
    if registry is None or not isinstance(uri, str):
        return None, []
    try:
        ref = parse_image_uri(uri)
    except ImageReferenceError:
        return None, []
    if not ref.is_artifact_registry:
        return None, []  # already an error; and never send requests to arbitrary hosts
    try:
        info = registry.inspect(ref, platform=platform)
    except RegistryError as exc:
        return None, [_error(exc.code, exc.message, exc.hint)]
    return info, check_manifest(info)
