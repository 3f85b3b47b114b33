"""What an OCI / Docker image is made of: media types, descriptors, platforms, empty layers.

Pure (no I/O): the registry client fills these values in, the preflight rules judge
them, and neither needs the other to be tested. Sources: the OCI image-spec
(manifest.md, media-types.md, layer.md), Docker's image manifest v2 schema 2.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Final

MEDIA_TYPE_OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MEDIA_TYPE_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
MEDIA_TYPE_OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_OCI_LAYER_TAR: Final = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_TYPE_DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_DOCKER_FOREIGN_LAYER: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
MEDIA_TYPE_OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"

INDEX_MEDIA_TYPES: Final = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_LIST})
IMAGE_MANIFEST_TYPES: Final = frozenset({MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST})
SCHEMA1_MEDIA_TYPES: Final = frozenset({MEDIA_TYPE_SCHEMA1_SIGNED, MEDIA_TYPE_SCHEMA1})
IMAGE_CONFIG_TYPES: Final = frozenset({MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG})
# Layers whose blobs the image-spec lets live outside the registry ("non-distributable",
# deprecated in image-spec 1.1 but still written for Windows base images).
FOREIGN_LAYER_TYPES: Final = frozenset(
    {
        MEDIA_TYPE_DOCKER_FOREIGN_LAYER,
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)
# Every layer type a container runtime unpacks as a filesystem layer.
CONTAINER_LAYER_TYPES: Final = (
    frozenset(
        {
            MEDIA_TYPE_OCI_LAYER,
            MEDIA_TYPE_OCI_LAYER_TAR,
            MEDIA_TYPE_OCI_LAYER_ZSTD,
            MEDIA_TYPE_DOCKER_LAYER,
            # What old buildah/podman wrote; containerd still unpacks it.
            "application/vnd.docker.image.rootfs.diff.tar",
        }
    )
    | FOREIGN_LAYER_TYPES
)

# Known empty blobs: the fast path (no read needed).
GZIPPED_EMPTY_TAR: Final = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
EMPTY_TAR: Final = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
OCI_EMPTY_JSON: Final = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EMPTY_BLOB: Final = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_LAYER_DIGESTS: Final = {
    GZIPPED_EMPTY_TAR: "the gzipped empty tar archive",
    EMPTY_TAR: "an empty tar archive (1024 zero bytes)",
    OCI_EMPTY_JSON: "the OCI empty JSON blob `{}`",
    EMPTY_BLOB: "a zero-byte blob",
}

# A layer blob at most this large may be read to see whether it is an empty archive: an
# empty tar gzips to well under 1 KiB, and stored uncompressed (or gzip level 0) the common
# 10,240-byte form still fits. Larger layers are never read.
SMALL_LAYER_LIMIT: Final = 16 * 1024
# The most decompressed bytes looked at; an empty tar padded to a larger record is still
# recognised by its diff_id when the padding is zeros.
_UNPACKED_LIMIT: Final = 1024 * 1024
_BLOCK: Final = 512

_ARCH_ALIASES: Final = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "i386": "386",
}


@dataclass(frozen=True)
class Layer:
    """A descriptor from a manifest's ``layers`` (``urls``: where a foreign blob lives)."""

    digest: str
    size: int
    media_type: str
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class ManifestInfo:
    """The resolved image: for an index, the child for the requested platform.

    ``layers`` is empty and ``diff_ids`` None for schema 1 manifests (they carry no
    sizes; the schema alone disqualifies them). ``diff_ids`` is None too when the
    config is not an image config (an OCI artifact). ``platform`` comes from the
    index entry, else from the image config; ``index_digest`` is set when the
    reference named an index or manifest list. ``config_media_type`` and
    ``artifact_type`` tell an image from an artifact stored like one.
    """

    digest: str
    media_type: str
    schema_version: int
    layers: tuple[Layer, ...]
    diff_ids: tuple[str, ...] | None
    platform: str | None
    index_digest: str | None
    config_media_type: str | None = None
    artifact_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for reports and XCom."""
        data = asdict(self)
        data["layers"] = [{**asdict(layer), "urls": list(layer.urls)} for layer in self.layers]
        data["diff_ids"] = list(self.diff_ids) if self.diff_ids is not None else None
        return data


@dataclass(frozen=True)
class Platform:
    """containerd's spelling of a platform: ``os/arch[/variant]``."""

    os: str
    arch: str
    variant: str | None = None

    @property
    def key(self) -> str:
        return f"{self.os}/{self.arch}" + (f"/{self.variant}" if self.variant else "")

    def runs(self, image: Platform) -> bool:
        """Whether VMs of this platform run an image built for ``image``.

        A platform without a variant runs any variant of its architecture.
        """
        if (self.os, self.arch) != (image.os, image.arch):
            return False
        return self.variant is None or image.variant is None or self.variant == image.variant


def normalize_platform(os_name: str, arch: str, variant: str | None = None) -> Platform:
    """x86_64 is amd64, arm64/v8 is arm64, bare arm is arm/v7 (containerd's rules)."""
    arch = _ARCH_ALIASES.get(arch.lower(), arch.lower())
    variant = variant.lower() if variant else None
    if arch == "arm64" and variant == "v8":
        variant = None
    if arch == "arm" and variant is None:
        variant = "v7"
    return Platform(os_name.lower(), arch, variant)


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]``; raises ValueError otherwise."""
    parts = text.split("/") if isinstance(text, str) else []
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {text!r} is not of the form os/arch[/variant], e.g. linux/amd64")
    return normalize_platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


@functools.cache
def empty_tar_diff_ids() -> frozenset[str]:
    """sha256 of every all-zero tar from 1 to 2048 blocks: an archive with no entries,
    whatever its block factor (Go writes 1,024 bytes; GNU tar and Python's tarfile 10,240)."""
    digest = hashlib.sha256()
    found = {EMPTY_BLOB}
    zeros = bytes(_BLOCK)
    for _ in range(2048):
        digest.update(zeros)
        found.add("sha256:" + digest.copy().hexdigest())
    return frozenset(found)


def empty_layer_content(blob: bytes) -> bool | None:
    """Whether a (small) layer blob is a tar archive with no entries.

    Reads gzip (any level, header flags, several members) and plain tar; zstd only when
    a zstd module is importable. None when the content cannot be read as either.
    """
    unpacked = _unpack(blob)
    if unpacked is None:
        return None
    offset = 0
    while offset + _BLOCK <= len(unpacked):
        header = unpacked[offset : offset + _BLOCK]
        if not header.strip(b"\0"):
            return True  # the end-of-archive zero block before any entry
        if not _valid_header(header):
            return None
        if header[156:157] != b"g":  # anything but a pax global header is (or precedes) an entry
            return False
        size = _octal(header[124:136])
        if size is None:
            return None
        offset += _BLOCK + -(-size // _BLOCK) * _BLOCK
    return None if unpacked[offset:].strip(b"\0") else True  # only global headers, or nothing


def _valid_header(header: bytes) -> bool:
    stored = _octal(header[148:156])
    return stored is not None and stored == sum(header[:148]) + 8 * 32 + sum(header[156:])


def _octal(field: bytes) -> int | None:
    text = field.replace(b"\0", b" ").strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        return None


def _unpack(blob: bytes) -> bytes | None:
    if blob[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(blob)) as stream:
                return stream.read(_UNPACKED_LIMIT)
        except (OSError, EOFError, zlib.error):
            return None
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        return _unzstd(blob)
    return blob[:_UNPACKED_LIMIT]


def _unzstd(blob: bytes) -> bytes | None:
    try:
        import zstandard  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None  # the diff_id still tells zero-padded empty archives
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob))
        return bytes(reader.read(_UNPACKED_LIMIT))
    except zstandard.ZstdError:
        return None
