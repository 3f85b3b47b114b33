"""From finding to fix: write a streamable copy of any image where the job runs.

`fix_image(source, target, region)` copies an image into an Artifact Registry repository
that serves the VMs' region and rewrites only what Image Streaming refuses, through the
registry API alone (no Docker):

* empty layers (every form the preflight knows) are dropped from the manifest, from the
  config's ``rootfs.diff_ids``, and their ``history`` entries become ``empty_layer: true``;
* a duplicate layer is dropped when no layer between it and the previous copy of its
  content touches any path it holds (`conflict`; read from the tar headers, streaming),
  else its tar is re-serialised with extra end-of-archive padding, which every tar reader
  ignores (GNU tar pads to 10 KiB records itself), so its digest and diff_id differ but the
  filesystem it produces does not;
* an index is fixed per platform and written anew; media types stay Docker or OCI.

What is streamable is decided by the preflight's own rules, reached through
`_preflight_defects` and `_target_problems` only (the one place to re-point when those
rules move). The plan (`plan_layers`, `conflict`, `rewrite_config`) is pure; the I/O goes
through injected `registry_push.RegistryWriter` clients.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import IO, Any, Final, Literal

from airflow_batch_streaming import checker, preflight
from airflow_batch_streaming.exceptions import BatchStreamingError
from airflow_batch_streaming.image import ImageReference, ImageReferenceError, parse_image_uri
from airflow_batch_streaming.oci import (
    INDEX_MEDIA_TYPES,
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_LAYER,
    MEDIA_TYPE_DOCKER_MANIFEST,
    SCHEMA1_MEDIA_TYPES,
    Layer,
    ManifestInfo,
    normalize_platform,
    parse_platform,
)
from airflow_batch_streaming.registry import RegistryClient, RegistryError
from airflow_batch_streaming.registry_push import RawManifest, RegistryWriter, _Counting

__all__ = [
    "Change",
    "Entry",
    "FixError",
    "FixResult",
    "LayerAction",
    "conflict",
    "fix_image",
    "plan_layers",
    "rewrite_config",
    "tar_entries",
]

log = logging.getLogger(__name__)

BLOCK: Final = 512
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC: Final = b"\x1f\x8b"
_SPOOL: Final = 8 * 1024 * 1024

# Change codes (the `changes` list of the result).
COPIED: Final = "copied"
UNCHANGED: Final = "unchanged"
DROPPED_EMPTY: Final = "dropped-empty-layer"
DROPPED_DUPLICATE: Final = "dropped-duplicate-layer"
REWROTE_DUPLICATE: Final = "rewrote-duplicate-layer"
CONVERTED_SCHEMA1: Final = "converted-schema1"
HISTORY_KEPT: Final = "history-unmatched"
PLATFORM_DROPPED: Final = "platform-dropped"
ATTESTATION_DROPPED: Final = "attestation-dropped"


class FixError(BatchStreamingError):
    """The fix cannot be done. ``exit_code`` 2: bad input (nothing was written); 1: not fixable."""

    def __init__(self, code: str, message: str, hint: str = "", *, exit_code: int = 1) -> None:
        super().__init__(f"{code}: {message}" + (f" (hint: {hint})" if hint else ""))
        self.code = code
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class Change:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass
class Stats:
    """What moved. ``bytes_read``: from the source registry; ``bytes_uploaded``: blob bytes sent."""

    bytes_read: int = 0
    bytes_uploaded: int = 0
    header_bytes_read: int = 0
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    manifests_written: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class FixResult:
    source: str
    target: str  # the written (or, dry-run, would-be) image as a digest reference
    changes: list[Change]
    preflight: preflight.Report | None
    dry_run: bool = False
    stats: Stats = field(default_factory=Stats)

    @property
    def ok(self) -> bool:
        return self.preflight is None or self.preflight.ok

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "ok": self.ok,
            "dry_run": self.dry_run,
            "changes": [c.to_dict() for c in self.changes],
            "preflight": self.preflight.to_dict() if self.preflight is not None else None,
            "stats": self.stats.to_dict(),
        }

    def format_text(self) -> str:
        verb = "would write" if self.dry_run else "wrote"
        lines = [f"{self.source} -> {verb} {self.target}"]
        lines += [f"  {c.code}: {c.message}" for c in self.changes]
        s = self.stats
        lines.append(
            f"  moved: {s.bytes_read} bytes read, {s.bytes_uploaded} uploaded; blobs {s.blobs_uploaded} "
            f"uploaded, {s.blobs_mounted} mounted, {s.blobs_present} already there; "
            f"{s.manifests_written} manifests written"
        )
        if self.preflight is not None:
            lines.append(self.preflight.format_text())
        return "\n".join(lines)


# --------------------------------------------------------------------------- preflight adapter


def _preflight_defects(
    info: ManifestInfo, contents: Mapping[str, bool | None]
) -> tuple[set[int], dict[int, int]]:
    """Empty layers and duplicates (index -> earliest layer it repeats), by the preflight's rules.

    The one place this module reads the streaming rules: each layer is judged alone by
    `preflight.check_empty_layers` (``contents``: `checker.layer_contents`, the same small
    layers the preflight reads) and each pair of the others by `preflight.check_duplicate_layers`.
    """
    diff_ids = info.diff_ids if info.diff_ids and len(info.diff_ids) == len(info.layers) else None

    def only(*indices: int) -> ManifestInfo:
        return replace(
            info,
            layers=tuple(info.layers[i] for i in indices),
            diff_ids=tuple(diff_ids[i] for i in indices) if diff_ids else None,
        )

    empty = {i for i in range(len(info.layers)) if preflight.check_empty_layers(only(i), contents)}
    duplicates: dict[int, int] = {}
    for i in range(len(info.layers)):
        if i in empty:
            continue
        for j in range(i):
            if j not in empty and j not in duplicates and preflight.check_duplicate_layers(only(j, i)):
                duplicates[i] = j
                break
    return empty, duplicates


def _target_problems(target: str, region: str) -> list[preflight.Finding]:
    """Why ``target`` cannot serve VMs in ``region`` (not Artifact Registry, wrong location)."""
    return [f for f in preflight.check_reference(target, region) if f.severity == preflight.ERROR]


# --------------------------------------------------------------------------- tar headers


@dataclass(frozen=True)
class Entry:
    """One tar header, as it changes the filesystem: whiteouts name the path they delete."""

    path: str
    kind: Literal["dir", "file", "symlink", "hardlink", "whiteout", "opaque", "other"]
    mode: int = 0
    uid: int = 0
    gid: int = 0
    link: str = ""


def _norm(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/".join(parts)


def _entry(member: tarfile.TarInfo) -> Entry:
    path = _norm(member.name)
    head, _, base = path.rpartition("/")
    if base == ".wh..wh..opq":
        return Entry(head, "opaque")
    if base.startswith(".wh."):
        return Entry(f"{head}/{base[4:]}" if head else base[4:], "whiteout")
    kind: Any = (
        "dir"
        if member.isdir()
        else "file"
        if member.isreg()
        else "symlink"
        if member.issym()
        else "hardlink"
        if member.islnk()
        else "other"
    )
    link = _norm(member.linkname) if member.islnk() else member.linkname
    return Entry(path, kind, member.mode, member.uid, member.gid, link)


class _Peek:
    """A stream with its first bytes readable twice (to sniff the compression)."""

    def __init__(self, raw: IO[bytes] | Any) -> None:
        self.raw = raw
        self.head = raw.read(4)

    def read(self, size: int = -1) -> bytes:
        if self.head:
            data, self.head = self.head, b""
            if size < 0:
                return data + self.raw.read()
            if size <= len(data):
                data, self.head = data[:size], data[size:]
                return data
            return data + self.raw.read(size - len(data))
        return bytes(self.raw.read(size))


def _decompressed(stream: IO[bytes] | Any, what: str) -> IO[bytes] | Any:
    peek = _Peek(stream)
    if peek.head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=peek, mode="rb")  # type: ignore[call-overload]
    if peek.head.startswith(_ZSTD_MAGIC):
        raise FixError(
            "zstd-layer",
            f"{what} is zstd-compressed; this Python has no zstd decoder to read its tar headers",
            "rebuild the image with gzip layers (the default of docker buildx)",
        )
    return peek


def tar_entries(stream: IO[bytes] | Any, what: str = "the layer") -> list[Entry]:
    """Every header of a (gzipped or plain) tar layer, read as a stream: data is skipped."""
    try:
        with tarfile.open(fileobj=_decompressed(stream, what), mode="r|") as tar:
            return [_entry(m) for m in tar]
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, RegistryError):
            raise
        raise FixError("layer-unreadable", f"{what} is not a readable tar archive ({exc})") from None


def _ancestors(path: str) -> Iterator[str]:
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        yield path
    if path:
        yield ""  # the root


def conflict(repeat: Sequence[Entry], between: Iterable[Entry]) -> tuple[Entry, Entry] | None:
    """The first pair (entry of the repeated layer, entry in between) that makes a drop unsafe.

    Dropping a repeat is safe when applying it again would change nothing: no layer since
    its previous copy changed, deleted or replaced any path it sets, any directory above
    them (except a plain directory's metadata), or added anything a whiteout or opaque
    marker in it would delete again. Conservative: when in doubt, a conflict.
    """
    by_path: dict[str, list[Entry]] = {}
    for e in repeat:
        by_path.setdefault(e.path, []).append(e)
        if e.kind == "hardlink" and e.link:
            by_path.setdefault(e.link, []).append(Entry(e.link, "other"))
    above: dict[str, Entry] = {}
    for path, entries in by_path.items():
        for a in _ancestors(path):
            above.setdefault(a, entries[0])
    for e in between:
        for r in by_path.get(e.path, ()):
            same_dir = r.kind == e.kind == "dir" and (r.mode, r.uid, r.gid) == (e.mode, e.uid, e.gid)
            if not same_dir:
                return r, e
        for a in _ancestors(e.path):
            for r in by_path.get(a, ()):
                if r.kind != "dir":  # a whiteout, opaque marker, file or link above: reapplying deletes e
                    return r, e
        if e.path in above and e.kind != "dir":  # e deleted or replaced a directory the repeat fills
            return above[e.path], e
    return None


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class LayerAction:
    index: int
    action: Literal["keep", "drop-empty", "drop-duplicate", "rewrite"]
    of: int | None = None  # the earlier layer a duplicate repeats (its last copy)
    padding_blocks: int = 0  # for "rewrite": extra zero blocks after the end of the archive
    reason: str = ""


def plan_layers(
    count: int,
    empty: set[int],
    duplicates: Mapping[int, int],
    find_conflict: Callable[[int, int], str | None],
) -> list[LayerAction]:
    """What to do with each layer. ``find_conflict(previous, i)`` says why dropping ``i`` is unsafe.

    ``previous`` is the last earlier layer with the same content; layers dropped as empty
    do not count as in between (they change nothing).
    """
    actions: list[LayerAction] = []
    group = {i: duplicates.get(i, i) for i in range(count)}
    rewrites: dict[int, int] = {}
    for i in range(count):
        if i in empty:
            actions.append(LayerAction(i, "drop-empty"))
            continue
        if i not in duplicates:
            actions.append(LayerAction(i, "keep"))
            continue
        previous = max(k for k in range(i) if group.get(k) == group[i] and k not in empty)
        why = find_conflict(previous, i)
        if why is None:
            actions.append(LayerAction(i, "drop-duplicate", previous))
        else:
            rewrites[group[i]] = rewrites.get(group[i], 0) + 1
            actions.append(LayerAction(i, "rewrite", previous, rewrites[group[i]], why))
    return actions


def rewrite_config(
    config: Mapping[str, Any], actions: Sequence[LayerAction], diff_ids: Sequence[str]
) -> tuple[dict[str, Any], bool]:
    """The config for the kept layers: ``rootfs.diff_ids`` and ``history`` kept consistent.

    ``diff_ids`` are the new per-layer diff_ids (rewritten layers' changed). History entries
    of dropped layers become ``empty_layer: true`` (the step stays on record). Returns the
    config and whether its history could be matched to the layers.
    """
    new = json.loads(json.dumps(config))
    kept = [a.index for a in actions if a.action in ("keep", "rewrite")]
    new.setdefault("rootfs", {"type": "layers"})["diff_ids"] = [diff_ids[i] for i in kept]
    history = new.get("history")
    if not isinstance(history, list):
        return new, True
    layered = [h for h in history if isinstance(h, dict) and not h.get("empty_layer")]
    if len(layered) != len(actions):
        return new, False
    for entry, action in zip(layered, actions, strict=True):
        if action.action.startswith("drop"):
            entry["empty_layer"] = True
    return new, True


def repack(stream: IO[bytes] | Any, padding_blocks: int, label: str = "the layer") -> tuple[Any, str, str]:
    """Re-serialise a layer: its tar bytes plus ``padding_blocks`` zero blocks, gzipped again if it was.

    Readers stop at the end-of-archive marker, so the files are the same; the digest and
    diff_id are not. Returns (spooled file at its end, digest, diff_id); memory stays bounded.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL)  # noqa: SIM115 (returned to the caller)
    peek = _Peek(stream)
    packer = zlib.compressobj(6, zlib.DEFLATED, 31) if peek.head.startswith(_GZIP_MAGIC) else None
    plain = _decompressed(peek, label)
    diff_sha, blob_sha = hashlib.sha256(), hashlib.sha256()
    chunk = plain.read(1024 * 1024)
    padded = False
    while chunk or not padded:
        if not chunk:
            chunk, padded = bytes(BLOCK * padding_blocks), True
        diff_sha.update(chunk)
        out = packer.compress(chunk) if packer else chunk
        blob_sha.update(out)
        spool.write(out)
        chunk = plain.read(1024 * 1024) if not padded else b""
    if packer is not None:
        tail = packer.flush()
        blob_sha.update(tail)
        spool.write(tail)
    return spool, "sha256:" + blob_sha.hexdigest(), "sha256:" + diff_sha.hexdigest()


def _dumps(data: Any) -> bytes:
    return json.dumps(data, indent=3).encode()


# --------------------------------------------------------------------------- I/O


@dataclass
class _Blob:
    digest: str
    size: int
    media_type: str
    spool: Any = None  # a rewritten layer's bytes; None: copy from the source


class _Fixer:
    def __init__(
        self,
        source: ImageReference,
        target: ImageReference,
        source_client: RegistryWriter,
        target_client: RegistryWriter,
        *,
        dry_run: bool,
    ) -> None:
        self.source = source
        self.target = target
        self.src = source_client
        self.dst = target_client
        self.dry_run = dry_run
        self.changes: list[Change] = []
        self.stats = Stats()
        self._entries: dict[str, list[Entry]] = {}
        self.same_registry = source_client.base_url(source) == target_client.base_url(target)

    # -- reading

    def _blob_bytes(self, digest: str) -> bytes:
        with self.src.open_blob(self.source, digest) as stream:
            return stream.read()

    def _headers(self, layer: Layer, label: str) -> list[Entry]:
        if layer.digest not in self._entries:
            before = self.src.bytes_read
            with self.src.open_blob(self.source, layer.digest) as stream:
                self._entries[layer.digest] = tar_entries(stream, label)
                while stream.read(1024 * 1024):  # to the end, so the digest is checked
                    pass
            self.stats.header_bytes_read += self.src.bytes_read - before
        return self._entries[layer.digest]

    # -- one image manifest

    def image(self, raw: RawManifest, where: str) -> tuple[RawManifest, list[_Blob]]:
        """The fixed manifest and every blob it needs (changes recorded on self)."""
        converted: bytes | None = None
        if raw.media_type in SCHEMA1_MEDIA_TYPES:
            raw, converted = self._schema1(raw, where)
        doc = raw.json()
        config_desc = doc.get("config") or {}
        layer_descs = doc.get("layers")
        if not isinstance(layer_descs, list) or not isinstance(config_desc.get("digest"), str):
            raise FixError(preflight.MANIFEST_INVALID, f"{where}: the manifest has no config or layers")
        config_bytes = converted if converted is not None else self._blob_bytes(config_desc["digest"])
        config = json.loads(config_bytes)
        layers = tuple(Layer(d["digest"], int(d["size"]), d.get("mediaType", "")) for d in layer_descs)
        raw_diff = (config.get("rootfs") or {}).get("diff_ids")
        diff_ids = tuple(raw_diff) if isinstance(raw_diff, list) else None
        info = ManifestInfo(raw.digest, raw.media_type, 2, layers, diff_ids, None, None)
        empty, duplicates = _preflight_defects(info, checker.layer_contents(self.src, self.source, info))

        def find_conflict(previous: int, i: int) -> str | None:
            repeat = self._headers(layers[previous], f"{where} layer {previous}")
            for k in range(previous + 1, i):
                if k in empty:
                    continue
                hit = conflict(repeat, self._headers(layers[k], f"{where} layer {k}"))
                if hit is not None:
                    return f"layer {k} {_verb(hit[1])} {hit[1].path or '/'}, which layer {i} also sets"
            return None

        actions = plan_layers(len(layers), empty, duplicates, find_conflict)
        blobs: list[_Blob] = []
        new_diff = list(diff_ids) if diff_ids and len(diff_ids) == len(layers) else [""] * len(layers)
        new_descs: list[dict[str, Any]] = []
        taken = set(new_diff) | {lay.digest for lay in layers}
        for action in actions:
            layer, desc = layers[action.index], layer_descs[action.index]
            label = f"layer {action.index} ({layer.digest}, {layer.size} bytes)"
            if action.action == "drop-empty":
                self.changes.append(Change(DROPPED_EMPTY, f"{where}: {label} dropped: it is empty"))
            elif action.action == "drop-duplicate":
                self.changes.append(
                    Change(
                        DROPPED_DUPLICATE,
                        f"{where}: {label} dropped: it repeats layer {action.of} and no layer in between "
                        f"touches any of its {len(self._entries.get(layers[action.of or 0].digest, []))} "
                        "paths",
                    )
                )
            elif action.action == "rewrite":
                blob, diff = self._rewrite(layer, action, label, taken)
                taken |= {blob.digest, diff}
                blobs.append(blob)
                new_diff[action.index] = diff
                new_descs.append({**desc, "digest": blob.digest, "size": blob.size})
                self.changes.append(
                    Change(
                        REWROTE_DUPLICATE,
                        f"{where}: {label} repeats layer {action.of} but {action.reason}: re-serialised "
                        f"with {action.padding_blocks} extra end-of-archive block(s) as {blob.digest} "
                        "(same files, distinct digest and diff_id)",
                    )
                )
            else:
                blobs.append(_Blob(layer.digest, layer.size, layer.media_type))
                new_descs.append(desc)
        if all(a.action == "keep" for a in actions):
            config_blob = _Blob(config_desc["digest"], len(config_bytes), config_desc.get("mediaType", ""))
            if converted is not None:
                config_blob.spool = _spooled(converted)
            return raw, [config_blob, *blobs]
        new_config, matched = rewrite_config(config, actions, new_diff)
        if not matched:
            self.changes.append(
                Change(HISTORY_KEPT, f"{where}: the config's history does not match its layers; left as is")
            )
        config_out = _dumps(new_config)
        config_digest = "sha256:" + hashlib.sha256(config_out).hexdigest()
        config_blob = _Blob(
            config_digest, len(config_out), config_desc.get("mediaType", ""), _spooled(config_out)
        )
        manifest = dict(doc)
        manifest["config"] = {**config_desc, "digest": config_digest, "size": len(config_out)}
        manifest["layers"] = new_descs
        body = _dumps(manifest)
        return RawManifest(body, raw.media_type, "sha256:" + hashlib.sha256(body).hexdigest()), [
            config_blob,
            *blobs,
        ]

    def _schema1(self, raw: RawManifest, where: str) -> tuple[RawManifest, bytes]:
        """Docker schema 1 -> schema 2, when the v1 history says what a config needs.

        The config is the newest v1Compatibility object (minus the v1 ids) with
        ``rootfs.diff_ids`` (each layer is read once and its tar hashed) and ``history``
        (throwaway steps become ``empty_layer: true`` and their blobs are not carried over).
        """
        doc = raw.json()
        fs_layers, v1_history = doc.get("fsLayers"), doc.get("history")

        def refuse(why: str) -> FixError:
            return FixError(
                preflight.MANIFEST_SCHEMA1,
                f"{where} is a Docker schema 1 manifest and cannot be converted: {why}",
                "convert it with `skopeo copy --format v2s2 docker://SRC docker://DEST` (it reads the layers "
                "with the image's full v1 metadata), or rebuild it, then fix the result",
            )

        if (
            not isinstance(fs_layers, list)
            or not isinstance(v1_history, list)
            or len(fs_layers) != len(v1_history)
        ):
            raise refuse("it does not have one v1 history entry per layer")
        try:
            v1 = [json.loads(h["v1Compatibility"]) for h in v1_history]
            blob_sums = [str(f["blobSum"]) for f in fs_layers]
        except (TypeError, KeyError, ValueError):
            raise refuse("its v1Compatibility history is not JSON objects") from None
        if not v1 or not all(isinstance(v, dict) for v in v1):
            raise refuse("its v1Compatibility history is empty or not JSON objects")
        top = v1[0]
        os_name = top.get("os") or None
        arch = top.get("architecture") or doc.get("architecture") or None
        if not isinstance(os_name, str) or not isinstance(arch, str):
            raise refuse("its v1 history does not name the image's os and architecture")
        layers: list[dict[str, Any]] = []
        diff_ids: list[str] = []
        history: list[dict[str, Any]] = []
        for blob_sum, entry in reversed(list(zip(blob_sums, v1, strict=True))):
            cmd = (entry.get("container_config") or {}).get("Cmd")
            step: dict[str, Any] = {"created": entry.get("created", "1970-01-01T00:00:00Z")}
            if isinstance(cmd, list) and cmd:
                step["created_by"] = " ".join(str(c) for c in cmd)
            if entry.get("throwaway"):
                step["empty_layer"] = True
            else:
                size, diff = self._measure(blob_sum, f"{where} layer {blob_sum}")
                layers.append({"mediaType": MEDIA_TYPE_DOCKER_LAYER, "size": size, "digest": blob_sum})
                diff_ids.append(diff)
            history.append(step)
        dropped = ("id", "parent", "Size", "throwaway", "parent_id", "layer_id")
        config = {k: v for k, v in top.items() if k not in dropped}
        config.update(
            {
                "architecture": arch,
                "os": os_name,
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "history": history,
            }
        )
        config_bytes = _dumps(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
            "config": {
                "mediaType": MEDIA_TYPE_DOCKER_CONFIG,
                "size": len(config_bytes),
                "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
            },
            "layers": layers,
        }
        body = _dumps(manifest)
        converted = RawManifest(
            body, MEDIA_TYPE_DOCKER_MANIFEST, "sha256:" + hashlib.sha256(body).hexdigest()
        )
        self.changes.append(
            Change(
                CONVERTED_SCHEMA1,
                f"{where}: Docker schema 1 converted to schema 2 ({len(layers)} layers; "
                f"{len(v1) - len(layers)} throwaway steps kept as history only)",
            )
        )
        return converted, config_bytes

    def _measure(self, digest: str, label: str) -> tuple[int, str]:
        """(compressed size, diff_id) of a layer, read once as a stream."""
        diff_sha = hashlib.sha256()
        with self.src.open_blob(self.source, digest) as stream:
            counted = _Counting(stream)
            plain = _decompressed(counted, label)
            while chunk := plain.read(1024 * 1024):
                diff_sha.update(chunk)
            while counted.read(1024 * 1024):
                pass
        return counted.count, "sha256:" + diff_sha.hexdigest()

    def _rewrite(self, layer: Layer, action: LayerAction, label: str, taken: set[str]) -> tuple[_Blob, str]:
        """The layer's tar with extra zero blocks after its end; gzip again if it was gzipped."""
        padding = action.padding_blocks
        while True:
            with self.src.open_blob(self.source, layer.digest) as stream:
                spool, digest, diff = repack(stream, padding, label)
            if digest not in taken and diff not in taken:
                return _Blob(digest, spool.tell(), layer.media_type, spool), diff
            spool.close()
            padding += 1

    # -- writing

    def ensure_blob(self, blob: _Blob) -> None:
        if self.dry_run:
            return
        if self.dst.has_blob(self.target, blob.digest):
            self.stats.blobs_present += 1
        elif (
            blob.spool is None
            and self.same_registry
            and self.dst.mount_blob(self.target, blob.digest, self.source.repository)
        ):
            self.stats.blobs_mounted += 1
        else:
            with self._open(blob) as stream:
                self.dst.upload_blob(self.target, blob.digest, blob.size, stream)
            self.stats.blobs_uploaded += 1

    def _open(self, blob: _Blob) -> AbstractContextManager[Any]:
        if blob.spool is not None:
            blob.spool.seek(0)
            return _nullcontext(blob.spool)
        return self.src.open_blob(self.source, blob.digest)

    def put_manifest(self, manifest: RawManifest, reference: str | None) -> None:
        if self.dry_run:
            return
        if reference is None:
            if self.dst.has_manifest(self.target, manifest.digest):
                return
            reference = manifest.digest
        elif self._tag_digest(reference) == manifest.digest:
            return
        self.dst.put_manifest(self.target, reference, manifest.body, manifest.media_type)
        self.stats.manifests_written += 1

    def _tag_digest(self, tag: str) -> str | None:
        try:
            return self.dst.get_manifest(self.target, tag).digest
        except RegistryError as exc:
            if exc.code == preflight.IMAGE_NOT_FOUND:
                return None
            raise


def _spooled(data: bytes) -> Any:
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL)  # noqa: SIM115 (lives as long as the plan)
    spool.write(data)
    return spool


@contextmanager
def _nullcontext(value: Any) -> Iterator[Any]:
    yield value


def _verb(entry: Entry) -> str:
    return {"whiteout": "deletes", "opaque": "clears"}.get(entry.kind, "changes")


def _is_attestation(entry: Mapping[str, Any]) -> bool:
    plat = entry.get("platform") or {}
    annotations = entry.get("annotations") or {}
    return (plat.get("os"), plat.get("architecture")) == ("unknown", "unknown") or annotations.get(
        "vnd.docker.reference.type"
    ) == "attestation-manifest"


def _resolve_target(target: str, source: ImageReference) -> ImageReference:
    try:
        ref = parse_image_uri(target)
    except ImageReferenceError as first:
        name = source.repository.rsplit("/", 1)[-1]
        try:
            ref = parse_image_uri(f"{target.rstrip('/')}/{name}")
        except ImageReferenceError:
            raise FixError("invalid-target", first.message, first.hint, exit_code=2) from None
    if ref.digest:
        raise FixError(
            "invalid-target",
            f"the target {target} names a digest; the digest of the written image is not known in advance",
            "give a repository, an image, or an image:tag",
            exit_code=2,
        )
    return ref


def fix_image(
    source: str,
    target: str,
    region: str,
    *,
    platform: str | None = None,
    dry_run: bool = False,
    source_client: RegistryWriter | None = None,
    target_client: RegistryWriter | None = None,
    preflight_client: RegistryClient | None = None,
) -> FixResult:
    """Write a streamable copy of ``source`` to ``target`` (Artifact Registry, serving ``region``).

    Raises `FixError` (``exit_code`` 2 before anything is written for bad input; 1 for an
    image that cannot be made to stream) and `registry.RegistryError` for registry failures.
    """
    try:
        src_ref = parse_image_uri(source)
    except ImageReferenceError as exc:
        raise FixError("invalid-source", exc.message, exc.hint, exit_code=2) from None
    dst_ref = _resolve_target(target, src_ref)
    problems = _target_problems(str(dst_ref), region)
    if problems:
        raise FixError(problems[0].code, problems[0].message, problems[0].hint, exit_code=2)
    bad_platform = preflight.invalid_platform(platform) if platform is not None else None
    if bad_platform is not None:
        raise FixError(bad_platform.code, bad_platform.message, bad_platform.hint, exit_code=2)
    src = source_client or RegistryWriter()
    dst = target_client or RegistryWriter()
    fixer = _Fixer(src_ref, dst_ref, src, dst, dry_run=dry_run)
    top = src.get_manifest(src_ref)
    location = f"{src_ref.host}/{src_ref.repository}@{top.digest}"

    if top.media_type in INDEX_MEDIA_TYPES:
        result = _fix_index(fixer, top, location, platform)
    else:
        result, blobs = fixer.image(top, location)
        for blob in blobs:
            fixer.ensure_blob(blob)
    fixer.put_manifest(result, dst_ref.tag)
    written = f"{dst_ref.host}/{dst_ref.repository}@{result.digest}"
    kind = "index" if result.media_type in INDEX_MEDIA_TYPES else "image"
    if result.digest == top.digest:
        fixer.changes.insert(
            0, Change(UNCHANGED if not fixer.changes else COPIED, f"{kind} copied as is ({result.digest})")
        )
    else:
        fixer.changes.insert(0, Change(COPIED, f"{kind} {top.digest} written as {result.digest}"))
    fixer.stats.bytes_read = src.bytes_read
    fixer.stats.bytes_uploaded = dst.bytes_uploaded
    report = None
    if not dry_run:
        report = checker.check_image(
            written, region, platform=platform, registry=preflight_client or dst, api_check=None
        )
    return FixResult(source, written, fixer.changes, report, dry_run, fixer.stats)


def _fix_index(fixer: _Fixer, top: RawManifest, where: str, platform: str | None) -> RawManifest:
    doc = top.json()
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise FixError(preflight.MANIFEST_INVALID, f"{where}: the index has no manifests list")
    want = parse_platform(platform) if platform else None
    new_entries: list[dict[str, Any]] = []
    changed = False
    for entry in entries:
        plat = entry.get("platform") or {}
        shown = "/".join(p for p in (plat.get("os"), plat.get("architecture"), plat.get("variant")) if p)
        if _is_attestation(entry):
            fixer.changes.append(
                Change(ATTESTATION_DROPPED, f"{where}: build attestation {entry.get('digest')}")
            )
            changed = True
            continue
        if want is not None:
            have = normalize_platform(plat.get("os", ""), plat.get("architecture", ""), plat.get("variant"))
            if not want.runs(have):  # what `preflight.check_platform` accepts
                fixer.changes.append(
                    Change(PLATFORM_DROPPED, f"{where}: {shown} not kept (--platform {platform})")
                )
                changed = True
                continue
        child_ref = replace(fixer.source, tag=None, digest=entry["digest"])
        child = fixer.src.get_manifest(child_ref)
        fixed, blobs = fixer.image(child, f"{shown} {child.digest}")
        for blob in blobs:
            fixer.ensure_blob(blob)
        fixer.put_manifest(fixed, None)
        if fixed.digest != child.digest:
            changed = True
        new_entries.append({**entry, "digest": fixed.digest, "size": len(fixed.body)})
    if not new_entries:
        raise FixError(
            preflight.PLATFORM_NOT_FOUND,
            f"{where} has no image for {platform}",
            "pick a platform the index has",
        )
    if not changed:
        return top
    body = _dumps({**doc, "manifests": new_entries})
    return RawManifest(body, top.media_type, "sha256:" + hashlib.sha256(body).hexdigest())
