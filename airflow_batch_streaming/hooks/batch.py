"""`BatchStreamingHook`: the one place that calls Batch, Cloud Logging and Service Usage.

Sync methods serve workers and sensors; `*_async` methods serve the triggerer and never
block its event loop (credentials and the Airflow connection are read in a thread).
Retries are ours, not the client library's (`retry=None` on every call), and this hook is
the only layer that retries: operators, the sensor and the watcher call it and never
retry on top. One policy (`retry_delay`, `give_up_after`, `deadline`) serves the sync and
the deferred paths:

- reads retry UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL and RESOURCE_EXHAUSTED (longer
  backoff) with jittered exponential backoff, a bounded number of times, and never sleep
  past `deadline` (the task's own deadline, set by the operator);
- waiting on a job (`wait_for_job`, the watcher) reads once per poll and backs off with the
  same delays, giving up after `give_up_after` seconds of consecutive failures;
- `create_job` retries the same three transport errors with the *same* request ID, so a
  create whose response was lost is not run twice, and answers ALREADY_EXISTS with the
  existing job;
- INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND, ... are never retried; the ones a user
  can act on are re-raised (same exception type) with a message naming the missing
  role, the disabled API or the bad connection.

With `BATCH_STREAMING_EMULATOR_HOST` set the hook reads no Airflow connection and no
credentials at all: the clients talk to the emulator over an insecure channel.

The Google client libraries (`google.cloud.batch_v1`, logging, service usage) are
imported inside methods. Note that `GoogleBaseHook`'s own module imports
`google.api_core.exceptions` and hence `grpc`: import this module lazily (inside
`execute`) from code that DAG files import.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
from airflow.sdk import BaseHook
from google.api_core import exceptions as gexc

from airflow_batch_streaming import __version__, status
from airflow_batch_streaming.hooks import clients

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud.batch_v1 import BatchServiceAsyncClient, BatchServiceClient, Job, Task
    from google.cloud.logging_v2.types import LogEntry

    from airflow_batch_streaming.registry import RegistryClient

T = TypeVar("T")

#: Namespace of the default `CreateJobRequest.request_id` (uuid5 of the job's full name).
REQUEST_ID_NAMESPACE = uuid.UUID("6b1d7a52-3c9e-5f1e-9d0a-2f7e4b8c1a93")
CONTAINER_FS_SERVICE = "containerfilesystem.googleapis.com"

#: Errors after which the same call may simply be sent again.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
)


def default_request_id(job_name: str) -> str:
    """The request ID a create of `job_name` sends unless told otherwise.

    Deterministic, so a create re-sent after a lost response (or by a retried task within
    Batch's 60-minute idempotency window) returns the job the first one created.
    """
    return str(uuid.uuid5(REQUEST_ID_NAMESPACE, job_name))


def is_transient(exc: BaseException) -> bool:
    """The one definition of an error worth sending the same call again for."""
    return isinstance(exc, TRANSIENT_ERRORS)


def backoff_delay(attempt: int, *, initial: float, maximum: float, multiplier: float = 2.0) -> float:
    """Exponential backoff with ±20% jitter (so a fleet of waiters does not retry in step)."""
    delay = min(maximum, initial * multiplier**attempt)
    return delay * random.uniform(0.8, 1.2)


_CLIENT_MODULES = {
    "batch": (
        "google.cloud.batch_v1",
        "google.cloud.batch_v1.services.batch_service.transports",
        "grpc.aio",
    ),
}


def _preload(kind: str) -> None:
    for module in _CLIENT_MODULES.get(kind, ()):
        importlib.import_module(module)


class BatchStreamingHook(GoogleBaseHook):
    """Google Cloud Batch (jobs, tasks), Cloud Logging and Service Usage for this provider.

    :param gcp_conn_id: the Airflow connection (type ``google_cloud_platform``) to use.
    :param impersonation_chain: service account(s) to impersonate, as in the Google provider.
    """

    hook_name = "Google Cloud Batch (Image Streaming)"

    #: Retry knobs (class attributes so tests and subclasses can shorten them).
    read_attempts = 6
    retry_initial_delay = 1.0
    retry_max_delay = 30.0
    quota_initial_delay = 5.0
    quota_max_delay = 60.0
    create_attempts = 6
    logging_attempts = 6
    call_timeout = 60.0
    #: Seconds of consecutive failed reads after which a wait gives up.
    give_up_after = 1800.0
    #: Absolute `time.time()` past which no retry sleeps (the task's deadline); None: no bound.
    deadline: float | None = None

    def __init__(
        self,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.emulator = clients.emulator_host()
        if self.emulator:
            # GoogleBaseHook.__init__ reads the connection eagerly: skip it entirely.
            kwargs.pop("quota_project_id", None)
            BaseHook.__init__(self, **kwargs)
            self.gcp_conn_id = gcp_conn_id
            self.impersonation_chain = impersonation_chain
            self.quota_project_id = None
            self.extras = {}
            self._cached_credentials = None
            self._cached_project_id = None
        else:
            super().__init__(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain, **kwargs)
        self._sync_clients: dict[str, Any] = {}
        self._async_clients: dict[tuple[str, int], tuple[asyncio.AbstractEventLoop, Any]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    def _client_credentials(self) -> Credentials | None:
        """Credentials for a client; None under the emulator (the factory uses anonymous ones)."""
        return None if self.emulator else self.get_credentials()

    @staticmethod
    def _client_info() -> Any:
        from google.api_core.gapic_v1.client_info import ClientInfo

        return ClientInfo(user_agent=f"airflow-batch-streaming/{__version__}")

    def _sync_client(self, kind: str, factory: Callable[..., Any]) -> Any:
        with self._lock:
            client = self._sync_clients.get(kind)
            if client is None:
                client = factory(credentials=self._client_credentials(), client_info=self._client_info())
                self._sync_clients[kind] = client
            return client

    def get_batch_client(self) -> BatchServiceClient:
        """The sync Batch client (one per hook)."""
        return self._sync_client("batch", clients.batch_client)

    def get_logging_client(self) -> Any:
        """The sync GAPIC Cloud Logging client (`LoggingServiceV2Client`)."""
        return self._sync_client("logging", clients.logging_client)

    def get_service_usage_client(self) -> Any:
        return self._sync_client("service_usage", clients.service_usage_client)

    async def _async_client(self, kind: str, factory: Callable[..., Any]) -> Any:
        # grpc.aio channels belong to the loop they were made in: one client per loop.
        loop = asyncio.get_running_loop()
        key = (kind, id(loop))
        cached = self._async_clients.get(key)
        if cached is not None and cached[0] is loop:
            return cached[1]
        credentials = None if self.emulator else await asyncio.to_thread(self._client_credentials)
        # Importing the client library takes seconds the first time: never on the triggerer's loop.
        await asyncio.to_thread(_preload, kind)
        cached = self._async_clients.get(key)
        if cached is not None and cached[0] is loop:
            return cached[1]
        for stale in [k for k, (lp, _) in self._async_clients.items() if lp.is_closed()]:
            del self._async_clients[stale]
        client = factory(credentials=credentials, client_info=self._client_info())
        self._async_clients[key] = (loop, client)
        return client

    async def get_async_batch_client(self) -> BatchServiceAsyncClient:
        """The async Batch client of the running event loop (credentials read in a thread)."""
        return await self._async_client("batch", clients.batch_async_client)

    async def aclose(self) -> None:
        """Close the async clients (gRPC channels) this hook made in the running loop."""
        loop = asyncio.get_running_loop()
        for key, (client_loop, client) in list(self._async_clients.items()):
            if client_loop is loop:
                del self._async_clients[key]
                closing = client.transport.close()
                if asyncio.iscoroutine(closing):
                    await closing

    def _conn_label(self) -> str:
        return "the emulator" if self.emulator else f"connection {self.gcp_conn_id!r}"

    def explain(
        self, exc: Exception, *, action: str, project: str | None = None, role: str = ""
    ) -> Exception:
        """`exc` with a message a user can act on (same type, original chained by the caller)."""
        if not isinstance(exc, gexc.GoogleAPICallError):
            return exc
        where = f" on project {project}" if project else ""
        text = exc.message or str(exc)
        message: str | None = None
        if isinstance(exc, gexc.PermissionDenied):
            lowered = text.lower()
            if "service_disabled" in lowered or "has not been used" in lowered or "is disabled" in lowered:
                message = f"{action} failed: the API is not enabled{where}. {text}"
            else:
                needs = f" (needs {role})" if role else ""
                message = (
                    f"{action} was denied: the service account of {self._conn_label()} lacks permission"
                    f"{where}{needs}. {text}"
                )
        elif isinstance(exc, gexc.Unauthenticated):
            message = (
                f"{action} failed: the credentials of {self._conn_label()} were rejected; check its key "
                f"file, keyfile JSON or application default credentials. {text}"
            )
        elif isinstance(exc, gexc.InvalidArgument | gexc.FailedPrecondition):
            message = f"{action} was rejected: {text}"
        elif isinstance(exc, gexc.NotFound):
            message = f"{action} failed: not found. {text}"
        elif isinstance(exc, TRANSIENT_ERRORS):
            message = f"{action} failed after retries ({type(exc).__name__}). {text}"
        if message is None:
            return exc
        try:
            return type(exc)(
                message,
                errors=exc.errors,
                details=exc.details,
                response=exc.response,
                error_info=getattr(exc, "_error_info", None),
            )
        except Exception:
            return type(exc)(message)

    @classmethod
    def retry_delay(cls, exc: BaseException, attempt: int) -> float:
        """Seconds before retry `attempt` (0-based): quota errors back off longer."""
        if isinstance(exc, gexc.ResourceExhausted):
            return backoff_delay(attempt, initial=cls.quota_initial_delay, maximum=cls.quota_max_delay)
        return backoff_delay(attempt, initial=cls.retry_initial_delay, maximum=cls.retry_max_delay)

    def _retry_sleep(self, exc: Exception, attempt: int, attempts: int) -> float | None:
        """Seconds to sleep before the next attempt; None: give up (attempts or deadline spent)."""
        if attempt + 1 >= attempts:
            return None
        delay = self.retry_delay(exc, attempt)
        if self.deadline is not None and time.time() + delay >= self.deadline:
            return None
        return delay

    def _retry(
        self,
        call: Callable[[], T],
        *,
        action: str,
        project: str | None = None,
        role: str = "",
        attempts: int | None = None,
    ) -> T:
        attempts = attempts or self.read_attempts
        for attempt in range(attempts):
            try:
                return call()
            except TRANSIENT_ERRORS as exc:
                if attempts == 1:
                    raise  # a wait loop reads once per poll and backs off itself
                delay = self._retry_sleep(exc, attempt, attempts)
                if delay is None:
                    raise self.explain(exc, action=action, project=project, role=role) from exc
                self.log.warning("%s: %s; retrying in %.1f s", action, type(exc).__name__, delay)
                time.sleep(delay)
            except gexc.NotFound:
                raise
            except gexc.GoogleAPICallError as exc:
                raise self.explain(exc, action=action, project=project, role=role) from exc
        raise AssertionError("unreachable")

    async def _aretry(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        action: str,
        project: str | None = None,
        role: str = "",
        attempts: int | None = None,
    ) -> T:
        attempts = attempts or self.read_attempts
        for attempt in range(attempts):
            try:
                return await call()
            except TRANSIENT_ERRORS as exc:
                if attempts == 1:
                    raise  # the caller (the watcher) retries
                delay = self._retry_sleep(exc, attempt, attempts)
                if delay is None:
                    raise self.explain(exc, action=action, project=project, role=role) from exc
                self.log.warning("%s: %s; retrying in %.1f s", action, type(exc).__name__, delay)
                await asyncio.sleep(delay)
            except gexc.NotFound:
                raise
            except gexc.GoogleAPICallError as exc:
                raise self.explain(exc, action=action, project=project, role=role) from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _project_of(name: str) -> str | None:
        try:
            return status.parse_job_name(name)[0]
        except ValueError:
            return None

    # ------------------------------------------------------------------ jobs (sync)

    def create_job(
        self,
        *,
        project_id: str,
        region: str,
        job: Job | dict[str, Any],
        job_id: str,
        request_id: str | None = None,
    ) -> Job:
        """Create the job, idempotently; returns the created (or already existing) job.

        A create whose response was lost is re-sent with the same request ID, so Batch
        answers with the job the first attempt made. ALREADY_EXISTS returns the existing
        job as is: the caller decides whether it is its own (e.g. by its labels).
        """
        from google.cloud import batch_v1

        from airflow_batch_streaming import spec

        name = status.job_name(project_id, region, job_id)
        job_proto = job if isinstance(job, batch_v1.Job) else spec.rest_to_job(job)
        request = batch_v1.CreateJobRequest(
            parent=f"projects/{project_id}/locations/{region}",
            job_id=job_id,
            job=job_proto,
            request_id=request_id or default_request_id(name),
        )
        client = self.get_batch_client()
        action = f"creating Batch job {name}"
        for attempt in range(self.create_attempts):
            try:
                created = client.create_job(request=request, retry=None, timeout=self.call_timeout)
                self.log.info("Created Batch job %s (uid %s)", created.name, created.uid)
                return created
            except gexc.AlreadyExists:
                self.log.info("Batch job %s already exists; returning it", name)
                return self.get_job(name)
            except TRANSIENT_ERRORS as exc:
                delay = self._retry_sleep(exc, attempt, self.create_attempts)
                if delay is None:
                    raise self.explain(exc, action=action, project=project_id) from exc
                self.log.warning(
                    "%s: %s; re-sending with the same request ID in %.1f s", action, type(exc).__name__, delay
                )
                time.sleep(delay)
            except gexc.GoogleAPICallError as exc:
                raise self.explain(
                    exc, action=action, project=project_id, role="roles/batch.jobsEditor"
                ) from exc
        raise AssertionError("unreachable")

    def get_job(self, name: str, *, attempts: int | None = None) -> Job:
        """The job; raises `google.api_core.exceptions.NotFound` if there is none.

        `attempts=1` reads once (a wait loop that backs off between polls itself).
        """
        client = self.get_batch_client()
        return self._retry(
            lambda: client.get_job(name=name, retry=None, timeout=self.call_timeout),
            action=f"reading Batch job {name}",
            project=self._project_of(name),
            role="roles/batch.jobsViewer",
            attempts=attempts,
        )

    def _pages(
        self,
        method: Callable[..., Any],
        request: Any,
        field: str,
        *,
        action: str,
        project: str | None,
        limit: int | None,
    ) -> list[Any]:
        items: list[Any] = []
        while True:
            page = self._retry(
                lambda: method(request=request, retry=None, timeout=self.call_timeout),
                action=action,
                project=project,
                role="roles/batch.jobsViewer",
            )
            items.extend(getattr(page, field))
            token = page.next_page_token
            if not token or (limit is not None and len(items) >= limit):
                return items[:limit] if limit is not None else items
            request.page_token = token

    def list_jobs(
        self,
        project_id: str,
        region: str,
        filter: str | None = None,
        order_by: str | None = None,
        *,
        page_size: int = 100,
        limit: int | None = None,
    ) -> list[Job]:
        """Jobs of a project and region, optionally filtered (`labels.k="v"`, `status.state=...`)."""
        from google.cloud import batch_v1

        request = batch_v1.ListJobsRequest(
            parent=f"projects/{project_id}/locations/{region}",
            filter=filter or "",
            order_by=order_by or "",
            page_size=page_size,
        )
        return self._pages(
            self.get_batch_client().list_jobs,
            request,
            "jobs",
            action=f"listing Batch jobs in {project_id}/{region}",
            project=project_id,
            limit=limit,
        )

    def list_tasks(
        self,
        job_name: str,
        filter: str | None = None,
        *,
        task_group: str = "group0",
        page_size: int = 100,
        limit: int | None = None,
    ) -> list[Task]:
        """Tasks of a job's task group (Batch jobs have one, `group0`)."""
        from google.cloud import batch_v1

        request = batch_v1.ListTasksRequest(
            parent=f"{job_name}/taskGroups/{task_group}", filter=filter or "", page_size=page_size
        )
        return self._pages(
            self.get_batch_client().list_tasks,
            request,
            "tasks",
            action=f"listing tasks of Batch job {job_name}",
            project=self._project_of(job_name),
            limit=limit,
        )

    def cancel_job(self, name: str, wait: bool = False) -> bool:
        """Cancel the job; a job that is gone or already finished is fine (idempotent).

        Returns whether the job is being cancelled (False: it was gone or had finished).
        `wait=True` also waits until it is CANCELLED (`wait_for_job`, the one wait loop).
        """
        try:
            job = self.get_job(name)
        except gexc.NotFound:
            self.log.info("Batch job %s does not exist; nothing to cancel", name)
            return False
        state = status.state_of(job)
        if state in status.TERMINAL:
            self.log.info("Batch job %s is already %s; not cancelling it", name, state)
            return False
        if state != status.CANCELLATION_IN_PROGRESS:
            client = self.get_batch_client()
            try:
                self._retry(
                    lambda: client.cancel_job(name=name, retry=None, timeout=self.call_timeout),
                    action=f"cancelling Batch job {name}",
                    project=self._project_of(name),
                    role="roles/batch.jobsEditor",
                )
                self.log.info("Requested cancellation of Batch job %s", name)
            except gexc.NotFound:
                return False
            except (gexc.FailedPrecondition, gexc.InvalidArgument):
                # Raced with the job finishing: fine if it is terminal now.
                try:
                    if status.state_of(self.get_job(name)) in status.TERMINAL:
                        return False
                except gexc.NotFound:
                    return False
                raise
        if wait:
            self.wait_for_job(name, target_states=(status.CANCELLED,), cancel_on_timeout=False)
        return True

    def delete_job(self, name: str) -> None:
        """Delete the job (idempotent: a missing job is fine); it is gone once GetJob says NOT_FOUND."""
        client = self.get_batch_client()
        try:
            self._retry(
                lambda: client.delete_job(name=name, retry=None, timeout=self.call_timeout),
                action=f"deleting Batch job {name}",
                project=self._project_of(name),
                role="roles/batch.jobsEditor",
            )
        except gexc.NotFound:
            return

    def wait_for_job(
        self,
        name: str,
        *,
        target_states: Sequence[str] = status.DEFAULT_TARGET_STATES,
        failure_states: Sequence[str] = status.DEFAULT_FAILURE_STATES,
        poll_interval: float | None = None,
        end_time: float | None = None,
        cancel_on_timeout: bool = True,
    ) -> dict[str, Any]:
        """Wait on a worker until the job reaches a target, failure or terminal state.

        The synchronous twin of `BatchJobStateTrigger`: same stop rules
        (`status.outcome_of`), same result (`status.wait_event`: `{"status", "state",
        "job_name", "job", "message"}`), so an operator handles both paths alike.
        `end_time` is an absolute `time.time()` deadline; when it passes the job is
        cancelled (if `cancel_on_timeout`) and the status is "timeout". Each poll reads
        once; a failed read backs off with `retry_delay`, and `give_up_after` seconds of
        consecutive failures end the wait with "error" (the watcher's rule).
        """
        stops = set(target_states) | set(failure_states) | status.TERMINAL
        state: str | None = None
        last_job: Job | None = None
        since = time.time()
        errors, failing_since = 0, 0.0
        while True:
            now = time.time()
            try:
                last_job = self.get_job(name, attempts=1)
            except gexc.NotFound:
                return status.wait_event(
                    "deleted", name, state=state, message=f"Batch job {name} no longer exists"
                )
            except TRANSIENT_ERRORS as exc:
                failing_since = failing_since if errors else now
                if now - failing_since >= self.give_up_after:
                    return status.wait_event(
                        "error",
                        name,
                        state=state,
                        job=last_job,
                        message=f"reading Batch job {name} failed for {now - failing_since:.0f} s: {exc}",
                    )
                interval = self.retry_delay(exc, min(errors, 10))
                errors += 1
                self.log.warning(
                    "Reading Batch job %s failed (%s); retry %d in %.1f s", name, exc, errors, interval
                )
            except gexc.GoogleAPICallError as exc:
                error = self.explain(exc, action=f"reading Batch job {name}", project=self._project_of(name))
                return status.wait_event("error", name, state=state, job=last_job, message=str(error))
            else:
                errors = 0
                new_state = status.state_of(last_job)
                if new_state != state:
                    self.log.info("Batch job %s is %s", name, new_state)
                    state, since = new_state, now
                if state in stops:
                    outcome = status.outcome_of(state, target_states, failure_states) or "failed"
                    tasks = self._failed_tasks(name) if state == status.FAILED else None
                    return status.wait_event(outcome, name, state=state, job=last_job, tasks=tasks)
                interval = poll_interval or status.adaptive_interval(state, now - since)
                interval *= random.uniform(0.8, 1.2)
            if end_time is not None and now >= end_time:
                cancelled = False
                if cancel_on_timeout:
                    try:
                        cancelled = self.cancel_job(name)
                    except gexc.GoogleAPICallError as exc:
                        self.log.warning("Cancelling Batch job %s after the timeout failed: %s", name, exc)
                outcome = "it was cancelled" if cancelled else "it was left as it is"
                return status.wait_event(
                    "timeout",
                    name,
                    state=state,
                    job=last_job,
                    message=f"Batch job {name} did not finish before the deadline "
                    f"(last state {state}); {outcome}",
                    cancelled=cancelled,
                )
            if end_time is not None:
                interval = min(interval, max(end_time - now, 0.0))
            time.sleep(interval)

    def _failed_tasks(self, name: str) -> list[Task] | None:
        try:
            return self.list_tasks(name, filter=f'status.state="{status.FAILED}"', limit=100)
        except gexc.GoogleAPICallError as exc:
            self.log.info("Could not list the failed tasks of %s: %s", name, exc)
            return None

    # ------------------------------------------------------------------ logs, APIs, registry

    def list_log_entries(
        self,
        project_id: str,
        filter: str,
        *,
        order_by: str = "timestamp asc",
        max_entries: int = 1000,
        page_size: int = 1000,
        resource_names: Sequence[str] | None = None,
    ) -> list[LogEntry]:
        """Cloud Logging entries matching `filter` (give it a `timestamp>=` bound).

        Logging's read quota is small (about 60 calls/min per project): RESOURCE_EXHAUSTED
        is waited out page by page, with a longer backoff than Batch reads.
        """
        from google.cloud.logging_v2.types import ListLogEntriesRequest

        client = self.get_logging_client()
        request = ListLogEntriesRequest(
            resource_names=list(resource_names or [f"projects/{project_id}"]),
            filter=filter,
            order_by=order_by,
            page_size=max(1, min(page_size, max_entries)),
        )
        entries: list[LogEntry] = []
        action = f"reading Cloud Logging entries of project {project_id}"
        while len(entries) < max_entries:
            pager = self._retry(
                lambda: client.list_log_entries(request=request, retry=None, timeout=self.call_timeout),
                action=action,
                project=project_id,
                role="roles/logging.viewer",
                attempts=self.logging_attempts,
            )
            page = next(iter(pager.pages))  # the pager holds the first page: no extra call
            entries.extend(page.entries)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        return entries[:max_entries]

    def is_service_enabled(self, project_id: str, service: str = CONTAINER_FS_SERVICE) -> bool:
        """Whether `service` is ENABLED in the project (Service Usage `GetService`)."""
        from google.cloud import service_usage_v1

        client = self.get_service_usage_client()
        name = f"projects/{project_id}/services/{service}"
        result = self._retry(
            lambda: client.get_service(
                request=service_usage_v1.GetServiceRequest(name=name), retry=None, timeout=self.call_timeout
            ),
            action=f"checking whether {service} is enabled",
            project=project_id,
            role="roles/serviceusage.serviceUsageConsumer",
        )
        return bool(result.state == service_usage_v1.State.ENABLED)

    def registry_token(self) -> str | None:
        """An OAuth access token for Artifact Registry from the connection's credentials.

        None under the emulator, or for an anonymous connection (anonymous registry access).
        """
        if self.emulator:
            return None
        from google.auth.credentials import AnonymousCredentials

        with self._lock:
            credentials = self.get_credentials()
            if isinstance(credentials, AnonymousCredentials):
                return None  # connection set to anonymous: a public registry
            if not credentials.valid or not credentials.token:
                import google.auth.transport.requests

                credentials.refresh(google.auth.transport.requests.Request())
            token = credentials.token
        return str(token) if token else None

    def registry_client(self, base_url: str | None = None) -> RegistryClient:
        """A registry client that authenticates with this hook's credentials."""
        from airflow_batch_streaming.registry import RegistryClient

        return RegistryClient(token_provider=self.registry_token, base_url=base_url)

    # ------------------------------------------------------------------ async (triggerer)

    async def get_job_async(self, name: str, *, attempts: int | None = None) -> Job:
        """The job; NotFound propagates. `attempts=1` disables retries (the watcher's own)."""
        client = await self.get_async_batch_client()
        return await self._aretry(
            lambda: client.get_job(name=name, retry=None, timeout=self.call_timeout),
            action=f"reading Batch job {name}",
            project=self._project_of(name),
            role="roles/batch.jobsViewer",
            attempts=attempts,
        )

    async def list_jobs_page_async(
        self,
        parent: str,
        *,
        filter: str = "",
        page_size: int = 1000,
        page_token: str = "",
        attempts: int | None = None,
    ) -> tuple[list[Job], str]:
        """One ListJobs page: `(jobs, next_page_token)`."""
        from google.cloud import batch_v1

        client = await self.get_async_batch_client()
        request = batch_v1.ListJobsRequest(
            parent=parent, filter=filter, page_size=page_size, page_token=page_token
        )
        pager = await self._aretry(
            lambda: client.list_jobs(request=request, retry=None, timeout=self.call_timeout),
            action=f"listing Batch jobs in {parent}",
            project=parent.split("/")[1] if parent.startswith("projects/") else None,
            role="roles/batch.jobsViewer",
            attempts=attempts,
        )
        return list(pager.jobs), str(pager.next_page_token)

    async def list_tasks_async(
        self, job_name: str, filter: str = "", *, task_group: str = "group0", page_size: int = 100
    ) -> list[Task]:
        """The first page of a job's tasks (enough to name failing tasks and exit codes)."""
        from google.cloud import batch_v1

        client = await self.get_async_batch_client()
        request = batch_v1.ListTasksRequest(
            parent=f"{job_name}/taskGroups/{task_group}", filter=filter, page_size=page_size
        )
        pager = await self._aretry(
            lambda: client.list_tasks(request=request, retry=None, timeout=self.call_timeout),
            action=f"listing tasks of Batch job {job_name}",
            project=self._project_of(job_name),
            role="roles/batch.jobsViewer",
        )
        return list(pager.tasks)

    async def cancel_job_async(self, name: str) -> bool:
        """Cancel the job if it is still active. Returns whether a cancel was sent.

        Idempotent: a missing or finished job is fine. Never blocks the event loop.
        """
        try:
            job = await self.get_job_async(name)
        except gexc.NotFound:
            return False
        state = status.state_of(job)
        if state in status.TERMINAL or state == status.CANCELLATION_IN_PROGRESS:
            return False
        client = await self.get_async_batch_client()
        try:
            await self._aretry(
                lambda: client.cancel_job(name=name, retry=None, timeout=self.call_timeout),
                action=f"cancelling Batch job {name}",
                project=self._project_of(name),
                role="roles/batch.jobsEditor",
            )
        except gexc.NotFound:
            return False
        except (gexc.FailedPrecondition, gexc.InvalidArgument):
            try:
                if status.state_of(await self.get_job_async(name)) in status.TERMINAL:
                    return False
            except gexc.NotFound:
                return False
            raise
        self.log.info("Requested cancellation of Batch job %s", name)
        return True
