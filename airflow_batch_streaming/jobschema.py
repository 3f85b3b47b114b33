"""A Batch job file read the way the Batch API reads it, with every problem listed at once.

`gcloud batch jobs submit --config` takes JSON or YAML; the REST API (proto3 JSON)
takes field names in camelCase or as in the proto, enum values by name or number, and
quoted booleans and integers. A field the batch.v1 schema does not have, a value of
the wrong type, a job with no task group or no runnable is refused by the API, so it is
refused here too, before the preflight says anything about streaming.

The schema is the `batch_v1.Job` proto descriptor (imported when a job is validated,
never at module import). Requirements come from the batch.v1 discovery document:
`Job.taskGroups` "Required ... Only one TaskGroup is supported now", `TaskGroup.taskSpec`
"Required", `TaskSpec.runnables` "Required", `Container.imageUri` "Required".
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

from airflow_batch_streaming.spec import SpecError

MAX_JOB_BYTES: Final = 4 * 1024 * 1024
MAX_DEPTH: Final = 64  # the Job schema nests about 10 deep; anything far deeper is not a job
MAX_PROBLEMS: Final = 50

_DURATION_RE: Final = re.compile(r"^-?\d+(\.\d{1,9})?s$")
_INT_RE: Final = re.compile(r"^-?\d+$")
_INT_RANGES: Final = {
    5: (-(2**31), 2**31 - 1),  # int32
    17: (-(2**31), 2**31 - 1),  # sint32
    15: (-(2**31), 2**31 - 1),  # sfixed32
    13: (0, 2**32 - 1),  # uint32
    7: (0, 2**32 - 1),  # fixed32
    3: (-(2**63), 2**63 - 1),  # int64
    18: (-(2**63), 2**63 - 1),  # sint64
    16: (-(2**63), 2**63 - 1),  # sfixed64
    4: (0, 2**64 - 1),  # uint64
    6: (0, 2**64 - 1),  # fixed64
}
_BOOL: Final = 8
_STRING: Final = 9
_BYTES: Final = 12
_FLOATS: Final = (1, 2)


def load_job_text(data: str | bytes, source: str = "the job") -> dict[str, Any]:
    """JSON or YAML text (a UTF-8 byte-order mark allowed) -> a dict; `SpecError` otherwise."""
    if isinstance(data, bytes):
        if len(data) > MAX_JOB_BYTES:
            raise SpecError(
                f"{source} is {len(data)} bytes; a Batch job is at most {MAX_JOB_BYTES} bytes here"
            )
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise SpecError(f"{source} is not UTF-8 text: {error.reason} at byte {error.start}") from None
    text = data.removeprefix("\ufeff")
    if len(text) > MAX_JOB_BYTES:
        raise SpecError(f"{source} is {len(text)} characters; a Batch job is at most {MAX_JOB_BYTES} here")
    if not text.strip():
        raise SpecError(f"{source} is empty: give a Batch job as JSON or YAML")
    try:
        job = json.loads(text)
    except RecursionError:
        raise SpecError(f"{source} is nested too deeply to be a Batch job") from None
    except json.JSONDecodeError as error:
        job = _load_yaml(text, source, error)
    depth = _depth(job)
    if depth > MAX_DEPTH:
        raise SpecError(f"{source} is nested {depth} levels deep; a Batch job is never more than {MAX_DEPTH}")
    if not isinstance(job, dict):
        raise SpecError(f"{source} must hold an object (a Batch job), not {_kind(job)}")
    return job


def _load_yaml(text: str, source: str, json_error: json.JSONDecodeError) -> Any:
    json_problem = f"not valid JSON ({json_error.msg}, line {json_error.lineno} column {json_error.colno})"
    if text.lstrip()[:1] in ("{", "["):
        raise SpecError(f"{source} is {json_problem}")
    try:
        import yaml
    except ImportError:
        raise SpecError(f"{source} is {json_problem}, and PyYAML is not installed to read YAML") from None
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise SpecError(f"{source} is nested too deeply to be a Batch job") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise SpecError(f"{source} is neither JSON nor YAML: {problem}{where}") from None


def _depth(value: Any) -> int:
    """Nesting depth, without recursion (a hostile file must not blow the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def validate_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """The job as canonical REST JSON (camelCase, enum names, real booleans and numbers).

    Raises `SpecError` listing every problem the API would refuse.
    """
    from google.cloud import batch_v1

    if _depth(job) > MAX_DEPTH:
        raise SpecError(f"the job is nested more than {MAX_DEPTH} levels deep")
    walker = _Walker()
    rest = walker.message(batch_v1.Job.pb().DESCRIPTOR, job, "job")
    if isinstance(rest, dict):
        walker.requirements(rest)
    if walker.problems:
        problems = walker.problems[:MAX_PROBLEMS]
        if len(walker.problems) > MAX_PROBLEMS:
            problems.append(f"... and {len(walker.problems) - MAX_PROBLEMS} more problems")
        raise SpecError(problems)
    assert isinstance(rest, dict)
    return rest


class _Walker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def message(self, descriptor: Any, value: Any, path: str) -> Any:
        if not isinstance(value, Mapping):
            self.add(f"{path} must be an object, got {_kind(value)}")
            return None
        fields = {f.json_name: f for f in descriptor.fields} | {f.name: f for f in descriptor.fields}
        out: dict[str, Any] = {}
        oneofs: dict[str, list[str]] = {}
        for key, item in value.items():
            fd = fields.get(key) if isinstance(key, str) else None
            if fd is None:
                names = sorted({f.json_name for f in descriptor.fields})
                self.add(f"{path} has no field {key!r}{_did_you_mean(key, names)}")
                continue
            if item is None:
                continue  # proto3 JSON: null is the default value
            where = f"{path}.{fd.json_name}"
            converted = self.field(fd, item, where)
            if converted is not None:
                out[fd.json_name] = converted
                if fd.containing_oneof is not None and not fd.containing_oneof.name.startswith("_"):
                    oneofs.setdefault(fd.containing_oneof.name, []).append(fd.json_name)
        for names in oneofs.values():
            if len(names) > 1:
                self.add(f"{path} sets {' and '.join(names)}: give only one of them")
        return out

    def field(self, fd: Any, value: Any, path: str) -> Any:
        message = fd.message_type
        if message is not None and message.GetOptions().map_entry:
            if not isinstance(value, Mapping):
                self.add(f"{path} must be an object of key -> value, got {_kind(value)}")
                return None
            value_fd = message.fields_by_name["value"]
            converted = {}
            for key, item in value.items():
                result = self.scalar_or_message(value_fd, item, f"{path}[{key!r}]")
                if result is not None:
                    converted[str(key)] = result
            return converted
        if _repeated(fd):
            if not isinstance(value, list):
                self.add(f"{path} must be a list, got {_kind(value)}")
                return None
            items = [self.scalar_or_message(fd, item, f"{path}[{i}]") for i, item in enumerate(value)]
            return [item for item in items if item is not None]
        return self.scalar_or_message(fd, value, path)

    def scalar_or_message(self, fd: Any, value: Any, path: str) -> Any:
        message = fd.message_type
        if message is not None:
            name = message.full_name
            if name == "google.protobuf.Duration":
                if isinstance(value, str) and _DURATION_RE.match(value):
                    return value
                self.add(f"{path} must be a duration such as '3600s', got {_kind(value)}")
                return None
            if name == "google.protobuf.Timestamp":
                if isinstance(value, str):
                    return value
                self.add(f"{path} must be an RFC 3339 timestamp string, got {_kind(value)}")
                return None
            return self.message(message, value, path)
        if fd.enum_type is not None:
            return self.enum(fd.enum_type, value, path)
        if fd.type == _BOOL:
            if isinstance(value, bool):
                return value
            if value in ("true", "false"):  # the REST API takes quoted booleans
                return value == "true"
            self.add(f"{path} must be true or false, got {_kind(value)}")
            return None
        if fd.type in (_STRING, _BYTES):
            if isinstance(value, str):
                return value
            self.add(f"{path} must be a string, got {_kind(value)}")
            return None
        if fd.type in _INT_RANGES:
            return self.integer(value, path, *_INT_RANGES[fd.type])
        if fd.type in _FLOATS:
            number = _number(value)
            if number is None:
                self.add(f"{path} must be a number, got {_kind(value)}")
            return number
        self.add(f"{path} has a type this checker does not read ({fd.type})")
        return None

    def enum(self, enum: Any, value: Any, path: str) -> str | None:
        if isinstance(value, str) and value in enum.values_by_name:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value in enum.values_by_number:
            return str(enum.values_by_number[value].name)
        names = [v.name for v in enum.values if not v.name.endswith("_UNSPECIFIED")]
        self.add(f"{path} must be one of {', '.join(names)} (or its number), got {_kind(value)}")
        return None

    def integer(self, value: Any, path: str, low: int, high: int) -> int | None:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif (isinstance(value, float) and math.isfinite(value) and value.is_integer()) or (
            isinstance(value, str) and _INT_RE.match(value.strip()) and len(value) < 30
        ):
            number = int(value)
        if number is None or not low <= number <= high:
            self.add(f"{path} must be an integer from {low} to {high}, got {_kind(value)}")
            return None
        return number

    def requirements(self, job: dict[str, Any]) -> None:
        groups = job.get("taskGroups")
        if not groups:
            self.add(
                "job.taskGroups is required: a job has one task group (with a taskSpec and its runnables)"
            )
            return
        if len(groups) > 1:
            self.add(f"job.taskGroups has {len(groups)} task groups: Batch supports only one")
        for g, group in enumerate(groups):
            where = f"job.taskGroups[{g}]"
            runnables = (group.get("taskSpec") or {}).get("runnables")
            if "taskSpec" not in group:
                self.add(f"{where}.taskSpec is required: the runnables each task runs")
            elif not runnables:
                self.add(f"{where}.taskSpec.runnables is required: at least one container, script or barrier")
            for r, runnable in enumerate(runnables or []):
                if not {"container", "script", "barrier"} & runnable.keys():
                    self.add(f"{where}.taskSpec.runnables[{r}] needs a container, a script or a barrier")
                container = runnable.get("container")
                if container is not None and not container.get("imageUri"):
                    self.add(
                        f"{where}.taskSpec.runnables[{r}].container.imageUri is required: the image to run"
                    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        if value in ("NaN", "Infinity", "-Infinity"):
            return float(value)
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _repeated(fd: Any) -> bool:
    """Whether the field is a list: protobuf 7 has only ``is_repeated``, protobuf 5 (what the
    floors of google-cloud-batch and the provider install) only ``label``."""
    flag = getattr(fd, "is_repeated", None)
    return bool(flag) if flag is not None else fd.label == fd.LABEL_REPEATED


def _kind(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _did_you_mean(name: str, candidates: list[str]) -> str:
    matches = difflib.get_close_matches(name, candidates, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)" if matches else ""
