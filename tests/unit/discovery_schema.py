"""Google's own discovery documents, as a checker for the JSON this package sends and reads.

The documents ship inside `google-api-python-client` (a test extra only), under
`googleapiclient/discovery_cache/documents/`: `batch.v1.json`, `logging.v2.json`,
`serviceusage.v1.json`. They are the ground truth real-api-facts.md starts from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import googleapiclient

DOCUMENTS = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"
_DURATION = re.compile(r"^-?\d+(\.\d{1,9})?s$")
_INT64 = re.compile(r"^-?\d+$")


@cache
def document(name: str) -> dict[str, Any]:
    """`document("batch.v1")` -> the parsed discovery document."""
    data: dict[str, Any] = json.loads((DOCUMENTS / f"{name}.json").read_text())
    return data


def schema(doc: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = document(doc)["schemas"][name]
    return found


def problems(doc: str, value: Any, ref: str, *, request: bool = True) -> list[str]:
    """Every way `value` breaks schema `ref` of `doc`: unknown fields, wrong types, enum values.

    With `request=True` (what a client sends) output-only and deprecated fields are problems too.
    """
    found: list[str] = []
    _check(doc, value, {"$ref": ref}, ref, out=found, request=request)
    return found


def paths(doc: str, value: Any, ref: str) -> Iterator[str]:
    """The schema paths (`Job.taskGroups[].taskSpec.runnables[].container.imageUri`) `value` sets."""
    yield from _paths(doc, value, {"$ref": ref}, ref)


def _check(
    doc: str, value: Any, prop: Mapping[str, Any], where: str, *, out: list[str], request: bool
) -> None:
    if "$ref" in prop:
        properties = schema(doc, prop["$ref"]).get("properties", {})
        if not isinstance(value, Mapping):
            out.append(f"{where}: expected an object ({prop['$ref']}), got {type(value).__name__}")
            return
        for key, item in value.items():
            spec = properties.get(key)
            if spec is None:
                out.append(f"{where}.{key}: no such field in {prop['$ref']}")
                continue
            description = str(spec.get("description", ""))
            if request and (spec.get("readOnly") or description.startswith("Output only")):
                out.append(f"{where}.{key}: output only, a request must not set it")
            if request and (spec.get("deprecated") or description.startswith("Deprecated")):
                out.append(f"{where}.{key}: deprecated")
            _check(doc, item, spec, f"{where}.{key}", out=out, request=request)
        return
    kind, fmt = prop.get("type"), prop.get("format")
    if kind == "array":
        if not isinstance(value, list):
            out.append(f"{where}: expected an array, got {type(value).__name__}")
            return
        for index, item in enumerate(value):
            _check(doc, item, prop["items"], f"{where}[{index}]", out=out, request=request)
    elif kind == "object":
        if not isinstance(value, Mapping):
            out.append(f"{where}: expected a map, got {type(value).__name__}")
            return
        for key, item in value.items():
            _check(
                doc, item, prop.get("additionalProperties", {}), f"{where}[{key!r}]", out=out, request=request
            )
    elif kind == "string":
        if fmt in ("int64", "uint64"):
            ok = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, str) and bool(_INT64.match(value))
            )
            if not ok:
                out.append(f"{where}: expected an {fmt}, got {value!r}")
        elif not isinstance(value, str):
            out.append(f"{where}: expected a string, got {value!r}")
        elif fmt == "google-duration" and not _DURATION.match(value):
            out.append(f"{where}: {value!r} is not a duration like '3600s'")
        elif "enum" in prop and value not in prop["enum"]:
            out.append(f"{where}: {value!r} is not one of {prop['enum']}")
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            out.append(f"{where}: expected an integer, got {value!r}")
        elif fmt == "int32" and not -(2**31) <= value < 2**31:
            out.append(f"{where}: {value} overflows int32")
    elif kind == "boolean":
        if not isinstance(value, bool):
            out.append(f"{where}: expected a boolean, got {value!r}")
    elif kind == "number" and (not isinstance(value, int | float) or isinstance(value, bool)):
        out.append(f"{where}: expected a number, got {value!r}")


def _paths(doc: str, value: Any, prop: Mapping[str, Any], where: str) -> Iterator[str]:
    if "$ref" in prop and isinstance(value, Mapping):
        properties = schema(doc, prop["$ref"]).get("properties", {})
        for key, item in value.items():
            if key in properties:
                yield from _paths(doc, item, properties[key], f"{where}.{key}")
    elif prop.get("type") == "array" and isinstance(value, list):
        for item in value:
            yield from _paths(doc, item, prop["items"], f"{where}[]")
    else:
        yield where


def enum(doc: str, ref: str, field: str) -> list[str]:
    values: list[str] = schema(doc, ref)["properties"][field]["enum"]
    return values
