"""Submit an Image Streaming Batch job from plain arguments and wait for it.

One task instance owns at most one live job, and a job belongs to one task instance of
one deployment and has one spec (see "Job identity" in ARCHITECTURE.md). The job ID is
derived from the task instance, its DAG run's start and clear count (unique to the
deployment) and the try; every job is labelled with that task instance and a hash of its
spec; the create request is idempotent. So a lost create response, a worker that dies
after creating the job, or an automatic retry end up attached to the same job, while
another deployment, a cleared task or a different spec never is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_batch_streaming import checker, locations, preflight, status
from airflow_batch_streaming._compat import TRIGGER_ON_KILL, TaskDeferralTimeout, conf
from airflow_batch_streaming.exceptions import BatchJobTimeoutError, BatchStreamingError
from airflow_batch_streaming.links import (
    BATCH_JOB_XCOM_KEY,
    BatchJobConsoleLink,
    BatchJobLogsLink,
    persist_job_links,
)
from airflow_batch_streaming.operators._common import (
    EVENT_STATUSES,
    as_seconds,
    check_log_lines,
    coerce_rendered,
    failed_job,
    is_dynamic,
    is_not_found,
    raise_for_job,
)
from airflow_batch_streaming.spec import FIELD_NAMES, MAX_LABELS, JobSpec, SpecError, make_job_id

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_batch_streaming.hooks.batch import BatchStreamingHook
    from airflow_batch_streaming.preflight import Report

#: Labels every job gets, naming the task instance (and try) that owns it.
LABEL_DAG = "airflow-dag"
LABEL_TASK = "airflow-task"
LABEL_TI = "airflow-ti"
LABEL_TRY = "airflow-try"
LABEL_SPEC = "airflow-spec"
#: Earlier tries whose jobs are looked up by their deterministic names (GetJob, consistent);
#: only older tries than these are searched by label (ListJobs, eventually consistent).
NAME_LOOKUPS = 8
#: ``task_state_store`` key holding the job name (Airflow 3.3+; informational).
STATE_KEY = "batch_job_name"
#: Extra seconds Airflow's own deferral timeout waits past the trigger's deadline, so the
#: trigger (which cancels the job) normally fires first.
DEFER_GRACE_SECONDS = 300.0

# Job arguments that are lists or mappings: a template rendering them to text is parsed back.
_STRUCTURED = frozenset(
    {
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
        "boot_disk",
        "task_environments",
        "notifications",
    }
)
# States worth reattaching to. CANCELLATION_IN_PROGRESS is not: it only ends CANCELLED.
_REATTACHABLE = frozenset({status.STATE_UNSPECIFIED, status.QUEUED, status.SCHEDULED, status.RUNNING})
_LABEL_INVALID = re.compile(r"[^a-z0-9_-]+")
_OWNED_LABELS = frozenset({LABEL_DAG, LABEL_TASK, LABEL_TI, LABEL_TRY, LABEL_SPEC})


def _with_notification(kwargs: dict[str, Any], topic: str | None) -> dict[str, Any]:
    """The job arguments with a JOB_STATE_CHANGED notification to `topic` (push for the wait),
    through JobSpec's `notifications` option; unchanged if the user gave one to that topic."""
    if not topic:
        return kwargs
    given = coerce_rendered(kwargs.get("notifications") or [])
    if not isinstance(given, Sequence) or isinstance(given, str):
        return kwargs  # JobSpec says what is wrong with it
    if any(isinstance(i, Mapping) and topic in (i.get("pubsub_topic"), i.get("pubsubTopic")) for i in given):
        return kwargs  # the user's own notification to that topic stands
    return {**kwargs, "notifications": [*given, {"pubsub_topic": topic, "type": "JOB_STATE_CHANGED"}]}


def label_value(text: object) -> str:
    """``text`` as a valid GCP label value (lowercase letters, digits, ``_``, ``-``; 63 max)."""
    return _LABEL_INVALID.sub("-", str(text).lower())[:63]


def run_stamp(context: Context | Mapping[str, Any]) -> str:
    """What tells this DAG run apart from a same-named run elsewhere or after a clear.

    The run's ``start_date`` (stamped by this deployment's scheduler when the run started),
    ``run_after`` (the trigger time of a manual run or ``dags test``) and ``clear_number``
    (bumped when its tasks are cleared). All three hold still across the automatic
    retries of a task, so a retry finds the earlier try's job. Empty without a DAG run.
    """
    dag_run = context.get("dag_run")
    if dag_run is None:
        return ""
    values = [getattr(dag_run, name, None) for name in ("start_date", "run_after", "clear_number")]
    return "|".join("" if v is None else v.isoformat() if hasattr(v, "isoformat") else str(v) for v in values)


def task_instance_key_hash(
    dag_id: str, task_id: str, run_id: str, map_index: int | None, stamp: str = ""
) -> str:
    """A short stable hash naming one task instance (of one deployment and clear) across its tries."""
    key = "\x1f".join((dag_id, task_id, run_id, str(-1 if map_index is None else map_index), stamp))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def task_instance_labels(
    dag_id: str, task_id: str, run_id: str, map_index: int | None, try_number: int, *, stamp: str = ""
) -> dict[str, str]:
    """The labels that let a later try find (and recognise) the jobs of earlier ones."""
    return {
        LABEL_DAG: label_value(dag_id),
        LABEL_TASK: label_value(task_id),
        LABEL_TI: task_instance_key_hash(dag_id, task_id, run_id, map_index, stamp),
        LABEL_TRY: str(try_number),
    }


def spec_hash(rest: Mapping[str, Any]) -> str:
    """A hash of the job as submitted, without the labels that name its task instance and try."""
    labels = {k: v for k, v in (rest.get("labels") or {}).items() if k not in _OWNED_LABELS}
    canonical = json.dumps({**rest, "labels": labels}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:20]


class BatchStreamingJobOperator(BaseOperator):
    """Run a container on Google Cloud Batch with Image Streaming, and wait for it.

    The job arguments (``image_uri``, ``commands``, ``entrypoint``, ``volumes``,
    ``task_count``, ``machine_type``, ``environment``, ``labels``, ...) are those of
    :class:`~airflow_batch_streaming.spec.JobSpec`; the job always streams its image and
    sends its output to Cloud Logging. Arguments that are not templated are checked when
    the DAG is parsed, so a wrong image, location or value is an import error listing
    every problem; templated ones are checked after rendering.

    Before submitting, the preflight checks the image in its registry and that the
    Container File System API is enabled (``preflight=False`` skips both checks).

    The job ID is derived from the task instance, its DAG run's start and clear count and
    the try (``job_id`` sets a readable prefix). An automatic retry, or a re-run after the
    worker died, first reads the jobs of this task instance's earlier tries: it reattaches
    to one still running, or returns the result of one that succeeded, but only if it was
    made with the same arguments (a spec hash label); otherwise it submits its own. A
    cleared task, another deployment's run of the same DAG and run id, or a different
    mapped input never reuse a job.

    :param project_id: Google Cloud project the job runs in.
    :param region: Batch region the job is created in (its VMs run there unless
        ``allowed_locations`` says otherwise).
    :param job_id: readable prefix for the job ID; a hash of the task instance and try
        is always appended.
    :param preflight: check before submitting that the image can stream.
    :param preflight_fail_on_warnings: also fail on preflight warnings (e.g. a mutable tag).
    :param wait_for_completion: wait for the job to finish; if False, return once it is
        submitted (wait downstream with ``BatchJobStateSensor``).
    :param deferrable: wait in the triggerer instead of on a worker.
    :param poll_interval: at most this many seconds between two reads of the job's state;
        by default the triggerer paces its reads from its read budget and the number of jobs
        it waits on (every 1 to 8 s, slower only near the budget), sharing them between all
        jobs; a synchronous wait adapts from 5 s up to 60 s.
    :param notification_topic: Pub/Sub topic (``projects/P/topics/T``) the job publishes its
        state changes to (a ``JOB_STATE_CHANGED`` notification is added to the job); the
        deferred wait listens on it and reads the job as soon as it is told, polling only as
        a slow fallback. Default: ``[batch_streaming] notification_topic`` (env
        ``BATCH_STREAMING_NOTIFICATION_TOPIC``); ``""`` turns push off for this task.
    :param timeout: seconds the job may take from its creation; when they are up, the job
        is cancelled and the task fails with ``BatchJobTimeoutError``. While deferred, the
        task's ``execution_timeout`` is enforced the same way (whichever ends first), as
        Airflow does not enforce it in the triggerer.
    :param cancel_on_kill: cancel the job when the task is killed (also when deferred, on
        Airflow 3.3+).
    :param reattach: look for this task instance's jobs from earlier tries first.
    :param failure_log_lines: how many of the job's last output lines a failure shows.
    :param gcp_conn_id: Airflow connection to Google Cloud.
    :param impersonation_chain: service account(s) to impersonate.
    :return: the job summary: ``name``, ``uid``, ``job_id``, ``state``, ``console_url``,
        ``logs_url``, ``timeline`` (seconds queued, scheduled, running), ``task_counts``, ...
    """

    template_fields: Sequence[str] = (
        "project_id",
        "region",
        "job_id",
        *FIELD_NAMES,
        "gcp_conn_id",
        "impersonation_chain",
        "notification_topic",
        "job",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **{name: "json" for name in sorted(_STRUCTURED)},
        "job": "json",
    }
    operator_extra_links = (BatchJobConsoleLink(), BatchJobLogsLink())
    ui_color = "#e8f0fe"
    #: Record the rendered fields again once the task ends, so the UI shows the job as
    #: submitted (`job` is built from the other rendered arguments in `execute`).
    overwrite_rtif_after_execution = True

    project_id: str
    region: str
    image_uri: str
    labels: Mapping[str, str] | None
    allowed_locations: Sequence[str] | None
    enable_image_streaming: bool | str | None

    def __init__(
        self,
        *,
        project_id: str,
        region: str,
        image_uri: str,
        commands: Sequence[str] | None = None,
        entrypoint: str | None = None,
        volumes: Sequence[str] | None = None,
        task_count: int | str | None = None,
        parallelism: int | str | None = None,
        task_count_per_node: int | str | None = None,
        cpu_milli: int | str | None = None,
        memory_mib: int | str | None = None,
        max_retry_count: int | str | None = None,
        lifecycle_policies: Sequence[Any] | None = None,
        retry_on_preemption: bool | None = None,
        max_run_duration: str | int | float | timedelta | None = None,
        environment: Mapping[str, str] | None = None,
        secret_environment: Mapping[str, str] | None = None,
        gcs_volumes: Sequence[Any] | None = None,
        nfs_volumes: Sequence[Any] | None = None,
        machine_type: str | None = None,
        provisioning_model: str | None = None,
        accelerators: Sequence[Any] | None = None,
        install_gpu_drivers: bool | None = None,
        boot_disk_mib: int | str | None = None,
        network: str | None = None,
        subnetwork: str | None = None,
        no_external_ip_address: bool | None = None,
        service_account: str | None = None,
        labels: Mapping[str, str] | None = None,
        allowed_locations: Sequence[str] | None = None,
        priority: int | str | None = None,
        reservation: str | None = None,
        boot_disk: Mapping[str, Any] | None = None,
        instance_template: str | None = None,
        runnable_timeout: str | int | float | timedelta | None = None,
        install_ops_agent: bool | None = None,
        task_environments: Sequence[Mapping[str, str]] | None = None,
        notifications: Sequence[Any] | None = None,
        enable_image_streaming: bool | None = None,
        job_id: str | None = None,
        preflight: bool = True,
        preflight_fail_on_warnings: bool = False,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | timedelta | None = None,
        timeout: float | timedelta | None = None,
        cancel_on_kill: bool = True,
        reattach: bool = True,
        failure_log_lines: int = 20,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        notification_topic: str | None = None,
        **kwargs: Any,
    ) -> None:
        arguments = locals()
        job_args = {name: arguments[name] for name in FIELD_NAMES}
        super().__init__(**kwargs)
        for name, value in job_args.items():
            setattr(self, name, value)
        self.project_id = project_id
        self.region = region
        self.job_id = job_id
        self.preflight = preflight
        self.preflight_fail_on_warnings = preflight_fail_on_warnings
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = as_seconds(poll_interval, "poll_interval")
        if self.poll_interval == 0:
            raise ValueError(f"task {self.task_id!r}: poll_interval must be positive (or None to adapt)")
        self.timeout = as_seconds(timeout, "timeout")
        self.cancel_on_kill = cancel_on_kill
        self.reattach = reattach
        if check_log_lines(failure_log_lines):
            raise ValueError(f"task {self.task_id!r}: {check_log_lines(failure_log_lines)[0]}")
        self.failure_log_lines = failure_log_lines
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self.notification_topic = notification_topic
        #: The REST JSON of the job, filled in at run time (shown rendered in the UI).
        self.job: dict[str, Any] | None = None
        self._job_name: str | None = None
        problems = self.static_problems()
        if problems:
            raise SpecError([f"task {self.task_id!r}: {p}" for p in problems])

    # ------------------------------------------------------------------ parse time

    def static_problems(self) -> list[str]:
        """Every problem visible without rendering templates (pure, no I/O).

        Arguments that hold Jinja or an XComArg are skipped here, and so is every
        problem that mentions one of them; they are checked after rendering.
        """
        dynamic = {name for name in (*FIELD_NAMES, "project_id", "region") if is_dynamic(getattr(self, name))}
        problems: list[str] = []
        for name in ("project_id", "region"):
            value = getattr(self, name)
            if name not in dynamic and (not isinstance(value, str) or not value.strip()):
                problems.append(f"{name} is required (got {value!r})")
        region_ok = "region" not in dynamic and isinstance(self.region, str) and bool(self.region.strip())
        if region_ok:
            try:
                locations.region_of(self.region)
            except locations.LocationError as error:
                problems.append(f"region: {error}")
                region_ok = False
        kwargs = {
            name: getattr(self, name)
            for name in FIELD_NAMES
            if name not in dynamic and getattr(self, name) is not None
        }
        kwargs.setdefault("image_uri", "us-docker.pkg.dev/templated/templated/templated")
        if not is_dynamic(self.notification_topic) and "notifications" not in dynamic:
            try:
                kwargs = _with_notification(kwargs, self.topic())
            except ValueError as error:
                problems.append(f"notification_topic: {error}")
        skip = dynamic | ({"region"} if not region_ok else set())
        spec = JobSpec(**kwargs)
        problems += [p for p in spec.problems(self.region if region_ok else None) if not _mentions(p, skip)]
        labels = kwargs.get("labels")
        if isinstance(labels, Mapping) and len(labels) <= MAX_LABELS < len(set(labels) | _OWNED_LABELS):
            problems.append(
                f"labels: {len(set(labels) - _OWNED_LABELS)} labels plus the operator's {len(_OWNED_LABELS)} "
                f"({', '.join(sorted(_OWNED_LABELS))}) exceed Batch's {MAX_LABELS}; drop some"
            )
        if self.preflight and _streams(self.enable_image_streaming) and "image_uri" not in dynamic:
            vm_region = None
            if region_ok and "allowed_locations" not in dynamic:
                vm_region = _vm_region(self.allowed_locations, self.region)
            # Only what is certainly wrong fails the DAG file; what the tables may lag on
            # (a region the multi-region table does not list yet) is checked again at run time.
            for finding in preflight.check_reference(self.image_uri, vm_region, strict=False):
                if finding.severity == preflight.ERROR:
                    hint = f" ({finding.hint})" if finding.hint else ""
                    problems.append(f"image_uri: {finding.message}{hint}")
        return list(dict.fromkeys(problems))  # JobSpec and the preflight share the URI parser

    # ------------------------------------------------------------------ run time

    def topic(self) -> str | None:
        """The Pub/Sub topic of push: the argument, else the configured default; "" is off."""
        if self.notification_topic is not None:
            return self.notification_topic.strip() or None
        from airflow_batch_streaming.hooks.pubsub import configured_notification_topic

        return configured_notification_topic()

    @cached_property
    def hook(self) -> BatchStreamingHook:
        from airflow_batch_streaming.hooks.batch import BatchStreamingHook

        return BatchStreamingHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)

    def build_job(self, context: Context) -> dict[str, Any]:
        """The REST JSON of this task instance's job, from the rendered arguments.

        Its labels name the task instance (`LABEL_TI`), the try and the spec's hash
        (`LABEL_SPEC`): what a later try checks before it reattaches to the job.
        """
        problems = []
        for name in ("project_id", "region"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{name} is required (got {value!r})")
        kwargs: dict[str, Any] = {}
        for name in FIELD_NAMES:
            value = getattr(self, name)
            if value is None:
                continue
            kwargs[name] = coerce_rendered(value) if name in _STRUCTURED else value
        ti = context["ti"]
        owned = task_instance_labels(
            ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number, stamp=run_stamp(context)
        )
        labels = kwargs.get("labels") or {}
        if isinstance(labels, Mapping):
            clash = sorted(set(labels) & _OWNED_LABELS)
            if clash:
                self.log.warning("Labels %s are set by the operator; the given values are replaced", clash)
            kwargs["labels"] = {**{k: v for k, v in labels.items() if k not in _OWNED_LABELS}, **owned}
        try:
            kwargs = _with_notification(kwargs, self.topic())
        except ValueError as error:
            problems.append(f"notification_topic: {error}")
        spec = JobSpec.from_kwargs(**kwargs)
        for warning in spec.warnings():
            self.log.warning("%s", warning)
        region = self.region if not problems else None
        problems += spec.problems(region)
        if problems:
            raise SpecError(problems)
        rest = spec.to_rest(region)
        rest["labels"][LABEL_SPEC] = spec_hash(rest)
        return rest

    def job_id_for(self, context: Context, try_number: int | None = None) -> str:
        """The job ID of a try (this one by default): deterministic, distinct per task instance,
        deployment, clear and try."""
        ti = context["ti"]
        map_index = -1 if ti.map_index is None else ti.map_index
        try_number = ti.try_number if try_number is None else try_number
        parts: list[Any] = [ti.dag_id, ti.task_id, ti.run_id, map_index, f"try{try_number}"]
        if self.job_id:
            parts.insert(0, self.job_id)
        stamp = run_stamp(context)
        return make_job_id(*parts, stamp) if stamp else make_job_id(*parts)

    def execute(self, context: Context) -> dict[str, Any]:
        rest = self.build_job(context)
        self.job = rest  # shown as rendered once the task ends (overwrite_rtif_after_execution)
        hook = self.hook
        hook.deadline = self._execution_deadline(context)
        job = self._find_earlier_job(hook, rest, context) if self.reattach else None
        if job is None:
            if self.preflight:
                self._run_preflight(hook, rest, context)
            job = self._create(hook, rest, self.job_id_for(context))
        summary = status.summarize(job)
        name = summary["name"]
        self._job_name = name
        persist_job_links(context, summary, project_id=self.project_id, region=self.region)
        self._remember(context, name)
        state = summary["state"]
        if state == status.SUCCEEDED:
            return self._succeeded(summary)
        if state in status.TERMINAL:
            raise_for_job(hook, job, log=self.log, log_lines=self.failure_log_lines)
        if not self.wait_for_completion:
            self.log.info("Job %s is %s; not waiting for it (wait_for_completion=False)", name, state)
            return summary
        if self.deferrable:
            self._defer(name, self._deadline(summary, context))
        return self._wait(context, name, self._deadline(summary))

    def _create(self, hook: BatchStreamingHook, rest: dict[str, Any], job_id: str) -> dict[str, Any]:
        """Create this try's job (the hook retries, with one request ID) and check it is ours.

        An ALREADY_EXISTS answer returns the job under this name: adopted only if its labels
        name this task instance and this spec, otherwise a clear error, never a silent adoption.
        """
        name = status.job_name(self.project_id, self.region, job_id)
        self._job_name = name  # a kill during a long create retry can still cancel it
        self.log.info("Submitting Batch job %s", name)
        job = status.as_rest(
            hook.create_job(project_id=self.project_id, region=self.region, job=rest, job_id=job_id)
        )
        if not _same_identity(job, rest):
            raise BatchStreamingError(
                f"Batch job {name} already exists but was not made by this task instance with these "
                f"arguments (labels {_identity_labels(job)}, expected {_identity_labels(rest)}); it is left "
                "alone. Either another Airflow deployment or tool uses this job ID (set a distinct `job_id` "
                "prefix for this task), or this try already ran with other arguments (clear the task to run "
                "them as a new job)."
            )
        return job

    def _find_earlier_job(
        self, hook: BatchStreamingHook, rest: Mapping[str, Any], context: Context
    ) -> dict[str, Any] | None:
        """A job of this task instance and spec to reattach to (active) or reuse (succeeded).

        Earlier tries' jobs are read by their deterministic names (GetJob is consistent:
        a job created a moment ago is found, which ListJobs does not promise). Tries older
        than `NAME_LOOKUPS` are searched by label. A job of an earlier try whose spec differs
        from this try's is cancelled if still active (the try that made it is over).
        """
        try_number = context["ti"].try_number
        oldest = max(1, try_number - NAME_LOOKUPS + 1)
        jobs: dict[str, dict[str, Any]] = {}
        for number in range(try_number, oldest - 1, -1):
            name = status.job_name(self.project_id, self.region, self.job_id_for(context, number))
            try:
                jobs[name] = status.as_rest(hook.get_job(name))
            except Exception as error:
                if not is_not_found(error):
                    raise
        if oldest > 1:
            for job in self._list_by_label(hook, rest["labels"][LABEL_TI]):
                jobs.setdefault(str(job.get("name")), job)
        ours = [j for j in jobs.values() if _labels(j).get(LABEL_TI) == rest["labels"][LABEL_TI]]
        same = [j for j in ours if _labels(j).get(LABEL_SPEC) == rest["labels"][LABEL_SPEC]]
        for job in ours:
            earlier = _int(_labels(job).get(LABEL_TRY)) < try_number
            if earlier and job not in same and status.state_of(job) in _REATTACHABLE:
                self._cancel(hook, str(job["name"]), why="an earlier try made it with other arguments")

        def newest(candidates: list[dict[str, Any]]) -> dict[str, Any]:
            return max(candidates, key=lambda j: (_int(_labels(j).get(LABEL_TRY)), j.get("createTime", "")))

        active = [j for j in same if status.state_of(j) in _REATTACHABLE]
        succeeded = [j for j in same if status.state_of(j) == status.SUCCEEDED]
        if active:
            job = newest(active)
            self.log.info(
                "Reattaching to job %s (try %s), which is %s",
                job.get("name"),
                _labels(job).get(LABEL_TRY),
                status.state_of(job),
            )
            return job
        if succeeded:
            job = newest(succeeded)
            self.log.info(
                "Job %s (try %s) of this task instance already SUCCEEDED with the same arguments: "
                "returning its result without running it again (clear the task, or set "
                "reattach=False, to run a new job)",
                job.get("name"),
                _labels(job).get(LABEL_TRY),
            )
            return job
        if ours:
            self.log.info(
                "Earlier jobs of this task instance ended %s: submitting a new one",
                ", ".join(sorted({status.state_of(j) for j in ours})),
            )
        return None

    def _list_by_label(self, hook: BatchStreamingHook, ti_hash: str) -> list[dict[str, Any]]:
        """Jobs labelled with this task instance; none if the API refuses the label filter."""
        try:
            found = hook.list_jobs(self.project_id, self.region, filter=f'labels."{LABEL_TI}"="{ti_hash}"')
        except Exception as error:
            if type(error).__name__ not in ("InvalidArgument", "MethodNotImplemented"):
                raise
            self.log.warning("Listing jobs by label was refused (%s); only recent tries were checked", error)
            return []
        return [status.as_rest(j) for j in found]

    def _run_preflight(self, hook: BatchStreamingHook, rest: dict[str, Any], context: Context) -> Report:
        report = checker.check_job(
            rest,
            self.region,
            project=self.project_id,
            registry=hook.registry_client(),
            api_check=hook.is_service_enabled,
        )
        self.log.info("Preflight:\n%s", report.format_text())
        context["ti"].xcom_push(key="preflight", value=report.to_dict())
        report.raise_for_errors(fail_on_warnings=self.preflight_fail_on_warnings)
        return report

    def _remember(self, context: Context, name: str) -> None:
        """Record the job in the task state store (Airflow 3.3+), for people and tools."""
        store = context.get("task_state_store")  # type: ignore[attr-defined]
        if store is None:
            return
        try:
            store.set(STATE_KEY, name)
        except Exception as error:  # informational only: the job's name is what reattaches
            self.log.debug("Could not record the job in the task state store: %s", error)

    def _execution_deadline(self, context: Context) -> float | None:
        """Absolute end of ``execution_timeout``, counted from this try's start."""
        limit = as_seconds(self.execution_timeout, "execution_timeout")
        if limit is None:
            return None
        started = getattr(context["ti"], "start_date", None)
        start = started.timestamp() if isinstance(started, datetime) else time.time()
        return start + limit

    def _deadline(self, summary: Mapping[str, Any], context: Context | None = None) -> float | None:
        """Absolute end of ``timeout`` counted from the job's creation (survives retries); with
        a context, also of ``execution_timeout``, whichever is sooner (Airflow does not enforce
        ``execution_timeout`` while a task is deferred)."""
        ends: list[float] = []
        if self.timeout is not None:
            start = time.time()
            created = summary.get("create_time")
            if isinstance(created, str):
                with contextlib.suppress(ValueError):
                    start = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
            ends.append(start + self.timeout)
        if context is not None and (end := self._execution_deadline(context)) is not None:
            ends.append(end)
        return min(ends, default=None)

    def _defer(self, name: str, deadline: float | None) -> None:
        from airflow_batch_streaming.triggers.batch import BatchJobStateTrigger

        trigger = BatchJobStateTrigger(
            job_name=name,
            gcp_conn_id=self.gcp_conn_id,
            impersonation_chain=self.impersonation_chain,
            poll_interval=self.poll_interval,
            end_time=deadline,
            cancel_on_kill=self.cancel_on_kill,
            cancel_on_timeout=True,
            notification_topic=self.topic(),
        )
        timeout = None
        if deadline is not None:
            timeout = timedelta(seconds=max(deadline - time.time(), 0.0) + DEFER_GRACE_SECONDS)
        if self.cancel_on_kill and not TRIGGER_ON_KILL:
            self.log.warning(
                "This Airflow (before 3.3) does not tell triggers that a deferred task was killed: "
                "killing this task leaves job %s running (its next try reattaches to it)",
                name,
            )
        self.log.info("Deferring: the triggerer waits for job %s", name)
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timeout)

    def _wait(self, context: Context, name: str, deadline: float | None) -> dict[str, Any]:
        """Wait on the worker: the hook's wait loop, and the same ending as a deferred wait."""
        event = self.hook.wait_for_job(name, poll_interval=self.poll_interval, end_time=deadline)
        return self.execute_complete(context, event)

    def _cancel(self, hook: BatchStreamingHook, name: str, *, why: str) -> bool:
        self.log.warning("Cancelling job %s: %s", name, why)
        try:
            hook.cancel_job(name, wait=False)
        except Exception as error:
            self.log.error("Could not cancel job %s: %s", name, error)
            return False
        return True

    def _succeeded(self, summary: dict[str, Any]) -> dict[str, Any]:
        timeline = summary.get("timeline") or {}
        self.log.info(
            "Job %s SUCCEEDED (queued %s s, scheduled %s s, running %s s)",
            summary["name"],
            timeline.get("queued_seconds"),
            timeline.get("scheduled_seconds"),
            timeline.get("running_seconds"),
        )
        return summary

    def _limit(self) -> float:
        """The time limit a timeout event reports: ``timeout``, else ``execution_timeout``."""
        return self.timeout or as_seconds(self.execution_timeout, "execution_timeout") or 0.0

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Map the wait's one event (the trigger's, or the sync wait's) to a result or our errors."""
        if not event or not isinstance(event, Mapping):
            raise BatchStreamingError(
                f"resumed without a trigger event (got {event!r}); the job's outcome is unknown"
            )
        event_status = event.get("status")
        name = str(event.get("job_name") or "")
        summary = event.get("job")
        if event_status not in EVENT_STATUSES:
            raise BatchStreamingError(f"unexpected trigger event for job {name}: {dict(event)!r}")
        self._job_name = name
        if event_status == "success":
            if not isinstance(summary, dict):
                summary = status.summarize(self.hook.get_job(name))
            return self._succeeded(summary)
        if event_status in ("failed", "cancelled", "deleted"):
            job = failed_job(self.hook, event, log=self.log)
            raise_for_job(self.hook, job, log=self.log, log_lines=self.failure_log_lines)
        if event_status == "timeout":
            state = str(event.get("state") or "")
            cancelled = bool(
                event.get("cancelled", state in (status.CANCELLATION_IN_PROGRESS, status.CANCELLED))
            )
            raise BatchJobTimeoutError(name, self._limit(), cancelled)
        raise BatchStreamingError(f"waiting for job {name} failed: {event.get('message') or 'no message'}")

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except TaskDeferralTimeout as error:
            # Airflow's backstop fired before the trigger's own deadline: still cancel the job.
            # This task instance's own value: a mapped task passes its map index.
            ti = context["ti"]
            value = ti.xcom_pull(task_ids=self.task_id, key=BATCH_JOB_XCOM_KEY, map_indexes=ti.map_index)
            name = value.get("name") if isinstance(value, Mapping) else None
            if not name:
                raise
            cancelled = self._cancel(self.hook, name, why="the deferral timed out")
            raise BatchJobTimeoutError(name, self._limit(), cancelled) from error

    def on_kill(self) -> None:
        """Cancel the job this task is waiting on (the trigger does it for deferred tasks)."""
        if self._job_name and self.cancel_on_kill:
            self._cancel(self.hook, self._job_name, why="the task was killed")


def _labels(job: Mapping[str, Any]) -> dict[str, str]:
    return dict(job.get("labels") or {})


def _identity_labels(job: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in _labels(job).items() if k in (LABEL_TI, LABEL_SPEC)}


def _same_identity(job: Mapping[str, Any], rest: Mapping[str, Any]) -> bool:
    """Whether `job` was made for the task instance and spec `rest` describes."""
    want = _identity_labels(rest)
    return bool(want) and _identity_labels(job) == want


def _mentions(problem: str, names: set[str]) -> bool:
    return any(re.search(rf"\b{re.escape(name)}\b", problem) for name in names)


def _streams(flag: Any) -> bool:
    if isinstance(flag, str):
        return flag.strip().lower() != "false"
    return flag is None or bool(flag)


def _vm_region(allowed: Any, region: str) -> str | None:
    """The VMs' region; `allowed_locations` as one string is read as a list of one, as JobSpec does."""
    try:
        rest = {"allocationPolicy": {"location": {"allowedLocations": allowed or []}}}
        return locations.vm_region(rest, region)
    except (locations.LocationError, TypeError):
        return None  # reported by the spec (bad or several regions)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
