"""The preflight CLI on job files and arguments a new user writes: exit 0/1/2, never a traceback.

Subprocess runs for each class of input, and a hypothesis property: for random job JSON
(and YAML), `main()` exits 0, 1 or 2, prints exactly one JSON object with `--json`, and
raises nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from airflow_batch_streaming import preflight_cli
from airflow_batch_streaming.testing import LocalRegistry, build_image, push_built, tar_layer

PINNED = "us-central1-docker.pkg.dev/proj/repo/app@sha256:" + "ab" * 32


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("BATCH_STREAMING_", "GOOGLE_", "CLOUDSDK_"))
    }
    environ.update(
        {"NO_GCE_CHECK": "True", "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/adc.json", **(env or {})}
    )
    return subprocess.run(
        [sys.executable, "-m", "airflow_batch_streaming", "preflight", *args],
        capture_output=True,
        env=environ,
        input=stdin,
        timeout=120,
        check=False,
    )


def job_text(**container: Any) -> str:
    return json.dumps(
        {
            "taskGroups": [
                {
                    "taskSpec": {
                        "runnables": [
                            {"container": {"imageUri": PINNED, "enableImageStreaming": True, **container}}
                        ]
                    }
                }
            ],
            "logsPolicy": {"destination": "CLOUD_LOGGING"},
        }
    )


def write(tmp_path: Path, content: str | bytes, name: str = "job.json") -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


OFFLINE = ("--location", "us-central1", "--no-registry", "--no-api-check")


# ------------------------------------------------------------------ job files, exit 2 with every problem


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        ("{}", ["taskGroups is required"]),
        ('{"taskGroups": [{"taskSpec": {"runnables": []}}]}', ["runnables is required"]),
        (job_text(imageUri2="x", enableImageStreaming="yes"), ["'imageUri2'", "must be true or false"]),
        ("[" * 50_000 + "]" * 50_000, ["nested too deeply"]),
        ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 300)), ["nested"]),
        ("{oops", ["not valid JSON"]),
        ("", ["empty"]),
    ],
)
def test_invalid_job_files_exit_2_listing_every_problem(
    tmp_path: Path, content: str, mentions: list[str]
) -> None:
    path = write(tmp_path, content)
    text = run_cli("--job", path, *OFFLINE)
    assert text.returncode == 2 and b"Traceback" not in text.stderr
    for mention in mentions:
        assert mention.encode() in text.stderr
    as_json = run_cli("--job", path, *OFFLINE, "--json")
    assert as_json.returncode == 2 and b"Traceback" not in as_json.stderr
    error = json.loads(as_json.stdout)
    assert error["ok"] is False and set(error["error"]) == {"message", "problems"}
    listed = " ".join([error["error"]["message"], *error["error"]["problems"]])
    for mention in mentions:
        assert mention in listed


@pytest.mark.parametrize(
    "content",
    [
        job_text(),
        "\ufeff" + job_text(),
        job_text(enableImageStreaming="true"),
        job_text().replace('"CLOUD_LOGGING"', "1"),
        (
            "taskGroups:\n- taskSpec:\n    runnables:\n    - container:\n        imageUri: "
            + PINNED
            + "\n        enableImageStreaming: true\nlogsPolicy:\n  destination: CLOUD_LOGGING\n"
        ),
    ],
    ids=["json", "bom", "quoted-bool", "enum-number", "yaml"],
)
def test_spellings_the_api_accepts_pass(tmp_path: Path, content: str) -> None:
    result = run_cli("--job", write(tmp_path, content), *OFFLINE, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["findings"] == []


def test_a_job_from_stdin_as_yaml() -> None:
    yaml_job = "taskGroups:\n- taskSpec:\n    runnables:\n    - container: {imageUri: x}\n"
    result = run_cli("--job", "-", *OFFLINE, "--json", stdin=yaml_job.encode())
    assert result.returncode == 0, result.stderr
    assert [f["code"] for f in json.loads(result.stdout)["findings"]] == [
        "logs-disabled",
        "no-streaming-containers",
    ]


def test_allowed_locations_outside_the_job_region(tmp_path: Path) -> None:
    rest = json.loads(job_text())
    rest["allocationPolicy"] = {"location": {"allowedLocations": ["zones/us-east1-b"]}}
    result = run_cli("--job", write(tmp_path, json.dumps(rest)), *OFFLINE, "--json")
    assert result.returncode == 1
    codes = [f["code"] for f in json.loads(result.stdout)["findings"]]
    assert codes[:2] == ["location-outside-job-region", "location-mismatch"]


# ------------------------------------------------------------------ 8. messages


def test_usage_errors_are_json_with_json(tmp_path: Path) -> None:
    result = run_cli("--location", "us-central1", "--json")
    assert result.returncode == 2 and result.stderr == b""
    assert "exactly one" in json.loads(result.stdout)["error"]["message"]


@pytest.mark.parametrize(
    ("args", "env", "source"),
    [
        (["--registry-url", "https://user:s3cret@registry.example"], {}, "--registry-url"),
        (
            [],
            {"BATCH_STREAMING_REGISTRY_URL": "https://user:s3cret@registry.example"},
            "BATCH_STREAMING_REGISTRY_URL",
        ),
    ],
)
def test_a_registry_url_with_credentials_names_its_source_and_the_fix(
    args: list[str], env: dict[str, str], source: str
) -> None:
    result = run_cli(PINNED, "--location", "us-central1", *args, env=env)
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert f"{source} must not carry credentials" in stderr
    assert "remove the 'user:password@' part" in stderr and "gcloud auth application-default login" in stderr
    assert "s3cret" not in stderr and "token_provider" not in stderr


def test_the_source_of_a_registry_url_is_named_in_findings(local_registry: LocalRegistry) -> None:
    digest = push_built(local_registry.url, "proj/repo/app", "v1", build_image([tar_layer({"a": b"b"})]))
    missing = PINNED.replace("ab" * 32, "cd" * 32)
    by_option = run_cli(
        missing, "--location", "us-central1", "--registry-url", local_registry.url, "--no-api-check", "--json"
    )
    by_env = run_cli(
        missing,
        "--location",
        "us-central1",
        "--no-api-check",
        "--json",
        env={"BATCH_STREAMING_REGISTRY_URL": local_registry.url},
    )
    assert "(from --registry-url)" in json.loads(by_option.stdout)["findings"][0]["message"]
    assert "(from BATCH_STREAMING_REGISTRY_URL)" in json.loads(by_env.stdout)["findings"][0]["message"]
    ok = run_cli(
        f"{PINNED.split('@', maxsplit=1)[0]}@{digest}",
        "--location",
        "us-central1",
        "--registry-url",
        local_registry.url,
        "--no-api-check",
    )
    assert ok.returncode == 0, ok.stdout


def test_hints_quote_shell_arguments() -> None:
    result = run_cli(
        "quay.io/a/b:1",
        "--location",
        "us-central1",
        "--no-registry",
        "--project",
        "my project",
        "--json",
        env={"BATCH_STREAMING_EMULATOR_HOST": "127.0.0.1:9"},
    )
    hints = " ".join(f["hint"] for f in json.loads(result.stdout)["findings"])
    assert "--project 'my project'" in hints


# ------------------------------------------------------------ the property: 0, 1 or 2, never a traceback

_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=15,
)
_container_keys = st.sampled_from(
    [
        "imageUri",
        "image_uri",
        "enableImageStreaming",
        "commands",
        "entrypoint",
        "volumes",
        "options",
        "username",
        "password",
        "blockExternalNetwork",
        "imageUri2",
    ]
)
_container_values = _json | st.sampled_from(
    [PINNED, "gcr.io/p/i:1", "quay.io/a/b", " " + PINNED, True, "true", "false", 1, ["echo"]]
)
_container = st.dictionaries(_container_keys, _container_values, max_size=5)
_runnable = st.one_of(
    st.fixed_dictionaries({"container": _container}),
    st.fixed_dictionaries({"script": st.fixed_dictionaries({"text": st.text(max_size=5)})}),
    st.dictionaries(
        st.sampled_from(["container", "script", "barrier", "timeout", "environment"]), _json, max_size=2
    ),
)
_task_spec = st.fixed_dictionaries(
    {"runnables": st.lists(_runnable, max_size=3) | _json},
    optional={"maxRunDuration": _json | st.just("60s"), "maxRetryCount": _json | st.integers(0, 12)},
)
_group = st.fixed_dictionaries(
    {"taskSpec": _task_spec | _json}, optional={"taskCount": _json | st.just("3"), "parallelism": _json}
)
_allocation = st.fixed_dictionaries(
    {},
    optional={
        "location": st.fixed_dictionaries(
            {
                "allowedLocations": st.lists(
                    st.sampled_from(["zones/us-central1-a", "us-east1", "regions/x", "", 5]), max_size=3
                )
                | _json
            }
        ),
        "instances": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "policy": st.fixed_dictionaries(
                        {"machineType": st.sampled_from(["t2a-standard-1", "e2-small", "zz-1"]) | _json}
                    ),
                    "instanceTemplate": st.text(max_size=5),
                },
            ),
            max_size=2,
        ),
    },
)
# Mostly well-formed jobs, so that exits 0 and 1 are reached as well as 2.
_image = st.sampled_from(
    [
        PINNED,
        "gcr.io/p/i@sha256:" + "ab" * 32,
        "us-docker.pkg.dev/p/r/i:1",
        "quay.io/a/b",
        "europe-docker.pkg.dev/p/r/i",
    ]
)
_good_container = st.fixed_dictionaries(
    {"imageUri": _image},
    optional={
        "enableImageStreaming": st.sampled_from([True, "true", False, "false"]),
        "commands": st.lists(st.sampled_from(["echo", "hi"]), max_size=2),
        "options": st.sampled_from(["", "--privileged"]),
    },
)
_good_job = st.fixed_dictionaries(
    {
        "taskGroups": st.lists(
            st.fixed_dictionaries(
                {
                    "taskSpec": st.fixed_dictionaries(
                        {
                            "runnables": st.lists(
                                st.fixed_dictionaries({"container": _good_container}), min_size=1, max_size=2
                            )
                        }
                    )
                },
                optional={"taskCount": st.sampled_from([1, "2", 3.0])},
            ),
            min_size=1,
            max_size=1,
        )
    },
    optional={
        "logsPolicy": st.fixed_dictionaries({"destination": st.sampled_from(["CLOUD_LOGGING", 1, "PATH"])}),
        "allocationPolicy": st.fixed_dictionaries(
            {},
            optional={
                "location": st.fixed_dictionaries(
                    {
                        "allowedLocations": st.lists(
                            st.sampled_from(["zones/us-central1-a", "us-east1", "regions/us-central1"]),
                            max_size=2,
                        )
                    }
                ),
                "instances": st.lists(
                    st.fixed_dictionaries(
                        {
                            "policy": st.fixed_dictionaries(
                                {"machineType": st.sampled_from(["t2a-standard-1", "e2-small", "zz-1"])}
                            )
                        }
                    ),
                    max_size=1,
                ),
            },
        ),
    },
)
_job = st.one_of(
    _good_job,
    _json,
    st.fixed_dictionaries(
        {"taskGroups": st.lists(_group, max_size=2) | _json},
        optional={
            "logsPolicy": st.fixed_dictionaries(
                {"destination": st.sampled_from(["CLOUD_LOGGING", 1, 2, "PATH", "x", None])}
            )
            | _json,
            "allocationPolicy": _allocation | _json,
            "labels": _json,
            "priority": _json,
        },
    ),
)


def _encode(value: Any, form: str) -> bytes:
    if form == "yaml":
        import yaml

        return yaml.safe_dump(value, allow_unicode=True).encode()
    text = json.dumps(value)  # NaN and Infinity as Python's json writes them
    return ("\ufeff" + text).encode() if form == "bom" else text.encode()


_DIR = Path(tempfile.mkdtemp(prefix="abs-cli-property-"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _job,
    st.sampled_from(["json", "yaml", "bom"]),
    st.sampled_from(["us-central1", "zones/us-central1-a", "us", "nowhere", ""]),
    st.booleans(),
)
def test_the_cli_exits_0_1_or_2_on_any_job(job: Any, form: str, location: str, as_json: bool) -> None:
    path = _DIR / f"job.{form}"
    path.write_bytes(_encode(job, form))
    argv = ["--job", str(path), "--location", location, "--no-registry", "--no-api-check"]
    if as_json:
        argv.append("--json")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = preflight_cli.main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code  # type: ignore[assignment]
    event(f"exit {code}")  # --hypothesis-show-statistics shows how the inputs spread
    assert code in (0, 1, 2), (code, stderr.getvalue())
    assert "Traceback" not in stderr.getvalue()
    if as_json:
        payload = json.loads(stdout.getvalue())
        assert payload["ok"] is (code == 0)
        if code == 2:
            assert set(payload["error"]) == {"message", "problems"}
    elif code == 2:
        assert stderr.getvalue().startswith("airflow-batch-streaming preflight: error: ")
