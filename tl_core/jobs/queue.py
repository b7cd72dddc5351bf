"""A durable FIFO queue of jobs in SQLite: fair across users, at most K jobs per device.

The queue lives in its own file (`<workspace>/queue.sqlite`, WAL mode) beside the run store, so a
server restart finds every queued job still queued. Each call opens its own short-lived connection
(threads and processes never share one); claiming the next job is one IMMEDIATE transaction, so two
dispatchers never start the same job.

A job asks for a device (`auto`: any) and holds one of that device's slots while it runs. Jobs start
in the order they were queued; a job whose device is full does not hold back a later job that can use
a free device. Each user may have at most `per_user_cap` jobs queued or running (the meaning of
`ServerSettings.max_queued_per_user`). An entry names the workspace of its run, so one queue can
serve the runs of several workspaces (one per user on a workshop server).

Each entry has a kind (tl_core/jobs/backend.py): a training `run`, or an advisory job (`advice`,
`cut-probe`) that shares the slots, the order and the cap. A queue file from before kinds existed gains
the column on opening, its jobs all runs.

Example:
    >>> queue = JobQueue.for_workspace("workspace", slots={"cpu": 1})
    >>> queue.enqueue("run-a", owner="alice", config={"train": {"epochs": 5}})
    >>> queue.claim_next().run_id
    'run-a'
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tl_core import sqlite_store
from tl_core.errors import TransferLabError
from tl_core.jobs.backend import RUN_JOB, JobKind
from tl_core.layout import QUEUE_FILE

ANY_DEVICE = "auto"
# Progressive mode stops at a plateau or after `max_stages`; None means "down to the first block",
# which depends on the backbone: 4 stages is the same planning guess the progress bar uses.
PROGRESSIVE_STAGES_GUESS = 4

EntryState = Literal["queued", "running", "done"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL,
    workspace TEXT NOT NULL, device TEXT NOT NULL, assigned_device TEXT, state TEXT NOT NULL, planned_epochs INTEGER NOT NULL,
    config_json TEXT NOT NULL, enqueued_at REAL NOT NULL, started_at REAL, finished_at REAL,
    worker TEXT, resume_from TEXT, outcome TEXT, kind TEXT NOT NULL DEFAULT 'run')"""
# Columns added since the first queue files, each with its default for the jobs already in them.
_ADDED_COLUMNS = {"kind": "TEXT NOT NULL DEFAULT 'run'"}


class QueueFullError(TransferLabError):
    """A user already has as many jobs waiting as the queue allows."""


@dataclass(frozen=True)
class QueueEntry:
    """One job in the queue; `seq` orders it (first in, first out)."""

    seq: int
    run_id: str  # the run's id, or the advisory job's
    owner: str
    workspace: str  # the run store (workspace folder) the run belongs to
    device: str  # what was asked: `auto` or a device name such as `gpu:0`
    assigned_device: str | None  # the device it runs on, once claimed
    state: EntryState
    planned_epochs: int
    config: dict
    enqueued_at: float
    started_at: float | None
    finished_at: float | None
    worker: str | None  # the backend's reference to the process running it (e.g. host:pid:start)
    resume_from: str | None  # a checkpoint to start from (see JobManager.resume)
    outcome: str | None  # the run's final status once done
    kind: JobKind = RUN_JOB


def planned_epochs(config: Mapping) -> int:
    """Epochs a run config asks for over all its phases (progressive: an upper-bound guess)."""
    train = config.get("train") or {}
    epochs = int(train.get("epochs", 10))
    mode = train.get("mode", "feature-extraction")
    if mode in ("fine-tune", "full"):
        epochs += int(train.get("fine_tune_epochs", 5))
    elif mode == "progressive":
        epochs += int(train.get("stage_epochs", 2)) * int(train.get("max_stages") or PROGRESSIVE_STAGES_GUESS)
    return epochs


class JobQueue:
    """The durable job queue of one workspace.

    Args:
        path: the SQLite file (created when missing).
        slots: jobs allowed at once per device, e.g. `{"gpu:0": 1, "gpu:1": 1}` or `{"cpu": 1}`.
        per_user_cap: most jobs one user may have queued or running; None for no limit.
    """

    def __init__(self, path: str | Path, *, slots: Mapping[str, int], per_user_cap: int | None = None) -> None:
        if not slots or any(count < 1 for count in slots.values()):
            raise ValueError(f"slots={dict(slots)} must name at least one device, each with 1 or more slots.")
        if per_user_cap is not None and per_user_cap < 1:
            raise ValueError(f"per_user_cap={per_user_cap} must be at least 1.")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.slots = dict(slots)
        self.per_user_cap = per_user_cap
        sqlite_store.use_wal(self.path)
        with self._connect() as connection:
            connection.execute(_SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Bring a queue file written by an older TransferLab up to date (checked again under the write lock: another process may be at it)."""
        for attempt in ("read", "write"):
            with self._connect(write=attempt == "write") as connection:
                present = {row["name"] for row in connection.execute("PRAGMA table_info(jobs)")}
                missing = {name: column for name, column in _ADDED_COLUMNS.items() if name not in present}
                if not missing:
                    return
                if attempt == "write":
                    for name, column in missing.items():
                        connection.execute(f"ALTER TABLE jobs ADD COLUMN {name} {column}")

    @classmethod
    def for_workspace(cls, workspace: str | Path, **options) -> JobQueue:
        """The queue file of a workspace (`<workspace>/queue.sqlite`)."""
        return cls(Path(workspace) / QUEUE_FILE, **options)

    def _connect(self, *, write: bool = False) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite_store.connect(self.path, write=write)  # write: read-check-write is atomic across processes

    # -- changing the queue ----------------------------------------------------------------------
    def enqueue(
        self,
        run_id: str,
        owner: str,
        config: Mapping,
        *,
        workspace: str | Path | None = None,
        device: str = ANY_DEVICE,
        resume_from: str | None = None,
        kind: JobKind = RUN_JOB,
    ) -> QueueEntry:
        """Add a job at the end of the queue.

        Args:
            run_id: the (queued) run in the run store, or the advisory job's id.
            owner: the user who asked; the per-user cap counts by owner.
            config: the run's config (`RunConfig.to_dict()`); a run's epochs feed the start-time estimates.
            workspace: the run store's folder; default the queue file's folder.
            device: `auto` (any free device) or one device of `slots`.
            resume_from: a checkpoint the worker starts from.
            kind: `run`, or an advisory job's kind (no epochs).

        Raises:
            QueueFullError: `owner` already has `per_user_cap` jobs queued or running.
            ValueError: `device` is not one of the queue's devices.
        """
        if device != ANY_DEVICE and device not in self.slots:
            raise ValueError(
                f"device={device!r} is not one of this server's devices ({', '.join(self.slots)}); use 'auto' for any."
            )
        with self._connect(write=True) as connection:
            self._check_cap(connection, owner)
            connection.execute(
                "INSERT INTO jobs (run_id, owner, workspace, device, state, planned_epochs, config_json, enqueued_at, resume_from, kind)"
                " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (
                    run_id,
                    owner,
                    str(Path(workspace or self.path.parent).resolve()),
                    device,
                    planned_epochs(config) if kind == RUN_JOB else 0,
                    json.dumps(dict(config)),
                    time.time(),
                    resume_from,
                    kind,
                ),
            )
        return self._require(run_id)

    def check_cap(self, owner: str) -> None:
        """Raise `QueueFullError` (naming the cap and the count) when `owner` may not queue another job."""
        with self._connect() as connection:
            self._check_cap(connection, owner)

    def _check_cap(self, connection: sqlite3.Connection, owner: str) -> None:
        active = connection.execute(
            "SELECT COUNT(*) FROM jobs WHERE owner = ? AND state != 'done'", (owner,)
        ).fetchone()[0]
        if self.per_user_cap is not None and active >= self.per_user_cap:
            raise QueueFullError(
                f"{owner} already has {active} runs queued or training, the most one user may have ({self.per_user_cap}): "
                "wait until one finishes, or stop one, then queue this run again."
            )

    def claim_next(self) -> QueueEntry | None:
        """Atomically take the oldest waiting job that has a free device slot; None when none can start."""
        with self._connect(write=True) as connection:
            busy = dict(
                connection.execute(
                    "SELECT assigned_device, COUNT(*) FROM jobs WHERE state = 'running' GROUP BY assigned_device"
                ).fetchall()
            )
            free = [device for device, count in self.slots.items() if busy.get(device, 0) < count]
            if not free:
                return None
            for row in connection.execute(
                "SELECT run_id, device FROM jobs WHERE state = 'queued' ORDER BY seq"
            ).fetchall():
                usable = [d for d in free if row["device"] in (ANY_DEVICE, d)]
                if not usable:
                    continue
                # The least busy free device: jobs spread over GPUs instead of stacking on the first.
                device = min(usable, key=lambda d: busy.get(d, 0) / self.slots[d])
                connection.execute(
                    "UPDATE jobs SET state = 'running', assigned_device = ?, started_at = ? WHERE run_id = ?",
                    (device, time.time(), row["run_id"]),
                )
                claimed = row["run_id"]
                break
            else:
                return None
        return self._require(claimed)

    def release(self, run_id: str) -> None:
        """Put a claimed job that never started back in its place in the queue."""
        with self._connect(write=True) as connection:
            connection.execute(
                "UPDATE jobs SET state = 'queued', assigned_device = NULL, started_at = NULL, worker = NULL WHERE run_id = ? AND state = 'running'",
                (run_id,),
            )

    def set_worker(self, run_id: str, worker: str) -> None:
        """Record which process (backend reference) runs a claimed job."""
        with self._connect(write=True) as connection:
            connection.execute("UPDATE jobs SET worker = ? WHERE run_id = ?", (worker, run_id))

    def mark_done(self, run_id: str, outcome: str) -> None:
        """The job ended (its run's final status is `outcome`); its device slot is free again."""
        with self._connect(write=True) as connection:
            connection.execute(
                "UPDATE jobs SET state = 'done', outcome = ?, finished_at = ? WHERE run_id = ? AND state != 'done'",
                (outcome, time.time(), run_id),
            )

    def remove(self, run_id: str) -> bool:
        """Cancel a waiting job; False when it is not waiting (already started, done or unknown)."""
        with self._connect(write=True) as connection:
            changed = connection.execute(
                "UPDATE jobs SET state = 'done', outcome = 'stopped', finished_at = ? WHERE run_id = ? AND state = 'queued'",
                (time.time(), run_id),
            ).rowcount
        return bool(changed)

    # -- reading the queue -----------------------------------------------------------------------
    def get(self, run_id: str) -> QueueEntry | None:
        with self._connect() as connection:
            row = connection.execute("SELECT * FROM jobs WHERE run_id = ?", (run_id,)).fetchone()
        return _entry(row) if row else None

    def entries(self, state: EntryState | None = None) -> list[QueueEntry]:
        """Jobs in queue order (oldest first), optionally only those in `state`."""
        where, values = (" WHERE state = ?", (state,)) if state else ("", ())
        with self._connect() as connection:
            rows = connection.execute(f"SELECT * FROM jobs{where} ORDER BY seq", values).fetchall()
        return [_entry(row) for row in rows]

    def position(self, run_id: str) -> int | None:
        """1 for the next job to start, 2 for the one after ...; None when the job is not waiting."""
        waiting = [entry.run_id for entry in self.entries("queued")]
        return waiting.index(run_id) + 1 if run_id in waiting else None

    def active_count(self, owner: str) -> int:
        """How many jobs `owner` has queued or running (what the per-user cap counts)."""
        with self._connect() as connection:
            return connection.execute(
                "SELECT COUNT(*) FROM jobs WHERE owner = ? AND state != 'done'", (owner,)
            ).fetchone()[0]

    def _require(self, run_id: str) -> QueueEntry:
        entry = self.get(run_id)
        if entry is None:
            raise KeyError(f"Run {run_id} is not in the queue {self.path}.")
        return entry


def _entry(row: sqlite3.Row) -> QueueEntry:
    return QueueEntry(
        seq=row["seq"],
        run_id=row["run_id"],
        owner=row["owner"],
        workspace=row["workspace"],
        device=row["device"],
        assigned_device=row["assigned_device"],
        state=row["state"],
        planned_epochs=row["planned_epochs"],
        config=json.loads(row["config_json"]),
        enqueued_at=row["enqueued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        worker=row["worker"],
        resume_from=row["resume_from"],
        outcome=row["outcome"],
        kind=row["kind"],
    )


def default_slots(jobs_per_device: int = 1) -> dict[str, int]:
    """`jobs_per_device` slots on each visible GPU (`gpu:<index>`), else on the CPU (`cpu`)."""
    return {device: jobs_per_device for device in detect_devices()}


def detect_devices() -> list[str]:
    """Visible GPUs as `gpu:<CUDA index>` (from CUDA_VISIBLE_DEVICES or the NVIDIA driver), else `["cpu"]`.

    Read without importing TensorFlow, so the server starts fast and never holds GPU memory.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [item.strip() for item in visible.split(",") if item.strip()]
        ids = ids[: ids.index("-1")] if "-1" in ids else ids  # CUDA ignores everything from an invalid id on
    else:
        try:
            ids = [str(index) for index in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
        except OSError:
            ids = []
    return [f"gpu:{item}" for item in ids] or ["cpu"]
