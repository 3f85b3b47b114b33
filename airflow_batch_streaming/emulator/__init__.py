"""A local Google Cloud Batch + Cloud Logging + Service Usage, served over real gRPC.

Started by `airflow-batch-streaming emulator [--host H] [--port N] [--admin-port N]
[--run-commands] [--disable-api SERVICE ...]`, or in-process with `Emulator()` /
in a child process with `EmulatorProcess()` (both context managers). The package's clients
(`hooks/clients.py`) go to it when `BATCH_STREAMING_EMULATOR_HOST=host:port` is set.

Services: `google.cloud.batch.v1.BatchService` (CreateJob, GetJob, ListJobs, DeleteJob,
CancelJob, ListTasks, GetTask), `google.longrunning.Operations`,
`google.logging.v2.LoggingServiceV2` (WriteLogEntries, ListLogEntries, ListLogs) and
`google.api.serviceusage.v1.ServiceUsage` (GetService, BatchGetServices).

Jobs go QUEUED -> SCHEDULED -> RUNNING -> SUCCEEDED | FAILED, with Batch's status events.
Without `--run-commands` the outcome comes from the job's labels (GCP label values allow only
`[a-z0-9_-]`, hence milliseconds and `_`-separated lists):

    emulator-outcome           succeed (default) | fail | preempt | no-resources
    emulator-exit-code         N: the failing exit code (fail: 1, preempt: 50001)
    emulator-fail-tasks        task indexes that fail, e.g. `0_3` (default: all)
    emulator-fail-attempts     attempts of each failing task that fail before one succeeds
                               (fail: every attempt; preempt: 1). Alias emulator-preempt-attempts.
    emulator-queue-seconds     QUEUED time     (also -ms; default 0.3 s, CLI --queue-seconds)
    emulator-schedule-seconds  SCHEDULED time  (also -ms; default 0.3 s)
    emulator-run-seconds       each task attempt's run time (also -ms; default 1 s)
    emulator-cancel-seconds    CANCELLATION_IN_PROGRESS time (also -ms; default 0.3 s)
    emulator-delete-seconds    DELETION_IN_PROGRESS time before the job is gone (also -ms)

Retries follow `max_retry_count` and the lifecycle policies (so `preempt` with a
RETRY_TASK-on-50001 policy succeeds on the second attempt); `max_run_duration` shorter than
the run time fails the attempt with 50005; `no-resources` fails the job from SCHEDULED with
a CODE_GCE_ZONE_RESOURCE_POOL_EXHAUSTED event. With `--run-commands` the commands really
run (see `runner.py`) and only the queue/schedule/cancel/delete labels apply.

Logs are written only for jobs whose `logsPolicy.destination` is CLOUD_LOGGING, as Batch does.
"""

from airflow_batch_streaming.emulator.jobs import Timings
from airflow_batch_streaming.emulator.process import EmulatorProcess
from airflow_batch_streaming.emulator.server import EMULATOR_HOST_ENV, Emulator

__all__ = ["EMULATOR_HOST_ENV", "Emulator", "EmulatorProcess", "Timings"]
