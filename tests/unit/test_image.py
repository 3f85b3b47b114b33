"""Image reference parsing: Docker's grammar, Artifact Registry's path layout, clear errors."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from airflow_batch_streaming.image import ImageReference, ImageReferenceError, parse_image_uri

SHA = "sha256:" + "ab" * 32
SHA512 = "sha512:" + "cd" * 64


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("ubuntu", ("docker.io", "library/ubuntu", None, None, "latest")),
        ("ubuntu:22.04", ("docker.io", "library/ubuntu", "22.04", None, "22.04")),
        ("bitnami/redis", ("docker.io", "bitnami/redis", None, None, "latest")),
        ("docker.io/ubuntu", ("docker.io", "library/ubuntu", None, None, "latest")),
        ("index.docker.io/library/ubuntu:x", ("docker.io", "library/ubuntu", "x", None, "x")),
        ("gcr.io/my-project/app:v1", ("gcr.io", "my-project/app", "v1", None, "v1")),
        ("localhost/app", ("localhost", "app", None, None, "latest")),
        ("localhost:5000/a/b:t", ("localhost:5000", "a/b", "t", None, "t")),
        ("127.0.0.1:5000/a/b", ("127.0.0.1:5000", "a/b", None, None, "latest")),
        ("[::1]:5000/a", ("[::1]:5000", "a", None, None, "latest")),
        (f"quay.io/org/app@{SHA}", ("quay.io", "org/app", None, SHA, SHA)),
        (f"quay.io/org/app:v2@{SHA}", ("quay.io", "org/app", "v2", SHA, SHA)),
        (f"quay.io/org/app@{SHA512}", ("quay.io", "org/app", None, SHA512, SHA512)),
        ("Registry.Example.COM/a", ("registry.example.com", "a", None, None, "latest")),
        ("a/b__c/d-e.f/g--h:_tag.1-x", ("docker.io", "a/b__c/d-e.f/g--h", "_tag.1-x", None, "_tag.1-x")),
    ],
)
def test_parses_docker_references(uri: str, expected: tuple[str, str, str | None, str | None, str]) -> None:
    ref = parse_image_uri(uri)
    assert (ref.host, ref.repository, ref.tag, ref.digest, ref.reference) == expected
    assert parse_image_uri(str(ref)) == ref


def test_artifact_registry_reference() -> None:
    ref = parse_image_uri(f"us-central1-docker.pkg.dev/my-proj/my-repo/team/app:v1@{SHA}")
    assert ref.is_artifact_registry
    assert not ref.is_container_registry
    assert ref.ar_location == "us-central1"
    assert ref.ar_project == "my-proj"
    assert ref.ar_repository == "my-repo"
    assert ref.image_name == "team/app"
    assert ref.reference == SHA
    assert str(ref) == f"us-central1-docker.pkg.dev/my-proj/my-repo/team/app:v1@{SHA}"


@pytest.mark.parametrize("location", ["us", "europe", "asia", "us-east1", "northamerica-northeast1"])
def test_artifact_registry_locations(location: str) -> None:
    ref = parse_image_uri(f"{location}-docker.pkg.dev/p-1/r/i")
    assert ref.ar_location == location
    assert ref.tag is None
    assert ref.reference == "latest"


def test_domain_scoped_project() -> None:
    ref = parse_image_uri("europe-docker.pkg.dev/example.com/my-project/repo/image:1")
    assert ref.ar_project == "example.com:my-project"
    assert ref.ar_repository == "repo"
    assert ref.image_name == "image"
    assert ref.repository == "example.com/my-project/repo/image"


@pytest.mark.parametrize(
    "uri",
    [
        "us-docker.pkg.dev/proj/repo",
        "us-docker.pkg.dev/proj",
        "us-docker.pkg.dev/example.com/proj/repo",
    ],
)
def test_artifact_registry_needs_project_repo_image(uri: str) -> None:
    with pytest.raises(ImageReferenceError) as err:
        parse_image_uri(uri)
    assert "PROJECT/REPOSITORY/IMAGE" in err.value.hint


@pytest.mark.parametrize(
    ("host", "is_ar", "is_gcr"),
    [
        ("us-central1-docker.pkg.dev", True, False),
        ("us-docker.pkg.dev", True, False),
        ("docker.pkg.dev", False, False),
        ("us--docker.pkg.dev", False, False),
        ("1us-docker.pkg.dev", False, False),
        ("us-central1-docker.pkg.dev.evil.com", False, False),
        ("us-central1-npm.pkg.dev", False, False),
        ("gcr.io", True, True),  # Artifact Registry gcr.io repositories since 2025
        ("eu.gcr.io", True, True),
        ("us.gcr.io", True, True),
        ("asia.gcr.io", True, True),
        ("mirror.gcr.io", False, True),  # Google's Docker Hub mirror, not a gcr.io repository
        ("notgcr.io", False, False),
    ],
)
def test_registry_kinds(host: str, is_ar: bool, is_gcr: bool) -> None:
    ref = parse_image_uri(f"{host}/a/b/c")
    assert ref.is_artifact_registry is is_ar
    assert ref.is_container_registry is is_gcr
    if not is_ar:
        assert ref.ar_location is ref.ar_project is ref.ar_repository is None
        assert ref.image_name == "a/b/c"


def test_docker_hub_is_flagged() -> None:
    assert parse_image_uri("python:3.12").is_docker_hub
    assert not parse_image_uri("gcr.io/a/b").is_docker_hub


@pytest.mark.parametrize(
    ("uri", "in_message", "in_hint"),
    [
        ("", "empty", "LOCATION-docker.pkg.dev"),
        ("   ", "empty", ""),
        ("https://us-docker.pkg.dev/p/r/i", "no scheme", "us-docker.pkg.dev/p/r/i"),
        ("us-docker.pkg.dev/P/r/i", "lower-case", "'p/r/i'"),
        ("ubuntu:", "tag", "1-128"),
        ("ubuntu:-bad", "tag", "1-128"),
        ("ubuntu:" + "x" * 129, "tag", "1-128"),
        ("ubuntu@sha256:abc", "64", "copied whole"),
        ("ubuntu@sha256:" + "AB" * 32, "lower-case", "sha256:" + "ab" * 32),
        ("ubuntu@md5:" + "ab" * 16, "sha256:<64 hex digits>", "digest"),
        ("ubuntu@", "digest", ""),
        ("a@b@" + SHA, "", ""),
        ("us-docker.pkg.dev//r/i", "empty component", ""),
        ("us-docker.pkg.dev/p/r/i/", "empty component", ""),
        ("gcr.io/p/r_-x", "r_-x", "path component"),
        ("ubu ntu", "whitespace", ""),
        ("ubuntu\x00", "control", ""),
        ("ubüntu", "non-ASCII", ""),
        ("host:99999/a", "port", "65535"),
        ("bad_host.com:5000/a", "host", ""),
        ("-docker.pkg.dev/a/b/c", "host", ""),
        ("MyOrg/app", "capitals", "'myorg/app'"),
        ("gcr.io/" + "a" * 300, "255", ""),
        ("docker.io/", "", ""),
        (":tag", "", ""),
        ("@" + SHA, "missing", ""),
    ],
)
def test_invalid_references_explain_themselves(uri: str, in_message: str, in_hint: str) -> None:
    with pytest.raises(ImageReferenceError) as err:
        parse_image_uri(uri)
    assert in_message in err.value.message
    assert in_hint in err.value.hint
    assert isinstance(err.value, ValueError)
    assert err.value.hint in str(err.value)


@pytest.mark.parametrize("value", [None, 42, b"ubuntu", ["ubuntu"], {"image": "x"}])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(ImageReferenceError, match="must be a string"):
        parse_image_uri(value)


def test_reference_is_frozen_and_hashable() -> None:
    ref = parse_image_uri("ubuntu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.tag = "x"  # type: ignore[misc]
    assert {ref, parse_image_uri("docker.io/library/ubuntu")} == {ref}


def test_long_uri_is_shortened_in_message() -> None:
    for uri in ("A" * 5000, "gcr.io/" + "A" * 5000, "https://" + "a" * 5000, "a" * 5000 + ":-"):
        with pytest.raises(ImageReferenceError) as err:
            parse_image_uri(uri)
        assert len(str(err.value)) < 700


@settings(max_examples=500)
@given(st.text())
@example("a:b:c")
@example("a/b:c/d")
@example("[::1]/a")
@example("localhost:5000")
@example("x.io/" + "a/" * 200 + "b")
def test_any_text_parses_or_raises_image_reference_error(text: str) -> None:
    try:
        ref = parse_image_uri(text)
    except ImageReferenceError as err:
        assert err.message
        return
    assert isinstance(ref, ImageReference)
    assert parse_image_uri(str(ref)) == ref
    assert ref.reference in (ref.digest, ref.tag, "latest")


_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_alnum = st.text(_ALNUM, min_size=1, max_size=6)
_component = st.builds(
    lambda head, rest: head + "".join(sep + part for sep, part in rest),
    _alnum,
    st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "--"]), _alnum), max_size=2),
)
_tags = st.builds(
    lambda first, rest: first + rest,
    st.text(_ALNUM + "ABCXYZ_", min_size=1, max_size=1),
    st.text(_ALNUM + "ABCXYZ_.-", max_size=20),
)
_digests = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}")
_hosts = st.sampled_from(
    ["", "gcr.io/", "localhost:5000/", "us-central1-docker.pkg.dev/", "quay.io/", "127.0.0.1:5000/"]
)


@settings(max_examples=200)
@given(
    _hosts,
    st.lists(_component, min_size=3, max_size=5),
    st.none() | _tags,
    st.none() | _digests,
)
def test_valid_references_round_trip(host: str, path: list[str], tag: str | None, digest: str | None) -> None:
    # Without a host, a dotted first component is the host; on Artifact Registry it is a
    # domain-scoped project, which needs a fourth segment.
    assume("." not in path[0] or (host and not (host.startswith("us-central1") and len(path) < 4)))
    repository = "/".join(path)
    uri = host + repository + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ref = parse_image_uri(uri)
    assert ref.tag == tag
    assert ref.digest == digest
    assert ref.repository.endswith(repository)
    assert parse_image_uri(str(ref)) == ref
    if host.startswith("us-central1"):
        assert ref.ar_location == "us-central1"
        assert ref.ar_project is not None
        assert ref.ar_repository is not None


@settings(max_examples=1000)
@given(st.text(alphabet="abcAZ09:/@._-[]%sha256" + "0123456789abcdef" * 2, max_size=90))
def test_reference_shaped_text_parses_or_raises_image_reference_error(text: str) -> None:
    try:
        ref = parse_image_uri(text)
    except ImageReferenceError:
        return
    assert parse_image_uri(str(ref)) == ref
    assert ref.host == ref.host.lower()
