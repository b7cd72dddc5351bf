"""What the job manager records about a job outside the queue, whatever its kind.

A training run is a record in the user's run store; an advisory job is a record file in its folder
(tl_core/jobs/advisory.py). Both answer the same four questions, so the manager never branches on the kind.
A job's record and its queue entry are made together (`enqueue_run`, `enqueue_advisory`): neither without the other.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from tl_core.config import RunConfig
from tl_core.errors import RunNotFoundError
from tl_core.jobs.advisory import AdvisoryStore
from tl_core.jobs.backend import RUN_JOB, JobKind
from tl_core.jobs.queue import JobQueue
from tl_core.layout import RESUME_WEIGHTS_FILE
from tl_core.runs.store import RunStore


class JobRecords(Protocol):
    """The records of one workspace's jobs of one kind."""

    def status(self, job_id: str) -> str | None:
        """The job's recorded status; None once its record is gone (a run deleted on the Runs page)."""

    def folder(self, job_id: str) -> Path:
        """The job's folder (progress, stop request, logs, the run-time limit marker)."""

    def mark_running(self, job_id: str) -> object:
        """The worker has started the job (a run also records the worker's pid)."""

    def finish(self, job_id: str, status: str, error: str | None = None) -> None:
        """Record the job's end with a finished status and, unless it completed, why."""

    def log(self, job_id: str, line: str) -> None:
        """Add a line to the job's log."""


class RunRecords:
    """A run store's runs as job records."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def status(self, job_id: str) -> str | None:
        try:
            return self.store.get(job_id).status
        except RunNotFoundError:
            return None

    def folder(self, job_id: str) -> Path:
        return self.store.run_dir(job_id)

    def mark_running(self, job_id: str) -> None:
        self.store.mark_running(job_id)

    def finish(self, job_id: str, status: str, error: str | None = None) -> None:
        self.store.finish_run(job_id, status, error=error)

    def log(self, job_id: str, line: str) -> None:
        self.store.append_log(job_id, line)


def records_for(kind: str, store: RunStore) -> JobRecords:
    """The records jobs of `kind` keep in `store`'s workspace."""
    return RunRecords(store) if kind == RUN_JOB else AdvisoryStore(store.workspace)


def enqueue_run(
    queue: JobQueue,
    store: RunStore,
    config: RunConfig,
    *,
    owner: str,
    device: str,
    parent: str | None = None,
    checkpoint: Path | None = None,
) -> str:
    """Create a queued run in `store` and queue it; a resumed run starts from a copy of `checkpoint`. Returns its id."""
    record = store.create_run(
        config=config.to_dict(),
        backbone=config.model.backbone,
        weights=config.model.weights,
        mode=config.train.mode,
        name=config.name,
        status="queued",
        owner=owner,
        parent_run_id=parent,
        held_by_queue=True,
    )
    resume_from = None
    try:
        if checkpoint is not None:
            resume_from = str(shutil.copyfile(checkpoint, store.run_dir(record.id) / RESUME_WEIGHTS_FILE))
        queue.enqueue(
            record.id, owner, config.to_dict(), workspace=store.workspace, device=device, resume_from=resume_from
        )
    except BaseException:
        store.delete(record.id)  # no orphan queued run without a queue entry
        raise
    return record.id


def enqueue_advisory(
    queue: JobQueue,
    workspace: Path,
    kind: JobKind,
    config: RunConfig,
    *,
    key: str,
    options: Mapping[str, Any],
    owner: str,
    device: str,
) -> str:
    """Create an advisory job's record (request: the planned run's config and the job's options) and queue it. Returns its id."""
    request = {"config": config.to_dict(), "options": dict(options)}
    records = AdvisoryStore(workspace)
    record = records.create(kind, owner=owner, request=request, key=key)
    try:
        queue.enqueue(record.id, owner, request, workspace=workspace, device=device, kind=kind)
    except BaseException:
        records.finish(record.id, "failed", error="It could not be queued.")  # never left `queued` with no queue entry
        raise
    return record.id
