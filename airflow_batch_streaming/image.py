"""Parse container image references, the way Docker and Artifact Registry read them.

Pure: no I/O. A bad reference is a DAG import error for the author, so every
failure is an :class:`ImageReferenceError` with a hint that says how to fix it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "AR_HOST_RE",
    "DOCKER_HUB_HOST",
    "GCR_REPOSITORY_LOCATIONS",
    "ImageReference",
    "ImageReferenceError",
    "parse_image_uri",
]

DOCKER_HUB_HOST = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_AR_SUFFIX = "-docker.pkg.dev"
AR_HOST_RE = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]-docker\.pkg\.dev$")
# Container Registry was shut down in 2025; its host names are now served by Artifact Registry
# "gcr.io repositories", each named after its host, in these multi-regions. Source:
# https://cloud.google.com/artifact-registry/docs/transition/gcr-repositories ("gcr.io domain support").
GCR_REPOSITORY_LOCATIONS = {"gcr.io": "us", "us.gcr.io": "us", "eu.gcr.io": "europe", "asia.gcr.io": "asia"}

# OCI distribution-spec: a repository name is path components of this shape.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_COMPONENT_RE = re.compile(rf"^{_PATH_COMPONENT}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RES = {
    "sha256": re.compile(r"^[0-9a-f]{64}$"),
    "sha512": re.compile(r"^[0-9a-f]{128}$"),
}
_HOST_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST_RE = re.compile(rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Docker's limit on host + repository.
_NAME_MAX = 255

_AR_FORMAT = "LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE[:TAG|@sha256:DIGEST]"


class ImageReferenceError(ValueError):
    """An image URI that cannot be pulled as written; ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(f"{message} (hint: {hint})" if hint else message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class ImageReference:
    """A normalised reference: ``host/repository[:tag][@digest]``.

    ``host`` is lower-case and Docker Hub references are spelled out in full
    (``ubuntu`` -> ``docker.io/library/ubuntu``), so two spellings of one image
    compare equal.
    """

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest wins over the tag, as when pulling."""
        return self.digest or self.tag or "latest"

    @property
    def is_artifact_registry(self) -> bool:
        """A ``*-docker.pkg.dev`` host, or a gcr.io host (an Artifact Registry gcr.io repository)."""
        return AR_HOST_RE.match(self.host) is not None or self.is_gcr_repository

    @property
    def is_gcr_repository(self) -> bool:
        """``gcr.io``, ``us.gcr.io``, ``eu.gcr.io``, ``asia.gcr.io``: Artifact Registry's gcr.io repos."""
        return self.host in GCR_REPOSITORY_LOCATIONS

    @property
    def is_container_registry(self) -> bool:
        """Any ``gcr.io`` host, including ones that are not gcr.io repositories (``mirror.gcr.io``)."""
        return self.host == "gcr.io" or self.host.endswith(".gcr.io")

    @property
    def pkg_dev_uri(self) -> str | None:
        """For a gcr.io repository, the same image under Artifact Registry's own host name."""
        parts = self._ar_parts()
        if not self.is_gcr_repository or parts is None:
            return None
        project = parts[0].replace(":", "/")
        text = f"{self.ar_location}-docker.pkg.dev/{project}/{self.host}/{parts[2]}"
        return text + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def is_docker_hub(self) -> bool:
        return self.host == DOCKER_HUB_HOST

    @property
    def ar_location(self) -> str | None:
        """The repository's region or multi-region (``us-central1``, ``us``)."""
        if self.is_gcr_repository:
            return GCR_REPOSITORY_LOCATIONS[self.host]
        return self.host[: -len(_AR_SUFFIX)] if self.is_artifact_registry else None

    @property
    def ar_project(self) -> str | None:
        """Project ID; domain-scoped projects come back as ``example.com:my-project``."""
        parts = self._ar_parts()
        return parts[0] if parts else None

    @property
    def ar_repository(self) -> str | None:
        parts = self._ar_parts()
        return parts[1] if parts else None

    @property
    def image_name(self) -> str:
        """The image's path inside its Artifact Registry repository; elsewhere the whole repository."""
        parts = self._ar_parts()
        return parts[2] if parts else self.repository

    def _ar_parts(self) -> tuple[str, str, str] | None:
        if self.is_gcr_repository:  # PROJECT/IMAGE: the repository is named after the host
            segments = self.repository.split("/")
            n = 2 if "." in segments[0] else 1  # a domain-scoped project takes two segments
            if len(segments) <= n:
                return None
            return ":".join(segments[:n]), self.host, "/".join(segments[n:])
        if not self.is_artifact_registry:
            return None
        return _split_ar_path(self.repository)

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _split_ar_path(repository: str) -> tuple[str, str, str] | None:
    """PROJECT/REPO/IMAGE, where a first segment with a dot is a domain (``example.com/proj``)."""
    segments = repository.split("/")
    if "." in segments[0]:
        if len(segments) < 4:
            return None
        project, rest = f"{segments[0]}:{segments[1]}", segments[2:]
    else:
        if len(segments) < 3:
            return None
        project, rest = segments[0], segments[1:]
    return project, rest[0], "/".join(rest[1:])


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(uri: str, problem: str, hint: str) -> ImageReferenceError:
    return ImageReferenceError(f"invalid image URI {_shorten(uri)!r}: {problem}", hint)


def parse_image_uri(uri: object) -> ImageReference:
    """Parse ``[HOST[:PORT]/]PATH[:TAG][@ALGO:HEX]`` with Docker's rules.

    Raises ImageReferenceError for anything that is not a pullable reference,
    including non-strings (templated values that never rendered, say).
    """
    if not isinstance(uri, str):
        raise ImageReferenceError(
            f"an image URI must be a string, not {type(uri).__name__}",
            f"pass e.g. 'us-central1-docker.pkg.dev/my-project/my-repo/my-image:tag' ({_AR_FORMAT})",
        )
    text = uri
    if not text.strip():
        raise ImageReferenceError("the image URI is empty", f"give an image as {_AR_FORMAT}")
    if text != text.strip():
        # Refused, not stripped: Batch would be sent the padded string as it is.
        raise _fail(uri, "it has leading or trailing whitespace", f"remove it: {_shorten(text.strip())!r}")
    if any(ch.isspace() for ch in text):
        raise _fail(uri, "it contains whitespace", "remove the spaces; an image URI is a single word")
    if not text.isascii() or not text.isprintable():
        raise _fail(uri, "it contains non-ASCII or control characters", "image URIs are plain ASCII")
    if _SCHEME_RE.match(text):
        scheme = text.split("://", 1)[0]
        raise _fail(
            uri,
            f"image URIs have no scheme ({scheme}://)",
            f"drop the scheme: {_shorten(text.split('://', 1)[1])!r}",
        )

    name, digest = text, None
    if "@" in text:
        name, digest = text.rsplit("@", 1)
        _check_digest(uri, digest)
        if "@" in name:
            raise _fail(uri, "it contains more than one '@'", "use a single '@sha256:<digest>' at the end")

    tag: str | None = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise _fail(
                uri,
                f"tag {tag!r} is not valid" if tag else "the tag after ':' is empty",
                "a tag is 1-128 letters, digits, '_', '.' or '-', and does not start with '.' or '-'",
            )

    if not name:
        raise _fail(uri, "the image name is missing", f"give an image as {_AR_FORMAT}")
    if _is_google_host(name.lower()):  # a bare host, read by Docker as a Docker Hub name
        raise _fail(
            uri,
            f"{name} is a registry host with no repository path",
            f"add the path: {_AR_FORMAT}",
        )
    host, path = _split_host(name)
    if host is not None:
        if not _HOST_RE.match(host):
            raise _fail(uri, f"registry host {host!r} is not a valid host name", "use HOST[:PORT]/PATH")
        _check_port(uri, host)
        if "." not in host and ":" not in host and host.lower() != "localhost":
            raise _fail(
                uri,
                f"{host!r} has capitals, so it would be read as a registry host without a domain",
                f"repository names are lower-case ({_shorten(name.lower())!r}); a registry host has a "
                "'.' or a ':port' (gcr.io, localhost:5000)",
            )
        host = host.lower()
        if host.endswith(":443") and _is_google_host(host[:-4]):
            host = host[:-4]  # the https default port: the same registry, one spelling
        if host in _DOCKER_HUB_ALIASES:
            host = DOCKER_HUB_HOST
    else:
        host = DOCKER_HUB_HOST
    if host == DOCKER_HUB_HOST and path and "/" not in path:
        path = f"library/{path}"

    _check_repository(uri, path)
    if len(host) + 1 + len(path) > _NAME_MAX:
        raise _fail(
            uri,
            f"the name is longer than {_NAME_MAX} characters",
            "shorten the repository path; registries refuse longer names",
        )

    ref = ImageReference(host=host, repository=path, tag=tag, digest=digest)
    if ref.is_gcr_repository and ref._ar_parts() is None:
        raise _fail(
            uri,
            f"a {host} image needs a project and an image name",
            f"use {host}/PROJECT/IMAGE[:TAG|@sha256:DIGEST]",
        )
    if ref.is_artifact_registry and ref._ar_parts() is None:
        raise _fail(
            uri,
            "an Artifact Registry image needs a project, a repository and an image name "
            f"(got only {path!r} after the host)",
            f"use {_AR_FORMAT} (domain-scoped projects: LOCATION-docker.pkg.dev/DOMAIN/PROJECT/REPO/IMAGE)",
        )
    return ref


def _is_google_host(host: str) -> bool:
    return AR_HOST_RE.match(host) is not None or host in GCR_REPOSITORY_LOCATIONS


def _split_host(name: str) -> tuple[str | None, str]:
    """Docker's rule: the first component is a host if it has '.' or ':', is localhost, or has capitals."""
    first, sep, rest = name.partition("/")
    if not sep:
        return None, name
    if "." in first or ":" in first or first == "localhost" or first.lower() != first:
        return first, rest
    return None, name


def _check_port(uri: str, host: str) -> None:
    port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else None
    if port is not None and not 0 < int(port) < 65536:
        raise _fail(uri, f"port {port} is out of range", "use a port between 1 and 65535")


def _check_digest(uri: str, digest: str) -> None:
    algorithm, sep, hex_part = digest.partition(":")
    pattern = _DIGEST_RES.get(algorithm)
    if not sep or pattern is None:
        raise _fail(
            uri,
            f"digest {digest!r} is not of the form sha256:<64 hex digits>",
            "copy the digest from `gcloud artifacts docker images describe` or `docker inspect`",
        )
    if not pattern.match(hex_part):
        want = 64 if algorithm == "sha256" else 128
        problem = f"a {algorithm} digest has {want} lower-case hex digits"
        if pattern.match(hex_part.lower()):
            raise _fail(uri, problem, f"write it in lower case: {algorithm}:{hex_part.lower()}")
        raise _fail(uri, f"{problem}, got {len(hex_part)} characters", "check the digest was copied whole")


def _check_repository(uri: str, path: str) -> None:
    if _REPOSITORY_RE.match(path):
        return
    if not path:
        raise _fail(uri, "the repository path is empty", f"give an image as {_AR_FORMAT}")
    if path.lower() != path and _REPOSITORY_RE.match(path.lower()):
        raise _fail(uri, "repository names must be lower-case", f"did you mean {_shorten(path.lower())!r}?")
    if path.startswith("/") or path.endswith("/") or "//" in path:
        raise _fail(uri, "the path has an empty component ('//' or a leading/trailing '/')", "remove it")
    bad = next((c for c in path.split("/") if not _COMPONENT_RE.match(c.lower())), path)
    raise _fail(
        uri,
        f"path component {bad!r} is not valid",
        "each path component is lower-case letters and digits, separated by '.', '_', '__' or dashes",
    )
