"""`make demo`: the whole product on one machine, no Google account.

Starts a real distribution registry and the Batch emulator (running task commands as
local processes), pushes a demo image and a deliberately broken one, runs the example
DAG with `airflow dags test` in a temporary AIRFLOW_HOME, and prints the preflight
report, the job's timeline and the job's own output; then the broken image's findings.
Everything it starts is stopped; it exits non-zero if anything failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PROJECT = "demo-project"
REGION = "us-central1"
DAG_ID = "example_image_streaming"

READ_XCOMS = textwrap.dedent(
    """
    import json, sys
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == sys.argv[1]).order_by(DagRun.id.desc()).first()
        out = {"state": str(run.state) if run else None, "xcoms": {}}
        if run:
            rows = session.query(XComModel).filter(
                XComModel.dag_id == sys.argv[1], XComModel.run_id == run.run_id, XComModel.key == "return_value"
            )
            for row in rows:
                out["xcoms"][row.task_id] = row.value
    print(json.dumps(out, default=str))
    """
)


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(
    cmd: list[str], env: dict[str, str], *, check: bool = True, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, text=True, capture_output=True, cwd=ROOT, check=False)
    if not quiet or proc.returncode != 0:
        if proc.stdout and not quiet:
            print(proc.stdout, end="")
        if proc.returncode != 0:
            print(proc.stdout[-6000:] if quiet else "", proc.stderr[-6000:], sep="\n", file=sys.stderr)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(cmd[:4])} ...` failed with exit code {proc.returncode}")
    return proc


def print_timeline(summary: dict[str, Any]) -> None:
    timeline = summary.get("timeline") or {}
    print(f"job   {summary.get('name')}")
    print(f"state {summary.get('state')}")
    for key in ("queued_seconds", "scheduled_seconds", "running_seconds", "total_seconds"):
        if timeline.get(key) is not None:
            print(f"  {key.replace('_', ' '):<18} {timeline[key]:.1f}")
    for state, at in (timeline.get("states") or {}).items():
        print(f"  {state:<18} {at}")


def main() -> int:
    from airflow_batch_streaming.emulator import EmulatorProcess
    from airflow_batch_streaming.testing.demo_images import push_demo_images
    from airflow_batch_streaming.testing.registry import LocalRegistry

    home = Path(tempfile.mkdtemp(prefix="batch-streaming-demo-"))
    failed = False
    try:
        with LocalRegistry() as registry, EmulatorProcess(run_commands=True) as emulator:
            banner(f"local registry on {registry.url}, Batch emulator on {emulator.target}")
            images = push_demo_images(registry.url, project=PROJECT, location=REGION)
            print(f"pushed {images['good']}\npushed {images['broken']} (duplicate and empty layers)")

            # The user's shell, minus any Airflow or Google settings that would steer the demo away.
            inherited = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("AIRFLOW", "BATCH_STREAMING_", "GOOGLE_"))
            }
            env = {
                **inherited,
                **emulator.env(),
                "BATCH_STREAMING_REGISTRY_URL": registry.url,
                "BATCH_STREAMING_EXAMPLE_PROJECT": PROJECT,
                "BATCH_STREAMING_EXAMPLE_REGION": REGION,
                "BATCH_STREAMING_EXAMPLE_IMAGE": images["good"],
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "NO_GCE_CHECK": "True",
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            }

            banner("preflight of the demo image")
            run(
                [
                    str(VENV_BIN / "airflow-batch-streaming"),
                    "preflight",
                    images["good"],
                    "--location",
                    REGION,
                    "--project",
                    PROJECT,
                ],
                env,
            )

            banner(f"airflow dags test {DAG_ID} (temporary AIRFLOW_HOME {home})")
            run([str(VENV_BIN / "airflow"), "db", "migrate"], env, quiet=True)
            test = run([str(VENV_BIN / "airflow"), "dags", "test", DAG_ID], env, check=False, quiet=True)
            read = run([sys.executable, "-c", READ_XCOMS, DAG_ID], env, quiet=True).stdout
            result = json.loads(read.strip().splitlines()[-1])  # log lines may come first
            print(f"DAG run state: {result['state']}")
            xcoms = result["xcoms"]
            if test.returncode != 0 or result["state"] != "success":
                failed = True
                print(test.stdout[-4000:], test.stderr[-4000:], sep="\n", file=sys.stderr)

            banner("the job's timeline (from Batch status events)")
            summary = xcoms.get("wait") or xcoms.get("submit") or {}
            print_timeline(summary)

            banner("the job's own output, from Cloud Logging")
            logs = xcoms.get("logs") or {}
            for line in logs.get("last_lines", []):
                print(f"  {line}")
            print(f"({logs.get('entries', 0)} log entries)")
            if not logs.get("entries"):
                failed = True

            banner("preflight of a deliberately broken image")
            broken = run(
                [
                    str(VENV_BIN / "airflow-batch-streaming"),
                    "preflight",
                    images["broken"],
                    "--location",
                    REGION,
                    "--project",
                    PROJECT,
                ],
                env,
                check=False,
            )
            if broken.returncode != 1:
                failed = True
                print("demo: the broken image should have failed its preflight", file=sys.stderr)

            banner(
                "fix it: a streamable copy in Artifact Registry, the same files (airflow-batch-streaming fix)"
            )
            fixed_to = f"{REGION}-docker.pkg.dev/{PROJECT}/demo/fixed:1.0"
            cli = [str(VENV_BIN / "airflow-batch-streaming"), "fix", images["broken"], "--to", fixed_to]
            fix = run([*cli, "--location", REGION, "--json"], env, check=False, quiet=True)
            fixed = json.loads(fix.stdout) if fix.returncode == 0 else {}
            for change in fixed.get("changes", []):
                print(f"  {change['code']}: {change['message']}")
            print(f"wrote {fixed.get('target')}; its preflight: {'OK' if fixed.get('ok') else 'FAILED'}")
            banner(f"airflow dags test {DAG_ID} on the fixed digest")
            env["BATCH_STREAMING_EXAMPLE_IMAGE"] = str(fixed.get("target"))
            again = run([str(VENV_BIN / "airflow"), "dags", "test", DAG_ID], env, check=False, quiet=True)
            read = run([sys.executable, "-c", READ_XCOMS, DAG_ID], env, quiet=True).stdout
            rerun = json.loads(read.strip().splitlines()[-1])
            print(
                f"DAG run state: {rerun['state']}; job state: {(rerun['xcoms'].get('wait') or {}).get('state')}"
            )
            if fix.returncode != 0 or again.returncode != 0 or rerun["state"] != "success":
                failed = True
    finally:
        shutil.rmtree(home, ignore_errors=True)
    banner(
        "demo " + ("FAILED" if failed else "finished: everything above ran locally, no Google account used")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
