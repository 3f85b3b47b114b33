"""`--run-commands`: tasks run as local processes; exit codes, environment and logs as on Batch."""

from __future__ import annotations

import sys
import time

import pytest
from emulator_support import PARENT, container_job, descriptions, entries, exit_codes, wait_for
from google.cloud import batch_v1

from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.hooks import clients

pytestmark = pytest.mark.emulator

State = batch_v1.JobStatus.State
PY = sys.executable


def py(code: str) -> list[batch_v1.Runnable]:
    """A runnable running Python code (unbuffered, so stdout and stderr lines keep their order)."""
    container = batch_v1.Runnable.Container(image_uri="img", entrypoint=PY, commands=["-u", "-c", code])
    return [batch_v1.Runnable(container=container)]


def test_failing_command_gives_failed_with_exit_code_and_logs(
    command_emulator: Emulator, command_batch: batch_v1.BatchServiceClient
) -> None:
    code = "import sys; print('hello from the task'); print('something broke', file=sys.stderr); sys.exit(3)"
    job = command_batch.create_job(
        parent=PARENT, job=container_job(runnables=py(code)), job_id="prints-and-exits"
    )
    job, seen = wait_for(command_batch, job.name)
    assert seen[-1] == "FAILED" and "RUNNING" in seen
    assert exit_codes(job) == [3]
    assert "with exit code 3." in descriptions(job)[-1]
    found = entries(clients.logging_client(), job.uid)
    task_lines = [(e.text_payload, e.severity) for e in found if e.log_name.endswith("/batch_task_logs")]
    assert task_lines == [("hello from the task", 200), ("something broke", 500)]
    agent = [e.text_payload for e in found if e.log_name.endswith("/batch_agent_logs")]
    assert agent[-1].endswith("runnable 0 exited with status 3.")
    assert all(e.labels["task_id"] == f"task/{job.uid}-group0-0/0/0" for e in found)


def test_environment_and_argument_lists(
    command_emulator: Emulator, command_batch: batch_v1.BatchServiceClient
) -> None:
    command_emulator.secrets({"projects/p/secrets/token/versions/1": "s3cret"})
    code = (
        "import os, sys; e = os.environ; "
        "print(e['BATCH_TASK_INDEX'], e['BATCH_TASK_COUNT'], e['BATCH_TASK_RETRY_ATTEMPT'], "
        "e['BATCH_JOB_ID'], "
        "e['BATCH_JOB_UID'] != '', os.path.exists(e['BATCH_HOSTS_FILE']), e['GREETING'], e['TOKEN'], "
        "e.get('PER_TASK', '-'), e.get('RUNNABLE', '-'), sys.argv[1:])"
    )
    runnable = batch_v1.Runnable(
        container=batch_v1.Runnable.Container(
            image_uri="img", entrypoint=PY, commands=["-c", code, "$HOME", "a b"]
        ),
        environment=batch_v1.Environment(variables={"RUNNABLE": "r"}),
    )
    job = container_job(
        runnables=[runnable],
        task_count=2,
        variables={"GREETING": "hi"},
        secret_variables={"TOKEN": "projects/p/secrets/token/versions/1"},
    )
    job.task_groups[0].task_environments = [
        batch_v1.Environment(variables={"PER_TASK": "zero"}),
        batch_v1.Environment(variables={"PER_TASK": "one"}),
    ]
    created = command_batch.create_job(parent=PARENT, job=job, job_id="env-job")
    done, _ = wait_for(command_batch, created.name)
    assert done.status.state == State.SUCCEEDED
    lines = sorted(
        e.text_payload for e in entries(clients.logging_client(), done.uid) if "batch_task_logs" in e.log_name
    )
    assert lines == [
        "0 2 0 env-job True True hi s3cret zero r ['$HOME', 'a b']",
        "1 2 0 env-job True True hi s3cret one r ['$HOME', 'a b']",
    ]


def test_retry_attempt_succeeds(
    command_emulator: Emulator, command_batch: batch_v1.BatchServiceClient
) -> None:
    code = "import os, sys; sys.exit(0 if os.environ['BATCH_TASK_RETRY_ATTEMPT'] == '1' else 42)"
    created = command_batch.create_job(
        parent=PARENT, job=container_job(runnables=py(code), max_retry_count=1)
    )
    done, _ = wait_for(command_batch, created.name)
    assert done.status.state == State.SUCCEEDED and exit_codes(done) == [42]
    policy = batch_v1.LifecyclePolicy(
        action=batch_v1.LifecyclePolicy.Action.FAIL_TASK,
        action_condition=batch_v1.LifecyclePolicy.ActionCondition(exit_codes=[42]),
    )
    stopped = command_batch.create_job(
        parent=PARENT,
        job=container_job(runnables=py(code), max_retry_count=1, lifecycle_policies=[policy]),
    )
    done, _ = wait_for(command_batch, stopped.name)
    assert done.status.state == State.FAILED and exit_codes(done) == [42]


def test_max_run_duration_kills_with_50005(
    command_emulator: Emulator, command_batch: batch_v1.BatchServiceClient
) -> None:
    created = command_batch.create_job(
        parent=PARENT,
        job=container_job(runnables=py("import time; time.sleep(30)"), max_run_seconds=0.3),
    )
    started = time.monotonic()
    done, _ = wait_for(command_batch, created.name)
    assert time.monotonic() - started < 5
    assert done.status.state == State.FAILED and exit_codes(done) == [50005]


def test_cancel_kills_the_process(
    command_emulator: Emulator, command_batch: batch_v1.BatchServiceClient
) -> None:
    created = command_batch.create_job(
        parent=PARENT,
        job=container_job(runnables=py("import time; print('up', flush=True); time.sleep(30)")),
    )
    wait_for(command_batch, created.name, lambda j: j.status.state == State.RUNNING)
    deadline = time.monotonic() + 10
    while command_emulator.stats()["processes"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert command_emulator.stats()["processes"] == 1
    command_batch.cancel_job(name=created.name).result(timeout=10)
    done, _ = wait_for(command_batch, created.name)
    assert done.status.state == State.CANCELLED
    assert command_emulator.stats()["processes"] == 0


def test_unresolved_secret_fails_without_leaking(
    command_emulator: Emulator, command_batch: batch_v1.BatchServiceClient
) -> None:
    command_emulator.secrets({"projects/p/secrets/other/versions/1": "do-not-print"})
    job = container_job(
        commands=["true"], secret_variables={"TOKEN": "projects/p/secrets/missing/versions/1"}
    )
    created = command_batch.create_job(parent=PARENT, job=job)
    done, _ = wait_for(command_batch, created.name)
    assert done.status.state == State.FAILED and exit_codes(done) == [50000]
    agent = [e.text_payload for e in entries(clients.logging_client(), done.uid)]
    assert any("projects/p/secrets/missing/versions/1" in line for line in agent)
    assert not any("do-not-print" in line for line in agent)


def test_runnable_kinds_and_flags(
    command_emulator: Emulator, command_batch: batch_v1.BatchServiceClient
) -> None:
    runnables = [
        batch_v1.Runnable(script=batch_v1.Runnable.Script(text="echo script says $BATCH_TASK_INDEX; exit 4"),
                          ignore_exit_status=True),
        batch_v1.Runnable(barrier=batch_v1.Runnable.Barrier(name="sync")),
        batch_v1.Runnable(container=batch_v1.Runnable.Container(image_uri="i", commands=["false"])),
        batch_v1.Runnable(container=batch_v1.Runnable.Container(image_uri="i", commands=["echo", "skipped"])),
        batch_v1.Runnable(container=batch_v1.Runnable.Container(image_uri="i", commands=["echo", "cleanup"]),
                          always_run=True),
    ]  # fmt: skip
    created = command_batch.create_job(parent=PARENT, job=container_job(runnables=runnables))
    done, _ = wait_for(command_batch, created.name)
    assert done.status.state == State.FAILED and exit_codes(done) == [1]
    lines = [
        e.text_payload for e in entries(clients.logging_client(), done.uid) if "batch_task_logs" in e.log_name
    ]
    assert lines == ["script says 0", "cleanup"]


def test_missing_executable_is_127(
    command_emulator: Emulator, command_batch: batch_v1.BatchServiceClient
) -> None:
    created = command_batch.create_job(parent=PARENT, job=container_job(commands=["/no/such/binary"]))
    done, _ = wait_for(command_batch, created.name)
    assert exit_codes(done) == [127]


def test_parallel_tasks_all_run(
    command_emulator: Emulator, command_batch: batch_v1.BatchServiceClient
) -> None:
    code = "import os; print('task', os.environ['BATCH_TASK_INDEX'])"
    created = command_batch.create_job(
        parent=PARENT, job=container_job(runnables=py(code), task_count=4, parallelism=2)
    )
    done, _ = wait_for(command_batch, created.name)
    assert done.status.task_groups["group0"].counts == {"SUCCEEDED": 4}
    lines = sorted(
        e.text_payload for e in entries(clients.logging_client(), done.uid) if "batch_task_logs" in e.log_name
    )
    assert lines == [f"task {i}" for i in range(4)]
