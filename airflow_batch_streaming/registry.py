"""Read image manifests and configs over the OCI distribution API.

The preflight needs a few hundred bytes per image: the manifest (to see the schema,
the layers and, for a multi-arch index, the child for the VMs' platform) and the
config blob (for ``rootfs.diff_ids``). Layer blobs are never read. This is one of
the two places allowed network I/O, stdlib only, so importing it costs nothing.

Guarantees the rest of the package relies on:

* every failure is a :class:`RegistryError` whose ``code`` is a preflight finding code;
* a token, or any ``Authorization`` value, never appears in a message, repr or log line;
* ``timeout`` bounds a whole :meth:`RegistryClient.inspect`, whatever the server does;
* plain ``http://`` is used only towards loopback hosts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_batch_streaming import __version__
from airflow_batch_streaming.image import ImageReference, parse_image_uri
from airflow_batch_streaming.oci import (
    IMAGE_CONFIG_TYPES,
    IMAGE_MANIFEST_TYPES,
    INDEX_MEDIA_TYPES,
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_LAYER,
    MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_EMPTY,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_TAR,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_SCHEMA1,
    MEDIA_TYPE_SCHEMA1_SIGNED,
    SCHEMA1_MEDIA_TYPES,
    Layer,
    ManifestInfo,
    Platform,
    normalize_platform,
)

__all__ = [
    "ACCEPT_MANIFESTS",
    "ERROR_CODES",
    "IMAGE_MANIFEST_TYPES",
    "INDEX_MEDIA_TYPES",
    "MEDIA_TYPE_DOCKER_CONFIG",
    "MEDIA_TYPE_DOCKER_LAYER",
    "MEDIA_TYPE_DOCKER_LIST",
    "MEDIA_TYPE_DOCKER_MANIFEST",
    "MEDIA_TYPE_OCI_CONFIG",
    "MEDIA_TYPE_OCI_EMPTY",
    "MEDIA_TYPE_OCI_INDEX",
    "MEDIA_TYPE_OCI_LAYER",
    "MEDIA_TYPE_OCI_LAYER_TAR",
    "MEDIA_TYPE_OCI_MANIFEST",
    "MEDIA_TYPE_SCHEMA1",
    "MEDIA_TYPE_SCHEMA1_SIGNED",
    "REGISTRY_URL_ENV",
    "SCHEMA1_MEDIA_TYPES",
    "Layer",
    "ManifestInfo",
    "RegistryClient",
    "RegistryError",
    "clear_cache",
]

log = logging.getLogger(__name__)

REGISTRY_URL_ENV = "BATCH_STREAMING_REGISTRY_URL"

_MANIFEST_TYPES = INDEX_MEDIA_TYPES | IMAGE_MANIFEST_TYPES | SCHEMA1_MEDIA_TYPES
_IMAGE_CONFIG_TYPES = IMAGE_CONFIG_TYPES
# Content types that say nothing: fall back to the manifest's own mediaType / shape.
_GENERIC_TYPES = frozenset({"", "application/json", "text/plain", "application/octet-stream"})

# Every manifest kind, so a registry never down-converts to schema 1 for us.
ACCEPT_MANIFESTS = ", ".join(
    [
        MEDIA_TYPE_OCI_INDEX,
        MEDIA_TYPE_DOCKER_LIST,
        MEDIA_TYPE_OCI_MANIFEST,
        MEDIA_TYPE_DOCKER_MANIFEST,
        MEDIA_TYPE_SCHEMA1_SIGNED,
        MEDIA_TYPE_SCHEMA1,
    ]
)

IMAGE_NOT_FOUND = "image-not-found"
AUTH_FAILED = "registry-auth-failed"
UNREACHABLE = "registry-unreachable"
PLATFORM_NOT_FOUND = "platform-not-found"
MANIFEST_INVALID = "manifest-invalid"
ERROR_CODES = frozenset({IMAGE_NOT_FOUND, AUTH_FAILED, UNREACHABLE, PLATFORM_NOT_FOUND, MANIFEST_INVALID})

_MANIFEST_LIMIT = 4 * 1024 * 1024  # distribution's own limit on manifests
_CONFIG_LIMIT = 8 * 1024 * 1024
_SMALL_LIMIT = 64 * 1024  # error bodies, token responses
_MAX_REDIRECTS = 5
_CACHE_SIZE = 512
_USER_AGENT = f"airflow-batch-streaming/{__version__}"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_STRICT_DIGEST_RE = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "sha512": re.compile(r"^[0-9a-f]{128}$")}
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_PLATFORM_PART_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class RegistryError(Exception):
    """A registry read that failed; ``code`` is the preflight finding code to report."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(code, message, hint)
        self.code = code
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" + (f" (hint: {self.hint})" if self.hint else "")

    def __repr__(self) -> str:
        return f"RegistryError(code={self.code!r}, message={self.message!r}, hint={self.hint!r})"


class _LRU:
    """A small thread-safe LRU; the process-wide one is shared by every client."""

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


# Results read without credentials: anyone may read them, so every client may reuse them.
# Results that needed credentials stay in the reading client's own cache.
_SHARED_CACHE = _LRU(_CACHE_SIZE)


def clear_cache() -> None:
    """Forget the process-wide results (tests, or after re-pushing a registry's content)."""
    _SHARED_CACHE.clear()


def _parse_platform(platform: str) -> Platform:
    parts = platform.split("/") if isinstance(platform, str) else []
    if len(parts) not in (2, 3) or not all(_PLATFORM_PART_RE.match(p.lower()) for p in parts):
        raise ValueError(f"platform {platform!r} is not of the form os/arch[/variant], e.g. linux/amd64")
    return normalize_platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


ALLOW_HTTP_ENV = "BATCH_STREAMING_REGISTRY_ALLOW_HTTP_HOSTS"


def _is_loopback(host: str | None) -> bool:
    """True for loopback hosts, and for hosts the operator explicitly allowed plain http to.

    The allow-list (``BATCH_STREAMING_REGISTRY_ALLOW_HTTP_HOSTS``, comma-separated host names)
    exists for docker-compose, where the local registry is a service named ``registry``.
    """
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    allowed = {h.strip().lower().rsplit(":", 1)[0] for h in os.environ.get(ALLOW_HTTP_ENV, "").split(",")}
    if host in allowed - {""}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_url(url: str) -> str:
    """A URL fit for a message: no userinfo, no query (signed storage URLs carry signatures)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def media_type_of(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def strict_digest(value: object) -> bool:
    if not isinstance(value, str):
        return False
    algorithm, _, hex_part = value.partition(":")
    pattern = _STRICT_DIGEST_RE.get(algorithm)
    return pattern is not None and pattern.match(hex_part) is not None


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_CHALLENGE_PARAM_RE = re.compile(rf'[\s,]*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')
_CHALLENGE_SCHEME_RE = re.compile(rf"[\s,]*({_TOKEN})(?:\s+[A-Za-z0-9._~+/-]+=*(?=\s*(?:,|$)))?")


def _parse_challenges(values: list[str]) -> list[tuple[str, dict[str, str]]]:
    """RFC 7235 ``WWW-Authenticate``: ``Bearer realm="...",service="..."``, possibly several."""
    challenges: list[tuple[str, dict[str, str]]] = []
    for header in values:
        pos = 0
        while pos < len(header):
            param = _CHALLENGE_PARAM_RE.match(header, pos)
            if param and challenges:
                value = param.group(2)
                if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                challenges[-1][1][param.group(1).lower()] = value
                pos = param.end()
                continue
            scheme = _CHALLENGE_SCHEME_RE.match(header, pos)
            if not scheme or scheme.end() == pos:
                pos += 1
                continue
            challenges.append((scheme.group(1).lower(), {}))
            pos = scheme.end()
    return challenges


class _Deadline:
    """The end of one inspect: the client's timeout, or an earlier overall deadline."""

    def __init__(self, seconds: float, overall: float | None = None, overall_label: str = "") -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self.overall_label = ""
        if overall is not None and overall < self._end:
            self._end = overall
            self.overall_label = overall_label

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0


@dataclass
class _Op:
    """One inspect: its deadline, and whether any registry read used credentials."""

    deadline: _Deadline
    authenticated: bool = False


@dataclass
class _Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    url: str


@dataclass(frozen=True)
class _Endpoint:
    base: str  # scheme://host[:port][/prefix]
    source: str | None = None  # where an override came from: an option or the environment variable

    @property
    def overridden(self) -> bool:
        return self.source is not None

    @property
    def label(self) -> str:
        return f"{self.base} (from {self.source})" if self.source else self.base


@dataclass
class _Manifest:
    digest: str
    media_type: str
    data: dict[str, Any]
    schema_version: int = field(default=2)


def _abort(conn: http.client.HTTPConnection, fired: threading.Event) -> None:
    """Watchdog: unblock a reader stuck on a server that trickles or hangs."""
    fired.set()
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class RegistryClient:
    """Reads manifests the way a pull would, without pulling.

    Anonymous first; on a 401 it answers the ``WWW-Authenticate`` challenge once
    (Bearer token exchange or Basic) with ``username`` and the token from
    ``token_provider`` (for Artifact Registry: an OAuth access token). A client is
    cheap; it is not meant to be shared between threads (the process-wide cache is).
    """

    def __init__(
        self,
        *,
        token_provider: Callable[[], str | None] | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
        username: str = "oauth2accesstoken",
        base_url_source: str = "base_url",
        base_url_for_any_host: bool = False,
    ) -> None:
        """``base_url_source`` names where ``base_url`` came from in messages (``--registry-url``).

        ``base_url`` applies to Artifact Registry hosts only, unless ``base_url_for_any_host``
        (the fix tool's ``--source-registry-url``, which may stand for docker.io).

        ``deadline`` (an attribute, ``time.monotonic()`` based, None for none) ends every
        read at that time too: the overall limit of a sequence of checks, named by
        ``deadline_label`` in the timeout message.
        """
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.timeout = float(timeout)
        self.username = username
        self.requests = 0
        self.bytes_read = 0
        self._token_provider = token_provider
        self._secrets: set[str] = set()
        self._auth: dict[tuple[str, str], tuple[str, float | None]] = {}
        self._cache = _LRU(_CACHE_SIZE)
        self._ssl: ssl.SSLContext | None = None
        self._provider_problem = ""
        self.deadline: float | None = None
        self.deadline_label = "the overall time limit"
        raw = base_url if base_url is not None else os.environ.get(REGISTRY_URL_ENV)
        source = base_url_source if base_url is not None else REGISTRY_URL_ENV
        self._override = self._parse_base_url(raw.strip(), source) if raw and raw.strip() else None
        self._override_any_host = base_url_for_any_host and base_url is not None

    def __repr__(self) -> str:
        override = self._override.base if self._override else None
        return f"RegistryClient(base_url={override!r}, timeout={self.timeout!r}, requests={self.requests})"

    # -- public ------------------------------------------------------------------------

    def inspect(self, ref: ImageReference | str, platform: str = "linux/amd64") -> ManifestInfo:
        """The manifest (and config) of ``ref`` for ``platform`` (``os/arch[/variant]``).

        Raises RegistryError; ValueError for a malformed ``platform`` (a caller bug).
        """
        if isinstance(ref, str):
            ref = parse_image_uri(ref)
        want = _parse_platform(platform)
        endpoint = self._endpoint(ref)
        repo = ref.repository
        op = self._op()

        if ref.digest:
            hit = self._cached(endpoint, repo, ref.digest, want)
            if hit is not None:
                return hit
        top = self._get_manifest(endpoint, ref, ref.reference, op, expected=ref.digest)
        if not ref.digest:
            hit = self._cached(endpoint, repo, top.digest, want)
            if hit is not None:
                return hit

        if top.media_type not in INDEX_MEDIA_TYPES:
            info = self._image_info(endpoint, ref, top, op)
            self._store(op, ("manifest", endpoint.base, repo, info.digest, None), info)
            return info

        entry_digest, entry_platform = self._select(ref, top, want)
        child = self._cached(endpoint, repo, entry_digest, None)
        if child is None:
            child_doc = self._get_manifest(endpoint, ref, entry_digest, op, expected=entry_digest)
            if child_doc.media_type in INDEX_MEDIA_TYPES:
                raise self._error(
                    MANIFEST_INVALID,
                    f"{ref}: the {platform} entry of index {top.digest} is itself an index",
                    "push a flat multi-platform image (docker buildx build --platform ... --push)",
                )
            child = self._image_info(endpoint, ref, child_doc, op)
            self._store(op, ("manifest", endpoint.base, repo, child.digest, None), child)
        info = replace(child, platform=entry_platform, index_digest=top.digest)
        self._store(op, ("manifest", endpoint.base, repo, top.digest, want.key), info)
        return info

    def read_blob(self, ref: ImageReference | str, digest: str, *, limit: int) -> bytes:
        """A small blob (a layer of at most ``limit`` bytes), checked against its digest.

        For rules that judge content (is this layer an empty archive?); never for large
        layers: a blob longer than ``limit`` is refused, not read to its end.
        """
        if isinstance(ref, str):
            ref = parse_image_uri(ref)
        endpoint = self._endpoint(ref)
        key = ("blob", endpoint.base, ref.repository, digest)
        hit = self._cache.get(key) or _SHARED_CACHE.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        op = self._op()
        what = f"{ref.host}/{ref.repository} layer {digest}"
        resp = self._registry_get(endpoint, ref.repository, f"blobs/{digest}", op, limit)
        self._check_status(resp, endpoint, what, manifest=False)
        algorithm = digest.split(":", 1)[0]
        if algorithm in _STRICT_DIGEST_RE and _compute_digest(resp.body, algorithm) != digest:
            raise self._invalid(what, "the blob does not match its digest")
        self._store(op, key, resp.body)
        return resp.body

    # -- the seam a writer (registry_push) builds its own exchanges on ------------------

    def base_url(self, ref: ImageReference) -> str:
        """Where requests for ``ref`` go: ``scheme://host[:port][/prefix]``."""
        return self._endpoint(ref).base

    def authorization(
        self, ref: ImageReference, challenge: http.client.HTTPMessage | None = None
    ) -> str | None:
        """The ``Authorization`` value for ``ref``'s repository, or None (anonymous).

        Given the headers of a 401 answer, answers its challenge first (token exchange with
        `scopes`), as reads do; the value is cached per repository until it expires.
        """
        endpoint = self._endpoint(ref)
        key = (endpoint.base, ref.repository)
        if challenge is not None:
            self._auth.pop(key, None)
            self._auth[key] = self._authenticate(
                endpoint, ref.repository, _Response(401, challenge, b"", ""), self._op()
            )
        cached = self._auth.get(key)
        return cached[0] if cached and (cached[1] is None or cached[1] > time.monotonic()) else None

    def connect(self, url: str, timeout: float | None = None) -> http.client.HTTPConnection:
        """A connection for ``url`` (plain http to loopback only; https through any proxy)."""
        self._check_scheme(url)
        parts = urllib.parse.urlsplit(url)
        return self._connection(parts.scheme, parts.hostname or "", parts.port, timeout or self.timeout)

    def raise_for_status(
        self,
        ref: ImageReference,
        status: int,
        headers: http.client.HTTPMessage,
        body: bytes,
        what: str,
        *,
        manifest: bool,
    ) -> None:
        """A RegistryError for a non-2xx answer, worded as for reads (404 names the image or blob)."""
        self._check_status(_Response(status, headers, body, ""), self._endpoint(ref), what, manifest=manifest)

    def invalid(self, what: str, problem: str) -> RegistryError:
        """A ``manifest-invalid`` error, scrubbed of secrets."""
        return self._invalid(what, problem)

    def connection_failed(self, url: str, exc: BaseException) -> RegistryError:
        """A ``registry-unreachable`` error for a failed exchange, scrubbed of secrets."""
        return self._connection_error(url, exc, self._op())

    def _op(self) -> _Op:
        return _Op(_Deadline(self.timeout, self.deadline, self.deadline_label))

    # -- caching -----------------------------------------------------------------------

    def _cached(
        self, endpoint: _Endpoint, repo: str, digest: str, want: Platform | None
    ) -> ManifestInfo | None:
        keys: list[tuple[str, str, str, str, str | None]] = [("manifest", endpoint.base, repo, digest, None)]
        if want is not None:
            keys.insert(0, ("manifest", endpoint.base, repo, digest, want.key))
        for key in keys:
            hit = self._cache.get(key) or _SHARED_CACHE.get(key)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
        return None

    def _store(self, op: _Op, key: Hashable, value: Any) -> None:
        (self._cache if op.authenticated else _SHARED_CACHE).put(key, value)

    # -- manifests and configs ---------------------------------------------------------

    def _get_manifest(
        self, endpoint: _Endpoint, ref: ImageReference, reference: str, op: _Op, *, expected: str | None
    ) -> _Manifest:
        what = str(ref) if reference == ref.reference else f"{ref.host}/{ref.repository}@{reference}"
        resp = self._registry_get(endpoint, ref.repository, f"manifests/{reference}", op, _MANIFEST_LIMIT)
        self._check_status(resp, endpoint, what, manifest=True)

        content_type = media_type_of(resp.headers.get("Content-Type"))
        if content_type not in _MANIFEST_TYPES and content_type not in _GENERIC_TYPES:
            raise self._invalid(
                what,
                f"{endpoint.label} answered with Content-Type {content_type!r}, not a manifest",
                "the registry (or a proxy or login page in front of it) returned something else",
            )
        try:
            data = json.loads(resp.body)
        except ValueError:
            raise self._error(
                MANIFEST_INVALID,
                f"{what}: the manifest from {endpoint.label} is not valid JSON",
                "the registry (or a proxy in front of it) returned something else than a manifest",
            ) from None
        if not isinstance(data, dict):
            raise self._invalid(what, "the manifest is not a JSON object")
        declared = data.get("mediaType")
        if declared is not None and not isinstance(declared, str):
            raise self._invalid(what, "the manifest's mediaType is not a string")

        if content_type in _MANIFEST_TYPES:
            if declared and declared != content_type:
                raise self._invalid(
                    what, f"served as {content_type} but the manifest says mediaType {declared}"
                )
            media_type = content_type
        else:
            media_type = declared or self._infermedia_type_of(what, data)
        if media_type not in _MANIFEST_TYPES:
            raise self._invalid(
                what,
                f"unsupported manifest type {media_type}",
                hint="only container images (Docker schema 2 or OCI) can run in a Batch container runnable",
            )

        schema_version = data.get("schemaVersion")
        want_version = 1 if media_type in SCHEMA1_MEDIA_TYPES else 2
        if schema_version != want_version or isinstance(schema_version, bool):
            raise self._invalid(
                what,
                f"a {media_type} manifest must have schemaVersion {want_version}, not {schema_version!r}",
            )

        header = resp.headers.get("Docker-Content-Digest")
        header = header.strip() if header else None
        if media_type in SCHEMA1_MEDIA_TYPES:
            # Signed schema 1 digests cover the payload without its signatures: take them as given.
            digest = expected or (header if strict_digest(header) else None) or _compute_digest(resp.body)
            return _Manifest(digest, media_type, data, 1)
        if header and strict_digest(header):
            actual = _compute_digest(resp.body, header.split(":", 1)[0])
            if actual != header:
                raise self._invalid(
                    what, f"the registry says its digest is {header} but the manifest hashes to {actual}"
                )
        digest = _compute_digest(resp.body)
        if expected:
            algorithm = expected.split(":", 1)[0]
            actual = _compute_digest(resp.body, algorithm) if algorithm in _STRICT_DIGEST_RE else expected
            if actual != expected:
                raise self._invalid(what, f"asked for {expected} but the manifest hashes to {actual}")
            digest = expected
        return _Manifest(digest, media_type, data, 2)

    def _infermedia_type_of(self, what: str, data: dict[str, Any]) -> str:
        if data.get("schemaVersion") == 1:
            return MEDIA_TYPE_SCHEMA1_SIGNED if "signatures" in data else MEDIA_TYPE_SCHEMA1
        if isinstance(data.get("manifests"), list):
            return MEDIA_TYPE_OCI_INDEX
        if isinstance(data.get("layers"), list) and isinstance(data.get("config"), dict):
            return MEDIA_TYPE_OCI_MANIFEST
        raise self._invalid(what, "the document is neither an image manifest nor an index")

    def _image_info(self, endpoint: _Endpoint, ref: ImageReference, doc: _Manifest, op: _Op) -> ManifestInfo:
        what = f"{ref.host}/{ref.repository}@{doc.digest}"
        if doc.media_type in SCHEMA1_MEDIA_TYPES:
            if not isinstance(doc.data.get("fsLayers"), list):
                raise self._invalid(what, "a schema 1 manifest needs an fsLayers list")
            arch = doc.data.get("architecture")
            schema1_platform = f"linux/{arch}" if isinstance(arch, str) and arch else None
            return ManifestInfo(doc.digest, doc.media_type, 1, (), None, schema1_platform, None)

        raw_layers = doc.data.get("layers")
        if not isinstance(raw_layers, list):
            raise self._invalid(what, "the manifest has no layers list")
        layers = tuple(self._descriptor(what, f"layers[{i}]", d) for i, d in enumerate(raw_layers))
        config = self._descriptor(what, "config", doc.data.get("config"))
        diff_ids: tuple[str, ...] | None = None
        platform: str | None = None
        if config.media_type in _IMAGE_CONFIG_TYPES or not config.media_type:
            diff_ids, platform = self._config(endpoint, ref, config, op)
        artifact_type = doc.data.get("artifactType")
        return ManifestInfo(
            doc.digest,
            doc.media_type,
            doc.schema_version,
            layers,
            diff_ids,
            platform,
            None,
            config_media_type=config.media_type or None,
            artifact_type=artifact_type if isinstance(artifact_type, str) and artifact_type else None,
        )

    def _descriptor(self, what: str, where: str, obj: object) -> Layer:
        if not isinstance(obj, dict):
            raise self._invalid(what, f"{where} is not a descriptor object")
        digest, size, media_type = obj.get("digest"), obj.get("size"), obj.get("mediaType", "")
        if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
            raise self._invalid(what, f"{where} has an invalid digest {digest!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise self._invalid(what, f"{where} has an invalid size {size!r}")
        if not isinstance(media_type, str):
            raise self._invalid(what, f"{where} has an invalid mediaType {media_type!r}")
        urls = obj.get("urls")
        urls = tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else ()
        return Layer(digest, size, media_type, urls)

    def _config(
        self, endpoint: _Endpoint, ref: ImageReference, config: Layer, op: _Op
    ) -> tuple[tuple[str, ...], str | None]:
        """diff_ids and platform from the config blob, fetched once per config digest."""
        key = ("config", endpoint.base, ref.repository, config.digest)
        hit = self._cache.get(key) or _SHARED_CACHE.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        what = f"{ref.host}/{ref.repository} config {config.digest}"
        if config.size > _CONFIG_LIMIT:
            raise self._invalid(what, f"the config blob is {config.size} bytes, more than any image config")
        resp = self._registry_get(endpoint, ref.repository, f"blobs/{config.digest}", op, _CONFIG_LIMIT)
        self._check_status(resp, endpoint, what, manifest=False)
        algorithm = config.digest.split(":", 1)[0]
        if algorithm in _STRICT_DIGEST_RE and _compute_digest(resp.body, algorithm) != config.digest:
            raise self._invalid(what, "the config blob does not match its digest")
        try:
            data = json.loads(resp.body)
        except ValueError:
            raise self._invalid(what, "the image config is not valid JSON") from None
        rootfs = data.get("rootfs") if isinstance(data, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
            raise self._invalid(what, "the image config has no rootfs.diff_ids list")
        assert isinstance(data, dict)
        os_name, arch, variant = data.get("os"), data.get("architecture"), data.get("variant")
        platform = None
        if isinstance(os_name, str) and os_name and isinstance(arch, str) and arch:
            platform = f"{os_name}/{arch}" + (f"/{variant}" if isinstance(variant, str) and variant else "")
        result = (tuple(diff_ids), platform)
        self._store(op, key, result)
        return result

    def _select(self, ref: ImageReference, index: _Manifest, want: Platform) -> tuple[str, str]:
        """The index entry for ``want``: exact match first; a bare os/arch takes any variant."""
        what = f"{ref.host}/{ref.repository}@{index.digest}"
        entries = index.data.get("manifests")
        if not isinstance(entries, list):
            raise self._invalid(what, "the index has no manifests list")
        candidates: list[tuple[Platform, str, str]] = []
        present: list[str] = []
        for i, entry in enumerate(entries):
            descriptor = self._descriptor(what, f"manifests[{i}]", entry)
            plat = entry.get("platform")
            if not isinstance(plat, dict):
                continue
            os_name, arch, variant = plat.get("os"), plat.get("architecture"), plat.get("variant")
            if not isinstance(os_name, str) or not isinstance(arch, str):
                continue
            variant = variant if isinstance(variant, str) and variant else None
            shown = f"{os_name}/{arch}" + (f"/{variant}" if variant else "")
            annotations = entry.get("annotations")
            if shown == "unknown/unknown" or (
                isinstance(annotations, dict)
                and annotations.get("vnd.docker.reference.type") == "attestation-manifest"
            ):
                continue  # build attestations, not runnable images
            present.append(shown)
            candidates.append((normalize_platform(os_name, arch, variant), descriptor.digest, shown))
        for plat_, digest, shown in candidates:
            if plat_ == want:
                return digest, shown
        if want.variant is None:
            for plat_, digest, shown in candidates:
                if (plat_.os, plat_.arch) == (want.os, want.arch):
                    return digest, shown
        listed = ", ".join(dict.fromkeys(present)) or "none"
        raise self._error(
            PLATFORM_NOT_FOUND,
            f"{ref} has no image for {want.key}; the index offers: {listed}",
            f"build and push the image for {want.key} (docker buildx build --platform {want.key} --push), "
            "or run the job on machines of a platform the image has",
        )

    # -- HTTP ----------------------------------------------------------------------------

    def _registry_get(self, endpoint: _Endpoint, repo: str, path: str, op: _Op, limit: int) -> _Response:
        """GET /v2/<repo>/<path>, answering at most one auth challenge (no 401 loops)."""
        url = f"{endpoint.base}/v2/{repo}/{path}"
        key = (endpoint.base, repo)
        cached = self._auth.get(key)
        auth = cached[0] if cached and (cached[1] is None or cached[1] > time.monotonic()) else None
        fresh = False
        while True:
            headers = {"Accept": ACCEPT_MANIFESTS if path.startswith("manifests/") else "*/*"}
            if auth:
                headers["Authorization"] = auth
                op.authenticated = True
            resp = self._get(url, headers, op, limit)
            if resp.status != 401:
                return resp
            self._auth.pop(key, None)
            if fresh:
                raise self._error(
                    AUTH_FAILED,
                    f"{endpoint.label} refused the credentials for {repo} (HTTP 401 after authenticating)"
                    + self._anonymous_note(),
                    self._auth_hint(endpoint),
                )
            auth, expires = self._authenticate(endpoint, repo, resp, op)
            self._auth[key] = (auth, expires)
            fresh = True

    def _authenticate(
        self, endpoint: _Endpoint, repo: str, resp: _Response, op: _Op
    ) -> tuple[str, float | None]:
        challenges = _parse_challenges(resp.headers.get_all("WWW-Authenticate") or [])
        schemes = {scheme: params for scheme, params in reversed(challenges)}
        if "bearer" in schemes:
            return self._bearer(endpoint, repo, schemes["bearer"], op)
        if "basic" in schemes:
            secret = self._token()
            if secret is None:
                raise self._error(
                    AUTH_FAILED,
                    f"{endpoint.label} requires credentials for {repo} and no token provider is configured",
                    self._auth_hint(endpoint),
                )
            return self._basic(secret), None
        offered = ", ".join(sorted(schemes)) or "no challenge"
        raise self._error(
            AUTH_FAILED,
            f"{endpoint.label} answered HTTP 401 for {repo} with {offered}; only Bearer and Basic work",
            self._auth_hint(endpoint),
        )

    def _bearer(
        self, endpoint: _Endpoint, repo: str, params: dict[str, str], op: _Op
    ) -> tuple[str, float | None]:
        """The distribution token flow: GET realm?service=..&scope=repository:NAME:pull."""
        realm = params.get("realm", "")
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self._error(AUTH_FAILED, f"{endpoint.label} sent a Bearer challenge without a usable realm")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise self._error(
                AUTH_FAILED,
                f"the token service {safe_url(realm)} uses plain http; refusing to send credentials",
                "the registry's token realm must be https",
            )
        query: dict[str, Any] = {"scope": self.scopes(repo)}
        if params.get("service"):
            query["service"] = params["service"]
        url = realm + ("&" if parts.query else "?") + urllib.parse.urlencode(query, doseq=True)
        headers = {"Accept": "application/json"}
        try:
            secret = self._token()
        except RegistryError as exc:
            # No usable credentials: a public repository still hands out anonymous tokens.
            self._provider_problem = exc.message
            secret = None
        if secret is not None:
            headers["Authorization"] = self._basic(secret)
        resp = self._get(url, headers, op, _SMALL_LIMIT)
        if resp.status in (401, 403):
            problem = "refused the credentials" if secret is not None else "requires credentials"
            no_provider = ""
            if secret is None and not self._provider_problem:
                no_provider = " and no token provider is configured"
            raise self._error(
                AUTH_FAILED,
                f"the token service {safe_url(realm)} {problem} for {repo} "
                f"(HTTP {resp.status}){no_provider}{self._anonymous_note()}",
                self._auth_hint(endpoint),
            )
        if resp.status != 200:
            code = UNREACHABLE if resp.status >= 500 or resp.status == 429 else AUTH_FAILED
            hint = "the registry may be down or overloaded; retry later" if code == UNREACHABLE else ""
            raise self._error(
                code,
                f"the token service {safe_url(realm)} answered HTTP {resp.status}",
                hint or self._auth_hint(endpoint),
            )
        try:
            data = json.loads(resp.body)
        except ValueError:
            data = None  # never chain: the body may hold a token
        token = None
        if isinstance(data, dict):
            token = data.get("token") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise self._error(
                AUTH_FAILED,
                f"the token service {safe_url(realm)} returned no token",
                "check that the registry URL points at the image's registry; retry later if it is overloaded",
            )
        self._secrets.add(token)
        expires_in = data.get("expires_in") if isinstance(data, dict) else None
        ttl = expires_in if isinstance(expires_in, int) and not isinstance(expires_in, bool) else 60
        return f"Bearer {token}", time.monotonic() + max(ttl - 10, 10)

    def scopes(self, repo: str) -> list[str]:
        """The token scopes to ask for; a writer (registry_push) adds push and mount sources."""
        return [f"repository:{repo}:pull"]

    def _basic(self, secret: str) -> str:
        encoded = base64.b64encode(f"{self.username}:{secret}".encode()).decode("ascii")
        self._secrets.add(encoded)
        return f"Basic {encoded}"

    def _token(self) -> str | None:
        if self._token_provider is None:
            return None
        try:
            token = self._token_provider()
        except Exception as exc:
            raise self._error(
                AUTH_FAILED,
                f"the registry token provider failed: {type(exc).__name__}: {exc}",
                "check the credentials of the Airflow connection (gcp_conn_id) or `gcloud auth login`",
            ) from exc
        if token is None or token == "":
            return None
        if not isinstance(token, str):
            raise self._error(
                AUTH_FAILED, f"the registry token provider returned a {type(token).__name__}, not a str"
            )
        self._secrets.add(token)
        return token

    def _anonymous_note(self) -> str:
        if not self._provider_problem:
            return ""
        return f"; it was read anonymously because {self._provider_problem}"

    def _auth_hint(self, endpoint: _Endpoint) -> str:
        if endpoint.base.endswith((".pkg.dev", "gcr.io")) or endpoint.overridden:
            return (
                "the identity behind the Airflow connection needs roles/artifactregistry.reader on the "
                "repository, and its access token must be valid"
            )
        return "check the registry credentials given to the token provider"

    def _get(self, url: str, headers: dict[str, str], op: _Op, limit: int) -> _Response:
        """GET following redirects (blob storage); Authorization never crosses to another host."""
        origin = urllib.parse.urlsplit(url)[:2]
        for _ in range(_MAX_REDIRECTS + 1):
            resp = self._send(url, headers, op, limit)
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location:
                return resp
            url = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(url)[:2] != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise self._error(UNREACHABLE, f"more than {_MAX_REDIRECTS} redirects from {safe_url(url)}")

    def _send(self, url: str, headers: dict[str, str], op: _Op, limit: int) -> _Response:
        """One exchange, bounded by the operation's deadline even against a trickling server."""
        parts = urllib.parse.urlsplit(url)
        self._check_scheme(url)
        host = parts.hostname or ""
        remaining = op.deadline.remaining()
        if remaining <= 0:
            raise self._timeout(url, op)
        conn = self._connection(parts.scheme, host, parts.port, remaining)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fired = threading.Event()
        watchdog = threading.Timer(remaining, _abort, (conn, fired))
        watchdog.daemon = True
        self.requests += 1
        body = b""
        try:
            watchdog.start()
            conn.request("GET", target, headers={"User-Agent": _USER_AGENT, **headers})
            response = conn.getresponse()
            ok = 200 <= response.status < 300
            body = self._read(response, limit if ok else _SMALL_LIMIT, strict=ok, url=url)
            status, response_headers = response.status, response.headers
        except RegistryError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise self._connection_error(url, exc, op) from None
        finally:
            watchdog.cancel()
            conn.close()
            self.bytes_read += len(body)
        if fired.is_set():  # whatever arrived was cut short
            raise self._timeout(url, op)
        log.debug("GET %s -> %s (%d bytes)", safe_url(url), status, len(body))
        return _Response(status, response_headers, body, url)

    def _read(self, response: http.client.HTTPResponse, limit: int, *, strict: bool, url: str) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = response.read(65536)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > limit:
                if not strict:
                    chunks.append(chunk[: limit - (total - len(chunk))])
                    return b"".join(chunks)
                raise self._error(
                    MANIFEST_INVALID, f"{safe_url(url)} returned more than {limit} bytes; not a manifest"
                )
            chunks.append(chunk)

    def _connection(
        self, scheme: str, host: str, port: int | None, timeout: float
    ) -> http.client.HTTPConnection:
        if scheme == "http":
            return http.client.HTTPConnection(host, port, timeout=timeout)
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        proxy = urllib.request.getproxies().get("https")
        if proxy and not urllib.request.proxy_bypass(host):
            proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            conn = http.client.HTTPSConnection(
                proxy_parts.hostname or "", proxy_parts.port or 3128, timeout=timeout, context=self._ssl
            )
            tunnel_headers = {}
            if proxy_parts.username:
                creds = f"{urllib.parse.unquote(proxy_parts.username)}:"
                creds += urllib.parse.unquote(proxy_parts.password or "")
                encoded = base64.b64encode(creds.encode()).decode("ascii")
                self._secrets.update({encoded, urllib.parse.unquote(proxy_parts.password or "") or encoded})
                tunnel_headers["Proxy-Authorization"] = f"Basic {encoded}"
            conn.set_tunnel(host, port or 443, headers=tunnel_headers)
            return conn
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)

    def _check_status(self, resp: _Response, endpoint: _Endpoint, what: str, *, manifest: bool) -> None:
        if 200 <= resp.status < 300:
            return
        codes, detail = self._error_details(resp.body)
        suffix = f" ({detail})" if detail else ""
        if resp.status == 404 or codes & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN", "NAME_INVALID"}:
            if not manifest:
                raise self._invalid(what, f"the blob is missing from {endpoint.label}{suffix}")
            raise self._error(
                IMAGE_NOT_FOUND,
                f"{what} was not found in {endpoint.label}{suffix}",
                "check the repository path and tag (gcloud artifacts docker images list "
                "LOCATION-docker.pkg.dev/PROJECT/REPOSITORY) and that the image was pushed",
            )
        if resp.status == 403 or codes & {"DENIED", "UNAUTHORIZED"}:
            raise self._error(
                AUTH_FAILED,
                f"{endpoint.label} denied access to {what}{suffix}{self._anonymous_note()}",
                self._auth_hint(endpoint),
            )
        if resp.status == 429 or "TOOMANYREQUESTS" in codes:
            raise self._error(
                UNREACHABLE, f"{endpoint.label} is rate-limiting requests{suffix}", "retry in a minute"
            )
        kind = "a server error" if resp.status >= 500 else "an unexpected status"
        raise self._error(
            UNREACHABLE,
            f"{endpoint.label} answered {kind} (HTTP {resp.status}) for {what}{suffix}",
            "the registry may be down or overloaded; retry later",
        )

    @staticmethod
    def _error_details(body: bytes) -> tuple[set[str], str]:
        try:
            data = json.loads(body)
        except ValueError:
            return set(), ""
        errors = data.get("errors") if isinstance(data, dict) else None
        if not isinstance(errors, list):
            return set(), ""
        codes: set[str] = set()
        parts: list[str] = []
        for err in errors[:5]:
            if isinstance(err, dict):
                code, message = str(err.get("code", "")), str(err.get("message", ""))
                codes.add(code.upper())
                parts.append(f"{code}: {message}" if message else code)
        detail = "; ".join(parts)
        return codes, detail if len(detail) <= 300 else detail[:297] + "..."

    # -- endpoints ---------------------------------------------------------------------

    def _endpoint(self, ref: ImageReference) -> _Endpoint:
        if self._override is not None and (ref.is_artifact_registry or self._override_any_host):
            return self._override
        host = "registry-1.docker.io" if ref.is_docker_hub else ref.host
        scheme = "http" if _is_loopback(urllib.parse.urlsplit(f"//{host}").hostname) else "https"
        return _Endpoint(f"{scheme}://{host}")

    def _parse_base_url(self, raw: str, source: str) -> _Endpoint:
        parts = urllib.parse.urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self._error(
                UNREACHABLE,
                f"{source} must be an http(s) URL such as http://127.0.0.1:5000, got {safe_url(raw)!r}",
                "give the registry's scheme, host and port",
            )
        if parts.username or parts.password:
            raise self._error(
                UNREACHABLE,
                f"{source} must not carry credentials (user:password@ in {safe_url(raw)!r})",
                "remove the 'user:password@' part: the registry is read with Google credentials "
                "(Application Default Credentials: `gcloud auth application-default login`, or the "
                "Airflow connection), which are exchanged for a registry token",
            )
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise self._error(
                UNREACHABLE,
                f"{source} {safe_url(raw)} uses plain http to a host that is not loopback",
                "use https://, or http:// only for a registry on 127.0.0.1, ::1 or localhost",
            )
        path = parts.path.rstrip("/")
        if path.endswith("/v2"):
            path = path[:-3]
        return _Endpoint(urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", "")), source)

    def _check_scheme(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
            return
        raise self._error(
            UNREACHABLE,
            f"refusing to fetch {safe_url(url)}: plain http is allowed only to loopback hosts",
            "the registry (and any redirect it sends) must use https",
        )

    # -- errors ------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def _error(self, code: str, message: str, hint: str = "") -> RegistryError:
        return RegistryError(code, self._scrub(message), self._scrub(hint))

    def _invalid(self, what: str, problem: str, hint: str = "") -> RegistryError:
        return self._error(
            MANIFEST_INVALID,
            f"{what}: {problem}",
            hint or "re-push the image with a current tool (docker buildx, crane, gcloud builds)",
        )

    def _timeout(self, url: str, op: _Op) -> RegistryError:
        if op.deadline.overall_label:
            message = f"{op.deadline.overall_label} ran out while waiting for {safe_url(url)}"
            hint = "the registry answers slowly or not at all; retry later, or allow more time"
        else:
            message = f"no complete answer from {safe_url(url)} within {self.timeout:g}s"
            hint = "check network access to the registry; retry later if it is overloaded"
        return self._error(UNREACHABLE, message, hint)

    def _connection_error(self, url: str, exc: BaseException, op: _Op) -> RegistryError:
        parts = urllib.parse.urlsplit(url)
        where = parts.netloc.rpartition("@")[2]
        if op.deadline.expired() or isinstance(exc, TimeoutError):
            return self._timeout(url, op)
        if isinstance(exc, socket.gaierror):
            problem = f"cannot resolve the registry host {parts.hostname}"
        elif isinstance(exc, ConnectionRefusedError):
            problem = f"connection to {where} refused"
        elif isinstance(exc, ssl.SSLError):
            problem = f"TLS with {where} failed ({getattr(exc, 'reason', None) or type(exc).__name__})"
        else:
            problem = f"connection to {where} failed ({type(exc).__name__})"
        return self._error(
            UNREACHABLE, problem, "check the registry URL, network access, DNS and proxy settings"
        )
