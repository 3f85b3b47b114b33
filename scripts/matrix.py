#!/usr/bin/env python3
"""The version matrix: build one venv per combination from its constraints file, run the tiers.

`make venv` and `make test` use one combination (the newest Airflow on Python 3.11, with
`constraints.txt`). This script proves the others the package claims: Airflow 3.1, 3.2 and 3.3
(latest patch of each), Python 3.11 and 3.13, and the declared floors of the Google libraries as
well as their newest releases. Not the full cross product: four combinations (COMBOS below) in which
every value of every axis appears, run two at a time.

    python3 scripts/matrix.py lock [NAME...]    # (re)write constraints/NAME.txt with uv pip compile
    python3 scripts/matrix.py venv [NAME...]    # build (or refresh) the venvs only
    python3 scripts/matrix.py run [NAME...]     # build the venvs, run the tiers 2 at a time
    python3 scripts/matrix.py table             # the README table from the last run

Uses only the standard library and the `uv` of the main .venv (`make venv` installs it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints"
VENVS = ROOT / ".matrix"
RESULTS = VENVS / "results.json"
README = ROOT / "README.md"
TABLE_BEGIN = "<!-- matrix-table:begin (scripts/matrix.py table --write) -->"
TABLE_END = "<!-- matrix-table:end -->"

#: The declared floors in pyproject.toml, pinned exactly in the "floor" combinations.
FLOORS = {
    "apache-airflow-providers-google": "17.0.0",
    "google-cloud-batch": "0.19.0",
    "google-cloud-logging": "3.11.1",
    "google-cloud-service-usage": "1.13.0",
}
#: The libraries whose version the table reports.
REPORTED = ("apache-airflow", "apache-airflow-providers-google", "google-cloud-batch", "protobuf")

#: Unit, emulator and `airflow dags test` tiers; the full-stack tier and the fleet-scale emulator
#: tests (thousands of jobs: they test the emulator and our pacing, not Airflow or the Google
#: libraries, and are load-sensitive on a shared 2-core machine) run only in `make test`.
TIERS = ["tests/unit", "tests/emulator", "tests/integration", "tests/airflow"]
MARKERS = "not fullstack and not scale"


@dataclass(frozen=True)
class Combo:
    airflow: str
    python: str
    deps: str  # "floor" (FLOORS pinned) or "newest"
    caps: tuple[str, ...] = ()  # upper bounds the Airflow release itself lacks (COMBOS says why)

    @property
    def name(self) -> str:
        return f"airflow{self.airflow}-py{self.python}-{self.deps}"

    @property
    def constraints(self) -> Path:
        return CONSTRAINTS / f"{self.name}.txt"

    @property
    def venv(self) -> Path:
        return VENVS / self.name


#: Latest patch of each Airflow minor, as of the last `lock`. Together with `make test`'s
#: combination (3.3 / 3.11 / newest): every Airflow minor, both Pythons and both dependency
#: levels appear; 3.1 and 3.3 meet both Pythons and both levels; 3.2 runs on 3.13 with newest.
COMBOS = [
    Combo("3.1.8", "3.11", "floor"),
    Combo("3.1.8", "3.13", "newest"),
    # Airflow 3.2.2 caps neither fastapi nor svcs, and every task of `airflow dags test` fails
    # with the newest: fastapi 0.156.1+ cannot build its execution API (PydanticUserError:
    # TITerminalStatePayload needs a discriminator field; 3.3 declares fastapi<0.137), and with
    # svcs 26 its in-process execution API loses `app.state.svcs_registry` (3.2.2's lifespan
    # raises without [api_auth] jwt_secret; svcs 26 detaches the registry on that exit, 25.1 did
    # not; 3.3 fixed the lifespan). README "Supported versions" tells 3.2 users the same.
    Combo("3.2.2", "3.13", "newest", ("fastapi<0.137", "svcs<26")),
    Combo("3.3.2", "3.13", "floor"),
]


def uv() -> str:
    for candidate in (ROOT / ".venv" / "bin" / "uv", shutil.which("uv")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    sys.exit("matrix: uv not found: run `make venv` first (it installs uv into .venv)")


def find_python(version: str) -> str:
    """An interpreter for `version`: on PATH if it runs, else pyenv's, else none (no downloads)."""
    candidates = [shutil.which(f"python{version}") or ""]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"), reverse=True)
    candidates += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for path in candidates:
        if not path or not Path(path).exists():
            continue
        probe = subprocess.run(
            [path, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0 and probe.stdout.startswith(version + "."):
            return path
    sys.exit(
        f"matrix: no Python {version} found (looked on PATH, in {pyenv_root}/versions and /usr/bin): "
        f"install it, e.g. `pyenv install {version}`"
    )


def lock(combo: Combo) -> None:
    pins = [f"apache-airflow=={combo.airflow}", *combo.caps]
    if combo.deps == "floor":
        pins += [f"{name}=={version}" for name, version in FLOORS.items()]
    pins_file = VENVS / f"{combo.name}.pins.txt"
    pins_file.parent.mkdir(parents=True, exist_ok=True)
    pins_file.write_text("\n".join(pins) + "\n")
    CONSTRAINTS.mkdir(exist_ok=True)
    subprocess.run(
        [
            uv(), "pip", "compile", "--quiet", "pyproject.toml", str(pins_file),
            "--extra", "test", "--python-version", combo.python, "--no-annotate",
            "--custom-compile-command", f"python3 scripts/matrix.py lock {combo.name}",
            "-o", str(combo.constraints),
        ],
        cwd=ROOT,
        check=True,
    )  # fmt: skip
    print(f"matrix: wrote {combo.constraints.relative_to(ROOT)}")


def build(combo: Combo) -> tuple[float, str]:
    """Create or refresh the combination's venv; idempotent like scripts/bootstrap.sh."""
    start = time.monotonic()
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + combo.constraints.read_bytes())
    stamp = combo.venv / ".stamp"
    python = combo.venv / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == want.hexdigest():
        return time.monotonic() - start, ""
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    steps = [
        [uv(), "venv", "--quiet", "--clear", "--python", find_python(combo.python), str(combo.venv)],
        [
            uv(), "pip", "install", "--quiet", "--python", str(python),
            "-e", ".[test]", "-c", str(combo.constraints),
        ],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run(step, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            return time.monotonic() - start, f"{' '.join(step)}\n{done.stdout}{done.stderr}"
    stamp.write_text(want.hexdigest())
    return time.monotonic() - start, ""


def installed(combo: Combo) -> dict[str, str]:
    """Versions of the reported libraries and of Python itself, as the venv has them."""
    code = (
        "import json, sys, platform, importlib.metadata as m; "
        "print(json.dumps({'python': platform.python_version(), **{n: m.version(n) for n in sys.argv[1:]}}))"
    )
    out = subprocess.run(
        [str(combo.venv / "bin" / "python"), "-c", code, *REPORTED],
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(out.stdout) if out.returncode == 0 else {}


def run_tiers(combo: Combo, extra: list[str]) -> dict[str, object]:
    build_seconds, error = build(combo)
    result: dict[str, object] = {
        "name": combo.name,
        "deps": combo.deps,
        "build_seconds": round(build_seconds),
    }
    log = VENVS / f"{combo.name}.log"
    if error:
        log.write_text(error)
        return {**result, "outcome": "build failed", "log": str(log.relative_to(ROOT))}
    bin_dir = combo.venv / "bin"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(combo.venv),
    }
    env.pop("AIRFLOW_HOME", None)
    start = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(
            [
                str(bin_dir / "python"),
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-m",
                MARKERS,
                *TIERS,
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    tail = log.read_text().strip().splitlines()[-1:] or [""]
    summary = re.sub(r"^=+ | =+$", "", tail[0])
    return {
        **result,
        "versions": installed(combo),
        "test_seconds": round(time.monotonic() - start),
        "outcome": "passed" if code == 0 else f"failed (pytest exit {code})",
        "summary": summary,
        "log": str(log.relative_to(ROOT)),
    }


def table(results: list[dict[str, object]]) -> str:
    rows = [
        "| Airflow | Python | providers-google | google-cloud-batch | protobuf | deps | result | build s | tests s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        v = r.get("versions") or {}
        assert isinstance(v, dict)
        rows.append(
            f"| {v.get('apache-airflow', '?')} | {v.get('python', '?')} "
            f"| {v.get('apache-airflow-providers-google', '?')} | {v.get('google-cloud-batch', '?')} "
            f"| {v.get('protobuf', '?')} | {r['deps']} | {r['outcome']}: {r.get('summary', '')} "
            f"| {r['build_seconds']} | {r.get('test_seconds', '-')} |"
        )
    return "\n".join(rows)


def record(result: dict[str, object], started: float, jobs: int, size: int) -> None:
    """Merge one finished combination into RESULTS at once: a run cut short keeps what it proved."""
    runs = json.loads(RESULTS.read_text())["runs"] if RESULTS.exists() else {}
    elapsed = round(time.monotonic() - started)
    runs[str(result["name"])] = {**result, "run_elapsed_seconds": elapsed, "run_jobs": jobs, "run_size": size}
    RESULTS.write_text(json.dumps({"runs": runs}, indent=2))


def pick(names: list[str]) -> list[Combo]:
    known = {c.name: c for c in COMBOS}
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"matrix: unknown combination(s) {unknown}; known: {sorted(known)}")
    return [known[n] for n in names] if names else COMBOS


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_lock = sub.add_parser("lock")
    p_lock.add_argument("names", nargs="*")
    p_venv = sub.add_parser("venv")
    p_venv.add_argument("names", nargs="*")
    p_run = sub.add_parser("run")
    p_run.add_argument("names", nargs="*")
    p_run.add_argument("--jobs", type=int, default=2, help="combinations run at once (default 2)")
    p_run.add_argument("--pytest-args", default="", help="extra pytest arguments, one string")
    p_table = sub.add_parser("table")
    p_table.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = parser.parse_args()

    if args.command == "lock":
        for combo in pick(args.names):
            lock(combo)
        return 0
    if args.command == "venv":
        for combo in pick(args.names):
            seconds, error = build(combo)
            print(f"matrix: {combo.name}: {error or 'ready'} ({seconds:.0f} s)")
            if error:
                return 1
        return 0
    if args.command == "run":
        combos = pick(args.names)
        VENVS.mkdir(exist_ok=True)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
            futures = {pool.submit(run_tiers, c, args.pytest_args.split()): c for c in combos}
            results = []
            for future in concurrent.futures.as_completed(futures):  # recorded as each finishes
                combo, result = futures[future], future.result()
                results.append(result)
                record(result, started, args.jobs, len(combos))
                print(f"matrix: {combo.name}: {result['outcome']} {result.get('summary', '')} "
                      f"(build {result['build_seconds']} s, tests {result.get('test_seconds', '-')} s, "
                      f"log {result['log']})", flush=True)  # fmt: skip
        total = round(time.monotonic() - started)
        print(table(results))
        failed = [r["name"] for r in results if r["outcome"] != "passed"]
        print(f"matrix: {len(results)} combinations in {total} s, {args.jobs} at a time")
        # The plain closing line CI reads (combinations, not tests: those are in each log).
        print(f"matrix: {len(results) - len(failed)} passed, {len(failed)} failed")
        return 1 if failed else 0
    if args.command == "table":
        if not RESULTS.exists():
            sys.exit("matrix: no results yet: run `make test-matrix` first")
        runs = json.loads(RESULTS.read_text())["runs"]
        results = [runs[c.name] for c in COMBOS if c.name in runs]
        text = table(results)
        if results:
            last = max(results, key=lambda r: int(str(r["run_elapsed_seconds"])))
            text += (
                f"\n\n{len(results)} of a run of {last['run_size']} combinations, {last['run_jobs']} "
                f"at a time; the last finished {last['run_elapsed_seconds']} s after the run began"
            )
        missing = [c.name for c in COMBOS if c.name not in runs]
        if missing:
            text += f".\n\nNot run yet: {', '.join(missing)}"
        if args.write:
            readme = README.read_text()
            begin, end = readme.index(TABLE_BEGIN), readme.index(TABLE_END)
            README.write_text(readme[: begin + len(TABLE_BEGIN)] + "\n" + text + "\n" + readme[end:])
        print(text)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
