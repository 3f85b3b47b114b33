"""The example DAGs on a real Airflow deployment: api-server, scheduler, dag-processor, two triggerers.

Runs are triggered over the REST API as a user would. Waiting tasks must hand their wait
to the triggerer (DEFERRED) and resume on a worker in the same try; the job's own output
must reach the Airflow task log; a job that exits non-zero must fail its task with the
exit code in the log. Push over Pub/Sub is on for the example DAGs (the deployment's
`notification_topic`); the failing-job DAG turns it off (`notification_topic=""`), so the
polling path stays covered too. Each test runs once per executor (see conftest.py); the
last one stops the triggerers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fullstack_support import TOPIC, TRIGGERERS, USERNAME, Stack

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
    trigger = f"{done.dag_id}/{done.run_id}/{task_id}/{map_index}/1 (ID "
    # The triggerer writes its part of the try's log on its own schedule: the task can resume
    # (event stored in the database) before the "fired" line reaches the log the API serves.
    # Read again until it is there, for a bounded while; its absence then is the failure.
    for _ in range(30):
        log = stack.task_log(done.dag_id, done.run_id, task_id, 1, map_index)
        fired = [line for line in log.splitlines() if "Trigger fired event" in line and trigger in line]
        if fired:
            break
        time.sleep(2)
    where = f"{task_id}[{map_index}] of {done}\n--- its log:\n{log}"
    assert [t["try_number"] for t in tries] == [1], f"resumed in a new try, not the same: {tries}\n{where}"
    assert "Pausing task as DEFERRED" in log, f"never deferred: {where}"
    assert fired, f"no event from the triggerer for {trigger}...): {where}"
    after = log.split(fired[0], 1)[1]
    assert "::group::Pre Execute" in after, f"not resumed on a worker after the trigger fired: {where}"
    return log


_RUNS: dict[tuple[str, str], Finished] = {}


def run_dag_once(stack: Stack, dag_id: str) -> Finished:
    """`run_dag`, shared by the tests of one stack that look at the same finished run."""
    key = (stack.executor, dag_id)
    if key not in _RUNS:
        _RUNS[key] = run_dag(stack, dag_id)
    return _RUNS[key]


def test_example_image_streaming(stack: Stack) -> None:
    done = run_dag_once(stack, "example_image_streaming")
    tasks = ("preflight", "submit", "wait", "logs")
    assert done.run["state"] == "success", f"{done}\n{_logs(stack, done, tasks)}"
    assert done.states() == {(task, -1): "success" for task in tasks}, str(done)

    assert_deferred_and_resumed(stack, done, "wait")
    log = stack.task_log(done.dag_id, done.run_id, "logs")
    assert "[task 0] hello from task 0 of 1" in log, f"the job's output is not in the logs task's log:\n{log}"
    assert "streamed image: " + stack.images["good"] in log, log


def test_example_streaming_fanout(stack: Stack) -> None:
    done = run_dag_once(stack, "example_streaming_fanout")
    assert done.run["state"] == "success", f"{done}\n{_logs(stack, done, ('inputs', 'render', 'gather'))}"
    expected = {("inputs", -1), ("gather", -1), *(("render", index) for index in range(3))}
    assert done.states() == dict.fromkeys(expected, "success"), str(done)

    for index in range(3):
        assert_deferred_and_resumed(stack, done, "render", index)
    gather = stack.task_log(done.dag_id, done.run_id, "gather")
    assert re.search(r"3 jobs: \{.*'SUCCEEDED'.*\}", gather), gather


def test_failing_job_fails_its_task_with_the_exit_code(stack: Stack) -> None:
    done = run_dag_once(stack, "example_failing_job")
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


# --------------------------------------------------------------------------- the UI, in a browser


def test_ui_shows_links_and_logs(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    """What a DAG author sees: the Airflow UI in headless Chromium (Debian's, driven by Playwright).

    Logs in through the login form, opens the finished example run's task pages, and checks the
    extra links (URLs equal to what the task stored), the job's output in the logs task's log,
    the job's states in the sensor's log, and the preflight findings table.
    """
    done = run_dag_once(stack, "example_image_streaming")
    assert done.run["state"] == "success", str(done)
    job = stack.api(
        "GET", f"/dags/{done.dag_id}/dagRuns/{done.run_id}/taskInstances/submit/xcomEntries/batch_job"
    )["value"]
    artifacts = Path(os.environ.get("BATCH_STREAMING_UI_ARTIFACTS") or tmp_path_factory.mktemp("ui"))
    with browser_page(stack, artifacts / stack.executor) as page:
        run_url = f"{stack.base_url}/dags/{done.dag_id}/runs/{done.run_id}"
        page.goto(f"{run_url}/tasks/submit/details")  # Airflow 3's UI lists extra links there
        links = {}
        for name in ("Batch Job", "Batch Job Logs"):
            link = page.get_by_role("link", name=name, exact=True)
            link.wait_for(timeout=UI_TIMEOUT_MS)
            links[name] = link.get_attribute("href")
        assert links == {"Batch Job": job["console_url"], "Batch Job Logs": job["logs_url"]}, links
        assert f"/jobs/{job['job_id']}" in links["Batch Job"], links
        assert job["uid"] in links["Batch Job Logs"], links
        page.screenshot(path=str(artifacts / stack.executor / "task-page-links.png"))

        page.goto(f"{run_url}/tasks/logs")
        page.get_by_text("hello from task 0 of 1").first.wait_for(timeout=UI_TIMEOUT_MS)
        page.get_by_text("streamed image: " + stack.images["good"]).first.wait_for(timeout=UI_TIMEOUT_MS)

        page.goto(f"{run_url}/tasks/wait")
        page.get_by_text(re.compile(r"Job \S+ is SUCCEEDED")).first.wait_for(timeout=UI_TIMEOUT_MS)

        page.goto(f"{run_url}/tasks/preflight")
        page.get_by_text(re.compile(r": OK \(0 errors, \d+ warnings?\)")).first.wait_for(
            timeout=UI_TIMEOUT_MS
        )


UI_TIMEOUT_MS = 60_000
CHROMIUM = "/usr/bin/chromium"
#: Headless, sandbox off (we run as root), and no calls home: this machine's network is closed.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def browser_page(stack: Stack, artifacts: Path) -> Iterator[Any]:
    """A logged-in page; on failure, a screenshot and the page's HTML are saved in `artifacts`."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium chromium-driver"
    artifacts.mkdir(parents=True, exist_ok=True)
    password = json.loads((stack.home / "simple_auth_manager_passwords.json.generated").read_text())[USERNAME]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            try:
                page.goto(f"{stack.base_url}/auth/login")
                page.locator("input:not([type=password])").first.fill(USERNAME)
                page.locator("input[type=password]").fill(password)
                page.locator("input[type=password]").press("Enter")
                page.wait_for_url(lambda url: "/auth/login" not in url, timeout=UI_TIMEOUT_MS)
                yield page
            except BaseException:
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(artifacts / "failure.png"), full_page=True)
                    (artifacts / "failure.html").write_text(page.content())
                    print(f"UI failure artifacts: {artifacts} (page {page.url})")
                raise
        finally:
            browser.close()


# --------------------------------------------------------------------------- push, two triggerers

#: The deferred waits of the DAGs that use push, each (dag, task, map index).
PUSH_WAITS = (
    ("example_image_streaming", "wait", -1),  # the sensor: the job's own topic
    *(("example_streaming_fanout", "render", index) for index in range(3)),  # the operator
)
#: What the triggerer's listener (hooks/pubsub.py) makes: 1 day, Pub/Sub's minimum.
SUBSCRIPTION_TTL_SECONDS = 86_400


def _batch_job(stack: Stack, dag_id: str, run_id: str, task_id: str, map_index: int) -> Any:
    """The task's Batch job, read back from the emulator through the Batch API."""
    from airflow_batch_streaming.hooks import clients

    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/batch_job"
    name = stack.api("GET", path, params={"map_index": map_index})["value"]["name"]
    return clients.batch_client().get_job(name=name, timeout=30)


def test_push_tells_every_waiter_with_two_triggerers(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Push in an HA deployment (issue 14): the example runs' jobs asked Batch for
    JOB_STATE_CHANGED messages; the two triggerers each held waits and each streamed a
    subscription of its own; the subscription of the triggerer holding a wait acknowledged its
    job's SUCCEEDED message; the polling-only DAG's job asked for none. Then the triggerers
    stop: their subscriptions are deleted, or left with the one-day expiration and gone once
    the emulator's clock has moved a day. Runs last: it stops the triggerers.
    """
    from google.cloud import pubsub_v1

    monkeypatch.setenv("BATCH_STREAMING_EMULATOR_HOST", stack.emulator.target)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", stack.emulator.target)
    runs = {dag_id: run_dag_once(stack, dag_id) for dag_id in {dag for dag, _, _ in PUSH_WAITS}}
    for done in runs.values():
        assert done.run["state"] == "success", str(done)

    # The jobs asked for notifications; the polling-only DAG's did not.
    uids, holders = {}, {}
    for dag_id, task_id, index in PUSH_WAITS:
        run_id = runs[dag_id].run_id
        job = _batch_job(stack, dag_id, run_id, task_id, index)
        topics = [(n.pubsub_topic, n.message.type_.name) for n in job.notifications]
        assert topics == [(TOPIC, "JOB_STATE_CHANGED")], f"{task_id}[{index}]: {job.notifications}"
        assert job.status.state.name == "SUCCEEDED", job.status
        uids[(dag_id, task_id, index)] = job.uid
        holders[(dag_id, task_id, index)] = stack.trigger_holders(dag_id, run_id, task_id, index)
    failing = run_dag_once(stack, "example_failing_job")
    polled = _batch_job(stack, failing.dag_id, failing.run_id, "fail", -1)
    assert list(polled.notifications) == [], polled.notifications

    # Both triggerers held waits (one trigger each at a time), and each read its own subscription.
    assert all(holders.values()), f"a wait with no trigger log of a triggerer: {holders}"
    assert set().union(*holders.values()) == set(TRIGGERERS), f"one triggerer held every wait: {holders}"
    subscriptions = {s["name"]: s for s in stack.emulator.pubsub_subscriptions()}
    owners = stack.stream_owners
    assert owners and all(len(o) == 1 for o in owners.values()), f"a subscription shared: {owners}"
    by_triggerer = {t: {s for s, o in owners.items() if t in o} for t in TRIGGERERS}
    assert all(by_triggerer.values()), f"a triggerer streamed no subscription: {by_triggerer}"
    for sub in subscriptions.values():
        assert sub["topic"] == TOPIC and sub["filter"] == 'attributes.Type = "JOB_STATE_CHANGED"', sub
        assert sub["expiration_ttl_seconds"] == SUBSCRIPTION_TTL_SECONDS, sub
        assert sub["labels"] == {"managed-by": "airflow-batch-streaming"}, sub

    # Every waiter was told: its triggerer's subscription acknowledged the job's SUCCEEDED message.
    # (A trigger Airflow moved to the other triggerer has two holders; the one at the end heard.)
    for key, uid in uids.items():
        heard = {
            s: [m["NewJobState"] for m in subscriptions[s]["acked_messages"] if m.get("JobUID") == uid]
            for holder in holders[key]
            for s in by_triggerer[holder]
        }
        assert any("SUCCEEDED" in states for states in heard.values()), (
            f"{key} (job uid {uid}), held by {holders[key]}: not told; their subscriptions acked {heard}"
        )
    assert not any(
        m.get("JobUID") == polled.uid for s in subscriptions.values() for m in s["acked_messages"]
    ), "the polling-only job published notifications"

    # Stopped triggerers leave no subscription behind, or only ones that expire by themselves.
    stack.stop(names=TRIGGERERS)
    deadline = time.monotonic() + 60  # only a bound: the emulator sees a dead client's stream end
    while any(s["open_streams"] for s in stack.emulator.pubsub_subscriptions()):
        assert time.monotonic() < deadline, stack.emulator.pubsub_subscriptions()
        time.sleep(0.5)
    left = [s for s in stack.emulator.pubsub_subscriptions() if s["state"] != "deleted"]
    assert all(s["state"] == "active" for s in left), left
    publisher = pubsub_v1.PublisherClient()
    assert sorted(publisher.list_topic_subscriptions(topic=TOPIC)) == sorted(s["name"] for s in left)
    stack.emulator._admin("POST", "/v1/pubsub/advance", {"seconds": SUBSCRIPTION_TTL_SECONDS})
    assert list(publisher.list_topic_subscriptions(topic=TOPIC)) == [], "left for good"
    print(
        f"push: {len(subscriptions)} subscriptions, {len(left)} left to expire at stop; waits held {holders}"
    )
