"""Preflight cost: time and bytes the registry check reads, for images of 10 MiB, 100 MiB and 1 GiB.

The check reads the manifest and the image config, never a layer, so what it reads does
not grow with the image; a second check of the same digest is answered from the
process-wide cache without a request. For contrast, what `docker pull` reads (every
blob), measured by downloading the blobs from the same registry.

Every image has the same number of layers (8), so the manifests differ only in the
digits of the layer sizes. Against the local CNCF distribution registry (`docker-registry`,
the Debian package) on 127.0.0.1, under a `*-docker.pkg.dev` path.

Run: .venv/bin/python benchmarks/preflight.py [--runs N] [--sizes-mib 10 100 1024]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import versions, write_section

from airflow_batch_streaming import checker, registry
from airflow_batch_streaming.testing.registry import LocalRegistry, build_image, push_built, random_layer

MIB = 1024 * 1024
LAYERS = 8
REGION = "us-central1"
PROJECT = "bench-project"


@dataclass
class Measure:
    seconds: float
    requests: int
    bytes_read: int


@dataclass
class Row:
    label: str
    image_bytes: int
    pushed_seconds: float
    tag_uri: str
    digest_uri: str
    cold_tag: Measure
    cold_digest: Measure
    repeat_digest: Measure
    repeat_tag: Measure
    pull_bytes: int
    pull_seconds: float
    pull_requests: int


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _check(uri: str, base_url: str, *, cold: bool) -> Measure:
    """One `checker.check_image` with a fresh client; `cold` forgets the process-wide cache first."""
    if cold:
        registry.clear_cache()
    client = registry.RegistryClient(base_url=base_url)
    t0 = time.perf_counter()
    report = checker.check_image(uri, REGION, registry=client)
    seconds = time.perf_counter() - t0
    if not report.ok:
        raise RuntimeError(f"preflight of {uri} failed:\n{report.format_text()}")
    return Measure(seconds, client.requests, client.bytes_read)


def _median(fn: Callable[[], Measure], runs: int) -> Measure:
    samples = [fn() for _ in range(runs)]
    # Requests and bytes are the same in every run (checked); time is the median.
    if len({(s.requests, s.bytes_read) for s in samples}) != 1:
        raise RuntimeError(f"requests/bytes differ between runs: {samples}")
    return Measure(statistics.median(s.seconds for s in samples), samples[0].requests, samples[0].bytes_read)


def _pull(base_url: str, repository: str, blobs: list[str], manifest_ref: str) -> tuple[int, float, int]:
    """What a pull reads: the manifest, then every blob (config and layers), streamed to nowhere."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    total = 0
    t0 = time.perf_counter()
    paths = [f"manifests/{manifest_ref}"] + [f"blobs/{digest}" for digest in blobs]
    for path in paths:
        request = urllib.request.Request(
            f"{base_url}/v2/{repository}/{path}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        with opener.open(request, timeout=300) as resp:
            while chunk := resp.read(4 * MIB):
                total += len(chunk)
    return total, time.perf_counter() - t0, len(paths)


def _push(reg: LocalRegistry, repository: str, size: int, seed: int) -> tuple[str, list[str], int, float]:
    """Build and push an image of about `size` bytes in LAYERS random layers; the blobs are freed after."""
    t0 = time.perf_counter()
    layers = [random_layer(size // LAYERS, seed=seed * 100 + i) for i in range(LAYERS)]
    image = build_image(layers)
    del layers
    digest = push_built(reg.url, repository, "1.0", image)
    blobs = list(image.blobs)
    image_bytes = sum(len(b) for b in image.blobs.values())
    del image
    gc.collect()
    return digest, blobs, image_bytes, time.perf_counter() - t0


def measure(reg: LocalRegistry, size_mib: int, seed: int, runs: int) -> Row:
    label = f"{size_mib} MiB" if size_mib < 1024 else f"{size_mib // 1024} GiB"
    name = f"image-{size_mib}mib"
    repository = f"{PROJECT}/bench/{name}"
    digest, blobs, image_bytes, pushed = _push(reg, repository, size_mib * MIB, seed)
    tag_uri = f"{REGION}-docker.pkg.dev/{repository}:1.0"
    digest_uri = f"{REGION}-docker.pkg.dev/{repository}@{digest}"

    cold_tag = _median(lambda: _check(tag_uri, reg.url, cold=True), runs)
    cold_digest = _median(lambda: _check(digest_uri, reg.url, cold=True), runs)
    # The repeat checks: a fresh client and a fresh `check_image` call in the same
    # process, after one cold check of the digest.
    _check(digest_uri, reg.url, cold=True)
    repeat_digest = _median(lambda: _check(digest_uri, reg.url, cold=False), runs)
    repeat_tag = _median(lambda: _check(tag_uri, reg.url, cold=False), runs)
    pull_bytes, pull_seconds, pull_requests = _pull(reg.url, repository, blobs, digest)
    return Row(
        label,
        image_bytes,
        pushed,
        tag_uri,
        digest_uri,
        cold_tag,
        cold_digest,
        repeat_digest,
        repeat_tag,
        pull_bytes,
        pull_seconds,
        pull_requests,
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def render(rows: list[Row], runs: int) -> str:
    lines = [
        f"Local `docker-registry` ({_registry_version()}) on 127.0.0.1; `checker.check_image(uri, "
        f'"{REGION}", registry=RegistryClient(base_url=...))`, a fresh client each time, registry '
        f"checks only (no Service Usage call). Times are medians of {runs} runs; requests and bytes "
        "are the client's own counters (`requests`, `bytes_read`: response bodies). Each image has "
        f"{LAYERS} layers of random (incompressible) data. {versions('google-cloud-batch')}.",
        "",
        "| image | cold check by tag | cold check by digest | repeat check of the digest | repeat check by tag | `docker pull` would read |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{r.label} ({_human(r.image_bytes)} of blobs)"]
        for m in (r.cold_tag, r.cold_digest, r.repeat_digest, r.repeat_tag):
            cells.append(f"{_ms(m.seconds)}, {_plural(m.requests, 'request')}, {m.bytes_read:,} B")
        cells.append(
            f"{r.pull_bytes:,} B ({_human(r.pull_bytes)}) in {r.pull_requests} requests; "
            f"downloading them here took {_ms(r.pull_seconds)}"
        )
        lines.append("| " + " | ".join(cells) + " |")
    cold = [r.cold_tag.bytes_read for r in rows]
    spread = max(cold) - min(cold)
    ratio = max(r.cold_tag.bytes_read / r.pull_bytes for r in rows)
    lines += [
        "",
        f"- Bytes read by a cold check: {min(cold):,} to {max(cold):,} B across images from "
        f"{rows[0].label} to {rows[-1].label} (spread {spread} B: the digits of the layer sizes in the "
        f"manifest); at most {ratio:.2e} of what a pull reads. Manifest and config only: "
        f"{'yes' if all(r.cold_tag.requests == 2 for r in rows) else 'NO'} (2 requests each).",
        f"- Repeat check of a digest: {', '.join(str(r.repeat_digest.requests) for r in rows)} registry requests "
        "(process-wide per-digest cache, anonymous reads). A repeat by tag re-reads only the manifest "
        "(a tag can move), and takes the config from the cache.",
        f"- Setup (not measured above): building and pushing the images took "
        f"{', '.join(f'{r.label} {r.pushed_seconds:.1f} s' for r in rows)}.",
        "",
        "Targets: bytes read independent of image size (manifest and config only); a repeat check "
        "of a digest makes no registry request.",
    ]
    return "\n".join(lines)


def _registry_version() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["docker-registry", "--version"], capture_output=True, text=True, check=False, timeout=10
        ).stdout
    except OSError:
        return "version unknown"
    return out.strip().split("\n")[0] or "version unknown"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median time)")
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[10, 100, 1024])
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    rows: list[Row] = []
    with LocalRegistry() as reg:  # temporary storage, removed when it stops
        for seed, size in enumerate(sorted(args.sizes_mib), start=1):
            print(f"pushing and checking a {size} MiB image ...", file=sys.stderr, flush=True)
            rows.append(measure(reg, size, seed, args.runs))
    body = render(rows, args.runs)
    command = ".venv/bin/python benchmarks/preflight.py"
    if args.runs != 5 or sorted(args.sizes_mib) != [10, 100, 1024]:
        command += f" --runs {args.runs} --sizes-mib {' '.join(map(str, sorted(args.sizes_mib)))}"
    if not args.no_write:
        write_section("preflight", body, command)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
