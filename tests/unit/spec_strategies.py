"""Hypothesis strategies over every JobSpec argument (shared by the contract tests)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from airflow_batch_streaming import spec as spec_module
from airflow_batch_streaming.spec import (
    Accelerator,
    BootDisk,
    GcsVolume,
    LifecyclePolicy,
    NfsVolume,
    Notification,
)

REGION = "us-central1"
_NAME = st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True)
_LABEL_KEY = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True).filter(
    lambda k: not k.startswith(("goog-", "google-", "batch-"))
)
_DURATION = st.integers(1, 10**7) | st.sampled_from(["90s", "1h30m", "0.5s", "2h"])


@st.composite
def job_specs(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for a valid JobSpec, drawn over every argument it has."""
    kw: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {"image_uri": st.sampled_from(["us-central1-docker.pkg.dev/p/r/i:1", "us-docker.pkg.dev/p/r/i"])},
            optional={
                "commands": st.lists(st.text("abc -$'\"/", max_size=8), max_size=3),
                "entrypoint": st.sampled_from(["/bin/sh", "python"]),
                "volumes": st.lists(st.sampled_from(["/mnt/disks/a:/a", "/mnt/disks/b:/b:ro"]), unique=True),
                "task_count": st.integers(1, 100_000),
                "parallelism": st.just(1),
                "task_count_per_node": st.integers(1, 64),
                "cpu_milli": st.integers(1, 416_000),
                "memory_mib": st.integers(1, 10**7),
                "max_retry_count": st.integers(0, 10),
                "lifecycle_policies": st.lists(
                    st.builds(
                        LifecyclePolicy,
                        st.sampled_from(["RETRY_TASK", "FAIL_TASK"]),
                        st.lists(st.integers(1, 255) | st.integers(50000, 50006), min_size=1, unique=True),
                    ),
                    max_size=1,
                ),
                "retry_on_preemption": st.booleans(),
                "max_run_duration": _DURATION,
                "runnable_timeout": _DURATION,
                "environment": st.dictionaries(_NAME, st.text(max_size=5), max_size=3),
                "secret_environment": st.dictionaries(
                    _NAME, st.just("projects/p/secrets/s/versions/latest"), max_size=2
                ),
                "gcs_volumes": st.just([GcsVolume("gs://bucket-a/dir", "/mnt/disks/gcs", ["ro"])]),
                "nfs_volumes": st.just([NfsVolume("10.0.0.2", "/share", "/mnt/disks/nfs")]),
                "machine_type": st.sampled_from(["e2-standard-4", "g2-standard-8", "c4a-standard-4"]),
                "provisioning_model": st.sampled_from(spec_module._PROVISIONING_MODELS),
                "reservation": st.sampled_from(
                    ["NO_RESERVATION", "r1", "projects/p/zones/us-central1-a/reservations/r1"]
                ),
                "accelerators": st.just([Accelerator("nvidia-l4", 2)]),
                "install_gpu_drivers": st.booleans(),
                "boot_disk_mib": st.integers(1, 10**6),
                "boot_disk": st.builds(
                    BootDisk,
                    st.none()
                    | st.sampled_from(["batch-cos", "projects/debian-cloud/global/images/family/d-12"]),
                    st.none() | st.sampled_from(["pd-balanced", "pd-ssd", "hyperdisk-balanced"]),
                    st.none() | st.integers(10, 1000),
                ),
                "network": st.sampled_from(["vpc", "projects/p/global/networks/vpc"]),
                "subnetwork": st.sampled_from(["sub", f"projects/p/regions/{REGION}/subnetworks/sub"]),
                "no_external_ip_address": st.booleans(),
                "service_account": st.just("runner@p.iam.gserviceaccount.com"),
                "labels": st.dictionaries(_LABEL_KEY, st.from_regex(r"[a-z0-9_-]{0,8}", fullmatch=True)),
                "allowed_locations": st.sampled_from([[REGION], [f"zones/{REGION}-a", f"zones/{REGION}-b"]]),
                "priority": st.integers(0, 99),
                "instance_template": st.sampled_from(["tmpl", "projects/p/global/instanceTemplates/t"]),
                "install_ops_agent": st.booleans(),
                "task_environments": st.lists(
                    st.dictionaries(_NAME, st.text(max_size=4), max_size=2), max_size=4
                ),
                "notifications": st.lists(
                    st.builds(
                        Notification,
                        st.just("projects/p/topics/batch-events"),
                        st.just("JOB_STATE_CHANGED"),
                        st.none() | st.sampled_from(spec_module._JOB_STATES),
                    )
                    | st.builds(
                        Notification,
                        st.just("projects/p/topics/task-events"),
                        st.just("TASK_STATE_CHANGED"),
                        st.none(),
                        st.none() | st.sampled_from(spec_module._TASK_STATES),
                    ),
                    max_size=2,
                ),
                "enable_image_streaming": st.booleans(),
            },
        )
    )
    # Make the combination valid (the rules that tie arguments together are tested elsewhere).
    if "instance_template" in kw:
        for name in ("machine_type", "provisioning_model", "reservation", "accelerators", "boot_disk"):
            kw.pop(name, None)
        for name in ("network", "subnetwork", "no_external_ip_address"):
            kw.pop(name, None)
    if kw.get("provisioning_model") == "RESERVATION_BOUND":
        kw["reservation"] = "projects/p/zones/us-central1-a/reservations/r1"
    disk = kw.get("boot_disk")
    if disk is not None and disk.size_gb is not None:
        kw.pop("boot_disk_mib", None)
    if disk is not None and disk == BootDisk():
        kw.pop("boot_disk")
    for name in set(kw.get("secret_environment", {})) & set(kw.get("environment", {})):
        del kw["secret_environment"][name]
    if kw.get("task_environments"):
        kw.pop("task_count", None)
        kw.pop("parallelism", None)
    policies = kw.get("lifecycle_policies")
    if policies and policies[0].action == "RETRY_TASK" and not kw.get("max_retry_count"):
        kw["max_retry_count"] = 1
    if policies and policies[0].action == "FAIL_TASK" and kw.get("retry_on_preemption"):
        kw["lifecycle_policies"] = [
            LifecyclePolicy("FAIL_TASK", [c for c in policies[0].exit_codes if c != 50001] or [1])
        ]
    return kw
