"""The emulator accepts what Google's schema allows for the fields it models, and answers in it.

Ground truth: the discovery documents (batch.v1, logging.v2, serviceusage.v1) shipped in
google-api-python-client. Requests go through the real clients over gRPC.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from discovery_schema import enum, problems
from emulator_support import PARENT, PROJECT, container_job
from google.api_core import exceptions as gexc
from google.cloud import batch_v1, service_usage_v1
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from spec_strategies import REGION, job_specs

from airflow_batch_streaming.emulator import Emulator
from airflow_batch_streaming.emulator.jobs import Timings
from airflow_batch_streaming.hooks import clients
from airflow_batch_streaming.spec import JobSpec

pytestmark = pytest.mark.emulator

Provisioning = batch_v1.AllocationPolicy.ProvisioningModel


@pytest.fixture(scope="module")
def contract_emulator() -> Iterator[Emulator]:
    with Emulator(timings=Timings(queue=0.05, schedule=0.05, run=0.1)) as emu:
        yield emu


def _as_rest(message: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(type(message).to_json(message, use_integers_for_enums=False))
    return data


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(kwargs=job_specs())
def test_every_job_a_spec_can_make_is_accepted_and_answered_in_schema(
    contract_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any]
) -> None:
    monkeypatch.setenv(clients.EMULATOR_HOST_ENV, contract_emulator.target)
    batch = clients.batch_client()
    job = JobSpec(**kwargs).to_job(REGION)
    created = batch.create_job(
        parent=f"projects/{PROJECT}/locations/{REGION}", job=job, job_id=f"contract-{uuid.uuid4().hex[:12]}"
    )
    assert problems("batch.v1", _as_rest(created), "Job", request=False) == []
    again = batch.get_job(name=created.name)
    assert problems("batch.v1", _as_rest(again), "Job", request=False) == []


@pytest.mark.parametrize(
    "model", [m for m in enum("batch.v1", "InstancePolicy", "provisioningModel") if "UNSPEC" not in m]
)
def test_every_provisioning_model_of_the_schema_is_accepted(
    batch: batch_v1.BatchServiceClient, model: str
) -> None:
    job = container_job()
    job.allocation_policy.instances.append(
        batch_v1.AllocationPolicy.InstancePolicyOrTemplate(
            policy=batch_v1.AllocationPolicy.InstancePolicy(provisioning_model=Provisioning[model])
        )
    )
    created = batch.create_job(parent=PARENT, job=job, job_id=f"model-{model.lower().replace('_', '-')}")
    assert created.allocation_policy.instances[0].policy.provisioning_model.name == model


def test_lifecycle_actions_are_the_schemas(batch: batch_v1.BatchServiceClient) -> None:
    actions = enum("batch.v1", "LifecyclePolicy", "action")
    for action in actions:
        job = container_job(
            max_retry_count=1,
            lifecycle_policies=[
                batch_v1.LifecyclePolicy(
                    action=batch_v1.LifecyclePolicy.Action[action],
                    action_condition=batch_v1.LifecyclePolicy.ActionCondition(exit_codes=[1]),
                )
            ],
        )
        if action == "ACTION_UNSPECIFIED":
            with pytest.raises(gexc.InvalidArgument):
                batch.create_job(parent=PARENT, job=job, retry=None)
        else:
            batch.create_job(parent=PARENT, job=job)


@pytest.mark.parametrize(("field", "ok", "bad"), [("maxRetryCount", 10, 11), ("priority", 99, 100)])
def test_documented_ranges_are_enforced_at_their_edges(
    batch: batch_v1.BatchServiceClient, field: str, ok: int, bad: int
) -> None:
    """TaskSpec.maxRetryCount "[0, 10]" and Job.priority "[0, 100)" (batch.v1 descriptions)."""
    doc_range = {"maxRetryCount": ("TaskSpec", "[0, 10]"), "priority": ("Job", "[0, 100)")}[field]
    from discovery_schema import schema

    assert doc_range[1] in schema("batch.v1", doc_range[0])["properties"][field]["description"]

    def job(value: int) -> batch_v1.Job:
        made = container_job()
        if field == "priority":
            made.priority = value
        else:
            made.task_groups[0].task_spec.max_retry_count = value
        return made

    batch.create_job(parent=PARENT, job=job(ok))
    with pytest.raises((gexc.InvalidArgument, gexc.OutOfRange)):
        batch.create_job(parent=PARENT, job=job(bad), retry=None)


def test_notification_message_types_are_accepted(batch: batch_v1.BatchServiceClient) -> None:
    job = container_job()
    for kind in enum("batch.v1", "Message", "type"):
        if "UNSPEC" in kind:
            continue
        job.notifications.append(
            batch_v1.JobNotification(
                pubsub_topic="projects/p/topics/events",
                message=batch_v1.JobNotification.Message(type_=batch_v1.JobNotification.Type[kind]),
            )
        )
    created = batch.create_job(parent=PARENT, job=job)
    assert problems("batch.v1", _as_rest(created), "Job", request=False) == []


def test_service_usage_answers_in_its_schema(emulator: Emulator) -> None:
    client = clients.service_usage_client()
    name = f"projects/{PROJECT}/services/containerfilesystem.googleapis.com"
    answer = client.get_service(request={"name": name})
    enabled = json_format.MessageToDict(service_usage_v1.Service.pb(answer))
    assert problems("serviceusage.v1", enabled, "GoogleApiServiceusageV1Service", request=False) == []
    assert enabled["state"] == "ENABLED" and enabled["state"] in enum(
        "serviceusage.v1", "GoogleApiServiceusageV1Service", "state"
    )
    emulator.set_apis(disable=["containerfilesystem.googleapis.com"])
    disabled = client.get_service(request={"name": name})
    assert disabled.state.name == "DISABLED"  # 200 with state DISABLED, as Google answers


@pytest.mark.parametrize(
    ("order", "accepted"), [("timestamp asc", True), ("timestamp desc", True), ("severity desc", False)]
)
def test_logging_orders_are_the_documented_ones(emulator: Emulator, order: str, accepted: bool) -> None:
    from google.cloud.logging_v2.types import ListLogEntriesRequest

    client = clients.logging_client()
    request = ListLogEntriesRequest(
        resource_names=[f"projects/{PROJECT}"], filter='timestamp>="2000-01-01T00:00:00Z"', order_by=order
    )
    if accepted:
        list(client.list_log_entries(request=request, retry=None))
    else:
        with pytest.raises(gexc.InvalidArgument):
            list(client.list_log_entries(request=request, retry=None))
