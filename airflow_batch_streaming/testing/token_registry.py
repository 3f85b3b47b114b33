"""A real `docker-registry` behind a Bearer token realm, and a pusher that speaks it.

distribution verifies each token's RS256 signature against a certificate bundle, its
issuer, audience and expiry, and the ``access`` claim against every request (a
cross-repository mount also needs ``pull`` on the source repository). The realm here is a
small stdlib HTTP server that checks Basic credentials (``oauth2accesstoken`` and the
secret, as Artifact Registry's token exchange does) and grants what is asked; it records
the scopes asked for. Also: tar layers of any entry kind (whiteouts, links, modes), and
`apply_layers`, the test oracle that applies a layer stack to a path -> state map.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import http.server
import io
import json
import secrets
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_batch_streaming.testing.registry import (
    DEFAULT_USERNAME,
    BuiltImage,
    LocalRegistry,
    PushError,
    _call,
)

__all__ = ["TarEntry", "TokenRegistry", "apply_layers", "layer_of", "push_built_bearer"]

ISSUER = "airflow-batch-streaming-test-issuer"
SERVICE = "airflow-batch-streaming-test-registry"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class _TokenServer:
    def __init__(self, username: str, password: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self._der = self.cert.public_bytes(serialization.Encoding.DER)
        self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.scopes: list[list[str]] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def issue(self, scopes: Sequence[str]) -> str:
        """A signed token granting every action of ``scopes`` (``repository:NAME:ACTIONS``)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._der).decode()]}
        claims = {
            "iss": ISSUER,
            "sub": DEFAULT_USERNAME,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if self.headers.get("Authorization") != server.expected:
                    body = b'{"errors":[{"code":"UNAUTHORIZED"}]}'
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="token"')
                else:
                    scopes = query.get("scope", [])
                    with server._lock:
                        server.scopes.append(scopes)
                    body = json.dumps({"token": server.issue(scopes), "expires_in": 300}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


class TokenRegistry(LocalRegistry):
    """`docker-registry` whose auth is a token realm (Bearer), as Docker Hub's and GHCR's are."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secret = f"ya29.bearer-{secrets.token_urlsafe(16)}"
        self.tokens = _TokenServer(self.username, self.secret)

    def _extra_config(self) -> dict[str, Any]:
        assert self._dir is not None
        bundle = Path(self._dir, "token-ca.pem")
        bundle.write_bytes(self.tokens.cert_pem)
        token = {
            "realm": self.tokens.realm,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(bundle),
        }
        return {"auth": {"token": token}}

    def token_provider(self) -> str | None:
        return self.secret

    def stop(self) -> None:
        super().stop()
        self.tokens.stop()

    def push_built(self, repository: str, tag: str, image: BuiltImage) -> str:
        return push_built_bearer(self, repository, tag, image)


def push_built_bearer(registry: TokenRegistry, repository: str, tag: str, image: BuiltImage) -> str:
    """Push an image or index with a token of push scope (the fixture side, independent of the writer)."""
    token = registry.tokens.issue([f"repository:{repository}:pull,push"])
    auth = {"Authorization": f"Bearer {token}"}
    for child in image.children:
        push_built_bearer(registry, repository, child.digest, child)
    for digest, data in image.blobs.items():
        status, headers, body = _call(
            "POST", f"{registry.url}/v2/{repository}/blobs/uploads/", data=b"", headers=auth
        )
        if status != 202:
            raise PushError(f"starting the upload of {digest}", status, body.decode("utf-8", "replace"))
        location = urllib.parse.urljoin(f"{registry.url}/", headers["Location"])
        location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
        status, _, body = _call(
            "PUT", location, data=data, headers={**auth, "Content-Type": "application/octet-stream"}
        )
        if status != 201:
            raise PushError(f"uploading {digest}", status, body.decode("utf-8", "replace"))
    status, _, body = _call(
        "PUT",
        f"{registry.url}/v2/{repository}/manifests/{tag}",
        data=image.manifest,
        headers={**auth, "Content-Type": image.media_type},
    )
    if status != 201:
        raise PushError(f"putting {repository}:{tag}", status, body.decode("utf-8", "replace"))
    return image.digest


def fetch_blob(registry: LocalRegistry, repository: str, digest: str) -> bytes:
    """A blob, read with the registry's own credentials (Basic or a pull token)."""
    if isinstance(registry, TokenRegistry):
        headers = {"Authorization": "Bearer " + registry.tokens.issue([f"repository:{repository}:pull"])}
    elif registry.auth is not None:
        user, password = registry.auth
        headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    else:
        headers = {}
    status, _, body = _call("GET", f"{registry.url}/v2/{repository}/blobs/{digest}", headers=headers)
    if status != 200:
        raise PushError(f"reading {repository}@{digest}", status, body.decode("utf-8", "replace"))
    return body


# -- layers of any kind, and the oracle that applies them ----------------------------------------


@dataclass(frozen=True)
class TarEntry:
    """One tar member: ``kind`` file, dir, symlink, hardlink (``link`` = target)."""

    path: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""


def layer_of(entries: Sequence[TarEntry | tuple[str, bytes]], *, gzipped: bool = True) -> bytes:
    """A reproducible tar layer; ``.wh.NAME`` files are whiteouts, ``.wh..wh..opq`` opaque markers."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in entries:
            e = item if isinstance(item, TarEntry) else TarEntry(item[0], data=item[1])
            info = tarfile.TarInfo(e.path)
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, 0
            info.type = {
                "file": tarfile.REGTYPE,
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
            }[e.kind]
            info.linkname = e.link
            info.size = len(e.data) if e.kind == "file" else 0
            tar.addfile(info, io.BytesIO(e.data) if e.kind == "file" else None)
    data = raw.getvalue()
    return gzip.compress(data, compresslevel=6, mtime=0) if gzipped else data


def apply_layers(blobs: Sequence[bytes]) -> dict[str, tuple[Any, ...]]:
    """The filesystem a layer stack produces, as containerd applies it (OCI image-layer spec).

    Path -> (kind, mode, uid, gid, content sha256 | link target). Whiteouts delete a path
    and everything under it from the layers below; an opaque marker hides everything below
    its directory; a non-directory replaces whatever was there.
    """
    fs: dict[str, tuple[Any, ...]] = {}

    def remove_tree(path: str) -> None:
        for p in [p for p in fs if p == path or p.startswith(path + "/")]:
            del fs[p]

    for blob in blobs:
        data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        if len(data) < 512:  # a 0-byte blob or the OCI empty `{}`: the layers the fix drops, no files
            continue
        lower = set(fs)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar]  # type: ignore[union-attr]
        for m, _ in members:  # whiteouts act on the layers below only
            path = "/".join(p for p in m.name.split("/") if p not in ("", "."))
            head, _, base = path.rpartition("/")
            if base == ".wh..wh..opq":
                for p in [p for p in lower if p.startswith(head + "/" if head else "")]:
                    fs.pop(p, None)
            elif base.startswith(".wh."):
                remove_tree(f"{head}/{base[4:]}" if head else base[4:])
        for m, content in members:
            path = "/".join(p for p in m.name.split("/") if p not in ("", "."))
            if path.rpartition("/")[2].startswith(".wh."):
                continue
            if m.isdir():
                if fs.get(path, ("dir",))[0] != "dir":
                    remove_tree(path)
                fs[path] = ("dir", m.mode, m.uid, m.gid)
                continue
            remove_tree(path)
            if m.isreg():
                fs[path] = ("file", m.mode, m.uid, m.gid, hashlib.sha256(content).hexdigest())
            elif m.issym():
                fs[path] = ("symlink", m.uid, m.gid, m.linkname)
            elif m.islnk():
                target = "/".join(p for p in m.linkname.split("/") if p not in ("", "."))
                fs[path] = ("hardlink", *fs.get(target, ("missing", target))[1:])
            else:
                fs[path] = ("other", m.type, m.mode)
    return fs


def filesystem_of(
    blobs_by_digest: Mapping[str, bytes], layer_digests: Sequence[str]
) -> dict[str, tuple[Any, ...]]:
    return apply_layers([blobs_by_digest[d] for d in layer_digests])
