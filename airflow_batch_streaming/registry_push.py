"""Stream blobs out of one registry and into another over the OCI distribution API.

`fix` (see `doctor`) copies images: it reads layer blobs as streams, skips blobs the
target already holds (HEAD), mounts them from another repository of the same registry
(``POST ...?mount=&from=``), and otherwise uploads them streamed, in one PUT for small
blobs and in PATCH chunks for large ones, so memory stays at one read buffer whatever
the image size. Authentication, transport, endpoint overrides and the scrubbing of
secrets from messages are `registry.RegistryClient`'s (its public seam: `base_url`,
`authorization`, `connect`, `raise_for_status`, `invalid`, `connection_failed`, `scopes`);
this module only adds the methods and the push scopes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from airflow_batch_streaming.image import ImageReference
from airflow_batch_streaming.registry import (
    ACCEPT_MANIFESTS,
    RegistryClient,
    media_type_of,
    safe_url,
    strict_digest,
)

__all__ = ["RawManifest", "RegistryWriter"]

log = logging.getLogger(__name__)

_MANIFEST_LIMIT = 4 * 1024 * 1024
_READ_SIZE = 1024 * 1024
DEFAULT_CHUNK_SIZE = 32 * 1024 * 1024


@dataclass(frozen=True)
class RawManifest:
    """A manifest as the registry stores it: the bytes are what the digest covers."""

    body: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        if not isinstance(data, dict):
            raise ValueError("the manifest is not a JSON object")
        return data


class _Counting:
    """A reader that counts (and optionally hashes) what passes through it."""

    def __init__(self, raw: IO[bytes] | Any, limit: int | None = None) -> None:
        self.raw = raw
        self.count = 0
        self.limit = limit
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        if self.limit is not None:
            left = self.limit - self.count
            if left <= 0:
                return b""
            size = left if size < 0 else min(size, left)
        data = self.raw.read(size if size >= 0 else _READ_SIZE)
        self.count += len(data)
        self.sha256.update(data)
        return data


class RegistryWriter(RegistryClient):
    """A `RegistryClient` that also streams blobs and writes manifests.

    ``base_url`` given explicitly points *any* host at that URL (the `fix` command's
    ``--source-registry-url``/``--target-registry-url``); from the environment it applies to
    Artifact Registry hosts only, as for the preflight. ``timeout`` bounds each socket read
    or write, not a whole blob. Counters: ``requests``, ``bytes_read`` (every body read),
    ``bytes_uploaded`` (blob bytes sent).
    """

    def __init__(
        self,
        *,
        token_provider: Any = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        username: str = "oauth2accesstoken",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__(
            token_provider=token_provider,
            base_url=base_url,
            timeout=timeout,
            username=username,
            base_url_for_any_host=True,
        )
        if chunk_size < 1024:
            raise ValueError(f"chunk_size must be at least 1024 bytes, got {chunk_size}")
        self.chunk_size = chunk_size
        self.bytes_uploaded = 0
        self._push_repos: set[str] = set()
        self._mount_sources: dict[str, set[str]] = {}

    def scopes(self, repo: str) -> list[str]:
        actions = "pull,push" if repo in self._push_repos else "pull"
        extra = [f"repository:{src}:pull" for src in sorted(self._mount_sources.get(repo, ()))]
        return [f"repository:{repo}:{actions}", *extra]

    # -- public ----------------------------------------------------------------------------

    def get_manifest(self, ref: ImageReference, reference: str | None = None) -> RawManifest:
        """The manifest bytes for ``reference`` (default: the ref's digest or tag)."""
        reference = reference or ref.reference
        what = f"{ref.host}/{ref.repository}@{reference}" if ":" in reference else f"{ref}"
        status, headers, body = self._call(
            "GET", ref, f"manifests/{reference}", headers={"Accept": ACCEPT_MANIFESTS}, limit=_MANIFEST_LIMIT
        )
        self.raise_for_status(ref, status, headers, body, what, manifest=True)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if strict_digest(reference) and reference.startswith("sha256:") and reference != digest:
            raise self.invalid(what, f"asked for {reference} but the manifest hashes to {digest}")
        media_type = media_type_of(headers.get("Content-Type"))
        try:
            declared = json.loads(body).get("mediaType")
        except (ValueError, AttributeError):
            raise self.invalid(what, "the manifest is not a JSON object") from None
        if isinstance(declared, str) and declared:
            media_type = declared
        return RawManifest(body, media_type, digest)

    def has_manifest(self, ref: ImageReference, digest: str) -> bool:
        status, headers, body = self._call(
            "HEAD", ref, f"manifests/{digest}", headers={"Accept": ACCEPT_MANIFESTS}
        )
        if status == 404:
            return False
        self.raise_for_status(ref, status, headers, body, f"{ref.repository}@{digest}", manifest=True)
        return True

    def has_blob(self, ref: ImageReference, digest: str) -> bool:
        self._push_repos.add(ref.repository)
        status, headers, body = self._call("HEAD", ref, f"blobs/{digest}")
        if status == 404:
            return False
        self.raise_for_status(ref, status, headers, body, f"blob {digest}", manifest=False)
        return True

    @contextmanager
    def open_blob(self, ref: ImageReference, digest: str) -> Iterator[IO[bytes]]:
        """The blob as a stream; reading it to the end checks its digest."""
        conn, response = self._open("GET", ref, f"blobs/{digest}")
        try:
            if response.status != 200:
                body = response.read(65536)
                self.bytes_read += len(body)
                self.raise_for_status(
                    ref, response.status, response.headers, body, f"blob {digest}", manifest=False
                )
            yield _Verified(response, digest, self, f"{ref.host}/{ref.repository}@{digest}")  # type: ignore[misc]
        finally:
            conn.close()

    def mount_blob(self, ref: ImageReference, digest: str, from_repository: str) -> bool:
        """Cross-repository mount: no blob bytes move. False when the registry declined."""
        self._push_repos.add(ref.repository)
        self._mount_sources.setdefault(ref.repository, set()).add(from_repository)
        query = urllib.parse.urlencode({"mount": digest, "from": from_repository})
        status, headers, body = self._call("POST", ref, f"blobs/uploads/?{query}", body=b"")
        if status == 201:
            return True
        if status == 202:  # declined; the session it opened is abandoned (the registry purges it)
            location = headers.get("Location")
            if location:
                self._call("DELETE", ref, self._absolute(ref, location))
            return False
        self.raise_for_status(
            ref, status, headers, body, f"mounting {digest} from {from_repository}", manifest=False
        )
        return False

    def upload_blob(self, ref: ImageReference, digest: str, size: int, stream: IO[bytes] | Any) -> None:
        """Upload ``size`` bytes read from ``stream``: one PUT up to ``chunk_size``, else PATCH chunks."""
        self._push_repos.add(ref.repository)
        status, headers, body = self._call("POST", ref, "blobs/uploads/", body=b"")
        if status != 202:
            self.raise_for_status(
                ref, status, headers, body, f"starting the upload of {digest}", manifest=False
            )
            raise self.invalid(f"blob {digest}", f"the registry answered HTTP {status} to an upload request")
        location = self._location(ref, headers)
        offset = 0
        if size > self.chunk_size:
            while offset < size:
                n = min(self.chunk_size, size - offset)
                chunk = _Counting(stream, n)
                status, headers, body = self._call(
                    "PATCH",
                    ref,
                    location,
                    body=chunk,
                    length=n,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + n - 1}",
                    },
                )
                self.bytes_uploaded += chunk.count
                if status != 202 or chunk.count != n:
                    self.raise_for_status(ref, status, headers, body, f"uploading {digest}", manifest=False)
                    raise self.invalid(
                        f"blob {digest}", f"the source ended after {offset + chunk.count} bytes"
                    )
                offset += n
                location = self._location(ref, headers)
        rest = _Counting(stream, size - offset)
        status, headers, body = self._call(
            "PUT",
            ref,
            location + ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest}),
            body=rest,
            length=size - offset,
            headers={"Content-Type": "application/octet-stream"},
        )
        self.bytes_uploaded += rest.count
        if status != 201:
            self.raise_for_status(ref, status, headers, body, f"uploading {digest}", manifest=False)
            raise self.invalid(f"blob {digest}", f"the registry answered HTTP {status} to the final PUT")

    def put_manifest(self, ref: ImageReference, reference: str, manifest: bytes, media_type: str) -> str:
        """PUT a manifest by tag or digest; returns its digest (checked against the registry's)."""
        self._push_repos.add(ref.repository)
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        status, headers, body = self._call(
            "PUT",
            ref,
            f"manifests/{reference}",
            body=manifest,
            headers={"Content-Type": media_type},
        )
        if status not in (200, 201):
            self.raise_for_status(
                ref, status, headers, body, f"writing {ref.repository}:{reference}", manifest=False
            )
            raise self.invalid(f"{ref.repository}:{reference}", f"the registry answered HTTP {status}")
        served = headers.get("Docker-Content-Digest")
        if served and served.strip() != digest:
            raise self.invalid(f"{ref.repository}:{reference}", f"stored as {served}, not {digest}")
        return digest

    # -- HTTP ------------------------------------------------------------------------------

    def _absolute(self, ref: ImageReference, location: str) -> str:
        return urllib.parse.urljoin(self.base_url(ref) + "/", location)

    def _location(self, ref: ImageReference, headers: http.client.HTTPMessage) -> str:
        location = headers.get("Location")
        if not location:
            raise self.invalid(
                f"{ref.host}/{ref.repository}", "the registry opened an upload without a Location"
            )
        return self._absolute(ref, location)

    def _url(self, ref: ImageReference, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url(ref)}/v2/{ref.repository}/{path}"

    def _open(
        self,
        method: str,
        ref: ImageReference,
        path: str,
        *,
        body: bytes | _Counting | None = None,
        length: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """One authenticated exchange whose response is left open (blob streams).

        Answers one auth challenge like `RegistryClient` does; a streamed body cannot be
        sent twice, so callers authenticate first with a body-less request (POST, HEAD).
        GET follows redirects (blob storage), never carrying Authorization to another host.
        """
        url = self._url(ref, path)
        origin = urllib.parse.urlsplit(url)[:2]
        fresh = False
        while True:
            send = dict(headers or {})
            auth = self.authorization(ref) if urllib.parse.urlsplit(url)[:2] == origin else None
            if auth:
                send["Authorization"] = auth
            conn, response = self._exchange(method, url, send, body, length)
            if response.status == 401 and not fresh and (body is None or isinstance(body, bytes)):
                self.bytes_read += len(response.read(65536))
                conn.close()
                self.authorization(ref, response.headers)
                fresh = True
                continue
            if response.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                location = response.headers.get("Location")
                conn.close()
                if location:
                    url, fresh = urllib.parse.urljoin(url, location), True
                    continue
            return conn, response

    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | _Counting | None,
        length: int | None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self.connect(url)
        parts = urllib.parse.urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        send = {"User-Agent": "airflow-batch-streaming", **headers}
        if body is not None:
            send["Content-Length"] = str(len(body) if isinstance(body, bytes) else (length or 0))
        self.requests += 1
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in send.items():
                conn.putheader(name, value)
            conn.endheaders()
            if isinstance(body, bytes):
                conn.send(body)
            elif body is not None:
                while True:
                    data = body.read(_READ_SIZE)
                    if not data:
                        break
                    conn.send(data)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self.connection_failed(url, exc) from None
        log.debug("%s %s -> %s", method, safe_url(url), response.status)
        return conn, response

    def _call(
        self,
        method: str,
        ref: ImageReference,
        path: str,
        *,
        body: bytes | _Counting | None = None,
        length: int | None = None,
        headers: dict[str, str] | None = None,
        limit: int = 65536,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn, response = self._open(method, ref, path, body=body, length=length, headers=headers)
        try:
            data = b"" if method == "HEAD" else response.read(limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise self.connection_failed(self._url(ref, path), exc) from None
        finally:
            conn.close()
        self.bytes_read += len(data)
        if len(data) > limit:
            raise self.invalid(safe_url(self._url(ref, path)), f"returned more than {limit} bytes")
        return response.status, response.headers, data


class _Verified:
    """A blob stream that counts into the client and checks the digest at the end."""

    def __init__(
        self, response: http.client.HTTPResponse, digest: str, client: RegistryWriter, what: str
    ) -> None:
        self._response = response
        self._digest = digest
        self._client = client
        self._what = what
        self._sha = hashlib.sha256() if digest.startswith("sha256:") else None
        self._done = False

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._response.read(size if size >= 0 else _READ_SIZE)
        except (OSError, http.client.HTTPException) as exc:
            raise self._client.connection_failed(self._what, exc) from None
        self._client.bytes_read += len(data)
        if self._sha is not None:
            self._sha.update(data)
            if not data and not self._done:
                self._done = True
                if "sha256:" + self._sha.hexdigest() != self._digest:
                    raise self._client.invalid(self._what, "the blob does not match its digest")
        return data


DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io", "docker.io")


def docker_config_auth(host: str, path: str | None = None) -> tuple[str, str] | None:
    """(username, password) for ``host`` from a Docker config file (``auths``), or None.

    ``path`` defaults to ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``.
    Credential helpers (``credHelpers``, ``credsStore``) are not run: for Artifact Registry
    the Google credentials are used instead.
    """
    import base64
    import os
    from pathlib import Path

    file = (
        Path(path)
        if path
        else Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    keys = DOCKER_HUB_KEYS if host in DOCKER_HUB_KEYS else (host, f"https://{host}", f"http://{host}")
    for key in keys:
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            if sep:
                return user, password
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return entry["username"], entry["password"]
    return None
