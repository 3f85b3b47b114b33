"""docker-compose.yaml cannot be started here (no Docker engine): check what can be checked."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _pinned(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in constraints.txt")


def test_official_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert AIRFLOW_SERVICES | {"postgres", "redis"} <= set(services)
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES - {"airflow-init"}}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-worker": "celery worker",
        "airflow-triggerer": "triggerer",
    }
    assert services["airflow-init"]["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"


def test_every_airflow_service_runs_the_built_image(compose: dict[str, Any]) -> None:
    images = set()
    for name in AIRFLOW_SERVICES:
        svc = compose["services"][name]
        assert svc.get("build") == ".", f"{name} is not built from the Dockerfile"
        images.add(svc["image"])
        assert "./dags:/opt/airflow/dags" in svc["volumes"], f"{name} does not mount dags/"
    assert len(images) == 1


def test_one_jwt_secret_shared_by_all(compose: dict[str, Any]) -> None:
    secrets = {
        compose["services"][name]["environment"].get("AIRFLOW__API_AUTH__JWT_SECRET")
        for name in AIRFLOW_SERVICES
    }
    assert len(secrets) == 1
    (secret,) = secrets
    assert secret


def test_versions_agree_with_pyproject_and_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^FROM apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)\s*$", dockerfile, re.M)
    assert match, "Dockerfile must start FROM apache/airflow:<version>-python<x.y>"
    airflow_version, python_version = match.groups()
    assert airflow_version == _pinned("apache-airflow")
    assert f"AIRFLOW_VERSION={airflow_version}" in dockerfile
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python_version.split("."))) >= tuple(map(int, required.split(".")))
    airflow_req = next(d for d in project["dependencies"] if d.startswith("apache-airflow>="))
    low, high = re.findall(r"[<>]=?\s*([\d.]+)", airflow_req)
    as_tuple = tuple(map(int, airflow_version.split(".")))
    assert tuple(map(int, low.split("."))) <= as_tuple < tuple(map(int, high.split(".")))


def test_emulator_and_registry_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    emulator = services["batch-emulator"]
    command = emulator["command"]
    assert emulator["entrypoint"] == ["airflow-batch-streaming"] and command[0] == "emulator"
    port = command[command.index("--port") + 1]
    assert "--run-commands" in command and command[command.index("--host") + 1] == "0.0.0.0"
    assert any(p.startswith("5000:") for p in services["registry"]["ports"])
    topic = command[command.index("--pubsub-topic") + 1]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["BATCH_STREAMING_EMULATOR_HOST"].endswith(f"batch-emulator:{port}}}"), name
        assert env["BATCH_STREAMING_REGISTRY_URL"].endswith("http://registry:5000}"), name
        # Push: the topic the emulator creates, and google-cloud-pubsub pointed at the emulator.
        assert env["PUBSUB_EMULATOR_HOST"].endswith(f"batch-emulator:{port}}}"), name
        assert env["BATCH_STREAMING_NOTIFICATION_TOPIC"].endswith(f"-{topic}}}"), name
    # The demo image is pushed by a one-shot service that waits for the registry.
    assert "registry" in services["demo-images"]["depends_on"]


def test_dockerfile_installs_this_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "airflow_batch_streaming" in dockerfile
    assert re.search(r"pip install .*/opt/airflow-batch-streaming", dockerfile)
