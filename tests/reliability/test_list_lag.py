"""A crash right after CreateJob, then a retry, while ListJobs lags as Google's does.

Google's ListJobs is eventually consistent: recorded traffic shows it answering `{}` right
after a CreateJob (real-api-facts.md), while GetJob on a known name is consistent. The
emulator lags its lists the same way (`Timings.list_lag`, admin `POST /v1/timings`). A retry
that looks for the earlier try's job only with a label-filtered ListJobs misses it and
submits a second job; reading the earlier tries' deterministic names with GetJob cannot.
Each test counts jobs from the emulator's own statistics.
"""

from __future__ import annotations

import pytest
from reliability_support import TI, WorkerDied, ctx, dies_when_waiting, job_op, run_task, settle

from airflow_batch_streaming.emulator import Emulator

pytestmark = pytest.mark.emulator

MODES = [pytest.param(False, id="sync"), pytest.param(True, id="deferrable")]
LIST_LAG_SECONDS = 30.0
RUN = {"emulator-run-seconds": "2"}


def _crash_then_retry(emu: Emulator, deferrable: bool) -> dict[str, object]:
    ti = TI("crashes")
    with pytest.raises(WorkerDied):  # the job is created, then the worker is gone
        dies_when_waiting(job_op("crashes", labels=RUN, deferrable=deferrable)).execute(ctx(ti))
    assert emu.stats()["jobs"] == 1
    # Airflow retries the task at once (retry_delay is short next to a 30 s list lag).
    result: dict[str, object] = run_task(
        lambda: job_op("crashes", labels=RUN, deferrable=deferrable), ti.next_try()
    )
    return result


@pytest.mark.parametrize("deferrable", MODES)
def test_with_consistent_lists_the_retry_reattaches(emu: Emulator, deferrable: bool) -> None:
    """The control: the same crash and retry with no list lag make exactly one job."""
    result = _crash_then_retry(emu, deferrable)
    assert result["state"] == "SUCCEEDED"
    stats = emu.stats()
    assert stats["calls"]["CreateJob"] == 1
    assert settle(emu) == {"SUCCEEDED": 1}


@pytest.mark.parametrize("deferrable", MODES)
def test_a_retry_after_a_crash_right_after_create_reattaches_despite_list_lag(
    emu: Emulator, deferrable: bool
) -> None:
    assert emu.timings(list_lag=LIST_LAG_SECONDS)["list_lag"] == LIST_LAG_SECONDS
    result = _crash_then_retry(emu, deferrable)
    assert result["state"] == "SUCCEEDED"
    stats = emu.stats()
    assert stats["jobs"] == 1, f"the retry submitted a second job: {stats['jobs_by_state']}"
    assert stats["calls"]["CreateJob"] == 1
    assert settle(emu) == {"SUCCEEDED": 1}
