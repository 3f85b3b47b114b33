"""What a DAG file imports must not load the Google client libraries or grpc.

The dag-processor parses every DAG file every 30 s; `google.cloud.batch_v1`, `grpc` and
`google.cloud.logging` cost hundreds of milliseconds and tens of MB each time. Each check
runs in a fresh interpreter (this process has imported them long ago) and looks at
`sys.modules`. When one fails, the message shows the import chain that pulled the heavy
module in, read from `python -X importtime`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("google.cloud.batch_v1", "grpc", "google.cloud.logging", "google.cloud.logging_v2")

#: Beyond operators and sensors (the hard requirement, ARCHITECTURE.md): modules every
#: Airflow process, the triggerer or a DAG file may import, documented as cheap.
LAZY_MODULES = (
    "airflow_batch_streaming",
    "airflow_batch_streaming.triggers",
    "airflow_batch_streaming.hooks",
    "airflow_batch_streaming.hooks.clients",
    "airflow_batch_streaming.provider_info",
    "airflow_batch_streaming.links",
    "airflow_batch_streaming.status",
    "airflow_batch_streaming.spec",
    "airflow_batch_streaming.image",
    "airflow_batch_streaming.locations",
    "airflow_batch_streaming.registry",
    "airflow_batch_streaming.preflight",
    "airflow_batch_streaming.exceptions",
)

EXAMPLE_DAGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "dags").glob("*.py"))

# Imports each target (a module name, or a file run as a DAG file is: `runpy`), then
# prints which heavy modules are loaded.
PROBE = """
import json, runpy, sys
for target in sys.argv[1:]:
    if target.endswith(".py"):
        runpy.run_path(target, run_name="__dag_file__")
    else:
        __import__(target)
print(json.dumps([m for m in {heavy!r} if m in sys.modules]))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    # Clients are built lazily whatever the endpoint; the DAG files read this variable.
    env.pop("BATCH_STREAMING_EMULATOR_HOST", None)
    return env


def _probe(*targets: str, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c"]
    argv += [PROBE.format(heavy=HEAVY), *targets]
    return subprocess.run(
        argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120, check=False
    )


def import_chain(importtime_stderr: str, module: str) -> list[str]:
    """The chain `outermost import -> ... -> module` from `-X importtime` output.

    The output lists each module after its own imports, indented by nesting depth, so a
    module's importer is the next line below it with one level less.
    """
    rows: list[tuple[int, str]] = []
    for line in importtime_stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        name_field = line.split("|")[-1]
        if name_field.strip() == "imported package":
            continue
        stripped = name_field.lstrip(" ")
        depth = (len(name_field) - len(stripped) - 1) // 2
        rows.append((depth, stripped.strip()))
    exact = [i for i, (_, name) in enumerate(rows) if name == module]
    below = [i for i, (_, name) in enumerate(rows) if name.startswith(module + ".")]
    for index in exact[:1] or below[:1]:
        depth, name = rows[index]
        chain, want = [name], depth - 1
        for deeper_depth, parent in rows[index + 1 :]:
            if want < 0:
                break
            if deeper_depth == want:
                chain.append(parent)
                want -= 1
        return list(reversed(chain))
    return []


def _assert_lazy(*targets: str) -> None:
    proc = _probe(*targets)
    assert proc.returncode == 0, f"importing {targets} failed:\n{proc.stderr[-4000:]}"
    loaded: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    if not loaded:
        return
    traced = _probe(*targets, importtime=True)
    chains = {m: " -> ".join(import_chain(traced.stderr, m)) or "(chain not found)" for m in loaded}
    details = "\n".join(f"  {m}: {chain}" for m, chain in chains.items())
    pytest.fail(f"importing {', '.join(targets)} loaded {loaded}; import chains:\n{details}")


def test_operators_and_sensors_are_lazy() -> None:
    """Exactly what a DAG file imports (the hard requirement)."""
    _assert_lazy("airflow_batch_streaming.operators", "airflow_batch_streaming.sensors")


def test_every_cheap_module_is_lazy() -> None:
    """The other modules documented as cheap, in one interpreter (a failure names the chain)."""
    _assert_lazy(*LAZY_MODULES)


@pytest.mark.parametrize("dag_file", EXAMPLE_DAGS)
def test_example_dag_file_is_lazy(dag_file: str) -> None:
    """Executing a DAG file builds its operators (constructor checks included) lazily too."""
    _assert_lazy(dag_file)


def test_probe_detects_heavy_imports() -> None:
    """The check itself works: the hook module does load grpc, and its chain is found."""
    traced = _probe("airflow_batch_streaming.hooks.batch", importtime=True)
    assert traced.returncode == 0, traced.stderr[-4000:]
    assert "grpc" in json.loads(traced.stdout.strip().splitlines()[-1])
    chain = import_chain(traced.stderr, "grpc")
    assert chain[0] == "airflow_batch_streaming.hooks.batch", chain
    assert chain[-1] == "grpc", chain


def test_import_chain_parser() -> None:
    stderr = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       10 |         10 |       grpc._cython",
            "import time:       20 |         30 |     grpc",
            "import time:        5 |          5 |     json",
            "import time:       30 |         65 |   google.api_core.exceptions",
            "import time:       40 |        105 | mypkg.hooks",
        ]
    )
    assert import_chain(stderr, "grpc") == ["mypkg.hooks", "google.api_core.exceptions", "grpc"]
    assert import_chain(stderr, "grpc._cython") == [
        "mypkg.hooks",
        "google.api_core.exceptions",
        "grpc",
        "grpc._cython",
    ]
    assert import_chain(stderr, "absent") == []


# Records the thread that first executes the hook module (the Google provider comes with it),
# then makes the watcher's hook inside a running event loop.
OFF_LOOP_PROBE = """
import asyncio, importlib.abc, json, sys, threading
loaded_in = []

class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "airflow_batch_streaming.hooks.batch":
            loaded_in.append(threading.current_thread() is threading.main_thread())
        return None

sys.meta_path.insert(0, Spy())
from airflow_batch_streaming.triggers.watcher import JobWatcher

async def main():
    watcher = JobWatcher(asyncio.get_running_loop())
    await watcher.get_hook()

asyncio.run(main())
print(json.dumps(loaded_in))
"""


def test_the_watcher_imports_the_hook_off_the_event_loop() -> None:
    """Importing the hook takes about a second; done on the triggerer's loop it blocks every
    trigger (Airflow logs "async thread was blocked"). It must happen in the worker thread."""
    env = {**_env(), "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": "google-cloud-platform://"}
    done = subprocess.run(
        [sys.executable, "-c", OFF_LOOP_PROBE], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False], done.stdout
