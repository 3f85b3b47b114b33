"""Parse cost: what a DAG file pays to import our operators, against the Google provider's.

Every figure is the median of fresh interpreters, so nothing is cached between samples.
Run: .venv/bin/python benchmarks/parse.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, run_py, versions, write_section

IMPORT_SNIPPET = """
import time, sys, json
import airflow.sdk  # what every DAG file pays anyway
t0 = time.perf_counter()
import {module}
t1 = time.perf_counter()
heavy = [m for m in ("google.cloud.batch_v1", "grpc", "google.cloud.logging") if m in sys.modules]
print(json.dumps({{"seconds": t1 - t0, "heavy": heavy, "modules": len(sys.modules)}}))
"""

PARSE_SNIPPET = """
import time, json, logging
logging.disable(logging.CRITICAL)
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
t0 = time.perf_counter()
bag = DagBag(dag_folder={path!r}, collect_dags=True)
t1 = time.perf_counter()
assert not bag.import_errors, bag.import_errors
print(json.dumps({{"seconds": t1 - t0, "dags": len(bag.dags)}}))
"""


def median_of(snippet: str, runs: int, env: dict[str, str]) -> tuple[float, dict[str, object]]:
    samples = [json.loads(run_py(snippet, env).strip().splitlines()[-1]) for _ in range(runs)]
    return statistics.median(s["seconds"] for s in samples), samples[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "True"}

    ours_mod = "airflow_batch_streaming.operators, airflow_batch_streaming.sensors"
    theirs_mod = "airflow.providers.google.cloud.operators.cloud_batch"
    ours, ours_info = median_of(IMPORT_SNIPPET.format(module=ours_mod), args.runs, env)
    theirs, theirs_info = median_of(IMPORT_SNIPPET.format(module=theirs_mod), args.runs, env)

    our_dag = ROOT / "dags" / "example_image_streaming.py"
    their_dag = ROOT / "benchmarks" / "provider_twin" / "example_image_streaming_provider.py"
    ours_parse, _ = median_of(PARSE_SNIPPET.format(path=str(our_dag)), args.runs, env)
    theirs_parse, _ = median_of(PARSE_SNIPPET.format(path=str(their_dag)), args.runs, env)

    body = f"""
Median of {args.runs} fresh interpreters each; {versions("apache-airflow", "apache-airflow-providers-google", "google-cloud-batch")}.

| what | ours | Google provider | ratio ours/provider |
|---|---|---|---|
| import of the operator module(s), beyond `airflow.sdk` | {ours * 1000:.0f} ms | {theirs * 1000:.0f} ms | {ours / theirs:.2f} |
| DagBag parse of the example DAG (`dags/example_image_streaming.py` vs its provider twin) | {ours_parse * 1000:.0f} ms | {theirs_parse * 1000:.0f} ms | {ours_parse / theirs_parse:.2f} |

Heavy modules loaded by the import — ours: {ours_info["heavy"] or "none"}; provider: {theirs_info["heavy"] or "none"}.
Target: import ratio at most 0.25; the example DAG parses faster than its twin.
"""
    write_section("parse", body, ".venv/bin/python benchmarks/parse.py")
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
