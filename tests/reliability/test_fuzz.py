"""Bad input, fuzzed: every example ends in a result, a finding, or one of our own clear errors.

Row 10 of the reliability list. "Our own clear error" means:

- `spec.SpecError` (a ValueError) with a non-empty `problems` list, for job specs, job JSON
  and operator arguments (each problem names the argument it is about);
- `image.ImageReferenceError` (a ValueError) with a message, for image references;
- a ValueError from the operator's own argument checks that names the argument;
- Airflow's TypeError for a keyword the operator does not have ("Invalid arguments were
  passed"), which is only ever drawn on purpose.

Anything else (KeyError, TypeError, OverflowError, AttributeError, ...) fails the test. An
operator that accepts its arguments must also be able to build its job (or say why not),
name it, poll, and defer with a trigger whose kwargs are JSON. Each fuzz test counts the
examples it really ran and checks them against its share of the 10,000 per run.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import IMAGE, TI, ctx

from airflow_batch_streaming import checker, spec, status
from airflow_batch_streaming._compat import TaskDeferred
from airflow_batch_streaming.exceptions import BatchJobFailedError
from airflow_batch_streaming.image import ImageReference, ImageReferenceError, parse_image_uri
from airflow_batch_streaming.operators import BatchStreamingJobOperator
from airflow_batch_streaming.operators._common import raise_for_job
from airflow_batch_streaming.preflight import Report
from airflow_batch_streaming.sensors import BatchJobStateSensor
from airflow_batch_streaming.spec import FIELD_NAMES, JobSpec, SpecError

#: Examples each fuzz test must run; together at least 10,000 per run.
EXAMPLES = {
    "image_references": 4000,
    "job_json": 2000,
    "job_specs": 1500,
    "operator_arguments": 1500,
    "template_results": 1000,
}
RAN: Counter[str] = Counter()
JOB_ID_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
REGION = "us-central1"
JOB_NAME = f"projects/p/locations/{REGION}/jobs/fuzzed"


def fuzz(
    name: str, *strategies: st.SearchStrategy[Any]
) -> Callable[[Callable[..., None]], Callable[[], None]]:
    """`@given(*strategies)` with this test's example budget; the body counts each run."""

    def wrap(body: Callable[..., None]) -> Callable[[], None]:
        @functools.wraps(body)  # hypothesis reads the parameter names through __wrapped__
        def counted(*args: Any, **kwargs: Any) -> None:
            RAN[name] += 1
            body(*args, **kwargs)

        return settings(
            max_examples=EXAMPLES[name],
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )(given(*strategies)(counted))

    return wrap


def run_counted(name: str, test: Callable[[], None]) -> None:
    before = RAN[name]
    test()
    assert RAN[name] - before >= EXAMPLES[name], f"hypothesis ran {RAN[name] - before} examples"


def test_the_fuzz_budget_is_at_least_ten_thousand_examples() -> None:
    assert sum(EXAMPLES.values()) >= 10_000


def assert_spec_error(error: SpecError) -> None:
    assert error.problems and all(isinstance(p, str) and p.strip() for p in error.problems)
    assert all(p in str(error) for p in error.problems)


# --------------------------------------------------------------------------- values

#: Values that break code written for the expected type: one draw each, so they come often.
NASTY: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**63,
    10**400,
    1e308,
    float("nan"),
    float("inf"),
    -0.0,
    "",
    " ",
    "\x00",
    "{{ x }}",
    "é∂ 😀",
    "a" * 300,
    b"bytes",
    timedelta(0),
    timedelta.max,
    timedelta(days=-1),
    (),
    [],
    {},
    [None],
    {"": None},
    frozenset({1}),
    object(),
)
# Hypothesis spends its time drawing, one choice per character or element: small sizes
# keep ten thousand examples within seconds while NASTY supplies the extremes.
scalars = st.one_of(st.sampled_from(NASTY), st.integers(), st.floats(), st.text(max_size=8))
nested = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)
anything = st.one_of(scalars, nested)
JOB_KEYS = (
    "taskGroups",
    "taskSpec",
    "runnables",
    "container",
    "imageUri",
    "enableImageStreaming",
    "logsPolicy",
    "destination",
    "allocationPolicy",
    "location",
    "allowedLocations",
    "labels",
    "taskCount",
    "task_groups",
    "options",
)
JSON_NASTY = (
    None,
    True,
    0,
    -1,
    2**64,
    1.5,
    float("nan"),
    float("inf"),
    "",
    IMAGE,
    "gcr.io/p/i",
    [],
    {},
    [{}],
)
json_like = st.recursive(
    st.sampled_from(JSON_NASTY) | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(JOB_KEYS), inner, max_size=3),
    max_leaves=6,
)

# --------------------------------------------------------------------------- 1. image references

_REFERENCE_CHARS = "abcxyzAZ0129:/@._-[]%+ \t\n" + "0123456789abcdef" * 2
references = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=_REFERENCE_CHARS, max_size=120),
    st.builds(
        lambda pos, junk: IMAGE[:pos] + junk + IMAGE[pos:],  # one good reference, damaged
        st.integers(0, len(IMAGE)),
        st.text(alphabet=_REFERENCE_CHARS, max_size=5),
    ),
    st.builds(
        lambda host, path, tail: f"{host}/{path}{tail}",
        st.sampled_from(["us-central1-docker.pkg.dev", "europe-docker.pkg.dev", "gcr.io", "localhost:5000"]),
        st.lists(st.text(alphabet="abz09._-", max_size=6), max_size=5).map("/".join),
        st.sampled_from(["", ":latest", ":1.0", "@sha256:" + "a" * 64, "@sha256:abc", ":", "@"]),
    ),
)


@fuzz(
    "image_references",
    references,
    st.sampled_from([REGION, "europe-west1", "zones/us-central1-a", "nowhere"]),
)
def _image_references(uri: str, location: str) -> None:
    try:
        ref = parse_image_uri(uri)
    except ImageReferenceError as error:
        assert error.message and isinstance(error.hint, str)
    else:
        assert isinstance(ref, ImageReference) and parse_image_uri(str(ref)) == ref
    report = checker.check_image(uri, location, registry=None, api_check=None)
    assert isinstance(report, Report) and report.image == uri
    json.dumps(report.to_dict(), allow_nan=False)
    report.format_text()


def test_image_references_parse_or_explain_themselves() -> None:
    run_counted("image_references", _image_references)


# --------------------------------------------------------------------------- 2. job JSON

_container = st.fixed_dictionaries(
    {"imageUri": st.sampled_from([IMAGE, "gcr.io/p/i", "", 7, None])},
    optional={
        "enableImageStreaming": st.sampled_from([True, False, "true", None, 1]),
        "commands": st.sampled_from([["echo", "hi"], [], "echo", [1, None]]),
        "options": st.sampled_from(["--privileged", ""]),
        "username": st.just("u"),
        "image_uri": st.just(IMAGE),
    },
)
_runnable = st.one_of(st.fixed_dictionaries({"container": _container}), json_like)
_group = st.fixed_dictionaries(
    {"taskSpec": st.fixed_dictionaries({"runnables": st.lists(_runnable, max_size=2)})},
    optional={"taskCount": st.sampled_from([1, "2", -1, "x", None]), "task_count": st.just(1)},
)
jobs = st.one_of(
    json_like,
    st.fixed_dictionaries(
        {"taskGroups": st.lists(_group, max_size=2) | json_like},
        optional={
            "logsPolicy": st.sampled_from([{"destination": "CLOUD_LOGGING"}, {"destination": 7}, {}, None]),
            "allocationPolicy": st.sampled_from(
                [
                    {"location": {"allowedLocations": ["regions/us-central1"]}},
                    {"location": {"allowedLocations": ["zones/europe-west1-b", "regions/us-central1"]}},
                    {"location": {"allowedLocations": "us"}},
                    {"instances": [{"policy": {"machineType": "t2a-standard-1"}}]},
                    {"instances": 3},
                ]
            ),
            "labels": st.sampled_from([{"a": "b"}, {"A": 1}, {"": ""}, []]),
            "task_groups": st.just([]),
        },
    ),
)


@fuzz("job_json", jobs, st.sampled_from(["dict", "text", "bytes"]), st.sampled_from([REGION, "nowhere"]))
def _job_json(job: Any, form: str, location: str) -> None:
    value: Any = job
    if form != "dict":
        try:
            value = json.dumps(job)
        except ValueError:
            return
        value = value.encode() if form == "bytes" else value
    try:
        rest = spec.job_to_rest(value)
    except SpecError as error:
        assert_spec_error(error)
        return
    json.dumps(rest, allow_nan=False)
    spec.streaming_containers(rest)
    try:  # a job the Batch API would refuse is refused here too, listing every problem
        report = checker.check_job(rest, location, registry=None, api_check=None)
    except SpecError as error:
        assert_spec_error(error)
    else:
        assert isinstance(report, Report)
        json.dumps(report.to_dict(), allow_nan=False)
    try:
        spec.rest_to_job(rest)
    except SpecError as error:
        assert_spec_error(error)


def test_job_json_is_read_or_refused_with_a_spec_error() -> None:
    run_counted("job_json", _job_json)


# --------------------------------------------------------------------------- 3. job specs

_plausible: dict[str, st.SearchStrategy[Any]] = {
    "image_uri": st.sampled_from([IMAGE, "gcr.io/p/i", ""]),
    "commands": st.lists(st.sampled_from(["echo", "hi", "", "$X", "{{ x }}"]), max_size=3),
    "task_count": st.integers(-2, 200_000) | st.sampled_from(["4", "-1", "1e3", "0x10", " 7 "]),
    "parallelism": st.integers(-1, 20),
    "cpu_milli": st.integers(-1, 100_000),
    "memory_mib": st.integers(-1, 100_000),
    "max_retry_count": st.integers(-1, 12),
    "retry_on_preemption": st.booleans() | st.sampled_from(["true", "no"]),
    "max_run_duration": st.integers(-5, 10**12)
    | st.floats()
    | st.sampled_from(["3600s", "1h30m", "1.5s", "-1s", "1e9h"]),
    "environment": st.dictionaries(
        st.sampled_from(["A", "B_1", "_x", "1A", "a-b"]), st.sampled_from(["v", "", 1])
    ),
    "secret_environment": st.dictionaries(
        st.sampled_from(["S", "bad name"]), st.sampled_from(["projects/p/secrets/s/versions/1", "s"])
    ),
    "lifecycle_policies": st.lists(
        st.fixed_dictionaries(
            {
                "action": st.sampled_from(["RETRY_TASK", "FAIL_TASK", "x"]),
                "exit_codes": st.sampled_from([[50001], [0], [3, 3], [], "1", [70000]]),
            }
        ),
        max_size=2,
    ),
    "labels": st.dictionaries(
        st.sampled_from(["team", "env", "airflow-ti", "Bad", "x" * 64]), st.sampled_from(["v", "", "UP", 1])
    ),
    "allowed_locations": st.lists(st.sampled_from([REGION, "zones/us-central1-a", "us", "europe-west1"])),
    "provisioning_model": st.sampled_from(["SPOT", "standard", "PREEMPTIBLE", "?"]),
    "machine_type": st.sampled_from(["e2-standard-4", "t2a-standard-1", "Bad Type"]),
    "priority": st.integers(-2, 101),
}


@st.composite
def spec_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(FIELD_NAMES), unique=True, max_size=5))
    kwargs: dict[str, Any] = {"image_uri": IMAGE}
    for name in names:
        wild = name not in _plausible or draw(st.booleans())
        kwargs[name] = draw(anything if wild else _plausible[name])
    if draw(st.integers(0, 19)) == 0:
        kwargs["task_cout"] = 1
    return kwargs


@fuzz("job_specs", spec_kwargs(), st.sampled_from([None, REGION, "bogus", "zones/us-central1-a"]))
def _job_specs(kwargs: dict[str, Any], region: str | None) -> None:
    try:
        job_spec = JobSpec.from_kwargs(**kwargs)
    except SpecError as error:
        assert_spec_error(error)
        return
    problems = job_spec.problems(region)
    names = (*FIELD_NAMES, "region")
    for problem in problems:
        assert isinstance(problem, str) and any(re.search(rf"\b{n}\b", problem) for n in names), problem
    try:
        rest = job_spec.to_rest(region)
    except SpecError as error:
        assert error.problems == problems
        return
    assert problems == []
    json.dumps(rest, allow_nan=False)
    assert isinstance(checker.check_job(rest, region or REGION, registry=None, api_check=None), Report)


def test_job_specs_compile_or_list_their_problems() -> None:
    run_counted("job_specs", _job_specs)


# --------------------------------------------------------------------------- 4. operator arguments

durations = st.one_of(
    st.none(),
    st.floats(),  # nan, inf, 1e308
    st.integers(-(10**20), 10**20),
    st.timedeltas(),  # up to timedelta.max
    st.sampled_from(["60", "1h", ""]),
)
OPERATOR_ONLY: dict[str, st.SearchStrategy[Any]] = {
    "project_id": st.sampled_from(["p", "", "  "]) | st.text(max_size=8),
    "region": st.sampled_from([REGION, "europe-west1", "zones/us-central1-a", "", "mars"]),
    "job_id": st.sampled_from([None, "nightly", "Bad ID!"]) | st.text(max_size=8),
    "preflight": st.booleans(),
    "preflight_fail_on_warnings": st.booleans(),
    "wait_for_completion": st.booleans(),
    "deferrable": st.booleans(),
    "poll_interval": durations,
    "timeout": durations,
    "cancel_on_kill": st.booleans(),
    "reattach": st.booleans(),
    "failure_log_lines": st.integers(-5, 1000) | st.floats() | st.text(max_size=4) | st.none(),
}
#: Passed through to the Google provider's hook as they are (strings, as after rendering).
PASSED_THROUGH: dict[str, st.SearchStrategy[Any]] = {
    "gcp_conn_id": st.sampled_from(["google_cloud_default", "other"]) | st.text(max_size=8),
    "impersonation_chain": st.none() | st.text(max_size=12) | st.lists(st.text(max_size=5), max_size=3),
}
UNKNOWN = ("imageUri", "task_cout", "region_name")


@st.composite
def operator_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    # The operator's own arguments as often as all the job's together: they are fewer.
    names = draw(st.lists(st.sampled_from([*OPERATOR_ONLY, *PASSED_THROUGH]), unique=True, max_size=4))
    names += draw(st.lists(st.sampled_from(FIELD_NAMES), unique=True, max_size=3))
    kwargs: dict[str, Any] = {"project_id": "p", "region": REGION, "image_uri": IMAGE, "preflight": False}
    for name in names:
        if name in PASSED_THROUGH:
            kwargs[name] = draw(PASSED_THROUGH[name])
            continue
        plausible = OPERATOR_ONLY.get(name, _plausible.get(name))
        kwargs[name] = draw(anything if plausible is None or draw(st.booleans()) else plausible)
    if draw(st.integers(0, 19)) == 0:
        kwargs[draw(st.sampled_from(UNKNOWN))] = 1
    return kwargs


def _names_an_argument(error: Exception, kwargs: dict[str, Any]) -> bool:
    text = str(error)
    return any(re.search(rf"\b{re.escape(name)}\b", text) for name in kwargs)


class _NoOutputHook:
    """Enough of the hook for `raise_for_job`: the job's tasks and logs are empty."""

    def list_tasks(self, *_: Any, **__: Any) -> list[Any]:
        return []

    def list_log_entries(self, *_: Any, **__: Any) -> list[Any]:
        return []


def _check_operator_runs(op: BatchStreamingJobOperator) -> None:
    """What execute does with the arguments around the API calls: build, name, poll, defer, fail."""
    context = ctx(TI())
    try:
        rest = op.build_job(context)
    except SpecError as error:
        assert_spec_error(error)
    else:
        json.dumps(rest, allow_nan=False)
    assert JOB_ID_RE.match(op.job_id_for(context))
    interval = op.poll_interval or status.adaptive_interval("RUNNING", 0.0)  # what the wait sleeps
    assert math.isfinite(interval) and interval > 0
    deadline = op._deadline({"create_time": datetime.now(UTC).isoformat()})
    with pytest.raises(TaskDeferred) as deferred:
        op._defer(JOB_NAME, deadline)
    _, trigger_kwargs = deferred.value.trigger.serialize()
    json.dumps(trigger_kwargs, allow_nan=False)
    assert deferred.value.timeout is None or deferred.value.timeout > timedelta(0)
    failed = {
        "name": JOB_NAME,
        "uid": "u",
        "createTime": "2026-01-01T00:00:00Z",
        "status": {"state": "FAILED"},
    }
    with pytest.raises(BatchJobFailedError):
        raise_for_job(_NoOutputHook(), failed, log=op.log, log_lines=op.failure_log_lines)  # type: ignore[arg-type]


@fuzz("operator_arguments", operator_kwargs())
def _operator_arguments(kwargs: dict[str, Any]) -> None:
    try:
        op = BatchStreamingJobOperator(task_id="fuzzed", **kwargs)
    except SpecError as error:
        assert_spec_error(error)
        assert all(p.startswith("task 'fuzzed': ") for p in error.problems)
        return
    except ValueError as error:
        assert _names_an_argument(error, kwargs), error
        return
    except TypeError as error:
        assert set(UNKNOWN) & set(kwargs) and "Invalid arguments were passed" in str(error), error
        return
    _check_operator_runs(op)


def test_operator_arguments_are_accepted_or_refused_clearly() -> None:
    run_counted("operator_arguments", _operator_arguments)


# --------------------------------------------------------------------------- 5. template results

STRUCTURED = (
    "commands",
    "volumes",
    "environment",
    "secret_environment",
    "labels",
    "gcs_volumes",
    "nfs_volumes",
    "accelerators",
    "lifecycle_policies",
    "allowed_locations",
)
SCALAR_TEMPLATED = (
    "project_id",
    "region",
    "job_id",
    "image_uri",
    "task_count",
    "cpu_milli",
    "max_run_duration",
    "machine_type",
    "priority",
    "enable_image_streaming",
)
RENDERED = (
    "['sh', '-c', 'echo hi']",
    '["sh", "-c"]',
    "{'A': 'b'}",
    '{"a": [1, {"b": null}]}',
    "[1, 2",
    "{'k': }",
    "[]",
    "{}",
    "None",
    "[None]",
    "{'a': {'b': {'c': []}}}",
    "[" * 3000 + "]" * 3000,
    "{" * 200 + "}" * 200,
    "[" + "1," * 5000 + "]",
    "[{'remote_path': 'b', 'mount_path': '/m'}]",
    "[{'action': 'RETRY_TASK', 'exit_codes': [50001]}]",
    "['us-central1', 'zones/us-central1-a']",
    "{'projects/p': 'projects/p/secrets/s/versions/1'}",
)
rendered_values = st.one_of(
    st.sampled_from(RENDERED),
    anything.map(str),  # what Jinja renders a value to (render_template_as_native_obj=False)
    json_like.map(json.dumps),
    anything,  # the value itself (render_template_as_native_obj=True)
)


@fuzz(
    "template_results",
    st.dictionaries(st.sampled_from(STRUCTURED + SCALAR_TEMPLATED), rendered_values, min_size=1, max_size=4),
)
def _template_results(rendered: dict[str, Any]) -> None:
    """Templated arguments pass the parse-time checks; their rendered values meet build_job."""
    arguments: dict[str, Any] = {"project_id": "p", "region": REGION, "image_uri": IMAGE, "preflight": False}
    arguments.update({name: "{{ params.value }}" for name in rendered})
    op = BatchStreamingJobOperator(task_id="templated", **arguments)
    for name, value in rendered.items():
        setattr(op, name, value)  # what rendering leaves in the attribute
    _check_operator_runs(op)


def test_template_results_build_a_job_or_list_their_problems() -> None:
    run_counted("template_results", _template_results)


def test_rendering_through_airflow_reaches_the_same_checks() -> None:
    """The real render path (Jinja + the operator's hook on it) with a few hostile params."""
    for value in (["sh", "-c", "echo '{}'"], {"a": [1, {"b": None}]}, "[" * 5000, "{'k': }", float("nan")):
        op = BatchStreamingJobOperator(
            task_id="templated",
            project_id="p",
            region=REGION,
            image_uri=IMAGE,
            preflight=False,
            commands="{{ params.value }}",
            labels="{{ params.value }}",
        )
        context = {**ctx(TI()), "params": {"value": value}}
        op.render_template_fields(context)
        assert op.job is None or isinstance(op.job, dict)
        _check_operator_runs(op)


@pytest.mark.parametrize(
    "arguments",
    [
        {"poll_interval": float("nan")},
        {"poll_interval": float("inf")},
        {"timeout": float("inf")},
        {"timeout": 1e300},
        {"timeout": 10**400},
        {"timeout": timedelta.max},
        {"failure_log_lines": "20"},
        {"failure_log_lines": None},
        {"failure_log_lines": -1},
        {"failure_log_lines": 2.5},
    ],
    ids=repr,
)
def test_values_that_would_break_a_wait_are_refused_when_the_dag_is_parsed(arguments: dict[str, Any]) -> None:
    """What the fuzzer found: these were accepted, then failed at deferral, sleep or failure time."""
    with pytest.raises(ValueError, match=next(iter(arguments))):
        BatchStreamingJobOperator(
            task_id="t", project_id="p", region=REGION, image_uri=IMAGE, preflight=False, **arguments
        )
    if "failure_log_lines" in arguments:
        with pytest.raises(ValueError, match="failure_log_lines"):
            BatchJobStateSensor(task_id="s", job_name=JOB_NAME, **arguments)
