"""Background jobs: a durable fair queue, a dispatcher, and backends that run the jobs.

Streamlit unwinds its script thread on every rerun, so training never runs there. The app keeps one
`JobManager` per server (`st.cache_resource`); pages submit configs, read `status()` and call `stop()`.
A job is a training run (`submit`, `resume`) or an advisory job (`submit_advisory`: the mode advisor or
the cut-depth probe, which measure the user's data with real training steps); all share the queue, the
device slots, the per-user cap, progress and Stop. An advisory job is no run: its record and result
live in `<workspace>/advice/<job id>/` (tl_core/jobs/advisory.py), never in the run store.

Jobs wait in a SQLite queue (`tl_core.jobs.queue`) that survives restarts. A dispatcher thread claims
the next job when a device slot is free and hands it to a backend (both in `tl_core.jobs.worker`):
`ProcessBackend`, the default, runs each job in its own worker process, so a job that crashes or
runs out of memory never takes the server or another job down; `ThreadBackend` runs jobs in this
process (tests, scripts). A backend only knows jobs (start, poll, progress, stop, kill), so one that runs jobs on
other machines can replace them without touching the pages.

On start the manager recovers: jobs still queued stay queued and start in turn; a running job whose
worker is gone is marked `interrupted` (its log and last checkpoint kept, `resume` continues it);
a worker still alive from before the restart is watched again. What is recorded when a worker exits,
and how the run-time limit ends a job, is in `tl_core.jobs.endings`.

Example:
    >>> manager = JobManager(RunStore("workspace"))
    >>> run_id = manager.submit(config, owner="alice")
    >>> manager.status(run_id).state
    'running'
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tl_core.config import RunConfig
from tl_core.errors import TransferLabError
from tl_core.events import ACTIVE_STATUSES
from tl_core.jobs.backend import RUN_JOB, Job, JobBackend, JobExit, JobKind
from tl_core.jobs.endings import enforce_run_time, recorded_outcome, settle_exit, time_over_limit_s
from tl_core.jobs.live_progress import LiveProgress
from tl_core.jobs.queue import ANY_DEVICE, JobQueue, QueueEntry, default_slots
from tl_core.jobs.records import JobRecords, enqueue_advisory, enqueue_run, records_for
from tl_core.jobs.start_estimates import StartEstimator
from tl_core.layout import CHECKPOINT_FILE, QUEUE_FILE
from tl_core.runs.store import RunStore
from tl_core.server.limits import RunLimits, require_within_limits

JobState = Literal["queued", "running", "finished"]
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobStatus:
    """A job as a page shows it.

    `queue_position` (1 = next to start) and `estimated_start` (unix time; None while nothing is known
    about how long runs take) are set while it waits; `estimated_start` is the real start once running.
    """

    run_id: str  # the run's id, or the advisory job's
    state: JobState
    queue_position: int | None
    progress: LiveProgress
    estimated_start: float | None = None
    owner: str = "local"
    device: str | None = None
    kind: JobKind = RUN_JOB


class JobManager:
    """Queue and run jobs in the background; one manager per server process.

    Args:
        store: the default run store jobs record into (`submit(store=...)` picks another).
        max_concurrent: jobs at once per device (default 1: two models on one device only make both slower).
        slots: jobs at once per device name, overriding `max_concurrent` and device detection.
        per_user_cap: most jobs (runs and advisory jobs) one user may have queued or running; None for no limit.
        backend: where jobs run; default `ProcessBackend` (one worker process per job), or
            `ThreadBackend(run)` when `run` is given.
        run: the function that runs one experiment in a `ThreadBackend` (tests swap it).
        queue_path: the queue's SQLite file; default `<store.workspace>/queue.sqlite`.
        poll_interval_s: how often the dispatcher looks for finished jobs and free slots.
        limits: the server's run limits: a submit over them is refused, and a job running past
            `max_run_minutes` is stopped (killed `endings.RUN_LIMIT_GRACE_S` later if still running) and ends `failed`
            with what to change.
    """

    def __init__(
        self,
        store: RunStore,
        *,
        max_concurrent: int | None = None,
        slots: Mapping[str, int] | None = None,
        per_user_cap: int | None = None,
        backend: JobBackend | None = None,
        run: Callable[..., object] | None = None,
        queue_path: str | Path | None = None,
        poll_interval_s: float = 0.25,
        limits: RunLimits | None = None,
    ) -> None:
        self.store = store
        self.limits = limits or RunLimits()
        self.slots = dict(slots) if slots else default_slots(max_concurrent or 1)
        self.queue = JobQueue(queue_path or store.workspace / QUEUE_FILE, slots=self.slots, per_user_cap=per_user_cap)
        if backend is None:
            from tl_core.jobs.thread_backend import ThreadBackend
            from tl_core.jobs.worker import ProcessBackend

            backend = ThreadBackend(run) if run is not None else ProcessBackend()
        self.backend = backend
        self.poll_interval_s = poll_interval_s
        self._stores: dict[str, RunStore] = {str(store.workspace): store}
        self._dispatch_lock = threading.RLock()
        self._final_progress: dict[str, LiveProgress] = {}
        self._starts = StartEstimator(store, self.slots)
        self._wake = threading.Event()
        self._closed = threading.Event()
        self.recovered = self.recover()
        busy = {entry.assigned_device for entry in self.queue.entries("running")}
        self.backend.prepare([device for device in self.slots if device not in busy])
        self._thread = threading.Thread(target=self._dispatch_loop, name="transferlab-dispatcher", daemon=True)
        self._thread.start()

    # -- what pages call -------------------------------------------------------------------------
    def submit(
        self, config: RunConfig, *, owner: str = "local", store: RunStore | None = None, device: str = ANY_DEVICE
    ) -> str:
        """Queue a run and return its id; it starts as soon as a device slot is free.

        Raises:
            QueueFullError: `owner` already has as many runs queued or running as allowed.
            RunLimitError: the config is over the server's limits (the message lists each one).
        """
        return self._submit(config, owner=owner, store=store or self.store, device=device)

    def resume(self, run_id: str, *, owner: str | None = None, store: RunStore | None = None) -> str:
        """Queue a new run that starts from an ended run's last checkpoint; returns the new run's id.

        The new run has the same config, the old run as `parent_run_id`, and trains its epochs again
        starting from the checkpoint's weights (a copy, so deleting the old run does no harm).

        Raises:
            TransferLabError: the run is still active, or it left no checkpoint.
        """
        store = store or self.store
        record = store.get(run_id)
        if record.status in ACTIVE_STATUSES:
            raise TransferLabError(f"Run {record.id} is {record.status}: only an ended run can be resumed.")
        checkpoint = store.run_dir(record.id) / CHECKPOINT_FILE
        if not checkpoint.is_file():
            raise TransferLabError(
                f"Run {record.id} left no checkpoint ({checkpoint} is missing; one is written when the first phase ends): start a new run instead."
            )
        config = RunConfig.from_dict(record.config)
        config = config.replace(name=f"{record.name} (resumed)")
        return self._submit(
            config, owner=owner or record.owner, store=store, device=ANY_DEVICE, parent=record.id, checkpoint=checkpoint
        )

    def submit_advisory(
        self,
        kind: JobKind,
        config: RunConfig,
        *,
        key: str,
        options: Mapping | None = None,
        owner: str = "local",
        store: RunStore | None = None,
        device: str = ANY_DEVICE,
    ) -> str:
        """Queue an advisory job (`advice`: the mode advisor; `cut-probe`: cut depths) measuring the planned run `config`; returns its id.

        Args:
            key: stands for the settings the result depends on; `AdvisoryStore.latest(kind, key)` finds the job again.
            options: the job's own settings (tl_core/advisor/advisory_job.py), e.g. `{"measure_throughput": False}`.
            owner: the user who asked; the job counts against their cap like a run.
            store: whose workspace keeps the job's record and result (default: the manager's store).

        Raises:
            QueueFullError, RunLimitError: as `submit`.
        """
        store = store or self.store
        self._admit(config, owner, store, dataclasses.replace(self.limits, max_epochs=None))  # it trains no epochs
        job_id = enqueue_advisory(
            self.queue, store.workspace, kind, config, key=key, options=options or {}, owner=owner, device=device
        )
        self.dispatch()
        return job_id

    def stop(self, run_id: str) -> bool:
        """Stop a running job after its current batch, or drop a queued one. False if not active here."""
        with self._dispatch_lock:
            entry = self.queue.get(run_id)
            if entry is None or entry.state == "done":
                return False
            if entry.state == "queued" and self.queue.remove(run_id):
                self._records(entry).finish(run_id, "stopped", error="Removed from the queue before it started.")
                self._wake.set()
                return True
            entry = self.queue.get(run_id)
            if entry is None or entry.state != "running" or entry.worker is None:
                return False
            self.backend.stop(self._job(entry))
            return True

    def kill(self, run_id: str) -> bool:
        """End a running job at once (a stuck job); the dispatcher then marks its run interrupted."""
        entry = self.queue.get(run_id)
        if entry is None or entry.state != "running" or entry.worker is None:
            return False
        self.backend.kill(self._job(entry))
        self._wake.set()
        return True

    def status(self, run_id: str) -> JobStatus | None:
        """The job's state and progress; None for a run never submitted to this queue."""
        entry = self.queue.get(run_id)
        if entry is None:
            return None
        common = {"owner": entry.owner, "device": entry.assigned_device, "kind": entry.kind}
        if entry.state == "queued":
            estimates = self._estimated_starts()
            progress = LiveProgress(status="queued", total_epochs=entry.planned_epochs, started_at=entry.enqueued_at)
            return JobStatus(run_id, "queued", self.queue.position(run_id), progress, estimates.get(run_id), **common)
        if entry.state == "running":
            progress = (self.backend.progress(self._job(entry)) if entry.worker else None) or LiveProgress(
                status="running"
            )
            # The worker records the outcome a moment before its process exits and frees the slot.
            ended = recorded_outcome(self._records(entry), entry.run_id)
            if ended is not None:
                return JobStatus(
                    run_id, "finished", None, dataclasses.replace(progress, status=ended), entry.started_at, **common
                )
            return JobStatus(run_id, "running", None, dataclasses.replace(progress), entry.started_at, **common)
        progress = self._final_progress.get(run_id) or self.backend.progress(self._job(entry)) or LiveProgress()
        return JobStatus(
            run_id,
            "finished",
            None,
            dataclasses.replace(progress, status=entry.outcome or progress.status),
            entry.started_at,
            **common,
        )

    def active_run_ids(self) -> list[str]:
        """Training runs running first (in start order), then queued in queue order; advisory jobs are no runs."""
        return self.active_job_ids((RUN_JOB,))

    def active_job_ids(self, kinds: tuple[str, ...] | None = None) -> list[str]:
        """Jobs of `kinds` (default: every kind) running first (in start order), then queued in queue order."""
        running = sorted(self.queue.entries("running"), key=lambda entry: entry.started_at or 0.0)
        return [
            entry.run_id for entry in [*running, *self.queue.entries("queued")] if kinds is None or entry.kind in kinds
        ]

    def wait(self, run_id: str, timeout_s: float = 600.0) -> JobStatus | None:
        """Block until a job finishes (tests and scripts; pages poll `status` instead)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status is None or status.state == "finished":
                return status
            time.sleep(0.05)
        raise TimeoutError(f"Run {run_id} did not finish within {timeout_s:.0f} s.")

    def shutdown(self, *, stop_jobs: bool = False, timeout_s: float = 5.0) -> None:
        """Stop dispatching (jobs keep running and a later manager finds them), or also stop them."""
        if stop_jobs:
            for run_id in self.active_job_ids():
                self.stop(run_id)
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout_s)
        locked = self._dispatch_lock.acquire(timeout=timeout_s)  # not while a dispatch still starts a job
        try:
            self.backend.close()
        finally:
            if locked:
                self._dispatch_lock.release()

    # -- recovery and dispatching ----------------------------------------------------------------
    def recover(self) -> list[str]:
        """Settle what an earlier server left: returns the runs marked interrupted or failed.

        Queued jobs stay queued. Running jobs whose worker still runs are watched again; those whose
        worker is gone are finished (interrupted, with the reason). A job claimed but never started
        goes back to its place in the queue.
        """
        settled = []
        with self._dispatch_lock:
            for entry in self.queue.entries("running"):
                if entry.worker is None:
                    self.queue.release(entry.run_id)
                    continue
                ended = self.backend.poll(self._job(entry))
                if ended is not None and self._settle(entry, ended) in ("interrupted", "failed"):
                    settled.append(entry.run_id)
            for entry in self.queue.entries("queued"):
                status = self._records(entry).status(entry.run_id) or "deleted"
                if status != "queued":  # deleted, or ended by hand while no server ran
                    self.queue.mark_done(entry.run_id, status)
        return settled

    def dispatch(self) -> None:
        """Finish jobs whose worker ended, then start queued jobs while device slots are free."""
        with self._dispatch_lock:
            for entry in self.queue.entries("running"):
                if entry.worker is None:
                    continue
                ended = self.backend.poll(self._job(entry))
                if ended is not None:
                    self._settle(entry, ended)
                else:
                    self._enforce_run_time(entry)
            while not self._closed.is_set() and (entry := self.queue.claim_next()) is not None:
                self._launch(entry)

    def _dispatch_loop(self) -> None:
        while not self._closed.is_set():
            try:
                self.dispatch()
            except (OSError, sqlite3.Error, TransferLabError) as exc:  # a full disk or locked file: try again next tick
                _log.warning("Job dispatcher: %s", exc)
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()

    def _submit(
        self,
        config: RunConfig,
        *,
        owner: str,
        store: RunStore,
        device: str,
        parent: str | None = None,
        checkpoint: Path | None = None,
    ) -> str:
        self._admit(config, owner, store, self.limits)
        run_id = enqueue_run(
            self.queue, store, config, owner=owner, device=device, parent=parent, checkpoint=checkpoint
        )
        self.dispatch()  # start it now when a slot is free, so the caller sees it running at once
        return run_id

    def _admit(self, config: RunConfig, owner: str, store: RunStore, limits: RunLimits) -> None:
        require_within_limits(config, limits)  # a resumed run too: the trainer may have lowered the limits since
        self.queue.check_cap(owner)  # before creating a record; enqueue checks again atomically
        self._stores.setdefault(str(store.workspace), store)

    def _launch(self, entry: QueueEntry) -> None:
        job = self._job(entry)
        try:
            worker = self.backend.start(job)
        except (OSError, TransferLabError, ValueError) as exc:
            error = f"Could not start a worker for this job: {exc}"
            records = self._records(entry)
            records.finish(entry.run_id, "failed", error=error)
            records.log(entry.run_id, f"error: {error}")
            self.queue.mark_done(entry.run_id, "failed")
            return
        self.queue.set_worker(entry.run_id, worker)

    def _settle(self, entry: QueueEntry, ended: JobExit) -> str:
        """Record a job whose worker ended (`endings.settle_exit`) and mark it done. Returns its status."""
        self._final_progress[entry.run_id] = self.backend.progress(self._job(entry)) or LiveProgress()
        status = settle_exit(self._records(entry), entry.run_id, ended)
        if status != "deleted":
            self._final_progress[entry.run_id].status = status
        self.queue.mark_done(entry.run_id, status)
        return status

    def _enforce_run_time(self, entry: QueueEntry) -> None:
        """Stop, then kill, a job past the run-time limit (`endings.enforce_run_time`)."""
        over_s = time_over_limit_s(self.limits, entry.started_at)
        if over_s is not None:
            enforce_run_time(self.backend, self._job(entry), self._records(entry), self.limits, over_s)

    def _job(self, entry: QueueEntry) -> Job:
        return Job(
            entry.run_id,
            entry.workspace,
            entry.assigned_device or entry.device,
            entry.resume_from,
            entry.worker,
            entry.kind,
        )

    def _records(self, entry: QueueEntry) -> JobRecords:
        return records_for(entry.kind, self._store(entry.workspace))

    def _store(self, workspace: str) -> RunStore:
        if workspace not in self._stores:
            self._stores[workspace] = RunStore(workspace)
        return self._stores[workspace]

    def _estimated_starts(self) -> dict[str, float | None]:
        running = [
            (entry, self.backend.progress(self._job(entry)) if entry.worker else None)
            for entry in self.queue.entries("running")
        ]
        return self._starts.estimate(running, self.queue.entries("queued"))
