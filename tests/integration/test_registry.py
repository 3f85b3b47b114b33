"""RegistryClient against the real CNCF distribution registry, and canned answers for the rest.

The real registry (docker-registry 2.8) stores Docker schema 2 and OCI images, indexes,
duplicate layers and every kind of empty layer; it refuses schema 1, so that, and the
failure modes (5xx, hangs, bad JSON, 401 loops, a Bearer realm), come from StaticRegistry.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import pytest

from airflow_batch_streaming.image import parse_image_uri
from airflow_batch_streaming.registry import (
    MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_EMPTY,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_SCHEMA1,
    MEDIA_TYPE_SCHEMA1_SIGNED,
    REGISTRY_URL_ENV,
    ManifestInfo,
    RegistryClient,
    RegistryError,
)
from airflow_batch_streaming.testing.registry import (
    EMPTY_BLOB_DIGEST,
    EMPTY_LAYER_KINDS,
    EMPTY_TAR_DIGEST,
    GZIPPED_EMPTY_TAR_DIGEST,
    OCI_EMPTY_DIGEST,
    REGISTRY_REFUSES,
    CannedResponse,
    LocalRegistry,
    PushError,
    StaticRegistry,
    build_image,
    build_index,
    diff_id,
    duplicate_layer_image,
    empty_layer_image,
    push_manifest,
    random_layer,
    schema1_manifest,
    sha256_digest,
    tar_layer,
)

pytestmark = [pytest.mark.registry, pytest.mark.usefixtures("fresh_registry_cache")]

LAYER_A = tar_layer({"app/a.txt": b"layer a\n"})
LAYER_B = tar_layer({"app/b.txt": b"layer b\n"})


def inspect(registry: LocalRegistry | StaticRegistry, uri: str, **kwargs: object) -> ManifestInfo:
    return RegistryClient().inspect(parse_image_uri(f"{registry.host}/{uri}"), **kwargs)  # type: ignore[arg-type]


def assert_no_secret(err: RegistryError, *secrets: str) -> None:
    for text in (str(err), repr(err), err.message, err.hint, *map(str, err.args)):
        for secret in secrets:
            assert secret not in text


# -- the real registry: what a good image looks like ---------------------------------------


@pytest.mark.parametrize("oci", [False, True], ids=["docker", "oci"])
def test_inspects_an_image(local_registry: LocalRegistry, oci: bool) -> None:
    image = build_image([LAYER_A, LAYER_B], oci=oci)
    digest = local_registry.push_built("good/app", "v1", image)

    client = RegistryClient()
    info = client.inspect(parse_image_uri(f"{local_registry.host}/good/app:v1"))

    assert info.digest == digest == image.digest
    assert info.media_type == (MEDIA_TYPE_OCI_MANIFEST if oci else MEDIA_TYPE_DOCKER_MANIFEST)
    assert info.schema_version == 2
    assert [layer.digest for layer in info.layers] == [sha256_digest(LAYER_A), sha256_digest(LAYER_B)]
    assert [layer.size for layer in info.layers] == [len(LAYER_A), len(LAYER_B)]
    assert info.diff_ids == (diff_id(LAYER_A), diff_id(LAYER_B))
    assert info.platform == "linux/amd64"
    assert info.index_digest is None
    assert client.requests == 2  # manifest + config, never a layer
    assert json.loads(json.dumps(info.to_dict()))["layers"][0]["digest"] == sha256_digest(LAYER_A)


@pytest.mark.parametrize("oci", [True, False], ids=["oci-index", "docker-list"])
def test_resolves_a_multi_arch_index(local_registry: LocalRegistry, oci: bool) -> None:
    amd = local_registry.push_image("multi/app", "amd64", [LAYER_A], platform="linux/amd64")
    arm = local_registry.push_image("multi/app", "arm64", [LAYER_B], platform="linux/arm64/v8")
    tag = "oci" if oci else "docker"
    index = local_registry.push_index("multi/app", tag, {"linux/amd64": amd, "linux/arm64/v8": arm}, oci=oci)
    uri = f"{local_registry.host}/multi/app:{tag}"

    client = RegistryClient()
    on_amd = client.inspect(parse_image_uri(uri))
    on_arm = client.inspect(parse_image_uri(uri), platform="linux/arm64")

    assert (on_amd.digest, on_amd.platform, on_amd.index_digest) == (amd, "linux/amd64", index)
    assert (on_arm.digest, on_arm.platform, on_arm.index_digest) == (arm, "linux/arm64/v8", index)
    assert on_arm.diff_ids == (diff_id(LAYER_B),)
    assert on_arm.media_type == MEDIA_TYPE_DOCKER_MANIFEST
    assert client.inspect(parse_image_uri(uri), platform="linux/arm64/v8").digest == arm
    assert client.inspect(parse_image_uri(uri), platform="linux/x86_64").digest == amd

    with pytest.raises(RegistryError) as err:
        client.inspect(parse_image_uri(uri), platform="linux/s390x")
    assert err.value.code == "platform-not-found"
    assert "linux/amd64" in err.value.message
    assert "linux/arm64/v8" in err.value.message
    assert "linux/s390x" in err.value.hint


def test_an_index_media_type_is_reported_for_the_child(local_registry: LocalRegistry) -> None:
    child = build_image([LAYER_A], oci=True)
    index = build_index({"linux/amd64": child}, oci=True)
    digest = local_registry.push_built("multi/oci-only", "v1", index)
    info = inspect(local_registry, f"multi/oci-only@{digest}")
    assert info.media_type == MEDIA_TYPE_OCI_MANIFEST
    assert info.index_digest == digest == sha256_digest(index.manifest)
    assert index.media_type == MEDIA_TYPE_OCI_INDEX


def test_duplicate_layers_are_visible(local_registry: LocalRegistry) -> None:
    digest = local_registry.push_built("bad/duplicate", "v1", duplicate_layer_image())
    info = inspect(local_registry, f"bad/duplicate@{digest}")
    layers = [layer.digest for layer in info.layers]
    assert len(layers) == 3 and layers[0] == layers[2] != layers[1]
    assert info.diff_ids is not None
    assert info.diff_ids[0] == info.diff_ids[2] != info.diff_ids[1]


EXPECTED_EMPTY = {
    "gzip-empty-tar": (GZIPPED_EMPTY_TAR_DIGEST, 32, EMPTY_TAR_DIGEST),
    "zero-size": (EMPTY_BLOB_DIGEST, 0, EMPTY_BLOB_DIGEST),
    "oci-empty": (OCI_EMPTY_DIGEST, 2, OCI_EMPTY_DIGEST),
    "empty-tar-diff-id": (None, None, EMPTY_TAR_DIGEST),
    "uncompressed-empty-tar": (EMPTY_TAR_DIGEST, 1024, EMPTY_TAR_DIGEST),
}


@pytest.mark.parametrize("oci", [False, True], ids=["docker", "oci"])
@pytest.mark.parametrize("kind", EMPTY_LAYER_KINDS)
def test_every_kind_of_empty_layer_is_stored_and_visible(
    local_registry: LocalRegistry, static_registry: StaticRegistry, kind: str, oci: bool
) -> None:
    image = empty_layer_image(kind, oci=oci)
    if kind in REGISTRY_REFUSES:  # none today: distribution 2.8 stores them all
        with pytest.raises(PushError):
            local_registry.push_built(f"empty/{kind}", "v1", image)
        registry: LocalRegistry | StaticRegistry = static_registry
        static_registry.serve_built(f"empty/{kind}", "v1", image)
    else:
        local_registry.push_built(f"empty/{kind}", "v1", image)
        registry = local_registry

    info = inspect(registry, f"empty/{kind}:v1")

    digest, size, expected_diff_id = EXPECTED_EMPTY[kind]
    empty = info.layers[1]
    assert info.digest == image.digest
    if digest is not None:
        assert (empty.digest, empty.size) == (digest, size)
    else:
        assert empty.digest not in {GZIPPED_EMPTY_TAR_DIGEST, EMPTY_TAR_DIGEST} and empty.size > 0
    assert info.diff_ids is not None and info.diff_ids[1] == expected_diff_id
    if kind == "oci-empty":
        assert empty.media_type == MEDIA_TYPE_OCI_EMPTY


def test_history_only_empty_layers_have_no_blob(local_registry: LocalRegistry) -> None:
    history = [
        {"created_by": "ENV A=1", "empty_layer": True},
        {"created_by": "COPY a /app"},
    ]
    digest = local_registry.push_image("good/history", "v1", [LAYER_A], config_extra={"history": history})
    info = inspect(local_registry, f"good/history@{digest}")
    assert len(info.layers) == 1
    assert info.diff_ids == (diff_id(LAYER_A),)


def test_schema1_is_refused_by_the_real_registry(local_registry: LocalRegistry) -> None:
    image = schema1_manifest("legacy/app", "v1", [LAYER_A])
    with pytest.raises(PushError) as err:
        push_manifest(local_registry.url, "legacy/app", "v1", image.manifest, image.media_type)
    assert err.value.status == 400
    assert "schema1" in REGISTRY_REFUSES


@pytest.mark.parametrize("uri", ["good/app:no-such-tag", "no/such/repo:v1", f"good/app@sha256:{'0' * 64}"])
def test_missing_image(local_registry: LocalRegistry, uri: str) -> None:
    local_registry.push_image("good/app", "v1", [LAYER_A])
    with pytest.raises(RegistryError) as err:
        inspect(local_registry, uri)
    assert err.value.code == "image-not-found"
    assert uri.partition("@")[0].partition(":")[0] in err.value.message
    assert err.value.hint


# -- caching and what is read ---------------------------------------------------------------


def test_a_cached_digest_makes_no_request(local_registry: LocalRegistry) -> None:
    amd = local_registry.push_image("cache/app", "amd64", [LAYER_A])
    arm = local_registry.push_image("cache/app", "arm64", [LAYER_B], platform="linux/arm64")
    index = local_registry.push_index("cache/app", "multi", {"linux/amd64": amd, "linux/arm64": arm})
    by_digest = parse_image_uri(f"{local_registry.host}/cache/app@{amd}")
    index_ref = parse_image_uri(f"{local_registry.host}/cache/app@{index}")

    client = RegistryClient()
    first = client.inspect(by_digest)
    assert client.requests == 2
    assert client.inspect(by_digest) == first
    assert client.requests == 2  # no request at all

    client.inspect(index_ref, platform="linux/arm64")
    after_index = client.requests
    assert after_index == 2 + 3  # index, child, config
    client.inspect(index_ref, platform="linux/arm64")
    client.inspect(index_ref)  # the amd64 child and its config are cached already: only the index
    assert client.requests == after_index + 1

    # The process-wide cache serves another client too (anonymous reads only).
    other = RegistryClient()
    assert other.inspect(by_digest) == first
    assert other.requests == 0


def test_a_tag_is_resolved_with_one_request(local_registry: LocalRegistry) -> None:
    local_registry.push_image("cache/tagged", "v1", [LAYER_A])
    ref = parse_image_uri(f"{local_registry.host}/cache/tagged:v1")
    client = RegistryClient()
    first = client.inspect(ref)
    before = client.requests
    assert client.inspect(ref) == first
    assert client.requests == before + 1

    moved = local_registry.push_image("cache/tagged", "v1", [LAYER_B])
    assert client.inspect(ref).digest == moved  # tags are never cached


def test_bytes_read_do_not_grow_with_layer_size(local_registry: LocalRegistry) -> None:
    small = local_registry.push_image("size/small", "v1", [random_layer(1_000_000, seed=1)])
    large = local_registry.push_image("size/large", "v1", [random_layer(10_000_000, seed=2)])

    reads = []
    for uri in (f"size/small@{small}", f"size/large@{large}"):
        client = RegistryClient()
        client.inspect(parse_image_uri(f"{local_registry.host}/{uri}"))
        reads.append(client.bytes_read)

    assert abs(reads[0] - reads[1]) < 300
    assert max(reads) < 4096


# -- endpoint override ----------------------------------------------------------------------


AR_IMAGE = "us-central1-docker.pkg.dev/proj/repo/img"


def test_base_url_replaces_the_artifact_registry_host(local_registry: LocalRegistry) -> None:
    digest = local_registry.push_image("proj/repo/img", "tag", [LAYER_A])
    info = RegistryClient(base_url=local_registry.url).inspect(parse_image_uri(f"{AR_IMAGE}:tag"))
    assert info.digest == digest


def test_env_replaces_the_artifact_registry_host(
    local_registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = local_registry.push_image("proj/repo/img", "env", [LAYER_A])
    monkeypatch.setenv(REGISTRY_URL_ENV, local_registry.url + "/")
    assert RegistryClient().inspect(parse_image_uri(f"{AR_IMAGE}:env")).digest == digest


def test_base_url_path_is_kept(static_registry: StaticRegistry) -> None:
    image = build_image([LAYER_A])
    static_registry.serve_built("proj/repo/img", "v1", image)
    client = RegistryClient(base_url=static_registry.url)
    client.inspect(parse_image_uri(f"{AR_IMAGE}:v1"))
    assert static_registry.requests[0].path == "/v2/proj/repo/img/manifests/v1"


@pytest.mark.parametrize(
    "url",
    [
        "http://registry.example.com",
        "http://10.0.0.1:5000",
        "ftp://127.0.0.1",
        "127.0.0.1:5000",
        "http://u:p@[::1]",
    ],
)
def test_base_url_must_be_https_unless_loopback(url: str) -> None:
    with pytest.raises(RegistryError) as err:
        RegistryClient(base_url=url)
    assert err.value.code == "registry-unreachable"
    assert ":p@" not in str(err.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:5000", "http://localhost:1", "http://[::1]:5000", "https://r.io"]
)
def test_base_url_loopback_or_https_is_accepted(url: str) -> None:
    RegistryClient(base_url=url)


# -- auth -------------------------------------------------------------------------------------


def test_basic_auth_with_the_right_token(auth_registry: LocalRegistry) -> None:
    assert auth_registry.password is not None
    digest = auth_registry.push_image("private/app", "v1", [LAYER_A])
    client = RegistryClient(token_provider=auth_registry.token_provider)
    ref = parse_image_uri(f"{auth_registry.host}/private/app:v1")
    assert client.inspect(ref).digest == digest
    assert client.requests == 3  # 401, manifest, config (credentials then reused)
    # Authenticated results stay with this client: another one must prove its access.
    anonymous = RegistryClient()
    with pytest.raises(RegistryError) as err:
        anonymous.inspect(parse_image_uri(f"{auth_registry.host}/private/app@{digest}"))
    assert err.value.code == "registry-auth-failed"
    assert "no token provider" in err.value.message


def test_basic_auth_with_a_wrong_token(auth_registry: LocalRegistry) -> None:
    auth_registry.push_image("private/app", "v1", [LAYER_A])
    wrong = "ya29.wrong-token-0123456789"
    client = RegistryClient(token_provider=lambda: wrong)
    with pytest.raises(RegistryError) as err:
        client.inspect(parse_image_uri(f"{auth_registry.host}/private/app:v1"))
    assert err.value.code == "registry-auth-failed"
    assert client.requests == 2
    assert_no_secret(err.value, wrong, auth_registry.password or "")
    assert wrong not in repr(client)


def test_bearer_challenge_token_exchange(static_registry: StaticRegistry) -> None:
    token, password = "registry-bearer-5ecret", "ya29.access-5ecret"
    static_registry.require_bearer(token=token, password=password, service="us-docker.pkg.dev")
    image = build_image([LAYER_A], oci=True)
    static_registry.serve_built("proj/repo/app", "v1", image)

    client = RegistryClient(token_provider=lambda: password)
    info = client.inspect(parse_image_uri(f"{static_registry.host}/proj/repo/app:v1"))

    assert info.digest == image.digest
    (token_request,) = static_registry.requests_to("/token")
    assert token_request.query == {
        "scope": ["repository:proj/repo/app:pull"],
        "service": ["us-docker.pkg.dev"],
    }
    assert token_request.headers["authorization"].startswith("Basic ")
    config_request = static_registry.requests[-1]
    assert config_request.path.startswith("/v2/proj/repo/app/blobs/")
    assert config_request.headers["authorization"] == f"Bearer {token}"
    assert client.requests == 4  # 401, token, manifest, config


def test_bearer_token_in_access_token_field_and_anonymous(static_registry: StaticRegistry) -> None:
    static_registry.require_bearer(token="anon-token", password=None, token_field="access_token")
    image = build_image([LAYER_A])
    static_registry.serve_built("public/app", "v1", image)
    assert inspect(static_registry, "public/app:v1").digest == image.digest
    assert "authorization" not in static_registry.requests_to("/token")[0].headers


@pytest.mark.parametrize("provider", [None, lambda: "ya29.wrong-5ecret"], ids=["no-provider", "wrong"])
def test_bearer_refused(static_registry: StaticRegistry, provider: Callable[[], str] | None) -> None:
    static_registry.require_bearer(token="registry-bearer-5ecret", password="ya29.right-5ecret")
    static_registry.serve_built("proj/repo/app", "v1", build_image([LAYER_A]))
    with pytest.raises(RegistryError) as err:
        RegistryClient(token_provider=provider).inspect(
            parse_image_uri(f"{static_registry.host}/proj/repo/app:v1")
        )
    assert err.value.code == "registry-auth-failed"
    assert ("requires credentials" if provider is None else "refused the credentials") in err.value.message
    assert_no_secret(err.value, "5ecret")


def test_a_401_loop_is_bounded(static_registry: StaticRegistry) -> None:
    token, password = "loop-token-5ecret", "ya29.loop-5ecret"
    static_registry.require_bearer(token=token, password=password, accept_token=False)
    static_registry.serve_built("proj/repo/app", "v1", build_image([LAYER_A]))
    client = RegistryClient(token_provider=lambda: password)
    with pytest.raises(RegistryError) as err:
        client.inspect(parse_image_uri(f"{static_registry.host}/proj/repo/app:v1"))
    assert err.value.code == "registry-auth-failed"
    assert client.requests == 3  # anonymous, token, with token: then stop
    assert_no_secret(err.value, token, password)


def test_basic_challenge_from_the_static_registry(static_registry: StaticRegistry) -> None:
    static_registry.require_basic(password="ya29.basic-5ecret")
    image = build_image([LAYER_A])
    static_registry.serve_built("proj/repo/app", "v1", image)
    client = RegistryClient(token_provider=lambda: "ya29.basic-5ecret")
    assert client.inspect(parse_image_uri(f"{static_registry.host}/proj/repo/app:v1")).digest == image.digest


def test_a_failing_token_provider_is_an_auth_finding(static_registry: StaticRegistry) -> None:
    static_registry.require_basic(password="x")

    def broken() -> str:
        raise RuntimeError("Reauthentication is needed")

    with pytest.raises(RegistryError) as err:
        RegistryClient(token_provider=broken).inspect(parse_image_uri(f"{static_registry.host}/a/b:c"))
    assert err.value.code == "registry-auth-failed"
    assert "Reauthentication is needed" in err.value.message


def test_server_error_text_is_scrubbed_of_tokens(static_registry: StaticRegistry) -> None:
    token = "ya29.echoed-5ecret"
    static_registry.require_basic(password=token)
    static_registry.serve_error("/v2/a/b/manifests/c", 500, "INTERNAL", f"bad credential {token}")
    with pytest.raises(RegistryError) as err:
        RegistryClient(token_provider=lambda: token).inspect(parse_image_uri(f"{static_registry.host}/a/b:c"))
    assert err.value.code == "registry-unreachable"
    assert "bad credential ***" in err.value.message
    assert_no_secret(err.value, token)


def test_blob_redirects_drop_authorization_across_hosts(static_registry: StaticRegistry) -> None:
    static_registry.require_basic(password="ya29.redirect-5ecret")
    image = build_image([LAYER_A])
    static_registry.serve_built("proj/repo/app", "v1", image)
    config_digest, config = next(iter(image.blobs.items()))
    storage = f"/storage/{config_digest}"
    # Same host first (keeps credentials: the target is guarded), then to "another host".
    static_registry.serve_redirect(f"/v2/proj/repo/app/blobs/{config_digest}", f"/v2/moved/{config_digest}")
    static_registry.serve_redirect(
        f"/v2/moved/{config_digest}", f"http://localhost:{static_registry.port}{storage}?X-Goog-Signature=s"
    )
    static_registry.route(storage, CannedResponse(200, config))

    client = RegistryClient(token_provider=lambda: "ya29.redirect-5ecret")
    info = client.inspect(parse_image_uri(f"{static_registry.host}/proj/repo/app:v1"))

    assert info.diff_ids == (diff_id(LAYER_A),)
    assert "authorization" in static_registry.requests_to(f"/v2/moved/{config_digest}")[0].headers
    assert "authorization" not in static_registry.requests_to(storage)[0].headers


def test_a_redirect_loop_is_bounded(static_registry: StaticRegistry) -> None:
    static_registry.serve_redirect("/v2/a/b/manifests/c", "/v2/a/b/manifests/c")
    client = RegistryClient()
    with pytest.raises(RegistryError) as err:
        client.inspect(parse_image_uri(f"{static_registry.host}/a/b:c"))
    assert err.value.code == "registry-unreachable"
    assert client.requests == 6


def test_a_redirect_to_plain_http_elsewhere_is_refused(static_registry: StaticRegistry) -> None:
    static_registry.serve_redirect("/v2/a/b/manifests/c", "http://registry.example.com/v2/a/b/manifests/c")
    with pytest.raises(RegistryError) as err:
        inspect(static_registry, "a/b:c")
    assert err.value.code == "registry-unreachable"
    assert "plain http" in err.value.message


# -- schema 1 and broken registries ------------------------------------------------------------


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("served_as", ["exact", "application/json"])
def test_schema1_is_inspected_not_raised(
    static_registry: StaticRegistry, signed: bool, served_as: str
) -> None:
    image = schema1_manifest("legacy/app", "v1", [LAYER_A, LAYER_B], signed=signed)
    content_type = image.media_type if served_as == "exact" else served_as
    static_registry.serve_manifest("legacy/app", "v1", image.manifest, content_type)
    client = RegistryClient()
    info = client.inspect(parse_image_uri(f"{static_registry.host}/legacy/app:v1"))
    assert info.schema_version == 1
    assert info.media_type == (MEDIA_TYPE_SCHEMA1_SIGNED if signed else MEDIA_TYPE_SCHEMA1)
    assert info.layers == ()
    assert info.diff_ids is None
    assert client.requests == 1


def test_accept_header_lists_every_manifest_type(static_registry: StaticRegistry) -> None:
    static_registry.serve_built("a/b", "c", build_image([LAYER_A]))
    inspect(static_registry, "a/b:c")
    accept = static_registry.requests_to("/v2/a/b/manifests/c")[0].headers["accept"]
    for media_type in (
        MEDIA_TYPE_OCI_INDEX,
        MEDIA_TYPE_DOCKER_LIST,
        MEDIA_TYPE_OCI_MANIFEST,
        MEDIA_TYPE_DOCKER_MANIFEST,
        MEDIA_TYPE_SCHEMA1_SIGNED,
        MEDIA_TYPE_SCHEMA1,
    ):
        assert media_type in accept


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_are_unreachable(static_registry: StaticRegistry, status: int) -> None:
    static_registry.serve_error("/v2/a/b/manifests/c", status)
    with pytest.raises(RegistryError) as err:
        inspect(static_registry, "a/b:c")
    assert err.value.code == "registry-unreachable"
    assert str(status) in err.value.message or "rate" in err.value.message


def test_forbidden_is_an_auth_failure(static_registry: StaticRegistry) -> None:
    static_registry.serve_error("/v2/a/b/manifests/c", 403, "DENIED", "Permission denied")
    with pytest.raises(RegistryError) as err:
        inspect(static_registry, "a/b:c")
    assert err.value.code == "registry-auth-failed"


@pytest.mark.parametrize("trickle", [False, True], ids=["hang", "trickle"])
def test_a_hanging_registry_is_bounded_by_the_timeout(static_registry: StaticRegistry, trickle: bool) -> None:
    path = "/v2/a/b/manifests/c"
    static_registry.serve_trickle(path) if trickle else static_registry.serve_hang(path)
    client = RegistryClient(timeout=1)
    started = time.monotonic()
    with pytest.raises(RegistryError) as err:
        client.inspect(parse_image_uri(f"{static_registry.host}/a/b:c"))
    elapsed = time.monotonic() - started
    assert err.value.code == "registry-unreachable"
    assert "within 1s" in err.value.message
    assert elapsed < 2.0


def test_the_timeout_covers_the_whole_inspect(static_registry: StaticRegistry) -> None:
    image = build_image([LAYER_A])
    static_registry.serve_built("a/b", "c", image)
    config_digest = next(iter(image.blobs))

    def slow(_: object) -> CannedResponse:
        time.sleep(0.7)
        return CannedResponse(200, image.manifest, {"Content-Type": image.media_type})

    static_registry.route("/v2/a/b/manifests/c", slow)
    static_registry.serve_hang(f"/v2/a/b/blobs/{config_digest}")
    started = time.monotonic()
    with pytest.raises(RegistryError) as err:
        RegistryClient(timeout=1).inspect(parse_image_uri(f"{static_registry.host}/a/b:c"))
    assert err.value.code == "registry-unreachable"
    assert time.monotonic() - started < 1.8


def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RegistryError) as err:
        RegistryClient(timeout=2).inspect(parse_image_uri(f"127.0.0.1:{port}/a/b:c"))
    assert err.value.code == "registry-unreachable"
    assert "refused" in err.value.message


def test_dns_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(host: str, *args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(RegistryError) as err:
        RegistryClient().inspect(parse_image_uri("registry.invalid/a/b:c"))
    assert err.value.code == "registry-unreachable"
    assert "resolve" in err.value.message


def _serve(static_registry: StaticRegistry, body: bytes, content_type: str | None, **kwargs: object) -> None:
    static_registry.serve_manifest("a/b", "c", body, content_type, **kwargs)  # type: ignore[arg-type]


GOOD = build_image([LAYER_A])
GOOD_OCI = build_image([LAYER_A], oci=True)


@pytest.mark.parametrize(
    ("body", "content_type", "digest_header", "in_message"),
    [
        (b"{not json", MEDIA_TYPE_DOCKER_MANIFEST, "auto", "not valid JSON"),
        (b"<html>login</html>", "text/html", "auto", "Content-Type"),
        (b"[]", MEDIA_TYPE_DOCKER_MANIFEST, "auto", "not a JSON object"),
        (GOOD_OCI.manifest, MEDIA_TYPE_DOCKER_MANIFEST, "auto", "mediaType"),
        (GOOD.manifest, MEDIA_TYPE_DOCKER_MANIFEST, "sha256:" + "0" * 64, "hashes to"),
        (
            b'{"schemaVersion": 2, "mediaType": "%s"}' % MEDIA_TYPE_DOCKER_MANIFEST.encode(),
            None,
            None,
            "layers",
        ),
        (b'{"schemaVersion": 3, "layers": [], "config": {}}', "application/json", None, "schemaVersion"),
        (b'{"schemaVersion": 2, "foo": 1}', "application/json", None, "neither"),
        (
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
                    "config": {"digest": "sha256:" + "1" * 64, "size": 1},
                    "layers": [{"digest": "nope", "size": 1, "mediaType": "x"}],
                }
            ).encode(),
            MEDIA_TYPE_DOCKER_MANIFEST,
            "auto",
            "invalid digest",
        ),
        (
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
                    "config": {"digest": "sha256:" + "1" * 64, "size": 1},
                    "layers": [{"digest": "sha256:" + "2" * 64, "size": -1, "mediaType": "x"}],
                }
            ).encode(),
            MEDIA_TYPE_DOCKER_MANIFEST,
            "auto",
            "invalid size",
        ),
        (b'{"schemaVersion": 2, "mediaType": "%s"}' % MEDIA_TYPE_OCI_INDEX.encode(), None, None, "manifests"),
        (
            b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.artifact.manifest.v1+json"}',
            "application/vnd.oci.artifact.manifest.v1+json",
            None,
            "Content-Type",
        ),
    ],
    ids=[
        "bad-json",
        "html",
        "not-object",
        "media-type-mismatch",
        "digest-header-mismatch",
        "no-layers",
        "bad-schema-version",
        "unknown-shape",
        "bad-layer-digest",
        "negative-size",
        "index-without-manifests",
        "artifact",
    ],
)
def test_invalid_manifests(
    static_registry: StaticRegistry,
    body: bytes,
    content_type: str | None,
    digest_header: str | None,
    in_message: str,
) -> None:
    _serve(static_registry, body, content_type, digest=digest_header)
    with pytest.raises(RegistryError) as err:
        inspect(static_registry, "a/b:c")
    assert err.value.code == "manifest-invalid"
    assert in_message in err.value.message


def test_a_manifest_not_matching_the_requested_digest(static_registry: StaticRegistry) -> None:
    wanted = "sha256:" + "3" * 64
    static_registry.serve_manifest("a/b", wanted, GOOD.manifest, GOOD.media_type)
    with pytest.raises(RegistryError) as err:
        inspect(static_registry, f"a/b@{wanted}")
    assert err.value.code == "manifest-invalid"
    assert wanted in err.value.message


def test_a_missing_or_corrupt_config_blob(static_registry: StaticRegistry) -> None:
    _serve(static_registry, GOOD.manifest, GOOD.media_type)
    with pytest.raises(RegistryError) as err:
        inspect(static_registry, "a/b:c")
    assert (err.value.code, "missing" in err.value.message) == ("manifest-invalid", True)

    config_digest = next(iter(GOOD.blobs))
    static_registry.serve_blob("a/b", config_digest, b'{"rootfs": {"diff_ids": []}}')
    with pytest.raises(RegistryError) as err:
        inspect(static_registry, "a/b:c")
    assert (err.value.code, "does not match" in err.value.message) == ("manifest-invalid", True)


def test_platform_must_be_well_formed(static_registry: StaticRegistry) -> None:
    with pytest.raises(ValueError, match="os/arch"):
        RegistryClient().inspect(parse_image_uri(f"{static_registry.host}/a/b:c"), platform="amd64")
    assert static_registry.requests == []


def test_plain_http_to_a_named_host_needs_the_explicit_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_batch_streaming.registry import RegistryClient, RegistryError

    with pytest.raises(RegistryError) as err:
        RegistryClient(base_url="http://registry:5000")
    assert err.value.code == "registry-unreachable" and "not loopback" in err.value.message
    monkeypatch.setenv("BATCH_STREAMING_REGISTRY_ALLOW_HTTP_HOSTS", "registry:5000")
    RegistryClient(base_url="http://registry:5000")  # accepted: the operator opted in
