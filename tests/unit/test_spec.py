"""Unit tests for airflow_batch_streaming.spec: mappings, validation, REST/proto, job IDs."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import pytest
from google.cloud import batch_v1
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_batch_streaming.spec import (
    DEFAULT_PREEMPTION_RETRIES,
    FIELD_NAMES,
    JOB_ID_PATTERN,
    PREEMPTION_EXIT_CODE,
    STREAMING_CONTAINER_FIELDS,
    Accelerator,
    GcsVolume,
    JobSpec,
    LifecyclePolicy,
    NfsVolume,
    Notification,
    SpecError,
    job_to_rest,
    make_job_id,
    rest_to_job,
    streaming_containers,
    validate_job_id,
)

IMAGE = "us-central1-docker.pkg.dev/my-project/my-repo/worker:1.0"
JOB_ID_RE = re.compile(JOB_ID_PATTERN)
AP = batch_v1.AllocationPolicy


def tg(rest: Mapping[str, Any]) -> dict[str, Any]:
    return rest["taskGroups"][0]


def ts(rest: Mapping[str, Any]) -> dict[str, Any]:
    return tg(rest)["taskSpec"]


def container(rest: Mapping[str, Any]) -> dict[str, Any]:
    return ts(rest)["runnables"][0]["container"]


def problems_of(**kwargs: Any) -> list[str]:
    kwargs.setdefault("image_uri", IMAGE)
    return JobSpec.from_kwargs(**kwargs).problems()


def full_spec() -> JobSpec:
    return JobSpec(
        IMAGE,
        commands=["-c", "echo hello"],
        entrypoint="/bin/sh",
        volumes=["/mnt/disks/share:/share:ro"],
        task_count=10,
        parallelism=5,
        task_count_per_node=2,
        cpu_milli=4000,
        memory_mib=8192,
        max_retry_count=2,
        lifecycle_policies=[LifecyclePolicy("FAIL_TASK", [1, 2])],
        retry_on_preemption=True,
        max_run_duration=timedelta(hours=2),
        environment={"MODE": "prod"},
        secret_environment={"TOKEN": "projects/p/secrets/token/versions/3"},
        gcs_volumes=[GcsVolume("gs://my-bucket/data", "/mnt/disks/data", ["implicit-dirs"])],
        nfs_volumes=[NfsVolume("10.0.0.2", "/exports/a", "/mnt/disks/nfs")],
        machine_type="g2-standard-8",
        provisioning_model="SPOT",
        accelerators=[Accelerator("nvidia-l4", 1)],
        boot_disk_mib=20480,
        network="projects/p/global/networks/vpc",
        subnetwork="projects/p/regions/us-central1/subnetworks/sub",
        no_external_ip_address=True,
        service_account="runner@p.iam.gserviceaccount.com",
        labels={"team": "data", "env": "prod"},
        allowed_locations=["regions/us-central1"],
        priority=50,
    )


# --------------------------------------------------------------------------------------
# Module hygiene
# --------------------------------------------------------------------------------------


def test_import_is_pure() -> None:
    code = (
        "import sys, airflow_batch_streaming.spec as s; "
        "s.JobSpec('x-docker.pkg.dev/p/r/i').to_rest(); "
        # 'google' and 'google.cloud' themselves are namespace packages a .pth file may preload.
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'grpc', 'proto') "
        "or (m.startswith('google.') and m != 'google.cloud')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_field_names_are_the_contract() -> None:
    assert FIELD_NAMES == (
        "image_uri",
        "commands",
        "entrypoint",
        "volumes",
        "task_count",
        "parallelism",
        "task_count_per_node",
        "cpu_milli",
        "memory_mib",
        "max_retry_count",
        "lifecycle_policies",
        "retry_on_preemption",
        "max_run_duration",
        "environment",
        "secret_environment",
        "gcs_volumes",
        "nfs_volumes",
        "machine_type",
        "provisioning_model",
        "accelerators",
        "install_gpu_drivers",
        "boot_disk_mib",
        "network",
        "subnetwork",
        "no_external_ip_address",
        "service_account",
        "labels",
        "allowed_locations",
        "priority",
        "reservation",
        "boot_disk",
        "instance_template",
        "runnable_timeout",
        "install_ops_agent",
        "task_environments",
        "notifications",
        "enable_image_streaming",
    )
    assert JobSpec.field_names() == FIELD_NAMES


def test_spec_is_frozen_and_keyword_only() -> None:
    spec = JobSpec(IMAGE)
    with pytest.raises(AttributeError):
        spec.task_count = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        JobSpec(IMAGE, ["echo"])  # type: ignore[misc]


# --------------------------------------------------------------------------------------
# Argument mappings: REST dict and proto
# --------------------------------------------------------------------------------------


def test_minimal_spec() -> None:
    rest = JobSpec(IMAGE).to_rest()
    assert rest == {
        "taskGroups": [
            {
                "taskSpec": {"runnables": [{"container": {"imageUri": IMAGE, "enableImageStreaming": True}}]},
                "taskCount": 1,
            }
        ],
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    }
    job = JobSpec(IMAGE).to_job()
    assert isinstance(job, batch_v1.Job)
    c = job.task_groups[0].task_spec.runnables[0].container
    assert c.image_uri == IMAGE
    assert c.enable_image_streaming is True
    assert job.logs_policy.destination == batch_v1.LogsPolicy.Destination.CLOUD_LOGGING


Case = tuple[dict[str, Any], Callable[[dict[str, Any]], Any], Any, Callable[[batch_v1.Job], Any], Any]

MAPPING_CASES: dict[str, Case] = {
    "commands": (
        {"commands": ["-c", "echo hi", ""]},
        lambda r: container(r)["commands"],
        ["-c", "echo hi", ""],
        lambda j: list(j.task_groups[0].task_spec.runnables[0].container.commands),
        ["-c", "echo hi", ""],
    ),
    "entrypoint": (
        {"entrypoint": "/bin/bash"},
        lambda r: container(r)["entrypoint"],
        "/bin/bash",
        lambda j: j.task_groups[0].task_spec.runnables[0].container.entrypoint,
        "/bin/bash",
    ),
    "volumes": (
        {"volumes": ["/mnt/disks/a:/a", "/mnt/disks/b:/b:ro"]},
        lambda r: container(r)["volumes"],
        ["/mnt/disks/a:/a", "/mnt/disks/b:/b:ro"],
        lambda j: list(j.task_groups[0].task_spec.runnables[0].container.volumes),
        ["/mnt/disks/a:/a", "/mnt/disks/b:/b:ro"],
    ),
    "task_count": (
        {"task_count": 7},
        lambda r: tg(r)["taskCount"],
        7,
        lambda j: j.task_groups[0].task_count,
        7,
    ),
    "parallelism": (
        {"task_count": 7, "parallelism": 3},
        lambda r: tg(r)["parallelism"],
        3,
        lambda j: j.task_groups[0].parallelism,
        3,
    ),
    "task_count_per_node": (
        {"task_count_per_node": 4},
        lambda r: tg(r)["taskCountPerNode"],
        4,
        lambda j: j.task_groups[0].task_count_per_node,
        4,
    ),
    "cpu_milli": (
        {"cpu_milli": 1500},
        lambda r: ts(r)["computeResource"],
        {"cpuMilli": 1500},
        lambda j: j.task_groups[0].task_spec.compute_resource.cpu_milli,
        1500,
    ),
    "memory_mib": (
        {"memory_mib": 3072},
        lambda r: ts(r)["computeResource"],
        {"memoryMib": 3072},
        lambda j: j.task_groups[0].task_spec.compute_resource.memory_mib,
        3072,
    ),
    "boot_disk_mib": (
        {"boot_disk_mib": 51200},
        lambda r: ts(r)["computeResource"],
        {"bootDiskMib": 51200},
        lambda j: j.task_groups[0].task_spec.compute_resource.boot_disk_mib,
        51200,
    ),
    "max_retry_count": (
        {"max_retry_count": 4},
        lambda r: ts(r)["maxRetryCount"],
        4,
        lambda j: j.task_groups[0].task_spec.max_retry_count,
        4,
    ),
    "lifecycle_policies": (
        {
            "max_retry_count": 1,
            "lifecycle_policies": [{"action": "retry_task", "exitCodes": ["50001", 50002]}],
        },
        lambda r: ts(r)["lifecyclePolicies"],
        [{"action": "RETRY_TASK", "actionCondition": {"exitCodes": [50001, 50002]}}],
        lambda j: [
            (p.action.name, list(p.action_condition.exit_codes))
            for p in j.task_groups[0].task_spec.lifecycle_policies
        ],
        [("RETRY_TASK", [50001, 50002])],
    ),
    "max_run_duration": (
        {"max_run_duration": 3600},
        lambda r: ts(r)["maxRunDuration"],
        "3600s",
        lambda j: j.task_groups[0].task_spec.max_run_duration,
        timedelta(hours=1),
    ),
    "environment": (
        {"environment": {"A": "1", "B_2": "x y", "_N": 3}},
        lambda r: ts(r)["environment"],
        {"variables": {"A": "1", "B_2": "x y", "_N": "3"}},
        lambda j: dict(j.task_groups[0].task_spec.environment.variables),
        {"A": "1", "B_2": "x y", "_N": "3"},
    ),
    "secret_environment": (
        {"secret_environment": {"PW": "projects/p/secrets/pw/versions/latest"}},
        lambda r: ts(r)["environment"],
        {"secretVariables": {"PW": "projects/p/secrets/pw/versions/latest"}},
        lambda j: dict(j.task_groups[0].task_spec.environment.secret_variables),
        {"PW": "projects/p/secrets/pw/versions/latest"},
    ),
    "gcs_volumes": (
        {
            "gcs_volumes": [
                GcsVolume("gs://bkt", "/mnt/disks/a"),
                {"remotePath": "bkt/sub/dir", "mountPath": "/mnt/disks/b", "mountOptions": ["ro"]},
            ]
        },
        lambda r: ts(r)["volumes"],
        [
            {"gcs": {"remotePath": "bkt"}, "mountPath": "/mnt/disks/a"},
            {"gcs": {"remotePath": "bkt/sub/dir"}, "mountPath": "/mnt/disks/b", "mountOptions": ["ro"]},
        ],
        lambda j: [(v.gcs.remote_path, v.mount_path) for v in j.task_groups[0].task_spec.volumes],
        [("bkt", "/mnt/disks/a"), ("bkt/sub/dir", "/mnt/disks/b")],
    ),
    "nfs_volumes": (
        {"nfs_volumes": [{"server": "nfs.internal", "remote_path": "/export", "mount_path": "/mnt/disks/n"}]},
        lambda r: ts(r)["volumes"],
        [{"nfs": {"server": "nfs.internal", "remotePath": "/export"}, "mountPath": "/mnt/disks/n"}],
        lambda j: [
            (v.nfs.server, v.nfs.remote_path, v.mount_path) for v in j.task_groups[0].task_spec.volumes
        ],
        [("nfs.internal", "/export", "/mnt/disks/n")],
    ),
    "machine_type": (
        {"machine_type": "c4a-standard-4"},
        lambda r: r["allocationPolicy"]["instances"],
        [{"policy": {"machineType": "c4a-standard-4"}}],
        lambda j: j.allocation_policy.instances[0].policy.machine_type,
        "c4a-standard-4",
    ),
    "provisioning_model": (
        {"provisioning_model": "spot"},
        lambda r: r["allocationPolicy"]["instances"][0]["policy"]["provisioningModel"],
        "SPOT",
        lambda j: j.allocation_policy.instances[0].policy.provisioning_model,
        AP.ProvisioningModel.SPOT,
    ),
    "provisioning_model_standard": (
        {"provisioning_model": " Standard "},
        lambda r: r["allocationPolicy"]["instances"][0]["policy"]["provisioningModel"],
        "STANDARD",
        lambda j: j.allocation_policy.instances[0].policy.provisioning_model,
        AP.ProvisioningModel.STANDARD,
    ),
    "accelerators": (
        {"accelerators": [{"type": "nvidia-tesla-t4", "count": 2}]},
        lambda r: r["allocationPolicy"]["instances"],
        [{"policy": {"accelerators": [{"type": "nvidia-tesla-t4", "count": 2}]}, "installGpuDrivers": True}],
        lambda j: (
            [(a.type_, a.count) for a in j.allocation_policy.instances[0].policy.accelerators],
            j.allocation_policy.instances[0].install_gpu_drivers,
        ),
        ([("nvidia-tesla-t4", 2)], True),
    ),
    "accelerators_without_drivers": (
        {"accelerators": [Accelerator("nvidia-l4")], "install_gpu_drivers": False},
        lambda r: r["allocationPolicy"]["instances"],
        [{"policy": {"accelerators": [{"type": "nvidia-l4", "count": 1}]}}],
        lambda j: j.allocation_policy.instances[0].install_gpu_drivers,
        False,
    ),
    "install_gpu_drivers_alone": (
        {"machine_type": "a2-highgpu-1g", "install_gpu_drivers": True},
        lambda r: r["allocationPolicy"]["instances"],
        [{"policy": {"machineType": "a2-highgpu-1g"}, "installGpuDrivers": True}],
        lambda j: j.allocation_policy.instances[0].install_gpu_drivers,
        True,
    ),
    "network_short": (
        {"network": "my-vpc"},
        lambda r: r["allocationPolicy"]["network"],
        {"networkInterfaces": [{"network": "global/networks/my-vpc"}]},
        lambda j: j.allocation_policy.network.network_interfaces[0].network,
        "global/networks/my-vpc",
    ),
    "network_path": (
        {"network": "https://www.googleapis.com/compute/v1/projects/p/global/networks/vpc"},
        lambda r: r["allocationPolicy"]["network"]["networkInterfaces"][0]["network"],
        "https://www.googleapis.com/compute/v1/projects/p/global/networks/vpc",
        lambda j: j.allocation_policy.network.network_interfaces[0].network,
        "https://www.googleapis.com/compute/v1/projects/p/global/networks/vpc",
    ),
    "subnetwork_short_from_locations": (
        {"subnetwork": "sub-a", "allowed_locations": ["us-east1-b"]},
        lambda r: r["allocationPolicy"]["network"]["networkInterfaces"][0]["subnetwork"],
        "regions/us-east1/subnetworks/sub-a",
        lambda j: j.allocation_policy.network.network_interfaces[0].subnetwork,
        "regions/us-east1/subnetworks/sub-a",
    ),
    "subnetwork_path": (
        {"subnetwork": "projects/p/regions/europe-west4/subnetworks/s"},
        lambda r: r["allocationPolicy"]["network"]["networkInterfaces"][0]["subnetwork"],
        "projects/p/regions/europe-west4/subnetworks/s",
        lambda j: j.allocation_policy.network.network_interfaces[0].subnetwork,
        "projects/p/regions/europe-west4/subnetworks/s",
    ),
    "no_external_ip_address": (
        {"no_external_ip_address": True},
        lambda r: r["allocationPolicy"]["network"],
        {"networkInterfaces": [{"noExternalIpAddress": True}]},
        lambda j: j.allocation_policy.network.network_interfaces[0].no_external_ip_address,
        True,
    ),
    "service_account": (
        {"service_account": "sa@p.iam.gserviceaccount.com"},
        lambda r: r["allocationPolicy"]["serviceAccount"],
        {"email": "sa@p.iam.gserviceaccount.com"},
        lambda j: j.allocation_policy.service_account.email,
        "sa@p.iam.gserviceaccount.com",
    ),
    "labels": (
        {"labels": {"team": "ml", "cost_center": "", "a-b_c": "x-1_2"}},
        lambda r: r["labels"],
        {"team": "ml", "cost_center": "", "a-b_c": "x-1_2"},
        lambda j: dict(j.labels),
        {"team": "ml", "cost_center": "", "a-b_c": "x-1_2"},
    ),
    "allowed_locations": (
        {"allowed_locations": ["us-central1", "regions/us-central1", "zones/us-central1-a", "us-central1-f"]},
        lambda r: r["allocationPolicy"]["location"],
        {"allowedLocations": ["regions/us-central1", "zones/us-central1-a", "zones/us-central1-f"]},
        lambda j: list(j.allocation_policy.location.allowed_locations),
        ["regions/us-central1", "zones/us-central1-a", "zones/us-central1-f"],
    ),
    "allowed_locations_bare_string": (
        {"allowed_locations": "europe-west4"},
        lambda r: r["allocationPolicy"]["location"]["allowedLocations"],
        ["regions/europe-west4"],
        lambda j: list(j.allocation_policy.location.allowed_locations),
        ["regions/europe-west4"],
    ),
    "priority": (
        {"priority": 99},
        lambda r: r["priority"],
        99,
        lambda j: j.priority,
        99,
    ),
    "priority_zero": (
        {"priority": 0},
        lambda r: r["priority"],
        0,
        lambda j: j.priority,
        0,
    ),
    "enable_image_streaming_off": (
        {"enable_image_streaming": False},
        container,
        {"imageUri": IMAGE},
        lambda j: j.task_groups[0].task_spec.runnables[0].container.enable_image_streaming,
        False,
    ),
    "provisioning_flex_start": (
        {"provisioning_model": "flex_start"},
        lambda r: r["allocationPolicy"]["instances"][0]["policy"],
        {"provisioningModel": "FLEX_START"},
        lambda j: j.allocation_policy.instances[0].policy.provisioning_model.name,
        "FLEX_START",
    ),
    "provisioning_reservation_bound": (
        {
            "provisioning_model": "RESERVATION_BOUND",
            "reservation": "projects/p/zones/us-central1-a/reservations/r1",
        },
        lambda r: r["allocationPolicy"]["instances"][0]["policy"],
        {
            "provisioningModel": "RESERVATION_BOUND",
            "reservation": "projects/p/zones/us-central1-a/reservations/r1",
        },
        lambda j: j.allocation_policy.instances[0].policy.reservation,
        "projects/p/zones/us-central1-a/reservations/r1",
    ),
    "provisioning_preemptible_is_accepted": (
        {"provisioning_model": "preemptible"},
        lambda r: r["allocationPolicy"]["instances"][0]["policy"]["provisioningModel"],
        "PREEMPTIBLE",
        lambda j: j.allocation_policy.instances[0].policy.provisioning_model.name,
        "PREEMPTIBLE",
    ),
    "boot_disk": (
        {"boot_disk": {"image": "batch-cos", "type": "pd-ssd", "sizeGb": 100}},
        lambda r: r["allocationPolicy"]["instances"][0]["policy"]["bootDisk"],
        {"image": "batch-cos", "type": "pd-ssd", "sizeGb": 100},
        lambda j: (j.allocation_policy.instances[0].policy.boot_disk.size_gb,),
        (100,),
    ),
    "instance_template": (
        {"instance_template": "projects/p/global/instanceTemplates/gpu-a3", "install_ops_agent": True},
        lambda r: r["allocationPolicy"]["instances"],
        [{"instanceTemplate": "projects/p/global/instanceTemplates/gpu-a3", "installOpsAgent": True}],
        lambda j: j.allocation_policy.instances[0].instance_template,
        "projects/p/global/instanceTemplates/gpu-a3",
    ),
    "runnable_timeout": (
        {"runnable_timeout": "1h"},
        lambda r: ts(r)["runnables"][0]["timeout"],
        "3600s",
        lambda j: j.task_groups[0].task_spec.runnables[0].timeout.total_seconds(),
        3600.0,
    ),
    "task_environments": (
        {"task_environments": [{"SHARD": "a"}, {"SHARD": "b"}, {}], "parallelism": 2},
        lambda r: (tg(r)["taskEnvironments"], "taskCount" in tg(r), tg(r)["parallelism"]),
        ([{"variables": {"SHARD": "a"}}, {"variables": {"SHARD": "b"}}, {}], False, 2),
        lambda j: [dict(e.variables) for e in j.task_groups[0].task_environments],
        [{"SHARD": "a"}, {"SHARD": "b"}, {}],
    ),
    "notifications": (
        {
            "notifications": [
                Notification("projects/p/topics/batch-events"),
                {
                    "pubsubTopic": "projects/p/topics/task-events",
                    "type": "task_state_changed",
                    "new_task_state": "FAILED",
                },
            ]
        },
        lambda r: r["notifications"],
        [
            {"pubsubTopic": "projects/p/topics/batch-events", "message": {"type": "JOB_STATE_CHANGED"}},
            {
                "pubsubTopic": "projects/p/topics/task-events",
                "message": {"type": "TASK_STATE_CHANGED", "newTaskState": "FAILED"},
            },
        ],
        lambda j: [n.message.type_.name for n in j.notifications],
        ["JOB_STATE_CHANGED", "TASK_STATE_CHANGED"],
    ),
    "templated_strings": (
        {"task_count": "8", "parallelism": " 2 ", "cpu_milli": "+500", "no_external_ip_address": "TRUE"},
        lambda r: (tg(r)["taskCount"], tg(r)["parallelism"], ts(r)["computeResource"], r["allocationPolicy"]),
        (8, 2, {"cpuMilli": 500}, {"network": {"networkInterfaces": [{"noExternalIpAddress": True}]}}),
        lambda j: (j.task_groups[0].task_count, j.task_groups[0].parallelism),
        (8, 2),
    ),
}


@pytest.mark.parametrize("case", MAPPING_CASES.values(), ids=MAPPING_CASES.keys())
def test_argument_mapping(case: Case) -> None:
    kwargs, get_rest, want_rest, get_proto, want_proto = case
    spec = JobSpec.from_kwargs(image_uri=IMAGE, **kwargs)
    assert spec.problems() == []
    rest = spec.to_rest()
    assert get_rest(rest) == want_rest
    assert get_proto(spec.to_job()) == want_proto
    # Everything else stays on: streaming (unless switched off) and Cloud Logging.
    assert rest["logsPolicy"] == {"destination": "CLOUD_LOGGING"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (90, "90s"),
        (1.5, "1.500s"),
        (0.000001, "0.000001s"),
        (timedelta(days=1, microseconds=1), "86400.000001s"),
        ("3600", "3600s"),
        ("3600s", "3600s"),
        ("2.25s", "2.250s"),
        ("1h", "3600s"),
        ("1h30m", "5400s"),
        ("45m10s", "2710s"),
        (" 10m ", "600s"),
        ("0.123456789s", "0.123456789s"),
    ],
)
def test_max_run_duration_forms(value: object, expected: str) -> None:
    rest = JobSpec(IMAGE, max_run_duration=value).to_rest()  # type: ignore[arg-type]
    assert ts(rest)["maxRunDuration"] == expected
    assert job_to_rest(rest_to_job(rest)) == rest


def test_commands_and_entrypoint_empty_are_omitted() -> None:
    rest = JobSpec(IMAGE, commands=[], entrypoint="", volumes=()).to_rest()
    assert container(rest) == {"imageUri": IMAGE, "enableImageStreaming": True}


def test_none_means_default_everywhere() -> None:
    kwargs = {name: None for name in FIELD_NAMES if name != "image_uri"}
    assert JobSpec.from_kwargs(image_uri=IMAGE, **kwargs).to_rest() == JobSpec(IMAGE).to_rest()


def test_subnetwork_short_name_uses_region_argument() -> None:
    spec = JobSpec(IMAGE, subnetwork="sub")
    assert any("subnetwork" in p and "region" in p for p in spec.problems())
    rest = spec.to_rest(region="asia-east1")
    assert rest["allocationPolicy"]["network"]["networkInterfaces"][0]["subnetwork"] == (
        "regions/asia-east1/subnetworks/sub"
    )
    assert spec.to_rest(region="regions/asia-east1") == rest
    assert spec.to_job(region="asia-east1").allocation_policy.network.network_interfaces[0].subnetwork


def test_allowed_locations_region_wins_when_no_region_is_given() -> None:
    spec = JobSpec(IMAGE, subnetwork="sub", allowed_locations=["zones/us-west1-a"])
    interface = spec.to_rest()["allocationPolicy"]["network"]["networkInterfaces"][0]
    assert interface["subnetwork"] == "regions/us-west1/subnetworks/sub"


@pytest.mark.parametrize(
    "allowed", ["zones/us-west1-a", ["zones/us-west1-a"], ["us-west1"], "regions/us-west1"]
)
def test_allowed_locations_outside_the_job_region_are_refused(allowed: object) -> None:
    # Batch refuses them since 2026-07-31 (real-api-facts.md); a string and a list agree.
    problems = JobSpec(IMAGE, allowed_locations=allowed).problems(region="us-central1")  # type: ignore[arg-type]
    assert len(problems) == 1
    assert "outside the job's region us-central1" in problems[0]


def test_bad_region_argument_is_reported() -> None:
    assert any("region 'Mars'" in p for p in JobSpec(IMAGE).problems(region="Mars"))


def test_full_spec_rest() -> None:
    rest = full_spec().to_rest()
    task_spec = ts(rest)
    assert container(rest) == {
        "imageUri": IMAGE,
        "commands": ["-c", "echo hello"],
        "entrypoint": "/bin/sh",
        "volumes": ["/mnt/disks/share:/share:ro"],
        "enableImageStreaming": True,
    }
    assert set(container(rest)) <= STREAMING_CONTAINER_FIELDS
    assert task_spec["maxRetryCount"] == 2  # explicit value kept despite retry_on_preemption
    # FAIL_TASK retries every code it does not list, 50001 included: nothing to add.
    assert task_spec["lifecyclePolicies"] == [
        {"action": "FAIL_TASK", "actionCondition": {"exitCodes": [1, 2]}},
    ]
    assert task_spec["maxRunDuration"] == "7200s"
    assert task_spec["computeResource"] == {"cpuMilli": 4000, "memoryMib": 8192, "bootDiskMib": 20480}
    assert task_spec["environment"] == {
        "variables": {"MODE": "prod"},
        "secretVariables": {"TOKEN": "projects/p/secrets/token/versions/3"},
    }
    assert rest["allocationPolicy"] == {
        "location": {"allowedLocations": ["regions/us-central1"]},
        "instances": [
            {
                "policy": {
                    "machineType": "g2-standard-8",
                    "provisioningModel": "SPOT",
                    "accelerators": [{"type": "nvidia-l4", "count": 1}],
                },
                "installGpuDrivers": True,
            }
        ],
        "network": {
            "networkInterfaces": [
                {
                    "network": "projects/p/global/networks/vpc",
                    "subnetwork": "projects/p/regions/us-central1/subnetworks/sub",
                    "noExternalIpAddress": True,
                }
            ]
        },
        "serviceAccount": {"email": "runner@p.iam.gserviceaccount.com"},
    }
    assert tg(rest)["taskCount"] == 10
    assert rest["priority"] == 50
    json.dumps(rest)  # plain JSON all the way down


# --------------------------------------------------------------------------------------
# Retries and lifecycle policies
# --------------------------------------------------------------------------------------


def test_retry_on_preemption_defaults_retries() -> None:
    # No policy: Batch retries every failure (preemption included), so none is added.
    rest = JobSpec(IMAGE, retry_on_preemption=True).to_rest()
    assert ts(rest)["maxRetryCount"] == DEFAULT_PREEMPTION_RETRIES
    assert "lifecyclePolicies" not in ts(rest)
    job = JobSpec(IMAGE, retry_on_preemption=True).to_job()
    assert list(job.task_groups[0].task_spec.lifecycle_policies) == []
    assert job.task_groups[0].task_spec.max_retry_count == 3


def test_retry_on_preemption_joins_a_retry_policy() -> None:
    # The bug this fixes: a user's RETRY_TASK [3] plus a second appended policy never retried 50001.
    rest = JobSpec(
        IMAGE,
        retry_on_preemption=True,
        max_retry_count=2,
        lifecycle_policies=[LifecyclePolicy("RETRY_TASK", [3])],
    ).to_rest()
    assert ts(rest)["lifecyclePolicies"] == [
        {"action": "RETRY_TASK", "actionCondition": {"exitCodes": [3, PREEMPTION_EXIT_CODE]}}
    ]
    assert ts(rest)["maxRetryCount"] == 2


def test_retry_on_preemption_with_max_retry_count_keeps_retrying_other_failures() -> None:
    # The other half of the bug: max_retry_count=2 + retry_on_preemption must not narrow retries.
    rest = JobSpec(IMAGE, retry_on_preemption=True, max_retry_count=2).to_rest()
    assert ts(rest)["maxRetryCount"] == 2 and "lifecyclePolicies" not in ts(rest)


def test_two_lifecycle_policies_are_refused() -> None:
    problems = problems_of(
        max_retry_count=1,
        lifecycle_policies=[LifecyclePolicy("RETRY_TASK", [3]), LifecyclePolicy("RETRY_TASK", [4])],
    )
    assert len(problems) == 1
    assert "2 policies" in problems[0] and "only one" in problems[0]


def test_retry_on_preemption_does_not_duplicate_policy() -> None:
    spec = JobSpec(
        IMAGE,
        retry_on_preemption=True,
        max_retry_count=5,
        lifecycle_policies=[{"action": "RETRY_TASK", "exit_codes": [50001, 50002]}],
    )
    task_spec = ts(spec.to_rest())
    assert task_spec["maxRetryCount"] == 5
    assert task_spec["lifecyclePolicies"] == [
        {"action": "RETRY_TASK", "actionCondition": {"exitCodes": [50001, 50002]}}
    ]


def test_retry_on_preemption_conflicts_with_fail_task() -> None:
    problems = problems_of(
        retry_on_preemption=True, lifecycle_policies=[LifecyclePolicy("FAIL_TASK", [50001])]
    )
    assert len(problems) == 1
    assert "retry_on_preemption" in problems[0] and "FAIL_TASK" in problems[0]


def test_retry_policy_without_retries_is_a_problem() -> None:
    problems = problems_of(lifecycle_policies=[LifecyclePolicy("RETRY_TASK", [1])])
    assert len(problems) == 1 and "max_retry_count" in problems[0]


def test_conflicting_policies_are_one_problem() -> None:
    problems = problems_of(
        max_retry_count=1,
        lifecycle_policies=[LifecyclePolicy("RETRY_TASK", [3]), LifecyclePolicy("FAIL_TASK", [3, 4])],
    )
    assert len(problems) == 1 and "applies only one" in problems[0]


# --------------------------------------------------------------------------------------
# Validation: every problem, all at once
# --------------------------------------------------------------------------------------


def test_all_problems_reported_together() -> None:
    spec = JobSpec.from_kwargs(
        image_uri="",
        commands="echo hello",
        entrypoint=5,
        volumes=["no-colon"],
        task_count=0,
        parallelism=10,
        task_count_per_node=-1,
        cpu_milli=0,
        memory_mib=-512,
        max_retry_count=11,
        lifecycle_policies=[{"action": "RESTART", "exit_codes": [0, 70000]}, {"exit_codez": [1]}],
        retry_on_preemption="maybe",
        max_run_duration="forever",
        environment={"1BAD": "x", "OK": None},
        secret_environment={"S": "my-secret"},
        gcs_volumes=[{"remote_path": "gs://", "mount_path": "relative/path"}],
        nfs_volumes=[NfsVolume("", "export", "/mnt/disks/x")],
        machine_type="E2 Standard",
        provisioning_model="ONDEMAND",
        accelerators=[{"type": "", "count": 0}],
        install_gpu_drivers="sometimes",
        boot_disk_mib="lots",
        network="My Network",
        subnetwork="projects/p/regions/us-east1/subnetworks/s",
        no_external_ip_address=3,
        service_account="not-an-email",
        labels={"Team": "x", "ok": "UPPER", "goog-x": "y"},
        allowed_locations=["us", "zones/us-central1-a", "europe-west4"],
        priority=100,
        enable_image_streaming="yes",
    )
    problems = spec.problems()
    expected_mentions = [
        "image_uri",
        "commands must be a list of strings, not one string",
        "entrypoint",
        "volumes[0]",
        "task_count must be",
        "task_count_per_node",
        "cpu_milli",
        "memory_mib",
        "max_retry_count",
        "lifecycle_policies[0].action",
        "lifecycle_policies[0].exit_codes[0]",
        "lifecycle_policies[0].exit_codes[1]",
        "lifecycle_policies[1] has unknown key 'exit_codez' (did you mean 'exit_codes'?)",
        "lifecycle_policies[1] is missing action, exit_codes",
        "retry_on_preemption",
        "max_run_duration",
        "environment has an invalid variable name '1BAD'",
        "environment['OK']",
        "secret_environment['S']",
        "gcs_volumes[0].remote_path",
        "gcs_volumes[0].mount_path",
        "nfs_volumes[0].server",
        "nfs_volumes[0].remote_path",
        "machine_type",
        "provisioning_model must be one of",
        "accelerators[0].type",
        "accelerators[0].count",
        "install_gpu_drivers",
        "boot_disk_mib",
        "network 'My Network'",
        "no_external_ip_address",
        "service_account",
        "labels: key 'Team'",
        "labels: 'ok' has invalid value 'UPPER'",
        "labels: key 'goog-x' is reserved",
        "allowed_locations[0] 'us'",
        "allowed_locations spans regions us-central1, europe-west4",
        "subnetwork",
        "priority",
        "enable_image_streaming",
    ]
    joined = "\n".join(problems)
    missing = [m for m in expected_mentions if m not in joined]
    assert not missing, f"missing {missing} in:\n{joined}"
    # The operator drops problems that mention a still-templated argument: every problem
    # must therefore name the argument(s) it is about.
    names = [re.compile(rf"\b{name}\b") for name in FIELD_NAMES]
    assert all(any(n.search(p) for n in names) for p in problems), problems
    with pytest.raises(SpecError) as info:
        spec.to_rest()
    assert info.value.problems == problems
    assert str(len(problems)) in str(info.value)
    with pytest.raises(SpecError):
        spec.to_job()


@pytest.mark.parametrize(
    ("kwargs", "mention"),
    [
        ({"image_uri": "   "}, "the image URI is empty"),
        ({"image_uri": 5}, "must be a string, not int"),
        ({"image_uri": " us-docker.pkg.dev/p/r/i"}, "leading or trailing whitespace"),
        ({"image_uri": "https://us-docker.pkg.dev/p/r/i"}, "scheme"),
        ({"image_uri": "us-docker.pkg.dev/p/r/i latest"}, "whitespace"),
        ({"task_count": 100_001}, "task_count"),
        ({"task_count": True}, "task_count"),
        ({"task_count": 2.0}, "task_count"),
        ({"task_count": 2, "parallelism": 3}, "parallelism (3) is greater than task_count (2)"),
        ({"parallelism": 0}, "parallelism"),
        ({"max_retry_count": -1}, "max_retry_count"),
        ({"max_run_duration": 0}, "positive"),
        ({"max_run_duration": -5}, "positive"),
        ({"max_run_duration": timedelta(seconds=-1)}, "positive"),
        ({"max_run_duration": float("inf")}, "max_run_duration"),
        ({"max_run_duration": float("nan")}, "max_run_duration"),
        ({"max_run_duration": True}, "max_run_duration"),
        ({"max_run_duration": "1h30"}, "max_run_duration"),
        ({"max_run_duration": 10**12}, "too long"),
        ({"environment": ["A=1"]}, "environment must be a mapping"),
        ({"environment": {"A": True}}, "environment['A']"),
        ({"environment": {"X": "1"}, "secret_environment": {"X": "projects/p/secrets/s/versions/1"}}, "both"),
        ({"secret_environment": {"S": "projects/p/secrets/s"}}, "versions/VERSION"),
        ({"secret_environment": {"bad-name": "projects/p/secrets/s/versions/1"}}, "bad-name"),
        ({"labels": {f"k{i}": "v" for i in range(64)}}, "at most 63"),
        ({"labels": {"k" * 64: "v"}}, "labels: key"),
        ({"labels": {"k": "v" * 64}}, "invalid value"),
        ({"labels": {"": "v"}}, "labels: key ''"),
        ({"labels": {"k": 1}}, "invalid value 1"),
        ({"labels": {"ünïcode": "v"}}, "labels: key"),
        ({"lifecycle_policies": [{"action": "FAIL_TASK", "exit_codes": []}]}, "is empty"),
        ({"lifecycle_policies": [{"action": "FAIL_TASK", "exit_codes": [True]}]}, "exit_codes[0]"),
        ({"lifecycle_policies": [{"action": "FAIL_TASK", "exit_codes": [256]}]}, "exit_codes[0]"),
        ({"lifecycle_policies": LifecyclePolicy("FAIL_TASK", [1])}, "lifecycle_policies must be a list"),
        ({"lifecycle_policies": ["FAIL_TASK"]}, "lifecycle_policies[0] must be a LifecyclePolicy"),
        ({"gcs_volumes": [{"remote_path": "Bad_Bucket", "mount_path": "/mnt/a"}]}, "remote_path"),
        ({"gcs_volumes": [GcsVolume("bkt", "/")]}, "mount_path '/'"),
        ({"gcs_volumes": [GcsVolume("bkt", "/mnt/a", "ro")]}, "mount_options must be a list"),
        (
            {"gcs_volumes": [GcsVolume("b1x", "/mnt/a")], "nfs_volumes": [NfsVolume("h", "/e", "/mnt/a/")]},
            "also used by gcs_volumes[0]",
        ),
        ({"nfs_volumes": [{"server": "h", "remote_path": "/e"}]}, "missing mount_path"),
        ({"volumes": ["/a:relative"]}, "must be absolute"),
        ({"volumes": [""]}, "volumes[0]"),
        ({"volumes": "/a:/b"}, "volumes must be a list of strings"),
        ({"commands": ["ok", 3]}, "commands[1]"),
        ({"commands": 3}, "commands must be a list"),
        ({"commands": {"a": "b"}}, "commands must be a list"),
        ({"provisioning_model": "on_demand"}, "STANDARD, SPOT, PREEMPTIBLE, FLEX_START"),
        ({"provisioning_model": 1}, "provisioning_model"),
        ({"accelerators": [{"type": "nvidia-l4", "count": 1, "driver": "x"}]}, "unknown key 'driver'"),
        ({"network": "projects/p/networks/x"}, "network"),
        ({"network": 5}, "network must be a string"),
        ({"subnetwork": "regions/us-central1/subnet/x"}, "subnetwork"),
        (
            {"subnetwork": "regions/us-east1/subnetworks/s", "allowed_locations": ["us-west1"]},
            "run in us-west1",
        ),
        ({"allowed_locations": ["us-central1-"]}, "allowed_locations[0]"),
        ({"allowed_locations": ["regions/us-central1-a"]}, "allowed_locations[0]"),
        ({"allowed_locations": ["zones/us-central1"]}, "allowed_locations[0]"),
        ({"allowed_locations": [3]}, "allowed_locations[0]"),
        ({"service_account": "a@b"}, "service_account"),
        ({"priority": -1}, "priority"),
        ({"labels": "team=x"}, "labels must be a mapping"),
    ],
)
def test_single_problem(kwargs: dict[str, Any], mention: str) -> None:
    problems = problems_of(**kwargs)
    assert problems, kwargs
    assert any(mention in p for p in problems), problems
    with pytest.raises(SpecError, match=re.escape(mention)):
        JobSpec.from_kwargs(**{"image_uri": IMAGE, **kwargs}).to_rest()


def test_problems_name_arguments_and_fixes() -> None:
    problems = problems_of(cpu_milli=-1, provisioning_model="spot-ish", environment={"A B": "x"})
    assert any(p.startswith("cpu_milli must be an integer from 1") for p in problems)
    assert any("provisioning_model must be one of STANDARD, SPOT" in p for p in problems)
    assert any("use letters, digits and '_'" in p for p in problems)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"labels": {"batch-job-id": "x"}}, "'batch-job-id' is reserved"),
        ({"provisioning_model": "RESERVATION_BOUND"}, "RESERVATION_BOUND needs the reservation"),
        (
            {"provisioning_model": "RESERVATION_BOUND", "reservation": "NO_RESERVATION"},
            "RESERVATION_BOUND needs the reservation",
        ),
        (
            {"reservation": "projects/p/reservations/Bad Name"},
            "reservation 'projects/p/reservations/Bad Name'",
        ),
        ({"boot_disk": {"type": "local-ssd"}}, "boot_disk.type 'local-ssd'"),
        ({"boot_disk": {"image": "ubuntu"}}, "boot_disk.image 'ubuntu'"),
        ({"boot_disk": {}}, "boot_disk is empty"),
        ({"boot_disk": {"size_gb": 50}, "boot_disk_mib": 1000}, "Batch honours only size_gb"),
        ({"boot_disk": {"size": 50}}, "boot_disk has unknown key 'size'"),
        (
            {"instance_template": "tmpl", "machine_type": "e2-standard-4"},
            "replaces the VM settings machine_type",
        ),
        ({"instance_template": "tmpl", "network": "vpc"}, "replaces the VM settings network"),
        ({"instance_template": "Not A Template"}, "instance_template 'Not A Template'"),
        ({"runnable_timeout": "soon"}, "runnable_timeout 'soon' is not a duration"),
        ({"install_ops_agent": "maybe"}, "install_ops_agent must be True or False"),
        ({"task_environments": [{"A": "1"}, {"A": "2"}], "task_count": 3}, "task_count (3) differs"),
        ({"task_environments": [{"1A": "x"}]}, "task_environments[0] has an invalid variable name"),
        (
            {"task_environments": [{"A": "1"}], "parallelism": 2},
            "parallelism (2) is greater than task_count (1)",
        ),
        ({"notifications": [{"pubsub_topic": "topic"}]}, "pubsub_topic 'topic' is not a topic"),
        ({"notifications": [{"pubsub_topic": "projects/p/topics/evt", "type": "X"}]}, "type must be one"),
        (
            {"notifications": [{"pubsub_topic": "projects/p/topics/events", "new_task_state": "FAILED"}]},
            "only applies to type TASK_STATE_CHANGED",
        ),
    ],
)
def test_new_option_problems(kwargs: dict[str, Any], needle: str) -> None:
    problems = problems_of(**kwargs)
    assert len(problems) == 1, problems
    assert needle in problems[0]


def test_warnings_name_legacy_preemptible() -> None:
    assert JobSpec(IMAGE).warnings() == []
    (warning,) = JobSpec(IMAGE, provisioning_model="PREEMPTIBLE").warnings()
    assert "PREEMPTIBLE is legacy" in warning


def test_exactly_63_labels_is_fine() -> None:
    assert problems_of(labels={f"k{i}": "v" for i in range(63)}) == []


def test_unpaired_surrogate_is_a_problem_not_a_crash() -> None:
    problems = problems_of(commands=["\ud800"], labels={"k": "v"})
    assert problems == ["commands contains an unpaired surrogate character: it cannot be sent to Batch"]


# --------------------------------------------------------------------------------------
# from_kwargs and SpecError
# --------------------------------------------------------------------------------------


def test_from_kwargs_unknown_names_with_suggestions() -> None:
    with pytest.raises(SpecError) as info:
        JobSpec.from_kwargs(image_uri=IMAGE, task_cout=2, cpu=1000, zzz=1)
    problems = info.value.problems
    assert any("'task_cout'" in p and "'task_count'" in p for p in problems)
    assert any("'cpu'" in p for p in problems)
    assert any(p == "unknown argument 'zzz'" for p in problems)
    assert len(problems) == 3


def test_from_kwargs_requires_image_uri() -> None:
    with pytest.raises(SpecError, match="image_uri is required"):
        JobSpec.from_kwargs(task_count=1)


def test_from_kwargs_builds() -> None:
    spec = JobSpec.from_kwargs(image_uri=IMAGE, task_count=3)
    assert spec == JobSpec(IMAGE, task_count=3)


def test_spec_error_shape() -> None:
    error = SpecError(["first", "second"])
    assert isinstance(error, ValueError)
    assert error.problems == ["first", "second"]
    assert "first" in str(error) and "second" in str(error) and "2 problems" in str(error)
    assert SpecError("only").problems == ["only"]
    clone = pickle.loads(pickle.dumps(error))
    assert clone.problems == error.problems and str(clone) == str(error)


# --------------------------------------------------------------------------------------
# REST <-> proto
# --------------------------------------------------------------------------------------


def test_round_trip_rest_job_rest() -> None:
    rest = full_spec().to_rest()
    job = rest_to_job(rest)
    assert job_to_rest(job) == rest
    assert job_to_rest(batch_v1.Job.pb(job)) == rest
    assert job_to_rest(json.dumps(rest)) == rest
    assert job_to_rest(json.dumps(rest).encode()) == rest
    # The proto JSON the library itself emits (int64 as strings) parses back to the same job.
    proto_json = batch_v1.Job.to_json(job)
    assert rest_to_job(proto_json) == job
    assert batch_v1.Job.to_json(batch_v1.Job.from_json(proto_json)) == proto_json
    assert rest_to_job(job_to_rest(proto_json)) == job


def test_round_trip_minimal_and_streaming_off() -> None:
    for spec in (JobSpec(IMAGE), JobSpec(IMAGE, enable_image_streaming=False, priority=0)):
        rest = spec.to_rest()
        assert job_to_rest(spec.to_job()) == {k: v for k, v in rest.items() if k != "priority"}


def test_rest_to_job_accepts_int64_as_strings_and_ints() -> None:
    rest = JobSpec(IMAGE, task_count=3, cpu_milli=500).to_rest()
    as_strings = json.loads(json.dumps(rest))
    as_strings["taskGroups"][0]["taskCount"] = "3"
    as_strings["taskGroups"][0]["taskSpec"]["computeResource"]["cpuMilli"] = "500"
    assert rest_to_job(as_strings) == rest_to_job(rest)
    assert rest_to_job(as_strings).task_groups[0].task_count == 3


def test_rest_to_job_errors_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="taskGroupz"):
        rest_to_job({"taskGroupz": []})
    with pytest.raises(SpecError, match="not JSON-serializable"):
        rest_to_job({"labels": {"a": object()}})
    with pytest.raises(SpecError):
        rest_to_job("{")
    with pytest.raises(SpecError):
        rest_to_job({"priority": "high"})


def test_job_to_rest_accepts_mappings_of_any_kind() -> None:
    rest = JobSpec(IMAGE).to_rest()
    proxied = MappingProxyType({**rest, "labels": MappingProxyType({"a": "b"})})
    out = job_to_rest(proxied)
    assert out == {**rest, "labels": {"a": "b"}}
    assert type(out) is dict and type(out["labels"]) is dict
    out["taskGroups"][0]["taskCount"] = 99
    assert rest["taskGroups"][0]["taskCount"] == 1  # a copy, not a view


def test_job_to_rest_normalizes_snake_case() -> None:
    job = full_spec().to_job()
    snake = batch_v1.Job.to_dict(job)
    assert "task_groups" in snake
    assert job_to_rest(snake) == full_spec().to_rest()


def test_job_to_rest_keeps_output_only_fields() -> None:
    job = JobSpec(IMAGE).to_job()
    job.name = "projects/p/locations/us-central1/jobs/j"
    job.uid = "j-123"
    job.status = batch_v1.JobStatus(
        state=batch_v1.JobStatus.State.RUNNING,
        task_groups={"group0": batch_v1.JobStatus.TaskGroupStatus(counts={"RUNNING": 2})},
    )
    rest = job_to_rest(job)
    assert rest["name"] == job.name and rest["uid"] == "j-123"
    assert rest["status"]["state"] == "RUNNING"
    assert rest["status"]["taskGroups"]["group0"]["counts"] == {"RUNNING": 2}


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[1, 2]",
        "42",
        "null",
        b"\xff\xfe",
        42,
        None,
        [1, 2],
        object(),
        {"a": float("nan")},
        {"a": {1, 2}},
        {("t",): 1},
        {"taskGroups": 3},
        {"taskGroups": [1]},
        {"task_groups": "x"},
        "[" * 100_000,
    ],
)
def test_job_to_rest_rejects_with_spec_error(bad: object) -> None:
    with pytest.raises(SpecError):
        job_to_rest(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# streaming_containers
# --------------------------------------------------------------------------------------


def test_streaming_containers_across_task_groups() -> None:
    streaming = {"imageUri": "a", "enableImageStreaming": True}
    plain = {"imageUri": "b"}
    rest = {
        "taskGroups": [
            {"taskSpec": {"runnables": [{"container": streaming}, {"container": plain}, {"script": {}}]}},
            {"taskSpec": {"runnables": [{"container": {"imageUri": "c", "enableImageStreaming": True}}]}},
            {"taskSpec": {"runnables": "junk"}},
            {"taskSpec": None},
            "junk",
        ]
    }
    found = streaming_containers(rest)
    assert [c["imageUri"] for c in found] == ["a", "c"]
    assert found[0] is streaming


def test_streaming_containers_other_inputs() -> None:
    spec = JobSpec(IMAGE, commands=["x"])
    assert streaming_containers(spec.to_job()) == [container(spec.to_rest())]
    assert streaming_containers(json.dumps(spec.to_rest())) == [container(spec.to_rest())]
    assert streaming_containers(JobSpec(IMAGE, enable_image_streaming=False).to_rest()) == []
    assert streaming_containers({}) == []
    assert streaming_containers({"taskGroups": {"a": 1}}) == []
    snake = batch_v1.Job.to_dict(spec.to_job())
    assert [c["imageUri"] for c in streaming_containers(snake)] == [IMAGE]


# --------------------------------------------------------------------------------------
# Job IDs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["a", "a1", "my-job-1", "a" * 63, "x-y-z"])
def test_valid_job_ids(job_id: str) -> None:
    validate_job_id(job_id)


@pytest.mark.parametrize(
    ("job_id", "mention"),
    [
        ("", "empty"),
        ("a" * 64, "64 characters"),
        ("1abc", "start with a lowercase letter"),
        ("-abc", "start with a lowercase letter"),
        ("My_Job", "'JM_'"),
        ("abc-", "must not end with '-'"),
        ("a.b", "'.'"),
        (5, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_invalid_job_ids(job_id: object, mention: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_job_id(job_id)
    assert any(mention in p for p in info.value.problems), info.value.problems


def test_invalid_job_id_lists_every_problem() -> None:
    with pytest.raises(SpecError) as info:
        validate_job_id("9" + "A" * 70 + "-")
    assert len(info.value.problems) == 4


def test_make_job_id_examples() -> None:
    job_id = make_job_id("etl_daily", "load.table", "manual__2024-01-01T00:00:00+00:00", -1, 1)
    assert job_id.startswith("etl-daily-load-table-manual-2024-01-01t00-00-00")
    assert JOB_ID_RE.match(job_id) and len(job_id) <= 63
    assert make_job_id("2024", "x").startswith("j-2024-x-")
    assert make_job_id().startswith("job-")
    assert make_job_id("!!!", "").startswith("job-")
    assert make_job_id("Café Crème").startswith("cafe-creme-")
    long_id = make_job_id("d" * 100, "t" * 100)
    assert len(long_id) == 63 and JOB_ID_RE.match(long_id)
    validate_job_id(long_id)


def test_make_job_id_distinguishes_what_the_slug_merges() -> None:
    variants = [
        ("a-b",),
        ("a", "b"),
        ("A_B",),
        ("a b",),
        ("ab",),
        ("a", "b", ""),
        ("x" * 80 + "1",),
        ("x" * 80 + "2",),
    ]
    ids = [make_job_id(*parts) for parts in variants]
    assert len(set(ids)) == len(ids)
    assert make_job_id("a", "b") == make_job_id("a", "b")


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------

part = st.one_of(st.text(), st.integers(), st.none())


def expected_suffix(parts: tuple[object, ...]) -> str:
    encoded = "".join(f"{len(str(p))}:{p}" for p in parts).encode("utf-8", "surrogatepass")
    return base64.b32encode(hashlib.sha256(encoded).digest()).decode().lower()[:12]


@given(st.lists(part, max_size=6).map(tuple), st.lists(part, max_size=6).map(tuple))
def test_make_job_id_properties(first: tuple[object, ...], second: tuple[object, ...]) -> None:
    a = make_job_id(*first)
    assert JOB_ID_RE.match(a), a
    assert len(a) <= 63
    assert make_job_id(*first) == a
    validate_job_id(a)
    # The suffix is SHA-256 over a length-prefixed (hence injective) encoding of the parts'
    # str(): distinct inputs collide only if SHA-256 collides in 60 bits.
    assert a.endswith("-" + expected_suffix(first))
    if tuple(map(str, first)) != tuple(map(str, second)):
        assert make_job_id(*second) != a


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)
job_keys = st.sampled_from(
    ["taskGroups", "task_groups", "labels", "priority", "logsPolicy", "allocationPolicy"]
)
job_like = st.dictionaries(st.one_of(job_keys, st.text()), json_values, max_size=5)


@given(st.one_of(json_values, job_like, job_like.map(json.dumps), st.text(), st.binary()))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_job_to_rest_never_raises_anything_else(value: object) -> None:
    try:
        rest = job_to_rest(value)  # type: ignore[arg-type]
    except SpecError as error:
        assert error.problems
        return
    assert isinstance(rest, dict)
    json.dumps(rest, allow_nan=False)
    streaming_containers(rest)


arbitrary = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.timedeltas(),
    st.lists(st.one_of(st.text(max_size=10), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=10), st.one_of(st.text(max_size=10), st.integers()), max_size=3),
    st.lists(st.dictionaries(st.text(max_size=12), json_values, max_size=3), max_size=2),
)
plausible: dict[str, st.SearchStrategy[Any]] = {
    "image_uri": st.sampled_from([IMAGE, IMAGE, IMAGE, "", "gcr.io/p/i"]),
    "entrypoint": st.sampled_from(["/bin/sh", "", None]),
    "volumes": st.lists(st.sampled_from(["/mnt/disks/a:/a", "/b:/b:ro", "bad"]), max_size=2),
    "task_count_per_node": st.integers(0, 4),
    "memory_mib": st.integers(0, 4096),
    "boot_disk_mib": st.integers(0, 4096),
    "secret_environment": st.dictionaries(
        st.sampled_from(["S", "T"]), st.sampled_from(["projects/p/secrets/s/versions/1", "s"])
    ),
    "gcs_volumes": st.lists(
        st.builds(GcsVolume, st.sampled_from(["bkt", "gs://bkt/d", "B"]), st.sampled_from(["/mnt/g", "x"])),
        max_size=2,
    ),
    "nfs_volumes": st.lists(
        st.fixed_dictionaries(
            {"server": st.just("10.0.0.1"), "remote_path": st.just("/e"), "mount_path": st.just("/mnt/n")}
        ),
        max_size=1,
    ),
    "machine_type": st.sampled_from(["e2-standard-4", "t2a-standard-1", "Bad Type"]),
    "install_gpu_drivers": st.booleans() | st.none(),
    "network": st.sampled_from(["default", "projects/p/global/networks/n", "Bad/Net"]),
    "no_external_ip_address": st.booleans(),
    "service_account": st.sampled_from(["sa@p.iam.gserviceaccount.com", "nope"]),
    "enable_image_streaming": st.booleans(),
    "commands": st.lists(st.text(max_size=10), max_size=3),
    "task_count": st.integers(0, 20),
    "parallelism": st.integers(0, 20) | st.none(),
    "cpu_milli": st.integers(-1, 10_000) | st.none(),
    "max_retry_count": st.integers(-1, 12),
    "lifecycle_policies": st.lists(
        st.builds(
            LifecyclePolicy,
            st.sampled_from(["RETRY_TASK", "FAIL_TASK", "retry_task", "X"]),
            st.lists(st.sampled_from([0, 1, 2, 255, 50001, 70000]), max_size=3),
        ),
        max_size=2,
    ),
    "retry_on_preemption": st.booleans(),
    "max_run_duration": st.one_of(st.integers(-5, 10**6), st.floats(), st.timedeltas(), st.text(max_size=6)),
    "environment": st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True), st.text()),
    "labels": st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_-]{0,5}", fullmatch=True),
        st.from_regex(r"[a-z0-9_-]{0,5}", fullmatch=True),
        max_size=4,
    ),
    "allowed_locations": st.lists(
        st.sampled_from(["us-central1", "zones/us-central1-a", "us-central1-b", "us", "regions/x"]),
        max_size=2,
    ),
    "provisioning_model": st.sampled_from(["SPOT", "standard", "PREEMPTIBLE", None]),
    "accelerators": st.lists(st.builds(Accelerator, st.sampled_from(["nvidia-l4", ""]), st.integers(-1, 9))),
    "subnetwork": st.sampled_from(["sub", "projects/p/regions/us-central1/subnetworks/s", None]),
    "priority": st.integers(-2, 101) | st.none(),
}


@st.composite
def spec_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    # Mostly plausible values (so valid specs reach to_job), sometimes anything at all.
    names = draw(st.lists(st.sampled_from(FIELD_NAMES[1:]), unique=True, max_size=6))
    kwargs: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        kwargs["image_uri"] = draw(arbitrary if not draw(st.integers(0, 9)) else plausible["image_uri"])
    for name in names:
        wild = name not in plausible or not draw(st.integers(0, 5))
        kwargs[name] = draw(arbitrary if wild else plausible[name])
    if not draw(st.integers(0, 9)):
        kwargs[draw(st.sampled_from(["task_cout", "image", "cpu"]))] = 1
    return kwargs


@given(spec_kwargs(), st.sampled_from([None, None, "us-central1", "bogus"]))
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_from_kwargs_never_raises_anything_else(kwargs: dict[str, Any], region: str | None) -> None:
    try:
        spec = JobSpec.from_kwargs(**kwargs)
    except SpecError as error:
        assert error.problems
        return
    problems = spec.problems(region)
    assert all(isinstance(p, str) and p for p in problems)
    assert all(any(re.search(rf"\b{n}\b", p) for n in (*FIELD_NAMES, "region")) for p in problems)
    try:
        rest = spec.to_rest(region)
    except SpecError as error:
        assert error.problems == problems
        return
    assert problems == []
    job = spec.to_job(region)  # valid specs must always make a valid proto
    assert job_to_rest(job) == {k: v for k, v in rest.items() if k != "priority" or v}
