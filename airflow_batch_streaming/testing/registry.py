"""Real and canned container registries, and an in-memory image builder, for tests and the demo.

* :class:`LocalRegistry` runs the CNCF distribution registry (Debian package
  ``docker-registry``) on 127.0.0.1, optionally behind htpasswd Basic auth.
* :func:`build_image` / :func:`push_image` make real images (gzipped tar layers,
  a config whose ``rootfs.diff_ids`` are right) and push them over the OCI
  distribution API: monolithic blob uploads (POST + PUT) and a manifest PUT.
* :class:`StaticRegistry` serves canned responses for what a real registry will
  not store or do: schema 1, broken JSON, 5xx, hangs, 401 loops, a Bearer realm.

Deterministic: the same arguments give the same digests.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from airflow_batch_streaming.oci import (
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
)

DEFAULT_USERNAME = "oauth2accesstoken"

# The empty-layer constants the preflight looks for (see the facts, section 3).
GZIPPED_EMPTY_TAR = bytes.fromhex("1f8b080000096e8800ff621805a360148c5800080000ffff2eafb5ef00040000")
GZIPPED_EMPTY_TAR_DIGEST = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
EMPTY_TAR = bytes(1024)
EMPTY_TAR_DIGEST = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
OCI_EMPTY_JSON = b"{}"
OCI_EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EMPTY_BLOB_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# Each kind of empty layer an image can carry (always next to one real layer):
EMPTY_LAYER_KINDS: tuple[str, ...] = (
    "gzip-empty-tar",  # the 32-byte gzipped empty tar, digest a3ed95..., diff_id 5f70bf...
    "zero-size",  # a 0-byte blob, digest e3b0c4..., size 0
    "oci-empty",  # the OCI empty descriptor: application/vnd.oci.empty.v1+json, "{}", digest 44136f...
    "empty-tar-diff-id",  # another gzip of the empty tar: unknown digest, only diff_id 5f70bf... tells
    "uncompressed-empty-tar",  # the 1024-byte empty tar stored uncompressed: digest = diff_id = 5f70bf...
)
# What the real docker-registry (distribution 2.8.2) will not store, and why; tests serve
# these from StaticRegistry. It stores every kind in EMPTY_LAYER_KINDS, in Docker and OCI
# flavours, and does not check declared layer sizes against the blobs.
REGISTRY_REFUSES: dict[str, str] = {
    "schema1": "PUT of a schema 1 manifest (signed or not) -> 400 MANIFEST_INVALID: schema 1 is disabled",
    "missing-blob": "PUT of a manifest whose blobs were not uploaded -> 400 MANIFEST_BLOB_UNKNOWN",
}


class RegistryUnavailable(RuntimeError):
    """The docker-registry binary is missing or did not start."""


class PushError(RuntimeError):
    """The registry refused a push; ``status`` and ``body`` say why."""

    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(f"{message}: HTTP {status} {body[:500]}")
        self.status = status
        self.body = body


# -- layers ------------------------------------------------------------------------------


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_layer(files: Mapping[str, bytes], *, compresslevel: int = 6) -> bytes:
    """A gzipped tar of ``files`` (path -> content), byte-for-byte reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), compresslevel=compresslevel, mtime=0)


def random_layer(size_bytes: int, seed: int = 0) -> bytes:
    """A layer of ``size_bytes`` incompressible bytes: the blob is as large as the data."""
    data = random.Random(seed).randbytes(size_bytes)
    return tar_layer({f"data/random-{seed}-{size_bytes}.bin": data}, compresslevel=1)


def diff_id(layer: bytes) -> str:
    """The digest of the uncompressed layer, as in the config's ``rootfs.diff_ids``."""
    if layer[:2] == b"\x1f\x8b":
        return sha256_digest(gzip.decompress(layer))
    return sha256_digest(layer)


@dataclass(frozen=True)
class Layer:
    """A layer with every field overridable, to build images a normal tool would not."""

    data: bytes
    media_type: str | None = None  # None: the gzipped layer type of the manifest's flavour
    diff_id: str | None = None  # None: computed from data
    size: int | None = None  # None: len(data); set it to make the manifest lie
    urls: tuple[str, ...] = ()  # a foreign layer's download URLs (its blob need not be pushed)


@dataclass(frozen=True)
class BuiltImage:
    """A manifest (image or index) and every blob it needs, ready to push or serve."""

    manifest: bytes
    media_type: str
    digest: str
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    children: tuple[BuiltImage, ...] = ()

    @property
    def size(self) -> int:
        return len(self.manifest)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=3, sort_keys=False).encode()


def _split_platform(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    spec = {"os": parts[0], "architecture": parts[1]}
    if len(parts) > 2:
        spec["variant"] = parts[2]
    return spec


def build_image(
    layers: Sequence[bytes | Layer],
    *,
    oci: bool = False,
    config_extra: Mapping[str, Any] | None = None,
    platform: str = "linux/amd64",
) -> BuiltImage:
    """An image manifest (Docker schema 2, or OCI) with its config and layer blobs."""
    specs = [layer if isinstance(layer, Layer) else Layer(layer) for layer in layers]
    default_type = MEDIA_TYPE_OCI_LAYER if oci else MEDIA_TYPE_DOCKER_LAYER
    config: dict[str, Any] = {
        "created": "1970-01-01T00:00:00Z",
        **_split_platform(platform),
        "config": {
            "Cmd": ["/bin/sh"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [s.diff_id or diff_id(s.data) for s in specs]},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(specs))
        ],
    }
    config.update(config_extra or {})
    config_bytes = _dumps(config)
    blobs: dict[str, bytes] = {sha256_digest(config_bytes): config_bytes}
    descriptors = []
    for spec in specs:
        digest = sha256_digest(spec.data)
        blobs[digest] = spec.data
        size = len(spec.data) if spec.size is None else spec.size
        descriptor: dict[str, Any] = {
            "mediaType": spec.media_type or default_type,
            "size": size,
            "digest": digest,
        }
        if spec.urls:
            descriptor["urls"] = list(spec.urls)
        descriptors.append(descriptor)
    media_type = MEDIA_TYPE_OCI_MANIFEST if oci else MEDIA_TYPE_DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": MEDIA_TYPE_OCI_CONFIG if oci else MEDIA_TYPE_DOCKER_CONFIG,
            "size": len(config_bytes),
            "digest": sha256_digest(config_bytes),
        },
        "layers": descriptors,
    }
    body = _dumps(manifest)
    return BuiltImage(body, media_type, sha256_digest(body), blobs)


def build_artifact(
    config_media_type: str,
    layers: Sequence[tuple[str, bytes]],
    *,
    config: bytes = b"{}",
    artifact_type: str | None = None,
    subject: BuiltImage | None = None,
) -> BuiltImage:
    """An OCI manifest that is not a container image: a Helm chart, SBOM, signature, WASM module."""
    blobs: dict[str, bytes] = {sha256_digest(config): config}
    descriptors = []
    for media_type, data in layers:
        blobs[sha256_digest(data)] = data
        descriptors.append({"mediaType": media_type, "size": len(data), "digest": sha256_digest(data)})
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST}
    if artifact_type:
        manifest["artifactType"] = artifact_type
    manifest["config"] = {
        "mediaType": config_media_type,
        "size": len(config),
        "digest": sha256_digest(config),
    }
    manifest["layers"] = descriptors
    if subject is not None:
        manifest["subject"] = subject.descriptor()
    body = _dumps(manifest)
    return BuiltImage(body, MEDIA_TYPE_OCI_MANIFEST, sha256_digest(body), blobs)


def build_index(children: Mapping[str, BuiltImage], *, oci: bool = True) -> BuiltImage:
    """A multi-platform index (OCI) or manifest list (Docker): ``{platform: image}``."""
    media_type = MEDIA_TYPE_OCI_INDEX if oci else MEDIA_TYPE_DOCKER_LIST
    entries = [{**child.descriptor(), "platform": _split_platform(p)} for p, child in children.items()]
    body = _dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries})
    return BuiltImage(body, media_type, sha256_digest(body), {}, tuple(children.values()))


def duplicate_layer_image(*, oci: bool = False) -> BuiltImage:
    """Layers A, B, A: the same digest twice in ``layers`` and the same diff_id twice."""
    a = tar_layer({"etc/a.txt": b"duplicate layer A\n"})
    b = tar_layer({"etc/b.txt": b"layer B\n"})
    return build_image([a, b, a], oci=oci)


def empty_layer_image(kind: str, *, oci: bool = False) -> BuiltImage:
    """One real layer and one empty layer of ``kind`` (one of EMPTY_LAYER_KINDS)."""
    real = tar_layer({"app/hello.txt": f"hello from an image with a {kind} layer\n".encode()})
    if kind == "gzip-empty-tar":
        empty = Layer(GZIPPED_EMPTY_TAR)
    elif kind == "zero-size":
        empty = Layer(b"", diff_id=EMPTY_BLOB_DIGEST)
    elif kind == "oci-empty":
        empty = Layer(OCI_EMPTY_JSON, media_type=MEDIA_TYPE_OCI_EMPTY, diff_id=OCI_EMPTY_DIGEST)
    elif kind == "empty-tar-diff-id":
        empty = Layer(gzip.compress(EMPTY_TAR, compresslevel=9, mtime=1))
    elif kind == "uncompressed-empty-tar":
        empty = Layer(EMPTY_TAR, media_type=MEDIA_TYPE_OCI_LAYER_TAR)
    else:
        raise ValueError(f"unknown empty layer kind {kind!r}; one of {', '.join(EMPTY_LAYER_KINDS)}")
    return build_image([real, empty], oci=oci)


def schema1_manifest(name: str, tag: str, layers: Sequence[bytes], *, signed: bool = True) -> BuiltImage:
    """A Docker schema 1 manifest, to serve from StaticRegistry (real registries refuse it).

    The signature is a placeholder: nothing here verifies it.
    """
    manifest: dict[str, Any] = {
        "schemaVersion": 1,
        "name": name,
        "tag": tag,
        "architecture": "amd64",
        "fsLayers": [{"blobSum": sha256_digest(layer)} for layer in reversed(layers)],
        "history": [
            {"v1Compatibility": json.dumps({"id": hashlib.sha256(layer).hexdigest(), "os": "linux"})}
            for layer in reversed(layers)
        ],
    }
    if signed:
        manifest["signatures"] = [
            {
                "header": {"jwk": {"crv": "P-256", "kty": "EC", "x": "AA", "y": "AA"}, "alg": "ES256"},
                "signature": "AAAA",
                "protected": "eyJmb3JtYXRMZW5ndGgiOjEsImZvcm1hdFRhaWwiOiJmUSJ9",
            }
        ]
    body = _dumps(manifest)
    blobs = {sha256_digest(layer): layer for layer in layers}
    return BuiltImage(
        body, MEDIA_TYPE_SCHEMA1_SIGNED if signed else MEDIA_TYPE_SCHEMA1, sha256_digest(body), blobs
    )


# -- pushing -----------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _auth_header(auth: tuple[str, str] | None) -> dict[str, str]:
    if auth is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()}


def _call(
    method: str, url: str, *, data: bytes | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(request, timeout=60) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def push_blob(url: str, repository: str, data: bytes, *, auth: tuple[str, str] | None = None) -> str:
    """Monolithic upload: POST opens an upload session, PUT ?digest= sends the bytes and closes it."""
    digest = sha256_digest(data)
    headers = _auth_header(auth)
    status, resp_headers, body = _call(
        "POST", f"{url}/v2/{repository}/blobs/uploads/", data=b"", headers=headers
    )
    if status != 202:
        raise PushError(
            f"starting the upload of {digest} to {repository}", status, body.decode("utf-8", "replace")
        )
    location = urllib.parse.urljoin(f"{url}/", resp_headers["Location"])
    location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
    status, _, body = _call(
        "PUT", location, data=data, headers={**headers, "Content-Type": "application/octet-stream"}
    )
    if status != 201:
        raise PushError(f"uploading {digest} to {repository}", status, body.decode("utf-8", "replace"))
    return digest


def push_manifest(
    url: str,
    repository: str,
    reference: str,
    manifest: bytes,
    media_type: str,
    *,
    auth: tuple[str, str] | None = None,
) -> str:
    headers = {**_auth_header(auth), "Content-Type": media_type}
    status, resp_headers, body = _call(
        "PUT", f"{url}/v2/{repository}/manifests/{reference}", data=manifest, headers=headers
    )
    if status != 201:
        raise PushError(f"putting manifest {repository}:{reference}", status, body.decode("utf-8", "replace"))
    digest = sha256_digest(manifest)
    served = resp_headers.get("Docker-Content-Digest")
    if served and served != digest:
        raise PushError(f"the registry stored {repository}:{reference} as {served}, not {digest}", status, "")
    return digest


def push_built(
    url: str, repository: str, tag: str, image: BuiltImage, *, auth: tuple[str, str] | None = None
) -> str:
    """Push an image (blobs, then manifest) or an index (children first); returns the digest."""
    for child in image.children:
        push_built(url, repository, child.digest, child, auth=auth)
    for data in image.blobs.values():
        push_blob(url, repository, data, auth=auth)
    return push_manifest(url, repository, tag, image.manifest, image.media_type, auth=auth)


def push_image(
    url: str,
    repository: str,
    tag: str,
    layers: Sequence[bytes | Layer],
    *,
    oci: bool = False,
    config_extra: Mapping[str, Any] | None = None,
    auth: tuple[str, str] | None = None,
    platform: str = "linux/amd64",
) -> str:
    """Build and push an image; returns its manifest digest."""
    image = build_image(layers, oci=oci, config_extra=config_extra, platform=platform)
    return push_built(url, repository, tag, image, auth=auth)


def push_index(
    url: str,
    repository: str,
    tag: str,
    manifests: Mapping[str, str],
    *,
    oci: bool = True,
    auth: tuple[str, str] | None = None,
) -> str:
    """Push an index over manifests already in ``repository``: ``{platform: digest}``."""
    media_type = MEDIA_TYPE_OCI_INDEX if oci else MEDIA_TYPE_DOCKER_LIST
    entries = []
    for platform, digest in manifests.items():
        status, headers, body = _call(
            "GET",
            f"{url}/v2/{repository}/manifests/{digest}",
            headers={
                **_auth_header(auth),
                "Accept": f"{MEDIA_TYPE_OCI_MANIFEST}, {MEDIA_TYPE_DOCKER_MANIFEST}",
            },
        )
        if status != 200:
            raise PushError(
                f"reading {repository}@{digest} for the index", status, body.decode("utf-8", "replace")
            )
        entries.append(
            {
                "mediaType": headers["Content-Type"],
                "digest": digest,
                "size": len(body),
                "platform": _split_platform(platform),
            }
        )
    body = _dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries})
    return push_manifest(url, repository, tag, body, media_type, auth=auth)


def push_duplicate_layer_image(
    url: str, repository: str, tag: str, *, oci: bool = False, auth: tuple[str, str] | None = None
) -> str:
    return push_built(url, repository, tag, duplicate_layer_image(oci=oci), auth=auth)


def push_empty_layer_image(
    url: str, repository: str, tag: str, kind: str, *, oci: bool = False, auth: tuple[str, str] | None = None
) -> str:
    """Push an image with an empty layer of ``kind``; PushError if the registry refuses it."""
    return push_built(url, repository, tag, empty_layer_image(kind, oci=oci), auth=auth)


# -- the real registry -------------------------------------------------------------------


def htpasswd_line(username: str, password: str) -> str:
    """A bcrypt htpasswd entry, the only kind distribution accepts.

    Uses the ``bcrypt`` package when installed, else the C library through the
    stdlib ``crypt`` module (Python < 3.13). Cost 4 keeps every request fast.
    """
    try:
        import bcrypt

        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                import crypt
            except ImportError:
                raise RegistryUnavailable(
                    "cannot make a bcrypt htpasswd entry: install the 'bcrypt' package"
                ) from None
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)) or ""
        if not hashed.startswith("$2"):
            raise RegistryUnavailable("this C library has no bcrypt; install the 'bcrypt' package") from None
    return f"{username}:{hashed}\n"


def _find_binary(binary: str | None) -> str:
    candidate = binary or os.environ.get("DOCKER_REGISTRY_BIN") or shutil.which("docker-registry")
    candidate = candidate or "/usr/bin/docker-registry"
    if not os.access(candidate, os.X_OK):
        raise RegistryUnavailable(
            f"{candidate} not found: install the Debian package docker-registry (make registry)"
        )
    return candidate


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class LocalRegistry:
    """``docker-registry serve`` on 127.0.0.1 at a free port, with temporary storage.

    With ``password`` set, Basic auth via htpasswd for ``username`` (default
    ``oauth2accesstoken``, as Artifact Registry expects with an access token).
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        username: str = DEFAULT_USERNAME,
        binary: str | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.password = password
        self.username = username
        self.startup_timeout = startup_timeout
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._port: int | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=200)
        self._listening = threading.Event()
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LocalRegistry:
        if self._proc is not None:
            return self
        binary = _find_binary(self._binary)
        self._port = None
        self._listening.clear()
        self._dir = tempfile.mkdtemp(prefix="abs-registry-")
        config_path = Path(self._dir, "config.yml")
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(Path(self._dir, "data"))},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": "127.0.0.1:0", "secret": secrets.token_hex(16)},
        }
        if self.password is not None:
            htpasswd = Path(self._dir, "htpasswd")
            htpasswd.write_text(htpasswd_line(self.username, self.password))
            config["auth"] = {"htpasswd": {"realm": "airflow-batch-streaming", "path": str(htpasswd)}}
        config.update(self._extra_config())
        config_path.write_text(json.dumps(config))  # JSON is YAML
        self._proc = subprocess.Popen(
            [binary, "serve", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._finalizer = weakref.finalize(self, _cleanup, self._proc, self._dir)
        threading.Thread(target=self._drain, args=(self._proc,), daemon=True).start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _extra_config(self) -> dict[str, Any]:
        """More registry configuration (a subclass adds a token realm: testing/token_registry.py)."""
        return {}

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self._log.append(line)
            if self._port is None:
                match = re.search(r"listening on .*:(\d+)\"?", line)
                if match:
                    self._port = int(match.group(1))
                    self._listening.set()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self._proc is not None
        while not self._listening.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RegistryUnavailable(f"docker-registry did not start:\n{self.logs}")
        while time.monotonic() < deadline:
            if _probe(f"{self.url}/v2/") in (200, 401):
                return
            time.sleep(0.05)
        raise RegistryUnavailable(f"docker-registry did not answer on {self.url}/v2/:\n{self.logs}")

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._proc = None
        self._dir = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests use ------------------------------------------------------------------

    @property
    def host(self) -> str:
        if self._port is None or self._proc is None:
            raise RegistryUnavailable("the registry is not running (use it as a context manager)")
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def auth(self) -> tuple[str, str] | None:
        return None if self.password is None else (self.username, self.password)

    @property
    def logs(self) -> str:
        return "\n".join(self._log)

    def token_provider(self) -> str | None:
        """Usable as RegistryClient(token_provider=registry.token_provider)."""
        return self.password

    def push_image(self, repository: str, tag: str, layers: Sequence[bytes | Layer], **kwargs: Any) -> str:
        return push_image(self.url, repository, tag, layers, auth=self.auth, **kwargs)

    def push_built(self, repository: str, tag: str, image: BuiltImage) -> str:
        return push_built(self.url, repository, tag, image, auth=self.auth)

    def push_index(self, repository: str, tag: str, manifests: Mapping[str, str], *, oci: bool = True) -> str:
        return push_index(self.url, repository, tag, manifests, oci=oci, auth=self.auth)


def _cleanup(proc: subprocess.Popen[bytes], directory: str) -> None:
    _stop_process(proc)
    if proc.stdout is not None:
        proc.stdout.close()
    shutil.rmtree(directory, ignore_errors=True)


def _probe(url: str) -> int:
    try:
        return _call("GET", url)[0]
    except OSError:
        return 0


# -- canned responses --------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]


@dataclass(frozen=True)
class CannedResponse:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: bool = False  # read the request, then never answer
    trickle: bool = False  # answer one header byte at a time, forever


Route = CannedResponse | Callable[[RecordedRequest], CannedResponse]


class StaticRegistry:
    """A stdlib HTTP server on 127.0.0.1 serving canned registry answers.

    Routes are exact paths (query ignored). Auth, when enabled, guards every
    ``/v2/`` path: :meth:`require_bearer` also serves the token realm at ``/token``,
    so the Bearer exchange is a real HTTP round trip.
    """

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Route] = {}
        self._closing = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._auth: Callable[[RecordedRequest], CannedResponse | None] | None = None
        self.requests: list[RecordedRequest] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> StaticRegistry:
        handler = _make_handler(self)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StaticRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("StaticRegistry is not running")
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- routes --------------------------------------------------------------------------

    def route(self, path: str, response: Route, method: str = "GET") -> None:
        self._routes[(method.upper(), path)] = response

    def reset(self) -> None:
        with self._lock:
            self._routes.clear()
            self.requests.clear()
            self._auth = None

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def serve_manifest(
        self,
        repository: str,
        reference: str,
        body: bytes,
        content_type: str | None,
        *,
        digest: str | None = "auto",
    ) -> None:
        """``digest="auto"`` sends the right Docker-Content-Digest, None none, else that value."""
        headers = {} if content_type is None else {"Content-Type": content_type}
        if digest == "auto":
            digest = sha256_digest(body)
        if digest is not None:
            headers["Docker-Content-Digest"] = digest
        self.route(f"/v2/{repository}/manifests/{reference}", CannedResponse(200, body, headers))

    def serve_blob(self, repository: str, digest: str, body: bytes) -> None:
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
        self.route(f"/v2/{repository}/blobs/{digest}", CannedResponse(200, body, headers))

    def serve_built(self, repository: str, tag: str, image: BuiltImage) -> str:
        """Serve an image or index by tag and digest, with its blobs and children."""
        for child in image.children:
            self.serve_built(repository, child.digest, child)
        for digest, data in image.blobs.items():
            self.serve_blob(repository, digest, data)
        for reference in (tag, image.digest):
            self.serve_manifest(repository, reference, image.manifest, image.media_type)
        return image.digest

    def serve_error(self, path: str, status: int, code: str = "", message: str = "") -> None:
        errors = {"errors": [{"code": code or "UNKNOWN", "message": message or f"HTTP {status}"}]}
        self.route(
            path, CannedResponse(status, json.dumps(errors).encode(), {"Content-Type": "application/json"})
        )

    def serve_hang(self, path: str) -> None:
        self.route(path, CannedResponse(hang=True))

    def serve_trickle(self, path: str) -> None:
        self.route(path, CannedResponse(trickle=True))

    def serve_redirect(self, path: str, location: str, status: int = 307) -> None:
        self.route(path, CannedResponse(status, b"", {"Location": location}))

    # -- auth ----------------------------------------------------------------------------

    def require_basic(self, *, password: str, username: str = DEFAULT_USERNAME) -> None:
        expected = _auth_header((username, password))["Authorization"]

        def check(request: RecordedRequest) -> CannedResponse | None:
            if request.headers.get("authorization") == expected:
                return None
            return _unauthorized('Basic realm="static-registry"')

        self._auth = check

    def require_bearer(
        self,
        *,
        token: str,
        password: str | None,
        username: str = DEFAULT_USERNAME,
        service: str = "static-registry",
        token_field: str = "token",
        accept_token: bool = True,
    ) -> None:
        """Distribution's token flow; ``password=None`` issues tokens to anyone.

        ``accept_token=False`` makes a 401 loop: tokens are issued but never accepted.
        """
        basic = None if password is None else _auth_header((username, password))["Authorization"]

        def issue(request: RecordedRequest) -> CannedResponse:
            if basic is not None and request.headers.get("authorization") != basic:
                return _unauthorized('Basic realm="static-registry-token"')
            body = json.dumps({token_field: token, "expires_in": 300}).encode()
            return CannedResponse(200, body, {"Content-Type": "application/json"})

        self.route("/token", issue)

        def check(request: RecordedRequest) -> CannedResponse | None:
            if accept_token and request.headers.get("authorization") == f"Bearer {token}":
                return None
            scope = "repository:" + request.path.split("/")[2] if request.path.count("/") > 2 else ""
            return _unauthorized(f'Bearer realm="{self.url}/token",service="{service}",scope="{scope}:pull"')

        self._auth = check

    # -- serving -------------------------------------------------------------------------

    def _respond(self, request: RecordedRequest) -> CannedResponse:
        with self._lock:
            self.requests.append(request)
            auth = self._auth
            route = self._routes.get((request.method, request.path))
            if route is None and request.method == "HEAD":
                route = self._routes.get(("GET", request.path))
        if auth is not None and request.path.startswith("/v2/"):
            denied = auth(request)
            if denied is not None:
                return denied
        if route is None:
            if request.path in ("/v2/", "/v2"):
                return CannedResponse(200, b"{}", {"Content-Type": "application/json"})
            errors = {
                "errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]
            }
            return CannedResponse(404, json.dumps(errors).encode(), {"Content-Type": "application/json"})
        return route(request) if callable(route) else route


def _unauthorized(challenge: str) -> CannedResponse:
    body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}).encode()
    return CannedResponse(401, body, {"Content-Type": "application/json", "WWW-Authenticate": challenge})


def _make_handler(registry: StaticRegistry) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _handle(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            request = RecordedRequest(
                self.command,
                parts.path,
                urllib.parse.parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
            )
            response = registry._respond(request)
            if response.hang:
                registry._closing.wait()
                self.close_connection = True
                return
            if response.trickle:
                self._trickle()
                return
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        def _trickle(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                self.wfile.flush()
                while not registry._closing.wait(0.2):
                    self.wfile.write(b"a")
                    self.wfile.flush()

        do_GET = do_HEAD = do_POST = do_PUT = _handle

    return Handler


@contextlib.contextmanager
def local_registry(**kwargs: Any) -> Iterator[LocalRegistry]:
    """``with local_registry(password=...) as reg:`` — the same as LocalRegistry(...)."""
    with LocalRegistry(**kwargs) as registry:
        yield registry
