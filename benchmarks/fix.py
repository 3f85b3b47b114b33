"""`airflow-batch-streaming fix`: bytes moved, time and memory for 100 MiB and 1 GiB images.

Two anonymous docker-registry instances on loopback. Each image has LAYERS random
(incompressible) layers and one gzipped empty tar layer, so every fix drops a layer and
writes a new config and manifest. Each run is the real command in a fresh child process
(`python -m airflow_batch_streaming fix ... --json`), which reports its own peak RSS.

* cross-registry: source in registry A, target in registry B: every layer byte crosses once;
* same registry: target in another repository of A: blobs are mounted, no layer byte moves;
* again: the same fix a second time: nothing is written.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from dataclasses import dataclass

from _common import versions, write_section

from airflow_batch_streaming.testing.registry import (
    GZIPPED_EMPTY_TAR,
    LocalRegistry,
    build_image,
    push_built,
    random_layer,
)

MIB = 1024 * 1024
LAYERS = 8
TARGET = "us-central1-docker.pkg.dev/bench-project/repo"
CHILD = (
    "import json, sys\n"
    "from airflow_batch_streaming.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = [line for line in open('/proc/self/status') if line.startswith('VmHWM:')][0].split()[1]\n"
    "sys.stderr.write(json.dumps({'maxrss_kib': int(hwm)}) + '\\n')\n"
    "sys.exit(rc)\n"
)


@dataclass
class Row:
    size: str
    mode: str
    image_bytes: int
    seconds: float
    bytes_read: int
    bytes_uploaded: int
    uploaded: int
    mounted: int
    present: int
    manifests: int
    rss_mib: float
    exit_code: int


def _push(reg: LocalRegistry, repository: str, size: int, seed: int) -> int:
    layers = [random_layer(size // LAYERS, seed=seed * 100 + i) for i in range(LAYERS)]
    image = build_image([*layers, GZIPPED_EMPTY_TAR])
    del layers
    push_built(reg.url, repository, "1.0", image)
    total = sum(len(b) for b in image.blobs.values())
    del image
    gc.collect()
    return total


def _fix(source: str, target: str, target_url: str) -> tuple[float, dict, float, int]:
    cmd = [sys.executable, "-c", CHILD, "fix", source, "--to", target, "--location", "us-central1"]
    cmd += ["--target-registry-url", target_url, "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"fix failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    rss = json.loads(proc.stderr.strip().splitlines()[-1])["maxrss_kib"] / 1024
    return seconds, json.loads(proc.stdout), rss, proc.returncode


def measure(a: LocalRegistry, b: LocalRegistry, size_mib: int, seed: int) -> list[Row]:
    label = f"{size_mib} MiB" if size_mib < 1024 else f"{size_mib // 1024} GiB"
    repository = f"bench/src-{size_mib}"
    image_bytes = _push(a, repository, size_mib * MIB, seed)
    source = f"{a.host}/{repository}:1.0"
    rows = []
    for mode, url, name in (
        ("cross-registry", b.url, f"{TARGET}/x{size_mib}:fixed"),
        ("cross-registry, again", b.url, f"{TARGET}/x{size_mib}:fixed"),
        ("same registry (mount)", a.url, f"{TARGET}/m{size_mib}:fixed"),
        ("same registry, again", a.url, f"{TARGET}/m{size_mib}:fixed"),
    ):
        seconds, out, rss, code = _fix(source, name, url)
        s = out["stats"]
        rows.append(
            Row(
                label,
                mode,
                image_bytes,
                seconds,
                s["bytes_read"],
                s["bytes_uploaded"],
                s["blobs_uploaded"],
                s["blobs_mounted"],
                s["blobs_present"],
                s["manifests_written"],
                rss,
                code,
            )
        )
        print(rows[-1], flush=True)
    return rows


def render(rows: list[Row]) -> str:
    head = (
        "| image | run | image bytes | wall (s) | bytes read | bytes uploaded | blobs up / mounted / there "
        "| manifests written | peak RSS (MiB) | exit |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r.size} | {r.mode} | {r.image_bytes:,} | {r.seconds:.1f} | {r.bytes_read:,} | {r.bytes_uploaded:,} "
        f"| {r.uploaded} / {r.mounted} / {r.present} | {r.manifests} | {r.rss_mib:.0f} | {r.exit_code} |\n"
        for r in rows
    )
    notes = (
        f"\nEach image: {LAYERS} random layers + one gzipped empty tar layer (dropped by the fix, so the "
        "config and manifest are new). Wall time is the whole command in a fresh process (imports "
        "included), against docker-registry on loopback; bytes read include manifests, config and the "
        "preflight of the result is done by the target client (not counted in bytes read). Peak RSS is "
        "the child's own (VmHWM: ru_maxrss would include the parent's at fork); blob bytes are streamed in 1 MiB reads and 32 MiB upload chunks, so it does not "
        f"grow with the image. {versions('apache-airflow')}.\n"
    )
    return head + body + notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1024", help="image sizes in MiB (comma-separated)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[Row] = []
    with LocalRegistry() as a, LocalRegistry() as b:
        for n, size in enumerate(sizes):
            rows += measure(a, b, size, seed=n + 1)
    body = render(rows)
    print(body)
    if not args.no_write:
        write_section("fix", body, "make venv registry && .venv/bin/python benchmarks/fix.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
