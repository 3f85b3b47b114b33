"""Test-wide environment, set before anything imports Airflow.

Airflow reads its configuration once, at import; so the temporary AIRFLOW_HOME and
the settings that keep tests hermetic must be in the environment first.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="abs-airflow-home-"))
os.environ.setdefault("AIRFLOW_HOME", str(_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parent.parent / "dags"))
# A developer's own settings must not steer tests to a real project or registry.
for _name in (
    "BATCH_STREAMING_EMULATOR_HOST",
    "BATCH_STREAMING_REGISTRY_URL",
    "BATCH_STREAMING_MULTI_REGIONS",
):
    os.environ.pop(_name, None)
# Tests talk only to loopback: never let Google auth probe the GCE metadata server.
os.environ["NO_GCE_CHECK"] = "True"
os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"
