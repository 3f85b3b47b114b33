"""Regions, zones, multi-region containment and the VMs' platform (pure)."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_batch_streaming import locations
from airflow_batch_streaming.locations import (
    LocationError,
    MultipleRegionsError,
    platform_for_machine_type,
    region_of,
    repository_serves,
    vm_region,
)


@pytest.mark.parametrize(
    ("given", "region"),
    [
        ("us-central1", "us-central1"),
        ("regions/us-central1", "us-central1"),
        ("zones/us-central1-a", "us-central1"),
        ("us-central1-f", "us-central1"),
        ("europe-west10", "europe-west10"),
        ("zones/europe-west10-b", "europe-west10"),
        ("northamerica-northeast1-c", "northamerica-northeast1"),
        ("me-central2", "me-central2"),
        (" US-EAST4 ", "us-east4"),
        ("projects/p/locations/asia-south1", "asia-south1"),
    ],
)
def test_region_of_accepts_regions_and_zones(given: str, region: str) -> None:
    assert region_of(given) == region


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "us",
        "europe",
        "central1",
        "us-central",
        "regions/us-central1-a",
        "zones/us-central1",
        "us_central1",
        "x" * 300,
    ],
)
def test_region_of_rejects_garbage_with_a_hint(garbage: str) -> None:
    with pytest.raises(LocationError) as info:
        region_of(garbage)
    assert isinstance(info.value, ValueError)
    assert info.value.hint
    assert len(str(info.value)) < 200


def test_a_multi_region_is_not_a_vm_region() -> None:
    with pytest.raises(LocationError, match="multi-region"):
        region_of("us")


def test_region_of_rejects_non_strings() -> None:
    with pytest.raises(LocationError):
        region_of(42)  # type: ignore[arg-type]


@given(st.text(max_size=40))
def test_region_of_returns_a_region_or_raises_location_error(text: str) -> None:
    try:
        region = region_of(text)
    except LocationError:
        return
    assert region_of(region) == region


@pytest.mark.parametrize(
    ("repo", "region", "serves"),
    [
        ("us-east1", "us-east1", True),
        ("us", "us-east1", True),  # the documented example
        ("northamerica-northeast1", "northamerica-northeast1", True),
        ("us", "northamerica-northeast1", False),  # the documented counter-example
        ("us", "southamerica-east1", False),
        ("us", "us-central1", True),
        ("us", "us-west4", True),
        ("us", "zones/us-central1-a", True),
        ("us-east1", "us-central1", False),
        ("europe", "europe-west1", True),
        ("europe", "europe-west4", True),
        ("europe", "europe-west2", False),  # London: outside the EU
        ("europe", "europe-west6", False),  # Zurich: outside the EU
        ("europe", "us-central1", False),
        ("asia", "asia-northeast1", True),
        ("asia", "australia-southeast1", False),
        ("asia", "me-west1", False),
        ("us", "us-future9", False),  # unknown regions fail closed
        ("europe", "europe-north9", False),
        ("US", "us-east1", True),
    ],
)
def test_repository_serves(repo: str, region: str, serves: bool) -> None:
    assert repository_serves(repo, region) is serves


def test_excluded_europe_regions_are_really_excluded() -> None:
    assert not locations.EUROPE_OUTSIDE_EU & locations.MULTI_REGIONS["europe"]
    assert all(r.startswith("us-") for r in locations.MULTI_REGIONS["us"])
    assert all(r.startswith("asia-") for r in locations.MULTI_REGIONS["asia"])
    assert all(r.startswith("europe-") for r in locations.MULTI_REGIONS["europe"])


def test_overrides_add_members() -> None:
    assert repository_serves("europe", "europe-west2", {"europe": ["europe-west2"]})
    assert repository_serves("us", "us-future9", {"us": "us-future9"})
    assert repository_serves("moon", "moon-base1", {"moon": ["moon-base1"]})
    assert not repository_serves("europe", "europe-west6", {"europe": ["europe-west2"]})


def test_env_overrides_add_members(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(locations.MULTI_REGIONS_ENV, '{"europe": ["europe-west2"], "us": ["us-future9"]}')
    assert repository_serves("europe", "europe-west2")
    assert repository_serves("us", "us-future9")
    assert repository_serves("europe", "europe-west1")  # the built-in members stay


@pytest.mark.parametrize(
    "raw", ["{not json", '["europe-west2"]', '{"europe": "europe-west2"}', '{"europe": [1]}']
)
def test_bad_env_overrides_raise_with_a_hint(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(locations.MULTI_REGIONS_ENV, raw)
    with pytest.raises(LocationError) as info:
        repository_serves("europe", "europe-west2")
    assert locations.MULTI_REGIONS_ENV in str(info.value)
    assert "europe-west2" in info.value.hint


def _job(*allowed: str) -> dict[str, object]:
    return {"allocationPolicy": {"location": {"allowedLocations": list(allowed)}}}


def test_vm_region_defaults_to_the_job_location() -> None:
    assert vm_region({}, "us-central1") == "us-central1"
    assert vm_region(_job(), "regions/us-central1") == "us-central1"


def test_vm_region_follows_allowed_locations() -> None:
    assert vm_region(_job("zones/europe-west4-a", "zones/europe-west4-b"), "us-central1") == "europe-west4"
    assert vm_region(_job("regions/asia-east1"), "asia-east1") == "asia-east1"
    snake = {"allocation_policy": {"location": {"allowed_locations": ["zones/us-east1-b"]}}}
    assert vm_region(snake, "us-central1") == "us-east1"


def test_vm_region_rejects_several_regions() -> None:
    with pytest.raises(MultipleRegionsError) as info:
        vm_region(_job("regions/us-central1", "zones/us-central1-a", "zones/us-west1-a"), "us-central1")
    assert info.value.regions == ("us-central1", "us-west1")
    assert "us-west1" in str(info.value)
    assert info.value.hint


def test_vm_region_rejects_garbage_locations() -> None:
    with pytest.raises(LocationError):
        vm_region(_job("nowhere"), "us-central1")


def test_location_errors_pickle() -> None:
    error = MultipleRegionsError(["a-b1", "c-d2"])
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.regions, str(copy), copy.hint) == (error.regions, str(error), error.hint)
    plain = pickle.loads(pickle.dumps(LocationError("m", "h")))
    assert (str(plain), plain.hint) == ("m", "h")


@pytest.mark.parametrize(
    ("machine_type", "platform"),
    [
        (None, "linux/amd64"),
        ("", "linux/amd64"),
        ("e2-standard-4", "linux/amd64"),
        ("n2d-highmem-8", "linux/amd64"),
        ("custom-4-8192", "linux/amd64"),
        ("t2a-standard-1", "linux/arm64"),
        ("c4a-standard-8-lssd", "linux/arm64"),
        ("n4a-standard-4", "linux/arm64"),
        ("a4x-highgpu-4g", "linux/arm64"),
        ("C4A-HIGHMEM-2", "linux/arm64"),
        ("zones/us-central1-a/machineTypes/t2a-standard-4", "linux/arm64"),
        ("c4-standard-4", "linux/amd64"),
        ("n4-standard-2", "linux/amd64"),
    ],
)
def test_platform_for_machine_type(machine_type: str | None, platform: str) -> None:
    assert platform_for_machine_type(machine_type) == platform


def test_machine_type_of_reads_the_first_instance_policy() -> None:
    job = {"allocationPolicy": {"instances": [{"policy": {"machineType": "t2a-standard-2"}}]}}
    assert locations.machine_type_of(job) == "t2a-standard-2"
    assert locations.machine_type_of({"allocationPolicy": {"instances": [{"instanceTemplate": "t"}]}}) is None
    assert locations.machine_type_of({"allocationPolicy": {"instances": "bad"}}) is None
    assert locations.machine_type_of({}) is None
