"""How the job manager ends jobs: what it records when a worker exits, and the server's run-time limit.

A worker records its own job's end (completed, stopped, failed). When the worker exits without doing so
(killed, crashed, out of memory) `settle_exit` records the job `interrupted` or `failed` with the reason
and what was kept. A job past the run-time limit (`time_over_limit_s`) is asked to stop: `enforce_run_time`
first leaves a marker in its folder, so it ends `failed` saying why, and kills it `RUN_LIMIT_GRACE_S` later
if it still runs. The manager (`tl_core.jobs.manager`) calls these from its dispatcher; they never touch the queue.

Example:
    >>> status = settle_exit(records_for(entry.kind, store), entry.run_id, backend.poll(job))
    >>> status
    'interrupted'
"""

from __future__ import annotations

import time

from tl_core.events import ACTIVE_STATUSES, FINISHED_STATUSES
from tl_core.jobs.backend import Job, JobBackend, JobExit, run_time_limit_message
from tl_core.jobs.records import JobRecords
from tl_core.layout import CHECKPOINT_FILE, RUN_TIME_LIMIT_FILE
from tl_core.server.limits import RunLimits, duration_words, run_time_message

RUN_LIMIT_GRACE_S = 60.0  # after the stop request, time to finish the batch and save before the worker is killed


def settle_exit(records: JobRecords, job_id: str, ended: JobExit) -> str:
    """Record a job whose worker ended; a job the worker left unfinished gets the reason.

    Returns:
        The job's final status; `deleted` when its record is gone.
    """
    status = records.status(job_id)
    if status is None:
        return "deleted"
    folder = records.folder(job_id)
    over_time = run_time_limit_message(folder)
    if status in ACTIVE_STATUSES:
        status = "interrupted" if ended.signal and not over_time else "failed"
        kept = "log and last checkpoint are" if (folder / CHECKPOINT_FILE).is_file() else "log is"
        error = f"The worker process {ended.description}. Its {kept} kept in {folder}."
        if kept.startswith("log and"):
            error += " Resume it to continue from the checkpoint."
        if over_time:
            error = (
                f"{over_time} (It did not stop within {RUN_LIMIT_GRACE_S:g} s of the request, so its worker was ended.)"
            )
        records.finish(job_id, status, error=error)
        records.log(job_id, f"{status}: {error}")
    elif over_time and status == "stopped":  # stopped before the work began: the worker did not record the limit
        status = "failed"
        records.finish(job_id, status, error=over_time)
        records.log(job_id, f"{status}: {over_time}")
    return status


def recorded_outcome(records: JobRecords, job_id: str) -> str | None:
    """The job's final status when its record already has one, else None."""
    status = records.status(job_id)
    if status is None:
        return "deleted"
    if status == "stopped" and run_time_limit_message(records.folder(job_id)):
        return None  # stopped at the run-time limit: it ends `failed`, saying why, a moment later
    return status if status in FINISHED_STATUSES else None


def time_over_limit_s(limits: RunLimits, started_at: float | None) -> float | None:
    """How many seconds a job running since `started_at` is past the run-time limit; None while within it (or no limit)."""
    if limits.max_run_s is None or started_at is None:
        return None
    over_s = time.time() - started_at - limits.max_run_s
    return None if over_s < 0 else over_s


def enforce_run_time(backend: JobBackend, job: Job, records: JobRecords, limits: RunLimits, over_s: float) -> None:
    """Stop a job `over_s` past the run-time limit (it keeps its best weights); kill it if it still runs RUN_LIMIT_GRACE_S later."""
    marker = records.folder(job.run_id) / RUN_TIME_LIMIT_FILE
    if marker.exists():
        if over_s > RUN_LIMIT_GRACE_S:
            backend.kill(job)
        return
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(
            run_time_message(limits), encoding="utf-8"
        )  # before the stop: the worker ends the run with it
        records.log(
            job.run_id,
            f"Run-time limit of {duration_words(limits.max_run_s or 0)} reached: stopping after the current batch.",
        )
    except OSError:  # a full disk: stop it all the same (it then ends `stopped`, asked again every tick)
        pass
    backend.stop(job)
