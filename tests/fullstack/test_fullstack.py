"""The example DAGs on a real Airflow deployment: api-server, scheduler, dag-processor, triggerer.

Runs are triggered over the REST API as a user would. Waiting tasks must hand their wait
to the triggerer (DEFERRED) and resume on a worker in the same try; the job's own output
must reach the Airflow task log; a job that exits non-zero must fail its task with the
exit code in the log. Each test runs once per executor (see conftest.py).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from fullstack_support import Stack

pytestmark = [pytest.mark.fullstack, pytest.mark.emulator, pytest.mark.registry]

#: Only a bound against hanging: a run takes about a minute here.
RUN_TIMEOUT = 360.0

TIKey = tuple[str, int]


@dataclass
class Finished:
    """A finished DAG run: the run, its task instances, and the states each was seen in."""

    dag_id: str
    run_id: str
    run: dict[str, Any]
    tis: dict[TIKey, dict[str, Any]]
    seen: dict[TIKey, list[str]] = field(default_factory=dict)

    def states(self) -> dict[TIKey, str]:
        return {key: ti["state"] for key, ti in self.tis.items()}

    def __str__(self) -> str:
        seen = {f"{task}[{index}]": states for (task, index), states in sorted(self.seen.items())}
        return f"{self.dag_id} {self.run_id}: {self.run['state']}; task states seen while polling: {seen}"


def run_dag(stack: Stack, dag_id: str) -> Finished:
    """Trigger `dag_id` through the REST API and wait for the run to end."""
    run_id = stack.trigger(dag_id)
    seen: dict[TIKey, list[str]] = defaultdict(list)

    def record(tis: list[dict[str, Any]]) -> None:
        for ti in tis:
            states = seen[(ti["task_id"], ti["map_index"])]
            if ti["state"] and (not states or states[-1] != ti["state"]):
                states.append(ti["state"])

    run = stack.wait_for_run(dag_id, run_id, RUN_TIMEOUT, on_poll=record)
    tis = {(ti["task_id"], ti["map_index"]): ti for ti in stack.task_instances(dag_id, run_id)}
    return Finished(dag_id, run_id, run, tis, dict(seen))


def assert_deferred_and_resumed(stack: Stack, done: Finished, task_id: str, map_index: int = -1) -> str:
    """The task deferred, its trigger fired in the triggerer, and it resumed in its one try.

    Evidence: the task instance history (one try), and the try's log, which holds the
    worker's part before the deferral, the triggerer's part, and the worker's part after.
    Returns the log.
    """
    tries = stack.tries(done.dag_id, done.run_id, task_id, map_index)
    log = stack.task_log(done.dag_id, done.run_id, task_id, 1, map_index)
    where = f"{task_id}[{map_index}] of {done}\n--- its log:\n{log}"
    assert [t["try_number"] for t in tries] == [1], f"resumed in a new try, not the same: {tries}\n{where}"
    assert "Pausing task as DEFERRED" in log, f"never deferred: {where}"
    trigger = f"{done.dag_id}/{done.run_id}/{task_id}/{map_index}/1 (ID "
    fired = [line for line in log.splitlines() if "Trigger fired event" in line and trigger in line]
    assert fired, f"no event from the triggerer for {trigger}...): {where}"
    after = log.split(fired[0], 1)[1]
    assert "::group::Pre Execute" in after, f"not resumed on a worker after the trigger fired: {where}"
    return log


def test_example_image_streaming(stack: Stack) -> None:
    done = run_dag(stack, "example_image_streaming")
    tasks = ("preflight", "submit", "wait", "logs")
    assert done.run["state"] == "success", f"{done}\n{_logs(stack, done, tasks)}"
    assert done.states() == {(task, -1): "success" for task in tasks}, str(done)

    assert_deferred_and_resumed(stack, done, "wait")
    log = stack.task_log(done.dag_id, done.run_id, "logs")
    assert "[task 0] hello from task 0 of 1" in log, f"the job's output is not in the logs task's log:\n{log}"
    assert "streamed image: " + stack.images["good"] in log, log


def test_example_streaming_fanout(stack: Stack) -> None:
    done = run_dag(stack, "example_streaming_fanout")
    assert done.run["state"] == "success", f"{done}\n{_logs(stack, done, ('inputs', 'render', 'gather'))}"
    expected = {("inputs", -1), ("gather", -1), *(("render", index) for index in range(3))}
    assert done.states() == dict.fromkeys(expected, "success"), str(done)

    for index in range(3):
        assert_deferred_and_resumed(stack, done, "render", index)
    gather = stack.task_log(done.dag_id, done.run_id, "gather")
    assert re.search(r"3 jobs: \{.*'SUCCEEDED'.*\}", gather), gather


def test_failing_job_fails_its_task_with_the_exit_code(stack: Stack) -> None:
    done = run_dag(stack, "example_failing_job")
    assert done.run["state"] == "failed", str(done)
    assert done.states() == {("fail", -1): "failed"}, str(done)

    log = assert_deferred_and_resumed(stack, done, "fail")
    assert re.search(r"\bexit codes? 3\b", log), f"no exit code 3 in the failed task's log:\n{log}"
    assert "about to fail" in log, f"the job's output is not in the failed task's log:\n{log}"


def _logs(stack: Stack, done: Finished, tasks: tuple[str, ...]) -> str:
    """Every try-1 log of `tasks` in the run, for a failure message."""
    parts = []
    for (task, index), ti in sorted(done.tis.items()):
        if task in tasks and ti.get("try_number"):
            log = stack.task_log(done.dag_id, done.run_id, task, 1, index)
            parts.append(f"--- {task}[{index}] ({ti['state']}):\n{log}")
    return "\n".join(parts)
