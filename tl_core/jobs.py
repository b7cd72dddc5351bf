"""Background training jobs: a FIFO queue and workers, owned by the engine, not by the UI.

Streamlit unwinds its script thread on every rerun, so training never runs there. The app keeps one
`JobManager` per server (`st.cache_resource`); pages submit configs, read `status()` and call `stop()`.
Reloading or reopening the page finds the same job because state lives here and in the run store.

The manager runs at most `max_concurrent` jobs at once (one per device by default) on a backend;
`ThreadBackend` runs them in this process. A process or remote backend can replace it without
touching the pages.

Example:
    >>> manager = JobManager(RunStore("workspace"))
    >>> run_id = manager.submit(config)
    >>> manager.status(run_id).state
    'queued'
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from tl_core.config import RunConfig
from tl_core.errors import TransferLabError
from tl_core.events import BatchProgress, EpochEnded, PhaseStarted, RunFinished, RunStarted, TrainingEvent
from tl_core.runs import RunStore
from tl_core.train import StopToken

JobState = Literal["queued", "running", "finished"]


@dataclass
class LiveProgress:
    """What a page needs to draw a progress bar with an ETA; updated by the training thread."""

    phase: str = ""
    phase_epochs: int = 0
    epoch: int = 0
    phase_epoch: int = 0
    total_epochs: int = 0
    batch: int = 0
    batches_per_epoch: int | None = None
    started_at: float = field(default_factory=time.time)
    phase_starts: list[tuple[str, int]] = field(default_factory=list)  # (phase, first global epoch)
    last_metrics: dict[str, float] = field(default_factory=dict)
    status: str = "queued"

    @property
    def fraction_done(self) -> float:
        if not self.total_epochs:
            return 0.0
        within = self.batch / self.batches_per_epoch if self.batches_per_epoch else 0.0
        return min(1.0, (self.epoch + min(within, 1.0)) / self.total_epochs)

    @property
    def eta_s(self) -> float | None:
        done = self.fraction_done
        if done <= 0.02:
            return None
        elapsed = time.time() - self.started_at
        return elapsed * (1 - done) / done


@dataclass(frozen=True)
class JobStatus:
    run_id: str
    state: JobState
    queue_position: int | None  # 1 = next to start
    progress: LiveProgress


class JobBackend(Protocol):
    """Runs one job function somewhere; `ThreadBackend` runs it in a daemon thread of this process."""

    def start(self, name: str, target: Callable[[], None]) -> None: ...


class ThreadBackend:
    def start(self, name: str, target: Callable[[], None]) -> None:
        threading.Thread(target=target, name=name, daemon=True).start()


@dataclass
class _Job:
    run_id: str
    config: RunConfig
    stop: StopToken = field(default_factory=StopToken)
    progress: LiveProgress = field(default_factory=LiveProgress)


class _ProgressListener:
    """Keeps a job's `LiveProgress` current from training events (cheap: no I/O)."""

    def __init__(self, job: _Job) -> None:
        self.job = job

    def on_event(self, event: TrainingEvent) -> None:
        progress = self.job.progress
        if isinstance(event, RunStarted):
            progress.status = "running"
            progress.started_at = event.timestamp
        elif isinstance(event, PhaseStarted):
            progress.phase, progress.phase_epochs, progress.phase_epoch, progress.batch = event.phase, event.epochs, 0, 0
            progress.phase_starts.append((event.phase, progress.epoch + 1))
            progress.total_epochs = progress.epoch + event.epochs + self._later_phase_epochs(event.phase)
        elif isinstance(event, BatchProgress):
            progress.batch, progress.batches_per_epoch = event.batch, event.batches_per_epoch
        elif isinstance(event, EpochEnded):
            progress.epoch, progress.phase_epoch, progress.batch = event.epoch, event.phase_epoch, 0
            progress.last_metrics = dict(event.metrics)
        elif isinstance(event, RunFinished):
            progress.status = event.status

    def _later_phase_epochs(self, phase: str) -> int:
        train = self.job.config.train
        if phase != "head" or train.mode == "feature-extraction":
            return 0
        if train.mode == "progressive":  # an upper bound: progressive may stop at a plateau sooner
            return train.stage_epochs * (train.max_stages or 4)
        return train.fine_tune_epochs


class JobManager:
    """Queue and run training jobs in the background; one manager per server process.

    Args:
        store: the run store jobs record into.
        max_concurrent: jobs running at once (one per device: training two models on one CPU or GPU
            only makes both slower).
        backend: where jobs run.
        run: the function that runs one experiment (the real `run_experiment` unless a test swaps it).
    """

    def __init__(self, store: RunStore, *, max_concurrent: int = 1, backend: JobBackend | None = None, run: Callable[..., object] | None = None) -> None:
        self.store = store
        self.max_concurrent = max_concurrent
        self.backend = backend or ThreadBackend()
        self._run = run
        self._lock = threading.Lock()
        self._queue: collections.deque[_Job] = collections.deque()
        self._running: dict[str, _Job] = {}
        self._finished: dict[str, _Job] = {}

    def submit(self, config: RunConfig) -> str:
        """Queue a run and return its id; it starts as soon as a slot is free."""
        record = self.store.create_run(
            config=config.to_dict(), backbone=config.model.backbone, weights=config.model.weights,
            mode=config.train.mode, name=config.name, status="queued",
        )
        with self._lock:
            self._queue.append(_Job(record.id, config))
        self._start_ready_jobs()
        return record.id

    def stop(self, run_id: str) -> bool:
        """Ask a running job to stop after its current batch, or drop a queued one. False if unknown."""
        with self._lock:
            if run_id in self._running:
                self._running[run_id].stop.request_stop()
                return True
            for job in list(self._queue):
                if job.run_id == run_id:
                    self._queue.remove(job)
                    self._finished[run_id] = job
                    job.progress.status = "stopped"
                    self.store.finish_run(run_id, "stopped", error="Removed from the queue before it started.")
                    return True
        return False

    def status(self, run_id: str) -> JobStatus | None:
        with self._lock:
            if run_id in self._running:
                return JobStatus(run_id, "running", None, self._running[run_id].progress)
            for position, job in enumerate(self._queue, start=1):
                if job.run_id == run_id:
                    return JobStatus(run_id, "queued", position, job.progress)
            if run_id in self._finished:
                return JobStatus(run_id, "finished", None, self._finished[run_id].progress)
        return None

    def active_run_ids(self) -> list[str]:
        """Running first, then queued in order."""
        with self._lock:
            return list(self._running) + [job.run_id for job in self._queue]

    def wait(self, run_id: str, timeout_s: float = 600.0) -> JobStatus | None:
        """Block until a job finishes (tests and scripts; pages poll `status` instead)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status is None or status.state == "finished":
                return status
            time.sleep(0.05)
        raise TimeoutError(f"Run {run_id} did not finish within {timeout_s:.0f} s.")

    def _start_ready_jobs(self) -> None:
        with self._lock:
            ready = []
            while self._queue and len(self._running) < self.max_concurrent:
                job = self._queue.popleft()
                self._running[job.run_id] = job
                ready.append(job)
        for job in ready:
            self.backend.start(f"transferlab-{job.run_id}", lambda job=job: self._execute(job))

    def _execute(self, job: _Job) -> None:
        try:
            run = self._run
            if run is None:
                from tl_core.runner import run_experiment as run
            run(job.config, store=self.store, listener=_ProgressListener(job), stop=job.stop, run_id=job.run_id)
        except TransferLabError as exc:  # bad data found before training: the queued run says why
            job.progress.status = "failed"
            self.store.finish_run(job.run_id, "failed", error=str(exc))
            self.store.append_log(job.run_id, f"error: {exc}")
        except BaseException as exc:  # noqa: BLE001 - a worker must never die silently
            job.progress.status = "failed"
            self.store.finish_run(job.run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._running.pop(job.run_id, None)
                self._finished[job.run_id] = job
            self._start_ready_jobs()
