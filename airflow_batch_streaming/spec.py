"""Task arguments -> Batch job REST JSON -> ``batch_v1.Job``; job-ID rules.

The REST JSON dict (camelCase, what ``gcloud batch jobs submit --config`` takes) is the
pivot of the package. It is built here in pure Python so that a DAG file can validate a
job at parse time without importing the Google client libraries; ``google.cloud.batch_v1``
is imported only inside :func:`rest_to_job` / :func:`job_to_rest` (never at module level).
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

from airflow_batch_streaming import image as _image
from airflow_batch_streaming import locations as _locations

if TYPE_CHECKING:
    from google.cloud import batch_v1

__all__ = [
    "DEFAULT_PREEMPTION_RETRIES",
    "FIELD_NAMES",
    "JOB_ID_PATTERN",
    "PREEMPTION_EXIT_CODE",
    "STREAMING_CONTAINER_FIELDS",
    "Accelerator",
    "BootDisk",
    "GcsVolume",
    "JobSpec",
    "LifecyclePolicy",
    "NfsVolume",
    "Notification",
    "SpecError",
    "job_to_rest",
    "make_job_id",
    "rest_to_job",
    "streaming_containers",
    "validate_job_id",
]

JOB_ID_PATTERN: Final = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
_JOB_ID_RE: Final = re.compile(JOB_ID_PATTERN)
_JOB_ID_MAX: Final = 63
_JOB_ID_HASH_CHARS: Final = 12  # 60 bits of SHA-256: collisions need ~10^9 ids sharing one prefix

#: Exit code Batch gives a task whose Spot VM was preempted.
PREEMPTION_EXIT_CODE: Final = 50001
#: ``max_retry_count`` used when ``retry_on_preemption`` is set and no retries were asked for:
#: a retry policy with zero retries would never fire.
DEFAULT_PREEMPTION_RETRIES: Final = 3

#: The only container fields a streaming runnable honours; Batch silently ignores the others.
STREAMING_CONTAINER_FIELDS: Final = frozenset(
    {"imageUri", "commands", "entrypoint", "volumes", "enableImageStreaming"}
)

# Documented Batch limits (batch/quotas): tasks per task group, parallel tasks per job.
_MAX_TASK_COUNT: Final = 100_000
_MAX_PARALLELISM: Final = 5_000
_MAX_RETRIES: Final = 10
_MAX_INT: Final = 2**31 - 1  # keeps every integer inside the proto's int32/int64 range
_MAX_DURATION_SECONDS: Final = 315_576_000_000  # google.protobuf.Duration's maximum
#: Custom labels a job may carry (docs "Organize resources using labels": at most 63), and
#: the prefixes Google keeps for itself: ``goog-``/``google-`` (Job.labels in the batch.v1
#: discovery document) and ``batch-`` (Batch's predefined labels such as ``batch-job-id``).
MAX_LABELS: Final = 63
_RESERVED_LABEL_PREFIXES: Final = ("goog-", "google-", "batch-")

_ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_RE: Final = re.compile(r"^projects/[^/\s]+/secrets/[^/\s]+/versions/[^/\s]+$")
_LABEL_KEY_RE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE: Final = re.compile(r"^[a-z0-9_-]{0,63}$")
_MACHINE_TYPE_RE: Final = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
_ACCELERATOR_RE: Final = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
_RESOURCE_NAME_RE: Final = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_COMPUTE_URL: Final = r"(?:https://(?:www\.)?(?:compute\.)?googleapis\.com/compute/(?:v1|beta|alpha)/)?"
_NETWORK_PATH_RE: Final = re.compile(
    rf"^{_COMPUTE_URL}(?:projects/[^/\s]+/)?global/networks/[a-z]([-a-z0-9]{{0,61}}[a-z0-9])?$"
)
_SUBNETWORK_PATH_RE: Final = re.compile(
    rf"^{_COMPUTE_URL}(?:projects/[^/\s]+/)?regions/(?P<region>[^/\s]+)/subnetworks/"
    r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
)
_EMAIL_RE: Final = re.compile(r"^[^@\s/]+@[^@\s/]+\.[^@\s/]+$")
_BUCKET_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_INT_STR_RE: Final = re.compile(r"^\s*[+-]?\d+\s*$")
_SECONDS_RE: Final = re.compile(r"^(?P<s>\d+(?:\.\d+)?)s?$")
_HMS_RE: Final = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")

_ACTIONS: Final = ("RETRY_TASK", "FAIL_TASK")
#: ``InstancePolicy.provisioningModel`` (batch.v1). PREEMPTIBLE is deprecated but "still
#: supported", so it is accepted (see :func:`spec_warnings`).
_PROVISIONING_MODELS: Final = ("STANDARD", "SPOT", "PREEMPTIBLE", "FLEX_START", "RESERVATION_BOUND")
#: Boot disk types Batch documents for boot disks (``Disk.type``); hyperdisks for newer machines.
_BOOT_DISK_TYPE_RE: Final = re.compile(r"^(pd-(balanced|extreme|ssd|standard)|hyperdisk-[a-z0-9-]+)$")
_BOOT_IMAGE_RE: Final = re.compile(
    r"^(batch-debian|batch-cos|batch-hpc-rocky|"
    rf"{_COMPUTE_URL}projects/[^/\s]+/global/images/(family/)?[a-z]([-a-z0-9]{{0,61}}[a-z0-9])?)$"
)
_RESERVATION_RE: Final = re.compile(
    r"^(NO_RESERVATION|[a-z]([-a-z0-9]{0,61}[a-z0-9])?|"
    r"projects/[^/\s]+/(zones/[a-z0-9-]+/)?reservations/[a-z]([-a-z0-9]{0,61}[a-z0-9])?"
    r"(/reservationBlocks/[^/\s]+(/reservationSubBlocks/[^/\s]+)?)?)$"
)
_TEMPLATE_RE: Final = re.compile(
    rf"^({_COMPUTE_URL}projects/[^/\s]+/(global|regions/[a-z]+-[a-z]+[0-9]+)/instanceTemplates/)?"
    r"([0-9]+|[a-z]([-a-z0-9]{0,61}[a-z0-9])?)$"
)
_TOPIC_RE: Final = re.compile(r"^projects/[^/\s]+/topics/[A-Za-z][-A-Za-z0-9._~%+]{2,254}$")
_MESSAGE_TYPES: Final = ("JOB_STATE_CHANGED", "TASK_STATE_CHANGED")
_JOB_STATES: Final = (
    "QUEUED", "SCHEDULED", "RUNNING", "SUCCEEDED", "FAILED",
    "DELETION_IN_PROGRESS", "CANCELLATION_IN_PROGRESS", "CANCELLED",
)  # fmt: skip
_TASK_STATES: Final = ("PENDING", "ASSIGNED", "RUNNING", "FAILED", "SUCCEEDED", "UNEXECUTED")
_NANOS: Final = Decimal(1_000_000_000)
# Top-level keys that betray a snake_case (``Job.to_dict``-style) job rather than REST JSON.
_SNAKE_JOB_KEYS: Final = frozenset(
    {"task_groups", "allocation_policy", "logs_policy", "create_time", "update_time"}
)


class SpecError(ValueError):
    """A job spec or job JSON is invalid; ``problems`` lists every reason at once."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else [str(p) for p in problems]
        if len(self.problems) == 1:
            message = f"Invalid Batch job spec: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"Invalid Batch job spec ({len(self.problems)} problems):\n{lines}"
        super().__init__(message)

    def __reduce__(self) -> tuple[type[SpecError], tuple[list[str]]]:
        # Default exception pickling would re-run __init__ with the formatted message.
        return (type(self), (self.problems,))


@dataclass(frozen=True)
class GcsVolume:
    """A Cloud Storage bucket (or ``bucket/dir``; ``gs://`` accepted) mounted on the VM."""

    remote_path: str
    mount_path: str
    mount_options: Sequence[str] = ()


@dataclass(frozen=True)
class NfsVolume:
    """An NFS export mounted on the VM."""

    server: str
    remote_path: str
    mount_path: str
    mount_options: Sequence[str] = ()


@dataclass(frozen=True)
class Accelerator:
    """GPUs attached to each VM, e.g. ``Accelerator("nvidia-l4", 1)``."""

    type: str
    count: int = 1


@dataclass(frozen=True)
class LifecyclePolicy:
    """What Batch does when a task exits with one of ``exit_codes``: RETRY_TASK or FAIL_TASK."""

    action: str
    exit_codes: Sequence[int]


@dataclass(frozen=True)
class BootDisk:
    """The VM's boot disk (``instancePolicy.bootDisk``): image, type and size in GB.

    ``image``: ``batch-debian``, ``batch-cos``, ``batch-hpc-rocky`` or
    ``projects/P/global/images/[family/]NAME``; ``type``: ``pd-balanced`` (Batch's default),
    ``pd-ssd``, ``pd-standard``, ``pd-extreme`` or a ``hyperdisk-*`` type.
    """

    image: str | None = None
    type: str | None = None
    size_gb: int | None = None


@dataclass(frozen=True)
class Notification:
    """A Pub/Sub message Batch publishes when the job (or a task) changes state.

    ``new_job_state`` / ``new_task_state`` narrow the messages to one state; without a
    message type Batch sends nothing, so ``type`` is always sent.
    """

    pubsub_topic: str
    type: str = "JOB_STATE_CHANGED"
    new_job_state: str | None = None
    new_task_state: str | None = None


# Mapping keys accepted for the records above: their own names plus the REST camelCase ones,
# so a dict copied from a gcloud config works too.
_RECORD_ALIASES: Final[dict[str, str]] = {
    "remotePath": "remote_path",
    "mountPath": "mount_path",
    "mountOptions": "mount_options",
    "exitCodes": "exit_codes",
    "sizeGb": "size_gb",
    "pubsubTopic": "pubsub_topic",
    "newJobState": "new_job_state",
    "newTaskState": "new_task_state",
}


@dataclass(frozen=True)
class JobSpec:
    """Everything a DAG author says about a Batch job; field names are operator arguments.

    Construction never fails on values (only :meth:`problems` judges them), so that every
    mistake can be reported in one list. Integers and booleans may also be given as strings
    (``"4"``, ``"true"``) because templated operator arguments render to strings.

    ``boot_disk_mib`` maps to ``taskSpec.computeResource.bootDiskMib``: the *extra* boot disk
    Batch adds per task, which is what Batch documents for per-task disk needs.

    Batch reads one lifecycle policy per task spec (batch.v1 ``TaskSpec.lifecyclePolicies``:
    "Currently we only support one lifecycle policy"), so ``retry_on_preemption`` is merged
    into it rather than appended: with no policy every failure is already retried; with a
    RETRY_TASK policy exit code 50001 joins its codes; with a FAIL_TASK policy 50001 is
    already retried (unless it is listed, which is a conflict). If ``max_retry_count`` is 0
    it is raised to :data:`DEFAULT_PREEMPTION_RETRIES`.
    """

    image_uri: str
    _: KW_ONLY
    commands: Sequence[str] = ()
    entrypoint: str | None = None
    volumes: Sequence[str] = ()
    task_count: int = 1
    parallelism: int | None = None
    task_count_per_node: int | None = None
    cpu_milli: int | None = None
    memory_mib: int | None = None
    max_retry_count: int = 0
    lifecycle_policies: Sequence[LifecyclePolicy | Mapping[str, Any]] = ()
    retry_on_preemption: bool = False
    max_run_duration: str | int | float | timedelta | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    secret_environment: Mapping[str, str] = field(default_factory=dict)
    gcs_volumes: Sequence[GcsVolume | Mapping[str, Any]] = ()
    nfs_volumes: Sequence[NfsVolume | Mapping[str, Any]] = ()
    machine_type: str | None = None
    provisioning_model: str | None = None
    accelerators: Sequence[Accelerator | Mapping[str, Any]] = ()
    install_gpu_drivers: bool | None = None
    boot_disk_mib: int | None = None
    network: str | None = None
    subnetwork: str | None = None
    no_external_ip_address: bool = False
    service_account: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    allowed_locations: Sequence[str] = ()
    priority: int | None = None
    reservation: str | None = None
    boot_disk: BootDisk | Mapping[str, Any] | None = None
    instance_template: str | None = None
    runnable_timeout: str | int | float | timedelta | None = None
    install_ops_agent: bool = False
    task_environments: Sequence[Mapping[str, str]] = ()
    notifications: Sequence[Notification | Mapping[str, Any]] = ()
    enable_image_streaming: bool = True

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The argument names, in declaration order (what the operator forwards)."""
        return FIELD_NAMES

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> JobSpec:
        """Build from plain keyword arguments, naming unknown ones with close matches.

        Values are not judged here; call :meth:`problems` or :meth:`to_rest`.
        """
        problems = [
            f"unknown argument {name!r}{_did_you_mean(name, FIELD_NAMES)}"
            for name in kwargs
            if name not in FIELD_NAMES
        ]
        if "image_uri" not in kwargs:
            problems.append("image_uri is required: the Artifact Registry image the job runs")
        if problems:
            raise SpecError(problems)
        return cls(**kwargs)

    def problems(self, region: str | None = None) -> list[str]:
        """Every reason this spec cannot become a Batch job (empty when it can).

        ``region`` is the job's location; it is only needed to expand a short
        ``subnetwork`` name when ``allowed_locations`` does not name the region.
        """
        return _Compiler(self, region).compile()[1]

    def to_rest(self, region: str | None = None) -> dict[str, Any]:
        """The job as REST JSON (camelCase). Raises :class:`SpecError` listing all problems."""
        rest, problems = _Compiler(self, region).compile()
        if problems:
            raise SpecError(problems)
        return rest

    def warnings(self) -> list[str]:
        """Accepted but worth saying (never refusals): a legacy provisioning model."""
        found = []
        model = self.provisioning_model
        if isinstance(model, str) and model.strip().upper() == "PREEMPTIBLE":
            found.append(
                "provisioning_model PREEMPTIBLE is legacy (Batch still supports it, on Spot VMs "
                "underneath): 'SPOT' is the current name"
            )
        return found

    def to_job(self, region: str | None = None) -> batch_v1.Job:
        """The job as a ``batch_v1.Job`` proto (imports the client library now)."""
        return rest_to_job(self.to_rest(region))


FIELD_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in dataclasses.fields(JobSpec))


# --------------------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------------------


class _Compiler:
    """Validates and builds in one pass, so what is checked and what is emitted never drift."""

    def __init__(self, spec: JobSpec, region: str | None) -> None:
        self.spec = spec
        self.region = region
        self.problems: list[str] = []

    def add(self, message: str) -> None:
        self.problems.append(message)

    def compile(self) -> tuple[dict[str, Any], list[str]]:
        s = self.spec
        task_group: dict[str, Any] = {"taskSpec": self.task_spec()}
        task_count = self.integer(
            s.task_count, "task_count", 1, _MAX_TASK_COUNT, "the number of tasks in the job", default=1
        )
        task_environments = self.task_environments()
        if task_environments:
            # TaskGroup.taskEnvironments: "task_count should not be specified ... Task count will
            # be the length of task_environments" (batch.v1).
            if task_count not in (None, 1, len(task_environments)):
                self.add(
                    f"task_count ({task_count}) differs from the {len(task_environments)} entries of "
                    "task_environments: Batch runs one task per entry, so leave task_count unset"
                )
            task_count = len(task_environments)
            task_group["taskEnvironments"] = task_environments
        elif task_count is not None:
            task_group["taskCount"] = task_count
        parallelism = self.integer(
            s.parallelism, "parallelism", 1, _MAX_PARALLELISM, "how many tasks run at once"
        )
        if parallelism is not None:
            if task_count is not None and parallelism > task_count:
                self.add(
                    f"parallelism ({parallelism}) is greater than task_count ({task_count}): "
                    f"set it to at most {task_count}, or leave it unset"
                )
            task_group["parallelism"] = parallelism
        per_node = self.integer(
            s.task_count_per_node, "task_count_per_node", 1, _MAX_INT, "tasks that share one VM"
        )
        if per_node is not None:
            task_group["taskCountPerNode"] = per_node

        rest: dict[str, Any] = {}
        priority = self.integer(s.priority, "priority", 0, 99, "higher runs first")
        if priority is not None:
            rest["priority"] = priority
        rest["taskGroups"] = [task_group]
        allocation = self.allocation_policy()
        if allocation:
            rest["allocationPolicy"] = allocation
        labels = self.labels()
        if labels:
            rest["labels"] = labels
        rest["logsPolicy"] = {"destination": "CLOUD_LOGGING"}
        notifications = self.notifications()
        if notifications:
            rest["notifications"] = notifications
        self.check_encodable(rest)
        return rest, self.problems

    # ---- task spec -------------------------------------------------------------------

    def task_spec(self) -> dict[str, Any]:
        s = self.spec
        runnable: dict[str, Any] = {"container": self.container()}
        timeout = self.duration(s.runnable_timeout, "runnable_timeout")
        if timeout is not None:
            runnable["timeout"] = timeout
        task_spec: dict[str, Any] = {"runnables": [runnable]}
        compute: dict[str, Any] = {}
        for name, key, what in (
            ("cpu_milli", "cpuMilli", "milli-CPUs per task, e.g. 2000 for 2 vCPUs"),
            ("memory_mib", "memoryMib", "MiB of memory per task, e.g. 2048"),
            ("boot_disk_mib", "bootDiskMib", "extra boot disk MiB per task"),
        ):
            value = self.integer(getattr(s, name), name, 1, _MAX_INT, what)
            if value is not None:
                compute[key] = value
        if compute:
            task_spec["computeResource"] = compute
        duration = self.duration(s.max_run_duration, "max_run_duration")
        if duration is not None:
            task_spec["maxRunDuration"] = duration
        retries, policies = self.retries_and_policies()
        if retries:
            task_spec["maxRetryCount"] = retries
        if policies:
            task_spec["lifecyclePolicies"] = policies
        environment = self.environment()
        if environment:
            task_spec["environment"] = environment
        volumes = self.task_volumes()
        if volumes:
            task_spec["volumes"] = volumes
        return task_spec

    def container(self) -> dict[str, Any]:
        s = self.spec
        container: dict[str, Any] = {}
        try:  # the one image URI parser: JobSpec, the preflight and the CLI agree
            _image.parse_image_uri(s.image_uri)
        except _image.ImageReferenceError as error:
            hint = f" ({error.hint})" if error.hint else ""
            self.add(f"image_uri: {error.message}{hint}")
        else:
            container["imageUri"] = s.image_uri
        commands = self.strings(s.commands, "commands", allow_empty_items=True)
        if commands:
            container["commands"] = commands
        if s.entrypoint is not None:
            if not isinstance(s.entrypoint, str):
                self.add(f"entrypoint must be a string (one executable), got {_kind(s.entrypoint)}")
            elif s.entrypoint:
                container["entrypoint"] = s.entrypoint
        volumes = self.strings(s.volumes, "volumes")
        for index, volume in enumerate(volumes):
            self.check_container_volume(index, volume)
        if volumes:
            container["volumes"] = volumes
        if self.boolean(s.enable_image_streaming, "enable_image_streaming", default=True):
            container["enableImageStreaming"] = True
        return container

    def check_container_volume(self, index: int, volume: str) -> None:
        parts = volume.split(":")
        where = f"volumes[{index}] {volume!r}"
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            self.add(f"{where} is not docker --volume syntax: use 'HOST_PATH:CONTAINER_PATH[:ro|rw]'")
        elif not parts[1].startswith("/"):
            self.add(f"{where}: the container path {parts[1]!r} must be absolute (start with '/')")

    def retries_and_policies(self) -> tuple[int, list[dict[str, Any]]]:
        """``maxRetryCount`` and the one lifecycle policy Batch reads, with preemption merged in.

        Batch honours one policy per task spec (batch.v1 ``TaskSpec.lifecyclePolicies``) and
        ignores the rest, so two policies are refused instead of half applied. RETRY_TASK
        retries the codes it lists and fails all others; FAIL_TASK fails the codes it lists
        and retries all others; no policy retries every failure (all up to maxRetryCount).
        """
        s = self.spec
        retries = self.integer(
            s.max_retry_count, "max_retry_count", 0, _MAX_RETRIES, "retries per failed task", default=0
        )
        preempt = self.boolean(s.retry_on_preemption, "retry_on_preemption", default=False)
        policies: list[dict[str, Any]] = []
        raw_policies = self.sequence(s.lifecycle_policies, "lifecycle_policies")
        if len(raw_policies) > 1:
            self.add(
                f"lifecycle_policies has {len(raw_policies)} policies but Batch applies only one per "
                "task (the others are ignored): merge them into one policy, RETRY_TASK with the exit "
                "codes to retry or FAIL_TASK with the exit codes to give up on"
            )
        for index, raw in enumerate(raw_policies):
            where = f"lifecycle_policies[{index}]"
            record = self.record(raw, LifecyclePolicy, where)
            if record is None:
                continue
            action = record["action"]
            if not isinstance(action, str) or action.strip().upper() not in _ACTIONS:
                self.add(f"{where}.action must be one of {', '.join(_ACTIONS)}, got {action!r}")
                action = None
            else:
                action = action.strip().upper()
            codes = self.exit_codes(record["exit_codes"], f"{where}.exit_codes")
            if action is None or codes is None:
                continue
            policies.append({"action": action, "actionCondition": {"exitCodes": codes}})
        policy = policies[0] if len(policies) == 1 and len(raw_policies) == 1 else None
        if preempt:
            codes = policy["actionCondition"]["exitCodes"] if policy else []
            if policy and policy["action"] == "RETRY_TASK" and PREEMPTION_EXIT_CODE not in codes:
                codes.append(PREEMPTION_EXIT_CODE)
            elif policy and policy["action"] == "FAIL_TASK" and PREEMPTION_EXIT_CODE in codes:
                self.add(
                    f"retry_on_preemption conflicts with the FAIL_TASK policy in lifecycle_policies, "
                    f"which lists exit code {PREEMPTION_EXIT_CODE} (Spot preemption): drop one of them"
                )
            if retries == 0:
                retries = DEFAULT_PREEMPTION_RETRIES
        elif retries == 0 and policy and policy["action"] == "RETRY_TASK":
            self.add(
                "lifecycle_policies has a RETRY_TASK policy but max_retry_count is 0, so it would "
                "never retry: set max_retry_count between 1 and 10 (retry_on_preemption does this for you)"
            )
        return retries or 0, policies

    def exit_codes(self, value: object, where: str) -> list[int] | None:
        if isinstance(value, int | str) and not isinstance(value, bool):
            value = [value]
        items = self.sequence(value, where)
        if not items:
            self.add(
                f"{where} is empty: list the exit codes the policy applies to, e.g. [{PREEMPTION_EXIT_CODE}]"
            )
            return None
        codes: list[int] = []
        ok = True
        for index, item in enumerate(items):
            code = _as_int(item)
            if code is None or not (1 <= code <= 255 or 50000 <= code <= 59999):
                self.add(
                    f"{where}[{index}] is {item!r}: exit codes are integers 1-255 (process exit "
                    f"statuses) or 50000-59999 (Batch's own, e.g. {PREEMPTION_EXIT_CODE} for Spot preemption)"
                )
                ok = False
            elif code not in codes:
                codes.append(code)
        return codes if ok else None

    def duration(self, value: object, name: str) -> str | None:
        if value is None:
            return None
        hint = "give seconds (3600), a timedelta, or a string like '3600s' or '1h30m'"
        seconds: Decimal | None = None
        if isinstance(value, bool):
            pass
        elif isinstance(value, timedelta):
            seconds = Decimal(value // timedelta(microseconds=1)) / Decimal(1_000_000)
        elif isinstance(value, int):
            seconds = Decimal(value)
        elif isinstance(value, float):
            seconds = Decimal(repr(value)) if math.isfinite(value) else None
        elif isinstance(value, str):
            seconds = _parse_duration(value.strip())
        if seconds is None:
            self.add(f"{name} {value!r} is not a duration: {hint}")
            return None
        if seconds > _MAX_DURATION_SECONDS:
            self.add(f"{name} {value!r} is too long: at most {_MAX_DURATION_SECONDS} seconds")
            return None
        nanos = int(seconds * _NANOS)
        if nanos <= 0:
            self.add(f"{name} must be positive, got {value!r}: {hint}")
            return None
        return _format_duration(nanos)

    def environment(self) -> dict[str, Any]:
        s = self.spec
        variables: dict[str, str] = {}
        for name, value in self.mapping(s.environment, "environment"):
            if not self.env_name(name, "environment"):
                continue
            if isinstance(value, str):
                variables[name] = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                variables[name] = str(value)
            else:
                self.add(f"environment[{name!r}] must be a string, got {_kind(value)}: quote the value")
        secrets: dict[str, str] = {}
        for name, value in self.mapping(s.secret_environment, "secret_environment"):
            if not self.env_name(name, "secret_environment"):
                continue
            if not isinstance(value, str) or not _SECRET_RE.match(value):
                self.add(
                    f"secret_environment[{name!r}] is {value!r}: give a Secret Manager version, "
                    "'projects/PROJECT/secrets/SECRET/versions/VERSION' (VERSION may be 'latest')"
                )
            elif name in variables:
                self.add(f"{name!r} is in both environment and secret_environment: keep it in one of them")
            else:
                secrets[name] = value
        environment: dict[str, Any] = {}
        if variables:
            environment["variables"] = variables
        if secrets:
            environment["secretVariables"] = secrets
        return environment

    def env_name(self, name: object, argument: str) -> bool:
        if isinstance(name, str) and _ENV_NAME_RE.match(name):
            return True
        self.add(
            f"{argument} has an invalid variable name {name!r}: use letters, digits and '_', "
            "not starting with a digit"
        )
        return False

    def task_volumes(self) -> list[dict[str, Any]]:
        s = self.spec
        volumes: list[dict[str, Any]] = []
        mount_paths: dict[str, str] = {}
        for index, raw in enumerate(self.sequence(s.gcs_volumes, "gcs_volumes")):
            where = f"gcs_volumes[{index}]"
            record = self.record(raw, GcsVolume, where)
            if record is None:
                continue
            remote = record["remote_path"]
            if isinstance(remote, str) and remote.startswith("gs://"):
                remote = remote[len("gs://") :]
            bucket = remote.split("/", 1)[0] if isinstance(remote, str) else ""
            remote_ok = isinstance(remote, str) and bool(_BUCKET_RE.match(bucket))
            if not remote_ok:
                self.add(
                    f"{where}.remote_path {record['remote_path']!r} is not a bucket: give "
                    "'BUCKET' or 'BUCKET/DIR' ('gs://' is optional)"
                )
            mount = self.mount_path(record["mount_path"], where, mount_paths)
            options = self.strings(record["mount_options"], f"{where}.mount_options")
            if remote_ok and mount is not None:
                volume: dict[str, Any] = {"gcs": {"remotePath": remote}, "mountPath": mount}
                if options:
                    volume["mountOptions"] = options
                volumes.append(volume)
        for index, raw in enumerate(self.sequence(s.nfs_volumes, "nfs_volumes")):
            where = f"nfs_volumes[{index}]"
            record = self.record(raw, NfsVolume, where)
            if record is None:
                continue
            server = record["server"]
            server_ok = isinstance(server, str) and bool(re.match(r"^[A-Za-z0-9][A-Za-z0-9.:-]*$", server))
            if not server_ok:
                self.add(f"{where}.server {server!r} is not a host name or IP address")
            remote = record["remote_path"]
            remote_ok = isinstance(remote, str) and remote.startswith("/") and not _has_space(remote)
            if not remote_ok:
                self.add(f"{where}.remote_path {remote!r} must be the absolute exported path, e.g. '/share'")
            mount = self.mount_path(record["mount_path"], where, mount_paths)
            options = self.strings(record["mount_options"], f"{where}.mount_options")
            if server_ok and remote_ok and mount is not None:
                volume = {"nfs": {"server": server, "remotePath": remote}, "mountPath": mount}
                if options:
                    volume["mountOptions"] = options
                volumes.append(volume)
        return volumes

    def mount_path(self, value: object, where: str, seen: dict[str, str]) -> str | None:
        if not isinstance(value, str) or not value.startswith("/") or value == "/" or _has_space(value):
            self.add(
                f"{where}.mount_path {value!r} must be an absolute path on the VM, e.g. '/mnt/disks/data'"
            )
            return None
        key = value.rstrip("/")
        if key in seen:
            self.add(
                f"{where}.mount_path {value!r} is also used by {seen[key]}: give each volume its own path"
            )
            return None
        seen[key] = where
        return value

    # ---- allocation policy -----------------------------------------------------------

    def allocation_policy(self) -> dict[str, Any]:
        s = self.spec
        allocation: dict[str, Any] = {}
        locations, vm_region = self.locations()
        if locations:
            allocation["location"] = {"allowedLocations": locations}

        policy: dict[str, Any] = {}
        if s.machine_type is not None:
            if isinstance(s.machine_type, str) and _MACHINE_TYPE_RE.match(s.machine_type):
                policy["machineType"] = s.machine_type
            else:
                self.add(f"machine_type {s.machine_type!r} is not a machine type name, e.g. 'e2-standard-4'")
        model = s.provisioning_model
        if model is not None:
            upper = model.strip().upper() if isinstance(model, str) else None
            if upper in _PROVISIONING_MODELS:
                policy["provisioningModel"] = upper
            else:
                self.add(
                    f"provisioning_model must be one of {', '.join(_PROVISIONING_MODELS)}, got {model!r}"
                )
        if s.reservation is not None:
            if isinstance(s.reservation, str) and _RESERVATION_RE.match(s.reservation):
                policy["reservation"] = s.reservation
            else:
                self.add(
                    f"reservation {s.reservation!r} is not a reservation: give its name, "
                    "'projects/PROJECT/zones/ZONE/reservations/NAME', or 'NO_RESERVATION'"
                )
        if policy.get("provisioningModel") == "RESERVATION_BOUND" and policy.get("reservation") in (
            None,
            "NO_RESERVATION",
        ):
            self.add(
                "provisioning_model RESERVATION_BOUND needs the reservation its VMs are bound to: "
                "set reservation='projects/PROJECT/zones/ZONE/reservations/NAME'"
            )
        accelerators: list[dict[str, Any]] = []
        for index, raw in enumerate(self.sequence(s.accelerators, "accelerators")):
            where = f"accelerators[{index}]"
            record = self.record(raw, Accelerator, where)
            if record is None:
                continue
            kind = record["type"]
            kind_ok = isinstance(kind, str) and bool(_ACCELERATOR_RE.match(kind))
            if not kind_ok:
                self.add(f"{where}.type {kind!r} is not an accelerator type, e.g. 'nvidia-l4'")
            count = self.integer(record["count"], f"{where}.count", 1, 64, "GPUs per VM", default=1)
            if kind_ok and count is not None:
                accelerators.append({"type": kind, "count": count})
        if accelerators:
            policy["accelerators"] = accelerators
        boot_disk = self.boot_disk()
        if boot_disk:
            policy["bootDisk"] = boot_disk
        instance: dict[str, Any] = {}
        template = self.instance_template(policy)
        if template is not None:
            instance["instanceTemplate"] = template
        elif policy:
            instance["policy"] = policy
        install = self.boolean(
            s.install_gpu_drivers, "install_gpu_drivers", default=bool(accelerators) and template is None
        )
        if install:
            instance["installGpuDrivers"] = True
        if self.boolean(s.install_ops_agent, "install_ops_agent", default=False):
            instance["installOpsAgent"] = True
        if instance:
            allocation["instances"] = [instance]

        interface = self.network_interface(vm_region)
        if interface:
            allocation["network"] = {"networkInterfaces": [interface]}
        if s.service_account is not None:
            if isinstance(s.service_account, str) and _EMAIL_RE.match(s.service_account):
                allocation["serviceAccount"] = {"email": s.service_account}
            else:
                self.add(
                    f"service_account {s.service_account!r} is not an email: give "
                    "'NAME@PROJECT.iam.gserviceaccount.com'"
                )
        return allocation

    def boot_disk(self) -> dict[str, Any]:
        s = self.spec
        if s.boot_disk is None:
            return {}
        record = self.record(s.boot_disk, BootDisk, "boot_disk")
        if record is None:
            return {}
        disk: dict[str, Any] = {}
        image, kind = record["image"], record["type"]
        if image is not None:
            if isinstance(image, str) and _BOOT_IMAGE_RE.match(image):
                disk["image"] = image
            else:
                self.add(
                    f"boot_disk.image {image!r} is not a VM image: give 'batch-debian', 'batch-cos', "
                    "'batch-hpc-rocky' or 'projects/PROJECT/global/images/[family/]NAME'"
                )
        if kind is not None:
            if isinstance(kind, str) and _BOOT_DISK_TYPE_RE.match(kind):
                disk["type"] = kind
            else:
                self.add(
                    f"boot_disk.type {kind!r} is not a boot disk type: use 'pd-balanced' (the default), "
                    "'pd-ssd', 'pd-standard', 'pd-extreme' or a 'hyperdisk-*' type"
                )
        size = self.integer(record["size_gb"], "boot_disk.size_gb", 1, 65_536, "boot disk size in GB")
        if size is not None:
            disk["sizeGb"] = size
            if s.boot_disk_mib is not None:
                # Disk.sizeGb: "If both this field and the boot_disk_mib field ... are defined,
                # Batch will only honor this field."
                self.add(
                    "boot_disk.size_gb and boot_disk_mib both size the boot disk and Batch honours "
                    "only size_gb: give one of them"
                )
        if image is None and kind is None and record["size_gb"] is None:
            self.add("boot_disk is empty: give image, type or size_gb, or leave it unset")
        return disk

    def instance_template(self, policy: dict[str, Any]) -> str | None:
        """The template, or None; a template replaces the whole instance policy and network."""
        s = self.spec
        if s.instance_template is None:
            return None
        if not isinstance(s.instance_template, str) or not _TEMPLATE_RE.match(s.instance_template):
            self.add(
                f"instance_template {s.instance_template!r} is not an instance template: give its name, "
                "ID, or 'projects/PROJECT/global/instanceTemplates/NAME'"
            )
            return None
        # InstancePolicyOrTemplate holds a policy or a template, not both; the network policy is
        # replaced by the template's (AllocationPolicy.network in batch.v1).
        clashing = [
            name
            for name in (
                "machine_type", "provisioning_model", "reservation", "accelerators", "boot_disk",
                "network", "subnetwork",
            )
            if getattr(s, name) not in (None, (), [])
        ]  # fmt: skip
        if s.no_external_ip_address is True or s.no_external_ip_address == "true":
            clashing.append("no_external_ip_address")
        if clashing:
            self.add(
                f"instance_template replaces the VM settings {', '.join(clashing)}: set them in the "
                "template instead, or drop instance_template"
            )
        return s.instance_template

    def locations(self) -> tuple[list[str], str | None]:
        raw = self.spec.allowed_locations
        if isinstance(raw, str):  # one location is common enough to accept bare
            raw = [raw]
        locations: list[str] = []
        regions: list[str] = []
        for index, item in enumerate(self.strings(raw, "allowed_locations")):
            try:
                normalized = _locations.normalize_location(item)
            except _locations.LocationError:
                self.add(
                    f"allowed_locations[{index}] {item!r} is not a region or zone: give e.g. "
                    "'us-central1', 'regions/us-central1' or 'zones/us-central1-a'"
                )
                continue
            if normalized not in locations:
                locations.append(normalized)
            region = _locations.region_of(normalized)
            if region not in regions:
                regions.append(region)
        if len(regions) > 1:
            self.add(
                f"allowed_locations spans regions {', '.join(regions)}: Batch takes one region, "
                "keep locations of one region only"
            )
        job_region: str | None = None
        if self.region is not None:
            try:
                job_region = _locations.region_of(self.region)
            except _locations.LocationError:
                self.add(f"region {self.region!r} is not a region name, e.g. 'us-central1'")
        if job_region is not None:
            outside = _locations.allowed_locations_outside(locations, job_region)
            if outside:
                message, hint = _locations.outside_job_region_problem(outside, job_region)
                self.add(f"allowed_locations: {message}. {hint}")
        if regions:
            return locations, regions[0]
        return locations, job_region

    def network_interface(self, vm_region: str | None) -> dict[str, Any]:
        s = self.spec
        interface: dict[str, Any] = {}
        if s.network is not None:
            if not isinstance(s.network, str):
                self.add(f"network must be a string, got {_kind(s.network)}")
            elif _NETWORK_PATH_RE.match(s.network):
                interface["network"] = s.network
            elif _RESOURCE_NAME_RE.match(s.network):
                interface["network"] = f"global/networks/{s.network}"
            else:
                self.add(
                    f"network {s.network!r} is neither a network name nor a path: give 'NAME' or "
                    "'projects/PROJECT/global/networks/NAME'"
                )
        if s.subnetwork is not None:
            match = _SUBNETWORK_PATH_RE.match(s.subnetwork) if isinstance(s.subnetwork, str) else None
            if match:
                if vm_region is not None and match["region"] != vm_region:
                    self.add(
                        f"subnetwork {s.subnetwork!r} is in region {match['region']} but the job's VMs "
                        f"run in {vm_region} (from allowed_locations or the job's region): use a "
                        f"subnetwork of {vm_region}"
                    )
                else:
                    interface["subnetwork"] = s.subnetwork
            elif isinstance(s.subnetwork, str) and _RESOURCE_NAME_RE.match(s.subnetwork):
                if vm_region is None:
                    self.add(
                        f"subnetwork {s.subnetwork!r} is a short name and the region is unknown: give "
                        "'projects/PROJECT/regions/REGION/subnetworks/NAME', set allowed_locations, "
                        "or pass the region"
                    )
                else:
                    interface["subnetwork"] = f"regions/{vm_region}/subnetworks/{s.subnetwork}"
            else:
                self.add(
                    f"subnetwork {s.subnetwork!r} is neither a subnetwork name nor a path: give 'NAME' "
                    "or 'projects/PROJECT/regions/REGION/subnetworks/NAME'"
                )
        if self.boolean(s.no_external_ip_address, "no_external_ip_address", default=False):
            interface["noExternalIpAddress"] = True
        return interface

    # ---- labels ----------------------------------------------------------------------

    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = {}
        items = self.mapping(self.spec.labels, "labels")
        if len(items) > MAX_LABELS:
            self.add(f"labels has {len(items)} entries: a Batch job takes at most {MAX_LABELS} custom ones")
        for key, value in items:
            key_ok = isinstance(key, str) and bool(_LABEL_KEY_RE.match(key))
            if not key_ok:
                self.add(
                    f"labels: key {key!r} is invalid: 1-63 lowercase letters, digits, '_' or '-', "
                    "starting with a lowercase letter"
                )
            elif key.startswith(_RESERVED_LABEL_PREFIXES):
                self.add(
                    f"labels: key {key!r} is reserved: Batch sets the 'batch-' labels itself and "
                    "Google keeps 'goog-'/'google-': rename it"
                )
                key_ok = False
            value_ok = isinstance(value, str) and bool(_LABEL_VALUE_RE.match(value))
            if not value_ok:
                self.add(
                    f"labels: {key!r} has invalid value {value!r}: 0-63 lowercase letters, digits, '_' or '-'"
                )
            if key_ok and value_ok:
                labels[key] = value
        return labels

    # ---- task environments and notifications -----------------------------------------

    def task_environments(self) -> list[dict[str, Any]]:
        environments: list[dict[str, Any]] = []
        raw = self.sequence(self.spec.task_environments, "task_environments")
        if len(raw) > _MAX_TASK_COUNT:
            self.add(f"task_environments has {len(raw)} entries: at most {_MAX_TASK_COUNT} tasks")
            return []
        for index, entry in enumerate(raw):
            where = f"task_environments[{index}]"
            variables: dict[str, str] = {}
            for name, value in self.mapping(entry, where):
                if not self.env_name(name, where):
                    continue
                if isinstance(value, str):
                    variables[name] = value
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    variables[name] = str(value)
                else:
                    self.add(f"{where}[{name!r}] must be a string, got {_kind(value)}: quote the value")
            environments.append({"variables": variables} if variables else {})
        return environments

    def notifications(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for index, raw in enumerate(self.sequence(self.spec.notifications, "notifications")):
            where = f"notifications[{index}]"
            record = self.record(raw, Notification, where)
            if record is None:
                continue
            topic = record["pubsub_topic"]
            ok = isinstance(topic, str) and bool(_TOPIC_RE.match(topic))
            if not ok:
                self.add(
                    f"{where}.pubsub_topic {topic!r} is not a topic: give 'projects/PROJECT/topics/TOPIC'"
                )
            kind = record["type"].strip().upper() if isinstance(record["type"], str) else None
            if kind not in _MESSAGE_TYPES:
                self.add(f"{where}.type must be one of {', '.join(_MESSAGE_TYPES)}, got {record['type']!r}")
                ok = False
            message: dict[str, Any] = {"type": kind}
            for key, rest_key, allowed, needs in (
                ("new_job_state", "newJobState", _JOB_STATES, "JOB_STATE_CHANGED"),
                ("new_task_state", "newTaskState", _TASK_STATES, "TASK_STATE_CHANGED"),
            ):
                value = record[key]
                if value is None:
                    continue
                state = value.strip().upper() if isinstance(value, str) else None
                if state not in allowed:
                    self.add(f"{where}.{key} must be one of {', '.join(allowed)}, got {value!r}")
                    ok = False
                elif kind is not None and kind != needs:
                    self.add(f"{where}.{key} only applies to type {needs}, not {kind}")
                    ok = False
                else:
                    message[rest_key] = state
            if ok:
                found.append({"pubsubTopic": topic, "message": message})
        return found

    # ---- generic checks --------------------------------------------------------------

    def integer(
        self,
        value: object,
        name: str,
        minimum: int,
        maximum: int,
        what: str,
        *,
        default: int | None = None,
    ) -> int | None:
        if value is None:
            return default
        number = _as_int(value)
        if number is None or not minimum <= number <= maximum:
            self.add(f"{name} must be an integer from {minimum} to {maximum} ({what}), got {value!r}")
            return None
        return number

    def boolean(self, value: object, name: str, default: bool) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.add(f"{name} must be True or False, got {value!r}")
        return default

    def sequence(self, value: object, name: str) -> list[Any]:
        if value is None:
            return []
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            self.add(f"{name} must be a list, got {_kind(value)}")
            return []
        try:
            return list(value)
        except Exception as error:  # an iterable that fails while iterating
            self.add(f"{name} could not be read as a list: {error}")
            return []

    def strings(self, value: object, name: str, allow_empty_items: bool = False) -> list[str]:
        if isinstance(value, str):
            example = ", ".join(repr(part) for part in value.split()[:3]) or "'...'"
            self.add(f"{name} must be a list of strings, not one string: write [{example}]")
            return []
        items: list[str] = []
        for index, item in enumerate(self.sequence(value, name)):
            if not isinstance(item, str) or (not item and not allow_empty_items):
                self.add(f"{name}[{index}] must be a non-empty string, got {item!r}")
            else:
                items.append(item)
        return items

    def mapping(self, value: object, name: str) -> list[tuple[Any, Any]]:
        if value is None:
            return []
        if not isinstance(value, Mapping):
            self.add(f"{name} must be a mapping (dict), got {_kind(value)}")
            return []
        try:
            return list(value.items())
        except Exception as error:
            self.add(f"{name} could not be read as a mapping: {error}")
            return []

    def record(self, value: object, cls: type, where: str) -> dict[str, Any] | None:
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        if isinstance(value, cls):
            return {name: getattr(value, name) for name in names}
        if not isinstance(value, Mapping):
            self.add(
                f"{where} must be a {cls.__name__} or a dict with keys {', '.join(names)}, got {_kind(value)}"
            )
            return None
        record: dict[str, Any] = {}
        ok = True
        for key, item in self.mapping(value, where):
            name = _RECORD_ALIASES.get(key, key) if isinstance(key, str) else key
            if name not in names:
                self.add(f"{where} has unknown key {key!r}{_did_you_mean(key, names)}")
                ok = False
            else:
                record[name] = item
        missing = [name for name in required if name not in record]
        if missing:
            self.add(f"{where} is missing {', '.join(missing)}")
            ok = False
        if not ok:
            return None
        for f in dataclasses.fields(cls):
            if f.name not in record:
                record[f.name] = f.default
        return record

    def check_encodable(self, rest: dict[str, Any]) -> None:
        # Lone surrogates survive Python but not UTF-8 (the proto and the wire): name the argument.
        try:
            json.dumps(rest, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            for name in FIELD_NAMES:
                try:
                    json.dumps(getattr(self.spec, name), ensure_ascii=False, default=repr).encode("utf-8")
                except (UnicodeEncodeError, ValueError, TypeError, RecursionError):
                    self.add(f"{name} contains an unpaired surrogate character: it cannot be sent to Batch")


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_STR_RE.match(value) and len(value) < 40:
        return int(value)
    return None


def _parse_duration(text: str) -> Decimal | None:
    match = _SECONDS_RE.match(text)
    if match:
        return Decimal(match["s"])
    match = _HMS_RE.match(text)
    if not text or not match:
        return None
    try:
        return Decimal(match["h"] or 0) * 3600 + Decimal(match["m"] or 0) * 60 + Decimal(match["s"] or 0)
    except InvalidOperation:
        return None


def _format_duration(nanos: int) -> str:
    """Format like protobuf's Duration JSON (0, 3, 6 or 9 decimals) so round trips are exact."""
    seconds, fraction = divmod(nanos, 1_000_000_000)
    if fraction == 0:
        return f"{seconds}s"
    if fraction % 1_000_000 == 0:
        return f"{seconds}.{fraction // 1_000_000:03d}s"
    if fraction % 1_000 == 0:
        return f"{seconds}.{fraction // 1_000:06d}s"
    return f"{seconds}.{fraction:09d}s"


def _has_space(text: str) -> bool:
    return any(c.isspace() for c in text)


def _kind(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _did_you_mean(name: object, candidates: Sequence[str]) -> str:
    if not isinstance(name, str):
        return ""
    matches = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if not matches:
        return ""
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)"


# --------------------------------------------------------------------------------------
# REST JSON <-> proto
# --------------------------------------------------------------------------------------


def rest_to_job(rest: Mapping[str, Any] | str) -> batch_v1.Job:
    """REST JSON (a dict or its JSON text) -> ``batch_v1.Job``; unknown fields are errors."""
    from google.cloud import batch_v1

    if isinstance(rest, str):
        payload = rest
    else:
        try:
            payload = json.dumps(rest, allow_nan=False, default=_json_default)
        except (TypeError, ValueError, RecursionError) as error:
            raise SpecError(f"the job is not JSON-serializable: {error}") from None
    try:
        return batch_v1.Job.from_json(payload)
    except Exception as error:  # json_format.ParseError and friends: the input is to blame
        raise SpecError(f"not a valid Batch v1 Job: {error}") from None


def job_to_rest(job: batch_v1.Job | Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    """Any form of a job -> a fresh REST JSON dict (camelCase).

    A ``batch_v1.Job`` comes back with int64 fields as ints (not proto JSON's strings), so
    ``job_to_rest(rest_to_job(rest)) == rest`` for what :meth:`JobSpec.to_rest` builds.
    Mappings and JSON text stay pure Python unless they are snake_case (``Job.to_dict``
    style), which is normalized through the proto.
    """
    if isinstance(job, bytes | bytearray):
        try:
            job = bytes(job).decode("utf-8")
        except UnicodeDecodeError as error:
            raise SpecError(f"the job JSON is not UTF-8: {error}") from None
    if isinstance(job, str):
        try:
            parsed = json.loads(job)
        except (ValueError, RecursionError) as error:
            raise SpecError(f"the job is not valid JSON: {error}") from None
        if not isinstance(parsed, dict):
            raise SpecError(f"the job JSON must be an object, got {type(parsed).__name__}")
        return _plain_rest(parsed)
    if isinstance(job, Mapping):
        return _plain_rest(job)
    return _proto_to_rest(job)


def _plain_rest(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    try:
        # Round trip through JSON: a deep copy that also proves the value is JSON.
        rest = json.loads(json.dumps(mapping, allow_nan=False, default=_json_default))
    except (TypeError, ValueError, RecursionError) as error:
        raise SpecError(f"the job is not JSON-serializable: {error}") from None
    task_groups = rest.get("taskGroups")
    if task_groups is not None and not (
        isinstance(task_groups, list) and all(isinstance(group, dict) for group in task_groups)
    ):
        raise SpecError("the job's taskGroups must be a list of objects")
    if _SNAKE_JOB_KEYS & rest.keys():
        return _proto_to_rest(rest_to_job(rest))
    return dict(rest)


def _json_default(value: object) -> object:
    """Let ``json.dumps`` take any Mapping/Sequence (MappingProxyType, user classes)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _proto_to_rest(job: object) -> dict[str, Any]:
    from google.cloud import batch_v1

    if isinstance(job, batch_v1.Job.pb()):
        job = batch_v1.Job.wrap(job)
    if not isinstance(job, batch_v1.Job):
        raise SpecError(
            f"expected a batch_v1.Job, a dict or JSON text, got {type(job).__module__}.{type(job).__name__}"
        )
    text = batch_v1.Job.to_json(
        job, use_integers_for_enums=False, always_print_fields_with_no_presence=False, indent=None
    )
    rest: dict[str, Any] = json.loads(text)
    _int64_fields_to_int(rest, batch_v1.Job.pb().DESCRIPTOR)
    return rest


_INT64_TYPES: Final = frozenset({3, 4, 6, 16, 18})  # FieldDescriptor.TYPE_(U|S|SF|F)INT64


def _int64_fields_to_int(value: dict[str, Any], descriptor: Any) -> None:
    """Proto JSON writes int64 as strings; give them back as ints, guided by the descriptor."""
    fields = {f.json_name: f for f in descriptor.fields}
    for key, item in value.items():
        fd = fields.get(key)
        if fd is None:
            continue
        message = fd.message_type
        if message is not None and message.GetOptions().map_entry:
            value_field = message.fields_by_name["value"]
            if isinstance(item, dict):
                for map_key, map_value in item.items():
                    item[map_key] = _convert_item(map_value, value_field)
        elif isinstance(item, list):
            value[key] = [_convert_item(element, fd) for element in item]
        else:
            value[key] = _convert_item(item, fd)


def _convert_item(item: Any, fd: Any) -> Any:
    if fd.message_type is not None:
        if isinstance(item, dict):
            _int64_fields_to_int(item, fd.message_type)
        return item
    if fd.type in _INT64_TYPES and isinstance(item, str):
        return int(item)
    return item


def streaming_containers(rest: Mapping[str, Any] | str | batch_v1.Job) -> list[dict[str, Any]]:
    """The container dicts that stream their image, across all task groups.

    Tolerates malformed jobs (skips what is not shaped like a runnable) because preflight
    runs it on user input before anything else has judged it.
    """
    if not isinstance(rest, Mapping) or _SNAKE_JOB_KEYS & rest.keys():
        rest = job_to_rest(rest)
    found: list[dict[str, Any]] = []
    groups = rest.get("taskGroups")
    for group in groups if isinstance(groups, list) else []:
        spec = group.get("taskSpec") if isinstance(group, Mapping) else None
        runnables = spec.get("runnables") if isinstance(spec, Mapping) else None
        for runnable in runnables if isinstance(runnables, list) else []:
            container = runnable.get("container") if isinstance(runnable, Mapping) else None
            if isinstance(container, Mapping) and container.get("enableImageStreaming") is True:
                found.append(container if isinstance(container, dict) else dict(container))
    return found


# --------------------------------------------------------------------------------------
# Job IDs
# --------------------------------------------------------------------------------------


def validate_job_id(job_id: object) -> None:
    """Raise :class:`SpecError` naming every way ``job_id`` breaks Batch's job-ID rule."""
    fix = "or build one with make_job_id(...)"
    if not isinstance(job_id, str):
        raise SpecError(f"job_id must be a string, got {_kind(job_id)}")
    if not job_id:
        raise SpecError(f"job_id is empty: give 1-63 lowercase letters, digits or '-', {fix}")
    if _JOB_ID_RE.match(job_id):
        return
    problems: list[str] = []
    if len(job_id) > _JOB_ID_MAX:
        problems.append(f"job_id is {len(job_id)} characters long: at most {_JOB_ID_MAX}, {fix}")
    if not ("a" <= job_id[0] <= "z"):
        problems.append(f"job_id {job_id!r} must start with a lowercase letter, {fix}")
    bad = sorted({c for c in job_id if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-")})
    if bad:
        problems.append(
            f"job_id {job_id!r} has characters {''.join(bad)!r}: only lowercase letters, digits "
            f"and '-' are allowed, {fix}"
        )
    if job_id.endswith("-"):
        problems.append(f"job_id {job_id!r} must not end with '-'")
    raise SpecError(problems or [f"job_id {job_id!r} does not match {JOB_ID_PATTERN}"])


def make_job_id(*parts: object) -> str:
    """A valid, deterministic job ID: readable slug of ``parts`` plus a hash of all of them.

    The slug is lossy (case, punctuation, truncation), so the hash, computed over an
    unambiguous encoding of every part's ``str()``, is what keeps distinct inputs distinct.
    """
    texts = [str(part) for part in parts]
    encoded = "".join(f"{len(text)}:{text}" for text in texts).encode("utf-8", "surrogatepass")
    digest = base64.b32encode(hashlib.sha256(encoded).digest()).decode("ascii").lower()
    suffix = digest[:_JOB_ID_HASH_CHARS]
    slugs = [_slug(text) for text in texts]
    prefix = "-".join(slug for slug in slugs if slug)
    if not prefix or not prefix[0].isalpha():
        prefix = f"j-{prefix}" if prefix else "job"
    prefix = prefix[: _JOB_ID_MAX - _JOB_ID_HASH_CHARS - 1].rstrip("-")
    return f"{prefix}-{suffix}"


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
