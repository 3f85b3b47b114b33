"""Everything a `JobSpec` can emit exists in Google's batch.v1 schema, with its type and enum.

The schema is Google's discovery document (google-api-python-client, a test extra), not our
own reading of it: a field name, a type or an enum value that Batch does not have fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from discovery_schema import enum, paths, problems, schema
from hypothesis import HealthCheck, given, settings
from spec_strategies import REGION, job_specs

from airflow_batch_streaming import spec as spec_module
from airflow_batch_streaming.operators._common import SEVERITY_ORDER, log_filter
from airflow_batch_streaming.spec import (
    Accelerator,
    BootDisk,
    GcsVolume,
    JobSpec,
    LifecyclePolicy,
    NfsVolume,
    Notification,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_specs())
def test_every_emitted_field_is_in_the_batch_v1_schema(kwargs: dict[str, Any]) -> None:
    spec = JobSpec(**kwargs)
    assert spec.problems(REGION) == []  # a valid combination is accepted...
    rest = spec.to_rest(REGION)
    assert problems("batch.v1", rest, "Job") == []  # ...and is exactly what batch.v1 has


def _maximal_specs() -> list[JobSpec]:
    base = {
        "commands": ["-c", "echo"],
        "entrypoint": "/bin/sh",
        "volumes": ["/mnt/disks/a:/a"],
        "task_count_per_node": 2,
        "cpu_milli": 2000,
        "memory_mib": 2048,
        "max_retry_count": 3,
        "lifecycle_policies": [LifecyclePolicy("RETRY_TASK", [1])],
        "retry_on_preemption": True,
        "max_run_duration": 3600,
        "runnable_timeout": 60,
        "environment": {"A": "1"},
        "secret_environment": {"S": "projects/p/secrets/s/versions/1"},
        "gcs_volumes": [GcsVolume("bucket-a", "/mnt/disks/gcs", ["ro"])],
        "nfs_volumes": [NfsVolume("10.0.0.2", "/share", "/mnt/disks/nfs", ["ro"])],
        "service_account": "runner@p.iam.gserviceaccount.com",
        "labels": {"team": "data"},
        "allowed_locations": [REGION],
        "priority": 10,
        "install_ops_agent": True,
        "notifications": [
            Notification("projects/p/topics/batch-events", "JOB_STATE_CHANGED", "FAILED"),
            Notification("projects/p/topics/task-events", "TASK_STATE_CHANGED", None, "FAILED"),
        ],
    }
    image = "us-central1-docker.pkg.dev/p/r/i:1"
    return [
        JobSpec(
            image,
            **base,
            task_count=4,
            parallelism=2,
            machine_type="g2-standard-8",
            provisioning_model="RESERVATION_BOUND",
            reservation="projects/p/zones/us-central1-a/reservations/r1",
            accelerators=[Accelerator("nvidia-l4", 1)],
            install_gpu_drivers=True,
            boot_disk=BootDisk("batch-cos", "pd-ssd", 100),
            network="vpc",
            subnetwork="sub",
            no_external_ip_address=True,
        ),
        JobSpec(
            image,
            **base,
            boot_disk_mib=1024,
            instance_template="projects/p/global/instanceTemplates/t",
            task_environments=[{"SHARD": "0"}, {"SHARD": "1"}],
        ),
    ]


def test_every_argument_reaches_a_schema_field() -> None:
    """No argument is dropped on the way: together the maximal specs set every field below."""
    emitted: set[str] = set()
    for spec in _maximal_specs():
        rest = spec.to_rest(REGION)
        assert problems("batch.v1", rest, "Job") == []
        emitted |= set(paths("batch.v1", rest, "Job"))
        spec.to_job(REGION)  # and the proto takes it
    tg, ts, ip = "Job.taskGroups[]", "Job.taskGroups[].taskSpec", "Job.allocationPolicy.instances[]"
    assert {
        f"{ts}.runnables[].container.imageUri",
        f"{ts}.runnables[].container.enableImageStreaming",
        f"{ts}.runnables[].timeout",
        f"{ts}.lifecyclePolicies[].actionCondition.exitCodes[]",
        f"{ts}.maxRetryCount",
        f"{ts}.maxRunDuration",
        f"{ts}.computeResource.bootDiskMib",
        f"{ts}.environment.secretVariables",
        f"{ts}.volumes[].gcs.remotePath",
        f"{ts}.volumes[].nfs.server",
        f"{tg}.taskEnvironments[].variables",
        f"{tg}.taskCount",
        f"{tg}.parallelism",
        f"{tg}.taskCountPerNode",
        f"{ip}.policy.provisioningModel",
        f"{ip}.policy.reservation",
        f"{ip}.policy.bootDisk.image",
        f"{ip}.policy.bootDisk.type",
        f"{ip}.policy.bootDisk.sizeGb",
        f"{ip}.policy.accelerators[].type",
        f"{ip}.instanceTemplate",
        f"{ip}.installGpuDrivers",
        f"{ip}.installOpsAgent",
        "Job.allocationPolicy.location.allowedLocations[]",
        "Job.allocationPolicy.network.networkInterfaces[].noExternalIpAddress",
        "Job.allocationPolicy.serviceAccount.email",
        "Job.notifications[].pubsubTopic",
        "Job.notifications[].message.type",
        "Job.notifications[].message.newJobState",
        "Job.notifications[].message.newTaskState",
        "Job.logsPolicy.destination",
        "Job.labels",
        "Job.priority",
    } <= emitted


def test_the_spec_enums_are_the_schemas() -> None:
    assert set(spec_module._PROVISIONING_MODELS) == set(
        enum("batch.v1", "InstancePolicy", "provisioningModel")
    ) - {"PROVISIONING_MODEL_UNSPECIFIED"}
    assert set(spec_module._ACTIONS) == set(enum("batch.v1", "LifecyclePolicy", "action")) - {
        "ACTION_UNSPECIFIED"
    }
    assert set(spec_module._MESSAGE_TYPES) == set(enum("batch.v1", "Message", "type")) - {"TYPE_UNSPECIFIED"}
    assert set(spec_module._JOB_STATES) == set(enum("batch.v1", "Message", "newJobState")) - {
        "STATE_UNSPECIFIED"
    }
    assert set(spec_module._TASK_STATES) == set(enum("batch.v1", "Message", "newTaskState")) - {
        "STATE_UNSPECIFIED"
    }
    # Documented limits the spec enforces.
    assert "[0, 10]" in schema("batch.v1", "TaskSpec")["properties"]["maxRetryCount"]["description"]
    assert (
        "Currently we only support one lifecycle policy"
        in (schema("batch.v1", "TaskSpec")["properties"]["lifecyclePolicies"]["description"])
    )


def test_the_logs_filter_uses_logging_v2_fields() -> None:
    """The filter's fields are LogEntry's, severities are LogSeverity's, orders are documented."""
    entry = schema("logging.v2", "LogEntry")["properties"]
    query = log_filter("uid-1", "2024-05-01T00:00:00Z", include_agent_logs=True, min_severity="ERROR")
    for field in ("labels", "timestamp", "severity"):
        assert field in entry and field in query
    assert set(SEVERITY_ORDER) == set(entry["severity"]["enum"])
    order = schema("logging.v2", "ListLogEntriesRequest")["properties"]["orderBy"]["description"]
    assert '"timestamp asc"' in order and '"timestamp desc"' in order


@pytest.mark.parametrize(
    "field", ["textPayload", "jsonPayload", "logName", "labels", "severity", "timestamp"]
)
def test_log_entries_are_read_by_their_schema_names(field: str) -> None:
    assert field in schema("logging.v2", "LogEntry")["properties"]
