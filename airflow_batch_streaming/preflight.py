"""Every reason an image or a Batch job would not stream: the rules, pure.

Each rule is a function from values (an image URI, a REST job dict, an
`oci.ManifestInfo`, the answer of Service Usage) to `Finding`s, so the rules are
tested without a network and a DAG file can run the reference rules at parse time.
`checker.py` gathers the facts (the registry, Service Usage) and hands them to these
rules; `assemble` turns everything found into one `Report`.

Rules other tools reuse (the image fix tool): `check_schema1`, `check_container_image`,
`check_platform`, `check_empty_layers` (with `layers_to_read` and
`oci.empty_layer_content`), `check_duplicate_layers`, `check_foreign_layers`;
`check_manifest` runs them all.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from airflow_batch_streaming import locations, oci
from airflow_batch_streaming.exceptions import PreflightFailedError
from airflow_batch_streaming.image import ImageReference, ImageReferenceError, parse_image_uri
from airflow_batch_streaming.oci import SCHEMA1_MEDIA_TYPES, Layer, ManifestInfo

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
PLATFORM_MISMATCH: Final = "platform-mismatch"
NOT_A_CONTAINER_IMAGE: Final = "not-a-container-image"
FOREIGN_LAYER: Final = "foreign-layer"
LOCATION_OUTSIDE_JOB_REGION: Final = "location-outside-job-region"
GCR_IO_HOST: Final = "gcr-io-host"
PLATFORM_ASSUMED: Final = "platform-assumed"

GZIPPED_EMPTY_TAR: Final = oci.GZIPPED_EMPTY_TAR
EMPTY_TAR: Final = oci.EMPTY_TAR
OCI_EMPTY_JSON: Final = oci.OCI_EMPTY_JSON
EMPTY_BLOB: Final = oci.EMPTY_BLOB
EMPTY_LAYER_DIGESTS: Final[Mapping[str, str]] = oci.EMPTY_LAYER_DIGESTS

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

_FIX_TOOL: Final = (
    "Or let `airflow-batch-streaming fix SOURCE --to REGION-docker.pkg.dev/PROJECT/REPO "
    "--location REGION` write a copy"
)
_EMPTY_LAYER_HINT: Final = (
    "Rebuild without empty layers. BuildKit (`docker buildx build`, Docker's default builder since "
    "23.0) records steps that change no files as history only; the legacy builder and some tools "
    "write them as empty layers. Fold steps that create no files (a RUN that only deletes or checks "
    "something, a COPY of an empty directory) into a neighbouring RUN, or squash the image: a final "
    "stage `FROM scratch` + `COPY --from=<build stage> / /` (re-declare ENV, WORKDIR, ENTRYPOINT, CMD), "
    "or `crane flatten`. " + _FIX_TOOL + " without them."
)
_DUPLICATE_LAYER_HINT: Final = (
    "Rebuild so that no two layers are identical: remove a repeated COPY/ADD of the same files, merge "
    "steps that produce the same content, and do not re-add files the base image already has in an "
    "identical layer. Squashing (a final `FROM scratch` + `COPY --from=<build stage> / /` stage, or "
    "`crane flatten`) also removes duplicates. " + _FIX_TOOL + " without them (same files)."
)
_SCHEMA1_HINT: Final = (
    "Docker manifest schema 1 is written only by very old clients. Rebuild and push with a current "
    "Docker or BuildKit (`docker buildx build --push`), or convert the stored image: "
    "`skopeo copy --format v2s2 docker://SRC docker://DEST`."
)
_COPY_TO_AR_HINT: Final = (
    "Copy the image into an Artifact Registry Docker repository in the VMs' region or a multi-region "
    "containing it (e.g. `crane copy SRC REGION-docker.pkg.dev/PROJECT/REPO/IMAGE:TAG`, or docker pull, "
    "tag and push) and use that URI; " + _FIX_TOOL[0].lower() + _FIX_TOOL[1:] + " there."
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
    strict: bool = True,
) -> list[Finding]:
    """Rules on the reference alone: parseable, in Artifact Registry, in the VMs' location, pinned.

    `vm_region` None skips the location rule (the region itself was invalid and is
    reported elsewhere). `digest`, when the registry resolved the tag, goes into the
    mutable-tag hint. `strict=False` (parse time) makes what only the built-in tables
    say (a region the multi-region table may not list yet) a warning; run time is strict.
    """
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
                f"{uri} is on {ref.host}, not in Artifact Registry (LOCATION-docker.pkg.dev or a gcr.io "
                "repository): Batch streams only images stored in Artifact Registry",
                _COPY_TO_AR_HINT,
            )
        )
    elif vm_region is not None and ref.ar_location:
        findings += _location_rule(uri, ref.ar_location, vm_region, overrides, strict)
    if ref.is_gcr_repository:
        findings.append(
            _warning(
                GCR_IO_HOST,
                f"{uri} is in the Artifact Registry gcr.io repository {ref.host} ({ref.ar_location} "
                "multi-region); Google's Image Streaming documentation shows only "
                "LOCATION-docker.pkg.dev image URIs",
                f"Prefer the same image under Artifact Registry's own host name: {ref.pkg_dev_uri}.",
            )
        )
    findings += check_mutable_tag(ref, uri, digest=digest)
    return findings


def _location_rule(
    uri: str,
    repo_location: str,
    vm_region: str,
    overrides: Mapping[str, Iterable[str]] | None,
    strict: bool = True,
) -> list[Finding]:
    try:
        table = locations.multi_region_table(overrides)
        vm_region = locations.region_of(vm_region)
    except locations.LocationError as exc:
        return [_error(INVALID_LOCATION, str(exc), exc.hint)]
    if locations.repository_serves(repo_location, vm_region, overrides):
        return []
    # Only the table says no when the region carries the multi-region's prefix (a new us-* region).
    table_only = repo_location in table and not any(vm_region in members for members in table.values())
    table_only = table_only and vm_region.split("-", 1)[0] == repo_location
    severity: Severity = WARNING if table_only and not strict else ERROR
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
    hint += f" {_FIX_TOOL.replace('SOURCE', shlex.quote(uri)).replace('REGION', vm_region)} there."
    return [Finding(LOCATION_MISMATCH, severity, message, hint)]


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
            f"images describe {shlex.quote(uri)} --format='value(image_summary.digest)'` prints it."
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


def container_runnables(rest_job: Any) -> Iterator[_ContainerRunnable]:
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
    for runnable in container_runnables(rest_job):
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
    runnables = list(container_runnables(rest_job))
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


def check_allowed_locations(
    rest_job: Mapping[str, Any], job_location: str
) -> tuple[str | None, list[Finding]]:
    """The region the job's VMs run in, and what is wrong with `allowedLocations`.

    Invalid names, several regions, and locations outside the job's region (the one
    definition of that rule is `locations.allowed_locations_outside`).
    """
    try:
        job_region: str | None = locations.region_of(job_location)
    except locations.LocationError as exc:
        job_region = None
        findings = [_error(INVALID_LOCATION, str(exc), exc.hint)]
    else:
        findings = []
    allowed = locations.allowed_locations(rest_job)
    if not allowed:
        return job_region, findings
    try:
        vm_region: str | None = locations.vm_region(rest_job, job_location)
    except locations.MultipleRegionsError as exc:
        return None, [*findings, _error(MULTIPLE_REGIONS, str(exc), exc.hint)]
    except locations.LocationError as exc:
        return None, [
            *findings,
            _error(INVALID_LOCATION, f"allocationPolicy.location.allowedLocations: {exc}", exc.hint),
        ]
    if job_region is not None:
        outside = locations.allowed_locations_outside(allowed, job_region)
        if outside:
            message, hint = locations.outside_job_region_problem(outside, job_region)
            findings.append(_error(LOCATION_OUTSIDE_JOB_REGION, message, hint))
    return vm_region, findings


def check_schema1(info: ManifestInfo) -> list[Finding]:
    """Docker manifest v2 schema 1 is not supported by Image Streaming."""
    media_type = info.media_type or ""
    if media_type not in SCHEMA1_MEDIA_TYPES and info.schema_version != 1:
        return []
    return [
        _error(
            MANIFEST_SCHEMA1,
            f"the manifest {info.digest} is Docker manifest v2 schema 1 "
            f"({media_type or 'schemaVersion 1'}), which Image Streaming does not support",
            _SCHEMA1_HINT,
        )
    ]


def check_container_image(info: ManifestInfo) -> list[Finding]:
    """An artifact stored like an image (Helm chart, SBOM, signature, WASM) is not runnable.

    An image has an image config (OCI or Docker) and only filesystem layers; an OCI
    manifest with an `artifactType`, another config type, or other layer types is an artifact.
    """
    if info.schema_version == 1:
        return []
    reasons = []
    config = info.config_media_type
    if config and config not in oci.IMAGE_CONFIG_TYPES:
        reasons.append(f"its config is {config}")
    if info.artifact_type and info.artifact_type not in oci.IMAGE_CONFIG_TYPES:
        reasons.append(f"its artifactType is {info.artifact_type}")
    layer_types = oci.CONTAINER_LAYER_TYPES | {oci.MEDIA_TYPE_OCI_EMPTY}  # an empty layer: reported as such
    others = sorted({x.media_type for x in info.layers if x.media_type and x.media_type not in layer_types})
    if others:
        reasons.append(f"its layers are {', '.join(others)}")
    if not reasons:
        return []
    return [
        _error(
            NOT_A_CONTAINER_IMAGE,
            f"the manifest {info.digest} is not a container image ({'; '.join(reasons)}): an OCI artifact "
            "such as a Helm chart, SBOM, signature or WASM module cannot run in a container runnable",
            "Point imageUri at the container image itself (the tag or digest of the image, not of an "
            "artifact attached to it); `crane manifest URI` shows what a reference holds.",
        )
    ]


def check_platform(
    info: ManifestInfo, vm_platform: str, *, note: str = "", certain: bool = True
) -> list[Finding]:
    """The image's os/architecture/variant must be what the VMs run (single-arch images too).

    `note` says how `vm_platform` was found; `certain=False` (an instance template, an
    unknown machine family) makes a mismatch a warning, and a match a `platform-assumed` warning.
    """
    if not info.platform:
        return []
    try:
        want = oci.parse_platform(vm_platform)
        have = oci.parse_platform(info.platform)
    except ValueError:
        return []
    why = f" ({note})" if note else ""
    if want.runs(have):
        if certain:
            return []
        # An image that matches an assumption can still be wrong for the real VMs: say so.
        return [
            _warning(
                PLATFORM_ASSUMED,
                f"the image was checked for {want.key}{why}",
                "If the VMs are Arm (t2a, c4a, n4a), run the preflight with platform='linux/arm64'.",
            )
        ]
    if have.os != want.os:
        problem = f"the image is built for {have.key}, but Batch VMs run {want.key}{why}"
        if have.os == "windows":
            problem = f"the image is a Windows image ({have.key}); Batch runs Linux VMs ({want.key}{why})"
    else:
        problem = f"the image is built for {have.key}, but the job's VMs run {want.key}{why}"
    if want.arch == "arm64":
        fix = "or run the job on x86 machine types (e.g. e2, n2, c3)"
    else:
        fix = "or run the job on Arm machine types (t2a, c4a, n4a)" if have.arch == "arm64" else ""
    hint = (
        f"Build and push the image for {want.key} (`docker buildx build --platform {want.key} --push`, "
        f"or a multi-platform image with --platform linux/amd64,linux/arm64)"
        + (f", {fix}" if fix else "")
        + "."
    )
    return [Finding(PLATFORM_MISMATCH, ERROR if certain else WARNING, problem, hint)]


def layers_to_read(info: ManifestInfo, limit: int = oci.SMALL_LAYER_LIMIT) -> list[Layer]:
    """The layers worth reading to tell an empty archive by content: small, not yet known empty."""
    known = _empty_without_reading(info)
    return [
        layer
        for i, layer in enumerate(info.layers)
        if i not in known and 0 < layer.size <= limit and layer.media_type not in oci.FOREIGN_LAYER_TYPES
    ]


def _empty_without_reading(info: ManifestInfo) -> dict[int, str]:
    """Index -> why, for layers empty by digest, size or diff_id (the fast path)."""
    layers = list(info.layers)
    diff_ids = list(info.diff_ids or ())
    aligned = len(diff_ids) == len(layers)
    found: dict[int, str] = {}
    for i, layer in enumerate(layers):
        why = EMPTY_LAYER_DIGESTS.get(layer.digest)
        if why is None and layer.size == 0:
            why = "a blob of size 0"
        if why is None and aligned and diff_ids[i] in oci.empty_tar_diff_ids():
            why = "a tar archive with no entries (its diff_id is that of an all-zero tar)"
        if why:
            found[i] = why
    return found


def check_empty_layers(
    info: ManifestInfo, contents: Mapping[str, bool | None] | None = None
) -> list[Finding]:
    """Empty layers, by known digest, size, diff_id, or content.

    `contents` maps a layer digest to `oci.empty_layer_content(blob)` for the layers
    that were read (see `layers_to_read`). History entries marked `empty_layer` have
    no blob and are not layers.
    """
    if info.schema_version == 1:
        return []  # its fsLayers hold an empty "throwaway" layer per history step by design
    found = _empty_without_reading(info)
    for i, layer in enumerate(info.layers):
        if i not in found and (contents or {}).get(layer.digest) is True:
            found[i] = f"a tar archive with no entries (read: {layer.size} bytes compressed)"
    return [
        _error(
            EMPTY_LAYER,
            f"layer {i} ({info.layers[i].digest}, {info.layers[i].size} bytes) is empty: {why}; "
            "Image Streaming does not support images with empty layers",
            _EMPTY_LAYER_HINT,
        )
        for i, why in sorted(found.items())
    ]


def check_duplicate_layers(info: ManifestInfo) -> list[Finding]:
    """The same blob twice, or the same content (diff_id) twice."""
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


def check_foreign_layers(info: ManifestInfo) -> list[Finding]:
    """Foreign (non-distributable) layers: their blobs live outside Artifact Registry."""
    return [
        _error(
            FOREIGN_LAYER,
            f"layer {i} ({layer.digest}) is a foreign layer ({layer.media_type})"
            + (f" downloaded from {_short(layer.urls[0], 100)}" if layer.urls else "")
            + ": its blob lives outside Artifact Registry, where Image Streaming cannot read it",
            "Rebuild on a base image without foreign layers, or push with the layers included "
            "(`crane copy --allow-nondistributable-artifacts`, or dockerd's "
            "`--allow-nondistributable-artifacts`).",
        )
        for i, layer in enumerate(info.layers)
        if layer.media_type in oci.FOREIGN_LAYER_TYPES or layer.urls
    ]


def check_manifest(
    info: ManifestInfo,
    *,
    vm_platform: str | None = None,
    platform_note: str = "",
    platform_certain: bool = True,
    contents: Mapping[str, bool | None] | None = None,
) -> list[Finding]:
    """Every rule on the manifest the VMs would run. A schema 1 manifest is reported alone."""
    schema1 = check_schema1(info)
    if schema1:
        return schema1
    not_image = check_container_image(info)
    if not_image:
        return not_image  # layer rules say nothing useful about an artifact
    findings: list[Finding] = []
    if vm_platform:
        findings += check_platform(info, vm_platform, note=platform_note, certain=platform_certain)
    findings += check_empty_layers(info, contents)
    findings += check_duplicate_layers(info)
    findings += check_foreign_layers(info)
    return findings


def api_findings(project: str | None, enabled: bool | BaseException | None) -> list[Finding]:
    """The Service Usage answer for the Container File System API as findings.

    `enabled` None: the check was not asked for; an exception: it could not run.
    VPC Service Controls cannot be read: the error hint says so.
    """
    if enabled is None:
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
    quoted = shlex.quote(project)
    if isinstance(enabled, BaseException):
        return [
            _warning(
                API_CHECK_SKIPPED,
                f"the {CONTAINER_FILESYSTEM_API} check in project {project} was skipped: {_reason(enabled)}",
                "Check it yourself: `gcloud services list --enabled --project "
                f"{quoted} --filter=name:{CONTAINER_FILESYSTEM_API}`; the check needs the "
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
            f"Enable it: `gcloud services enable {CONTAINER_FILESYSTEM_API} --project {quoted}`. If VPC "
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


# --------------------------------------------------------------------------- assembly


def no_streaming_containers() -> Finding:
    return _warning(
        NO_STREAMING_CONTAINERS,
        "the job has no container runnable with enableImageStreaming: true; nothing streams",
        "Set enableImageStreaming: true on the job's container runnables (images in Artifact "
        "Registry) to stream them.",
    )


def invalid_platform(platform: str) -> Finding | None:
    """A `--platform` / `platform` argument that is not os/arch[/variant]."""
    if _PLATFORM_RE.match(platform):
        return None
    return _error(
        INVALID_PLATFORM,
        f"platform {_short(platform)!r} is not of the form os/arch[/variant]",
        "Give e.g. linux/amd64 or linux/arm64.",
    )


def prefixed(image: str, findings: Iterable[Finding]) -> list[Finding]:
    """Name the image in each finding (for jobs with several images)."""
    return [Finding(f.code, f.severity, f"{image}: {f.message}", f.hint) for f in findings]


def assemble(
    image: str, location: str, findings: Iterable[Finding], summary: ManifestSummary | None = None
) -> Report:
    """Errors first, each group in the order found, without repeats."""
    unique = list(dict.fromkeys(findings))
    ordered = [f for f in unique if f.severity == ERROR] + [f for f in unique if f.severity != ERROR]
    return Report(
        image=image, location=location, findings=tuple(ordered), manifest=summary or ManifestSummary()
    )


_PLATFORM_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){1,2}$")
