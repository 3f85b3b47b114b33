"""Regions, zones, Artifact Registry multi-regions, and the VMs' CPU platform.

Image Streaming needs the job's VMs in the repository's location: the same region, or
a multi-region (`us`, `europe`, `asia`) that contains the region. Google documents one
example only (us-east1 is in `us`; northamerica-northeast1 is in no multi-region), so the
membership table below is deliberately conservative:

- `us`: the `us-*` regions known today. Not northamerica-* nor southamerica-*.
- `europe`: the `europe-*` regions in member states of the European Union. Not
  europe-west2 (London) nor europe-west6 (Zurich), which are outside the EU.
- `asia`: the `asia-*` regions known today. Not australia-*, me-* nor africa-*.

A region missing from the table is treated as *outside* the multi-region, even when its
name has the multi-region's prefix (a new `us-*` region, say): the preflight then fails
closed with a location-mismatch error whose hint shows how to add the region, either
with the `overrides` argument or with the environment variable
`BATCH_STREAMING_MULTI_REGIONS`, a JSON object such as `{"europe": ["europe-west2"]}`.
Overrides only add members; they may also name a new multi-region.

Pure: no I/O beyond reading that one environment variable.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

MULTI_REGIONS_ENV: Final = "BATCH_STREAMING_MULTI_REGIONS"

AMD64: Final = "linux/amd64"
ARM64: Final = "linux/arm64"

# The one definition of region and zone names used everywhere (spec, preflight, operators).
# Regions: words joined by dashes ending in a number, e.g. us-central1, europe-west10,
# northamerica-northeast1, u-france-east1 (sovereign clouds). Zones add `-` and a suffix that
# starts with a letter: us-central1-a, and longer ones such as AI zones (us-central1-ai1a).
# A well-formed name that Google does not (yet) have is not refused here: the API judges it.
_REGION: Final = r"[a-z]+(?:-[a-z]+)+[0-9]+"
REGION_RE: Final = re.compile(rf"^{_REGION}$")
ZONE_RE: Final = re.compile(rf"^(?P<region>{_REGION})-[a-z][a-z0-9]*$")

MULTI_REGIONS: Final[Mapping[str, frozenset[str]]] = {
    "us": frozenset(
        {
            "us-central1",  # Iowa
            "us-east1",  # South Carolina
            "us-east4",  # Northern Virginia
            "us-east5",  # Columbus
            "us-south1",  # Dallas
            "us-west1",  # Oregon
            "us-west2",  # Los Angeles
            "us-west3",  # Salt Lake City
            "us-west4",  # Las Vegas
        }
    ),
    "europe": frozenset(
        {
            "europe-central2",  # Warsaw, Poland
            "europe-north1",  # Hamina, Finland
            "europe-north2",  # Stockholm, Sweden
            "europe-southwest1",  # Madrid, Spain
            "europe-west1",  # St. Ghislain, Belgium
            "europe-west3",  # Frankfurt, Germany
            "europe-west4",  # Eemshaven, Netherlands
            "europe-west8",  # Milan, Italy
            "europe-west9",  # Paris, France
            "europe-west10",  # Berlin, Germany
            "europe-west12",  # Turin, Italy
        }
    ),
    "asia": frozenset(
        {
            "asia-east1",  # Changhua County, Taiwan
            "asia-east2",  # Hong Kong
            "asia-northeast1",  # Tokyo
            "asia-northeast2",  # Osaka
            "asia-northeast3",  # Seoul
            "asia-south1",  # Mumbai
            "asia-south2",  # Delhi
            "asia-southeast1",  # Singapore
            "asia-southeast2",  # Jakarta
        }
    ),
}

# europe-* regions outside the European Union, listed so that nobody "fixes" the table
# by adding them: they are outside the `europe` multi-region unless overridden.
EUROPE_OUTSIDE_EU: Final = frozenset({"europe-west2", "europe-west6"})  # London, Zurich

# Machine families by CPU architecture, from Compute Engine's machine families guide
# (https://cloud.google.com/compute/docs/machine-resource) and its Arm page
# (https://cloud.google.com/compute/docs/instances/arm-on-compute). Arm: Tau T2A (Ampere
# Altra), C4A and N4A (Google Axion), A4X (NVIDIA Grace). A family in neither table is
# assumed x86 and every platform finding about it is a warning (the table may lag).
ARM_MACHINE_FAMILIES: Final = frozenset({"t2a", "c4a", "n4a", "a4x"})
X86_MACHINE_FAMILIES: Final = frozenset(
    {
        *("e2", "n1", "n2", "n2d", "n4", "n4d", "t2d", "f1", "g1", "custom"),  # general purpose
        *("c2", "c2d", "c3", "c3d", "c4", "c4d", "h3", "h4d"),  # compute optimized
        *("m1", "m2", "m3", "m4", "x4", "z3"),  # memory and storage optimized
        *("a2", "a3", "a4", "g2", "g4"),  # accelerator optimized (x86 hosts)
    }
)


class LocationError(ValueError):
    """A location that is not a region or zone, or a job whose VMs span several regions."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.hint))


class MultipleRegionsError(LocationError):
    """`allowedLocations` names zones or regions of more than one region (Batch rejects it)."""

    def __init__(self, regions: Iterable[str], message: str = "", hint: str = "") -> None:
        self.regions = tuple(regions)
        super().__init__(
            message
            or (
                "allocationPolicy.location.allowedLocations spans several regions: " + ", ".join(self.regions)
            ),
            hint or "Batch runs a job's VMs in one region: list zones or a region of that one region only.",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.regions, self.message, self.hint))


def normalize_location(location: str) -> str:
    """`regions/R` or `zones/Z` for `R`, `Z`, `regions/R`, `zones/Z` (any case, padded or not).

    What `allowedLocations` takes. Raises `LocationError` for anything else.
    """
    if not isinstance(location, str):
        raise LocationError(
            f"a location must be a string, not {type(location).__name__}",
            "Give a region such as us-central1 or a zone such as us-central1-a.",
        )
    text = location.strip().lower()
    kind, _, name = text.rpartition("/")
    if kind in ("", "regions") and REGION_RE.match(name):
        return f"regions/{name}"
    if kind in ("", "zones") and ZONE_RE.match(name):
        return f"zones/{name}"
    raise _bad_location(location)


def region_of(location: str) -> str:
    """The region of `regions/R`, `zones/R-x`, `R-x`, `R` (also `projects/P/locations/R`)."""
    if isinstance(location, str):
        match = re.fullmatch(r"projects/[^/]+/locations/(?P<loc>[^/]+)", location.strip().lower())
        if match:
            location = match["loc"]
    kind, _, name = normalize_location(location).partition("/")
    zone = ZONE_RE.match(name) if kind == "zones" else None
    return zone["region"] if zone else name


def allowed_locations_outside(allowed: Iterable[str], job_region: str) -> list[str]:
    """The entries of `allowedLocations` outside the job's region (malformed ones are skipped).

    Batch refuses them: "from 2026-07-31 (2027-06-30 for some projects) the regions or zones
    must be in the job's region" (batch.v1 `LocationPolicy.allowedLocations`, see
    real-api-facts.md). Raises `LocationError` if `job_region` is not a region or zone.
    """
    region = region_of(job_region)
    outside = []
    for item in allowed:
        try:
            if region_of(item) != region:
                outside.append(item)
        except LocationError:
            continue
    return outside


def outside_job_region_problem(outside: Sequence[str], job_region: str) -> tuple[str, str]:
    """Message and hint for `allowed_locations_outside`, the same wherever the rule runs."""
    region = region_of(job_region)
    listed = ", ".join(repr(item) for item in outside)
    return (
        f"allowedLocations {listed} {'is' if len(outside) == 1 else 'are'} outside the job's region "
        f"{region}: the Batch API refuses allowed locations outside the job's region (since 2026-07-31)",
        f"Create the job in the region of those locations, or list only {region} or its zones "
        f"(e.g. 'zones/{region}-a').",
    )


def _bad_location(location: str) -> LocationError:
    shown = location if len(location) <= 80 else location[:77] + "..."
    name = location.strip().lower()
    if name in MULTI_REGIONS:
        return LocationError(
            f"{name!r} is a multi-region, not a region: Batch VMs run in one region",
            f"Give the region the VMs run in, e.g. us-central1 (a repository in the {name!r} "
            "multi-region may serve it).",
        )
    return LocationError(
        f"not a Google Cloud region or zone: {shown!r}",
        "Give a region (us-central1, regions/us-central1) or a zone (us-central1-a, zones/us-central1-a).",
    )


def is_multi_region(location: str, overrides: Mapping[str, Iterable[str]] | None = None) -> bool:
    """Whether an Artifact Registry location names a multi-region (built in or overridden)."""
    return location in multi_region_table(overrides)


def multi_region_overrides_from_env() -> dict[str, frozenset[str]]:
    """Members added by `BATCH_STREAMING_MULTI_REGIONS`; raises `LocationError` on bad JSON."""
    raw = os.environ.get(MULTI_REGIONS_ENV, "").strip()
    if not raw:
        return {}
    example = 'e.g. {"europe": ["europe-west2"]}'
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LocationError(
            f"{MULTI_REGIONS_ENV} is not valid JSON ({exc.msg} at position {exc.pos})",
            f"Set it to a JSON object of multi-region -> list of regions, {example}.",
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(key, str) and isinstance(value, list) and all(isinstance(v, str) for v in value)
        for key, value in data.items()
    ):
        raise LocationError(
            f"{MULTI_REGIONS_ENV} must be a JSON object of multi-region -> list of region names",
            f"For example: {example}.",
        )
    return _normalise_overrides(data)


def _normalise_overrides(overrides: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for key, regions in overrides.items():
        members = [regions] if isinstance(regions, str) else list(regions)
        out[key.strip().lower()] = frozenset(str(r).strip().lower() for r in members)
    return out


def multi_region_table(overrides: Mapping[str, Iterable[str]] | None = None) -> dict[str, frozenset[str]]:
    """The built-in table plus the environment's and the caller's additions."""
    table = dict(MULTI_REGIONS)
    for extra in (multi_region_overrides_from_env(), _normalise_overrides(overrides or {})):
        for key, members in extra.items():
            table[key] = table.get(key, frozenset()) | members
    return table


def repository_serves(
    repo_location: str, vm_region: str, overrides: Mapping[str, Iterable[str]] | None = None
) -> bool:
    """Whether VMs in `vm_region` may stream from a repository in `repo_location`.

    Raises `LocationError` when `vm_region` is not a region or zone, or when
    `BATCH_STREAMING_MULTI_REGIONS` is malformed.
    """
    repo = repo_location.strip().lower()
    region = region_of(vm_region)
    if repo == region:
        return True
    return region in multi_region_table(overrides).get(repo, frozenset())


def _get(mapping: Any, *keys: str) -> Any:
    """The first of `keys` present in a dict (REST camelCase first, then snake_case)."""
    if not isinstance(mapping, Mapping):
        return None
    for key in keys:
        if key in mapping:
            return mapping[key]
    return None


def allowed_locations(rest_job: Mapping[str, Any]) -> list[str]:
    """`allocationPolicy.location.allowedLocations`, or [] (tolerates snake_case keys)."""
    policy = _get(rest_job, "allocationPolicy", "allocation_policy")
    location = _get(policy, "location")
    allowed = _get(location, "allowedLocations", "allowed_locations")
    if isinstance(allowed, str):
        return [allowed]
    if isinstance(allowed, list):
        return [str(item) for item in allowed]
    return []


def vm_region(rest_job: Mapping[str, Any], job_location: str) -> str:
    """The one region the job's VMs run in.

    Raises `MultipleRegionsError` when `allowedLocations` spans regions, `LocationError`
    when a location is not a region or zone.
    """
    allowed = allowed_locations(rest_job)
    if not allowed:
        return region_of(job_location)
    regions = list(dict.fromkeys(region_of(item) for item in allowed))
    if len(regions) > 1:
        raise MultipleRegionsError(regions)
    return regions[0]


def machine_type_of(rest_job: Mapping[str, Any]) -> str | None:
    """The machine type of `allocationPolicy.instances[0].policy` (Batch uses only the first)."""
    policy = _get(rest_job, "allocationPolicy", "allocation_policy")
    instances = _get(policy, "instances")
    if not isinstance(instances, list) or not instances:
        return None
    machine_type = _get(_get(instances[0], "policy"), "machineType", "machine_type")
    return machine_type if isinstance(machine_type, str) and machine_type else None


def machine_family(machine_type: str) -> str:
    return machine_type.strip().rsplit("/", 1)[-1].lower().split("-", 1)[0]


def platform_for_machine_type(machine_type: str | None) -> str:
    """`linux/arm64` for Arm machine families (t2a, c4a, n4a, a4x), else `linux/amd64`."""
    if not machine_type:
        return AMD64
    return ARM64 if machine_family(machine_type) in ARM_MACHINE_FAMILIES else AMD64


def vm_platform(rest_job: Mapping[str, Any]) -> tuple[str, str, bool]:
    """The platform the job's VMs run, how it was found ("" for a known machine type), and
    whether it is certain.

    Known: a machine type of a family in the tables. Assumed amd64 but still certain: no
    machine type (Batch then picks an x86 one). Uncertain: an instance template (its
    machine type is not read here), or a family the tables do not have.
    """
    policy = _get(rest_job, "allocationPolicy", "allocation_policy")
    instances = _get(policy, "instances")
    first = instances[0] if isinstance(instances, list) and instances else None
    template = _get(first, "instanceTemplate", "instance_template")
    if isinstance(template, str) and template:
        return (
            AMD64,
            f"linux/amd64 was assumed: the job uses instance template {template!r}, whose machine type "
            "is not read here",
            False,
        )
    machine_type = machine_type_of(rest_job)
    if not machine_type:
        return (
            AMD64,
            "linux/amd64 was assumed: the job names no machine type, and Batch then picks an x86 one",
            True,
        )
    family = machine_family(machine_type)
    if family in ARM_MACHINE_FAMILIES:
        return ARM64, f"machine type {machine_type} is Arm", True
    if family in X86_MACHINE_FAMILIES:
        return AMD64, f"machine type {machine_type} is x86", True
    return (
        AMD64,
        f"linux/amd64 was assumed: machine type {machine_type!r} is of a family ({family}) this "
        "package's tables do not list",
        False,
    )
