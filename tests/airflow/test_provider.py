"""Provider conventions: the metadata Airflow validates, and what its CLI lists for the package."""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from airflow_support import airflow_env

from airflow_batch_streaming import __version__
from airflow_batch_streaming.provider_info import get_provider_info

pytestmark = pytest.mark.airflow

PACKAGE = "airflow-batch-streaming"
LINKS = {
    "airflow_batch_streaming.links.BatchJobConsoleLink",
    "airflow_batch_streaming.links.BatchJobLogsLink",
}


def strict(schema: Any) -> Any:
    """The schema with unknown keys forbidden wherever it lists the known ones.

    Airflow's own schema leaves most objects open (and spells one `additional_properties`), so a
    misspelt key such as `extra_links` would pass it and silently do nothing.
    """
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def airflow_schema() -> Any:
    return json.loads(resources.files("airflow").joinpath("provider_info.schema.json").read_text())


def test_provider_info_validates_against_airflows_schema() -> None:
    info = get_provider_info()
    jsonschema.validate(info, airflow_schema())  # what the providers manager itself checks
    jsonschema.validate(info, strict(airflow_schema()))


def test_strict_schema_rejects_a_misspelt_key() -> None:
    """The strict check is not vacuous: a key Airflow ignores is an error."""
    info = {**get_provider_info(), "extra_links": ["x.Y"]}
    jsonschema.validate(info, airflow_schema())
    with pytest.raises(jsonschema.ValidationError, match="extra_links"):
        jsonschema.validate(info, strict(airflow_schema()))


def modules(info: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for kind in ("operators", "sensors", "hooks", "triggers"):
        for entry in info[kind]:
            for module in entry["python-modules"]:
                yield kind, module


def test_every_module_and_link_named_exists() -> None:
    from airflow.sdk import BaseOperatorLink
    from airflow.triggers.base import BaseTrigger

    info = get_provider_info()
    integrations = {i["integration-name"] for i in info["integrations"]}
    for kind in ("operators", "sensors", "hooks", "triggers"):
        assert {e["integration-name"] for e in info[kind]} <= integrations, kind
    for kind, name in modules(info):
        module = importlib.import_module(name)
        if kind == "triggers":
            assert any(inspect.isclass(v) and issubclass(v, BaseTrigger) for v in vars(module).values()), name
    assert set(info["extra-links"]) == LINKS
    for path in info["extra-links"]:
        module, _, cls = path.rpartition(".")
        assert issubclass(getattr(importlib.import_module(module), cls), BaseOperatorLink)
    for section in info["config"].values():
        for option in section["options"].values():
            {"integer": int, "float": float, "string": str}.get(option["type"], str)(option["default"])


#: Runs several `airflow ...` command lines through Airflow's own CLI parser in one process
#: (each `airflow` start costs tens of seconds on a loaded machine) and prints their output.
RUN_CLI = """
import contextlib, io, json, sys
from airflow.cli import cli_parser

out = {}
for line in sys.argv[1:]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        args = cli_parser.get_parser().parse_args(line.split())
        args.func(args)
    out[line] = buf.getvalue()
print("@@CLI@@" + json.dumps(out))
"""
COMMANDS = {
    "list": "providers list -o json",
    "get": f"providers get {PACKAGE} --full -o json",
    "links": "providers links -o json",
    "triggers": "providers triggers -o json",
    "config": "config get-value batch_streaming read_budget_per_minute",
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = airflow_env(home, Path(home) / "dags", {})
    result = subprocess.run(
        [sys.executable, "-c", RUN_CLI, *COMMANDS.values()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("@@CLI@@", 1)[1])
    return {key: out[line] for key, line in COMMANDS.items()}


def as_json(text: str) -> Any:
    return json.loads(text[text.index("[") :])


def test_cli_lists_the_provider(cli: dict[str, str]) -> None:
    listed = {p["package_name"]: p for p in as_json(cli["list"])}
    assert listed[PACKAGE]["version"] == __version__


def test_cli_gets_the_provider_with_its_parts(cli: dict[str, str]) -> None:
    (full,) = as_json(cli["get"])
    assert full["package-name"] == PACKAGE
    assert set(full["extra-links"]) == LINKS
    assert [m for e in full["hooks"] for m in e["python-modules"]] == ["airflow_batch_streaming.hooks"]
    assert [m for e in full["triggers"] for m in e["python-modules"]] == ["airflow_batch_streaming.triggers"]
    assert "read_budget_per_minute" in full["config"]["batch_streaming"]["options"]


def test_cli_lists_links_triggers_and_config(cli: dict[str, str]) -> None:
    assert {link["extra_link_class_name"] for link in as_json(cli["links"])} >= LINKS
    triggers = [t for t in as_json(cli["triggers"]) if t["package_name"] == PACKAGE]
    assert [t["class"] for t in triggers] == ["airflow_batch_streaming.triggers"]
    assert cli["config"].strip() == "7500"
