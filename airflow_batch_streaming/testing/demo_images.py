"""Push the demo's two images into a registry: one streamable, one deliberately broken.

Used by `make demo` and by the `demo-images` service of docker-compose.yaml:
    python -m airflow_batch_streaming.testing.demo_images --registry http://registry:5000
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from airflow_batch_streaming.testing.registry import (
    GZIPPED_EMPTY_TAR,
    Layer,
    PushError,
    build_image,
    push_built,
    tar_layer,
)


def push_demo_images(
    registry_url: str, *, project: str = "demo-project", location: str = "us-central1"
) -> dict[str, str]:
    """Push both images; returns their Artifact Registry URIs (resolved via BATCH_STREAMING_REGISTRY_URL)."""
    base = tar_layer({"etc/demo-release": b"airflow-batch-streaming demo\n"})
    app = tar_layer({"app/hello.sh": b"#!/bin/sh\necho hello from the demo image\n"})
    good = build_image([base, app])
    # Two faults Batch cannot stream: the same layer twice, and an empty (gzipped empty tar) layer.
    broken = build_image([base, Layer(GZIPPED_EMPTY_TAR), app, base])
    repository = f"{project}/demo"
    push_built(registry_url, f"{repository}/hello", "1.0", good)
    push_built(registry_url, f"{repository}/broken", "1.0", broken)
    host = f"{location}-docker.pkg.dev"
    return {"good": f"{host}/{repository}/hello:1.0", "broken": f"{host}/{repository}/broken:1.0"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True, help="registry base URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--project", default="demo-project")
    parser.add_argument("--location", default="us-central1")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the registry to answer")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            images = push_demo_images(args.registry, project=args.project, location=args.location)
            break
        except (OSError, PushError) as exc:
            if time.monotonic() > deadline:
                print(f"demo-images: could not push to {args.registry}: {exc}", file=sys.stderr)
                return 1
            time.sleep(1)
    for name, uri in images.items():
        print(f"{name}: {uri}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
