"""The operator's parse-time check gives the verdict JobSpec and the preflight give, whatever the spelling."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_batch_streaming import preflight
from airflow_batch_streaming.operators import BatchStreamingJobOperator
from airflow_batch_streaming.spec import JobSpec, SpecError

IMAGE = "us-central1-docker.pkg.dev/proj/repo/app@sha256:" + "ab" * 32


def problems(**kwargs: Any) -> list[str]:
    """The parse-time problems of an operator, without the task prefix ([] when it builds)."""
    args = {"task_id": "t", "project_id": "p", "region": "us-central1", "image_uri": IMAGE, **kwargs}
    try:
        BatchStreamingJobOperator(**args)
    except SpecError as error:
        return [p.removeprefix("task 't': ") for p in error.problems]
    return []


@pytest.mark.parametrize(
    ("as_string", "region"),
    [
        ("zones/us-east1-b", "us-central1"),
        ("us-east1", "us-central1"),
        ("regions/us-east1", "us-central1"),
        ("zones/us-central1-b", "us-central1"),
        ("us-central1-f", "us-central1"),
        ("zones/us-central1-b", "europe-west1"),
        ("not a zone", "us-central1"),
        ("zones/us-central1-b", "us-east1"),
    ],
)
def test_allowed_locations_as_a_string_or_a_list_get_the_same_verdict(as_string: str, region: str) -> None:
    assert problems(allowed_locations=as_string, region=region) == problems(
        allowed_locations=[as_string], region=region
    )


def test_allowed_locations_outside_the_job_region_fail_the_dag_file() -> None:
    [outside, mismatch] = problems(allowed_locations="zones/us-east1-b")
    assert "outside the job's region us-central1" in outside
    assert "us-east1" in mismatch and mismatch.startswith("image_uri:")


@pytest.mark.parametrize(
    ("image_uri", "mention"),
    [
        (5, "must be a string, not int"),
        (f" {IMAGE}", "leading or trailing whitespace"),
        (f"{IMAGE}\n", "leading or trailing whitespace"),
        ("", "the image URI is empty"),
        (f"https://{IMAGE}", "no scheme"),
    ],
)
def test_a_bad_image_uri_is_reported_once_and_as_jobspec_says(image_uri: Any, mention: str) -> None:
    [problem] = problems(image_uri=image_uri)
    assert mention in problem
    assert [problem] == JobSpec(image_uri).problems(region="us-central1")
    [finding] = preflight.check_reference(image_uri, "us-central1")
    assert problem == f"image_uri: {finding.message} ({finding.hint})"


def test_what_the_tables_may_lag_on_does_not_fail_a_dag_file() -> None:
    us = "us-docker.pkg.dev/proj/repo/app@sha256:" + "ab" * 32
    assert problems(image_uri=us, region="us-east9") == []  # a us-* region the table does not list yet
    assert problems(image_uri=us, region="us-east1") == []
    assert problems(image_uri=us, region="europe-west1") != []  # certainly outside `us`
    assert problems(machine_type="zz9-future-8") == []  # unknown family: checked at run time
    assert problems(region="u-france-east1", allowed_locations=["zones/u-france-east1-a"]) != []


def test_gcr_io_images_are_checked_by_location_at_parse_time() -> None:
    gcr = "gcr.io/proj/app@sha256:" + "ab" * 32
    assert problems(image_uri=gcr, region="us-east1") == []  # a warning only (gcr-io-host)
    [problem] = problems(image_uri=gcr, region="europe-west1")
    assert "us multi-region" in problem


@pytest.mark.parametrize(("count", "refused"), [(58, False), (59, True), (63, True), (64, True)])
def test_the_operators_own_labels_count_toward_batchs_63(count: int, refused: bool) -> None:
    """Batch takes 63 custom labels in all; the operator adds five of its own at run time."""
    found = problems(labels={f"k{i}": "v" for i in range(count)})
    assert bool(found) is refused
    assert len(found) <= 1  # one problem, whether JobSpec or the operator saw it first
