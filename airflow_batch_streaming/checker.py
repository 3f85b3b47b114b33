"""The preflight's I/O half: gather the facts, hand them to the pure rules in `preflight`.

Facts come from two injected sources: a `registry.RegistryClient` (manifests, configs,
and the few small layer blobs whose content decides whether they are empty) and
`api_check(project) -> bool` (Service Usage: is the Container File System API enabled).
`registry=None` skips every registry fact; `api_check=None` skips the API check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_batch_streaming import locations, oci, preflight
from airflow_batch_streaming.image import ImageReference, ImageReferenceError, parse_image_uri
from airflow_batch_streaming.preflight import Finding, ManifestSummary, Report

if TYPE_CHECKING:
    from airflow_batch_streaming.registry import RegistryClient

__all__ = ["check_image", "check_job", "layer_contents", "validated_rest"]


def check_image(
    image_uri: Any,
    location: str,
    *,
    project: str | None = None,
    platform: str | None = None,
    registry: RegistryClient | None = None,
    api_check: Callable[[str], bool] | None = None,
    overrides: Mapping[str, Iterable[str]] | None = None,
) -> Report:
    """Check one image for VMs in `location` (a region or zone).

    Without `platform`, linux/amd64 is assumed (what Batch picks without a machine type).
    """
    region, findings = preflight.check_allowed_locations({}, location)
    if platform:
        vm_platform = (platform, "", True)
    else:
        vm_platform = (locations.AMD64, "linux/amd64 was assumed: no platform given", True)
    return _finish(
        [image_uri],
        location,
        region,
        findings,
        [],
        project=project,
        vm_platform=vm_platform,
        registry=registry,
        api_check=api_check,
        overrides=overrides,
    )


def validated_rest(job: Any) -> dict[str, Any]:
    """Any form of a job -> canonical REST JSON; `spec.SpecError` lists what the API would refuse."""
    from airflow_batch_streaming import jobschema, spec

    if isinstance(job, str | bytes):
        job = jobschema.load_job_text(job)
    if isinstance(job, Mapping):
        return jobschema.validate_job(job)
    return spec.job_to_rest(job)  # a batch_v1.Job is valid by construction


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

    `job` is a `batch_v1.Job`, its REST JSON as a Mapping, or JSON/YAML text; a job the
    Batch API would refuse raises `spec.SpecError` listing every problem.
    """
    rest = validated_rest(job)
    region, findings = preflight.check_allowed_locations(rest, location)
    runnables = list(preflight.container_runnables(rest))
    images: list[Any] = []
    for runnable in runnables:  # distinct, in order
        if runnable.streaming and runnable.image not in images:
            images.append(runnable.image)
    job_findings = (
        preflight.check_containers(rest)
        + preflight.check_mixed_runtimes(rest)
        + preflight.check_logs_policy(rest)
    )
    if not images:
        first = next((r.image for r in runnables if isinstance(r.image, str)), "")
        return preflight.assemble(
            first, location, [*findings, *job_findings, preflight.no_streaming_containers()]
        )
    vm_platform = (platform, "", True) if platform else locations.vm_platform(rest)
    return _finish(
        images,
        location,
        region,
        findings,
        job_findings,
        project=project,
        vm_platform=vm_platform,
        registry=registry,
        api_check=api_check,
        overrides=overrides,
    )


def _finish(
    images: list[Any],
    location: str,
    region: str | None,
    findings: list[Finding],
    job_findings: list[Finding],
    *,
    project: str | None,
    vm_platform: tuple[str, str, bool],
    registry: RegistryClient | None,
    api_check: Callable[[str], bool] | None,
    overrides: Mapping[str, Iterable[str]] | None,
) -> Report:
    """Run the per-image rules on each distinct image once and assemble the report.

    Order: location problems, reference rules, job rules, registry and manifest
    findings, mutable tags, the API check; then errors before warnings.
    """
    platform = vm_platform[0]
    bad_platform = preflight.invalid_platform(platform)
    if bad_platform is not None:
        findings = [*findings, bad_platform]
        registry = None
    reference_findings: list[Finding] = []
    manifest_findings: list[Finding] = []
    tag_findings: list[Finding] = []
    summary = ManifestSummary()
    for n, uri in enumerate(images):
        info, found = _inspect(uri, vm_platform, registry)
        manifest_findings += preflight.prefixed(uri, found) if len(images) > 1 else found
        pinned = (info.index_digest or info.digest) if info is not None else None
        for finding in preflight.check_reference(uri, region, overrides=overrides, digest=pinned):
            (tag_findings if finding.code == preflight.MUTABLE_TAG else reference_findings).append(finding)
        if n == 0 and info is not None:
            summary = ManifestSummary(info.digest, info.media_type, len(info.layers))
    api = preflight.api_findings(project, _api_state(project, api_check))
    ordered = findings + reference_findings + job_findings + manifest_findings + tag_findings + api
    first = images[0] if isinstance(images[0], str) else ""
    return preflight.assemble(first, location, ordered, summary)


def _api_state(project: str | None, api_check: Callable[[str], bool] | None) -> bool | BaseException | None:
    if api_check is None:
        return None
    if not project:
        return False  # api_findings reports the missing project
    try:
        return bool(api_check(project))
    except Exception as exc:  # any failure of the check is a skipped check, not a crash
        return exc


def _inspect(
    uri: Any, vm_platform: tuple[str, str, bool], registry: RegistryClient | None
) -> tuple[oci.ManifestInfo | None, list[Finding]]:
    """Read what the rules need from the registry; registry failures become findings."""
    from airflow_batch_streaming.registry import PLATFORM_NOT_FOUND, RegistryError

    if registry is None:
        return None, []
    try:
        ref = parse_image_uri(uri)
    except ImageReferenceError:
        return None, []
    if not ref.is_artifact_registry:
        return None, []  # already an error; and never send requests to arbitrary hosts
    platform, note, certain = vm_platform
    try:
        info = registry.inspect(ref, platform=platform)
    except RegistryError as exc:
        if exc.code == PLATFORM_NOT_FOUND and note:
            severity: preflight.Severity = preflight.ERROR if certain else preflight.WARNING
            return None, [Finding(exc.code, severity, f"{exc.message} ({note})", exc.hint)]
        return None, [Finding(exc.code, preflight.ERROR, exc.message, exc.hint)]
    contents: dict[str, bool | None] = {}
    if not preflight.check_schema1(info) and not preflight.check_container_image(info):
        try:
            contents = layer_contents(registry, ref, info)
        except RegistryError as exc:  # the layer is not judged; say so
            return info, [
                *preflight.check_manifest(
                    info, vm_platform=platform, platform_note=note, platform_certain=certain
                ),
                Finding(exc.code, preflight.ERROR, exc.message, exc.hint),
            ]
    return info, preflight.check_manifest(
        info, vm_platform=platform, platform_note=note, platform_certain=certain, contents=contents
    )


def layer_contents(
    registry: RegistryClient, ref: ImageReference, info: oci.ManifestInfo
) -> dict[str, bool | None]:
    """`preflight.check_empty_layers`' `contents`: the small layers read, each judged by content.

    Only `preflight.layers_to_read` (at most `oci.SMALL_LAYER_LIMIT` bytes each) is read;
    the image fix tool uses this too, so both drop and report the same layers.
    Raises `registry.RegistryError`.
    """
    return {
        layer.digest: oci.empty_layer_content(
            registry.read_blob(ref, layer.digest, limit=oci.SMALL_LAYER_LIMIT)
        )
        for layer in preflight.layers_to_read(info)
    }
