"""The run store: every training run, its phases, its epochs and its folder, kept in a SQLite workspace.

One database file (`<workspace>/transferlab.db`, WAL mode) is shared by the Streamlit server thread,
background workers and CLI processes at once; each call opens its own short-lived connection, so
threads and processes never share a connection. Times are unix seconds (floats, UTC); run ids are
`YYYYMMDD-HHMMSS-xxxxxx` (UTC time + 6 random hex digits), so sorting ids sorts by creation time.

A run whose process died (killed, crashed machine) is marked `interrupted` the next time a store is
opened: the process id, host and process start time are stored, so a reused pid is not mistaken
for the original process. Its folder, log and checkpoints stay.

Example:
    >>> store = RunStore("workspace")
    >>> record = store.create_run(config={}, backbone="mobilenet_v2", weights="imagenet", mode="feature-extraction")
    >>> store.mark_running(record.id)
    >>> store.finish_run(record.id, "completed", metrics={"val_accuracy": 0.93})

The records it returns (`RunRecord`, `EpochRecord`, `PhaseRecord`) and their row conversion are in
`tl_core.runs.records`. `tl_core.runs.recorder.RunRecorder` writes a training run's events into a store;
`tl_core.runs.comparison` reads several runs side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import time
from pathlib import Path

from tl_core import sqlite_store
from tl_core.errors import RunNotFoundError, TransferLabError
from tl_core.events import FINISHED_STATUSES, RUN_STATUSES
from tl_core.layout import LOG_FILE, RUN_DATABASE_FILE
from tl_core.processes import process_is_alive, process_start_token
from tl_core.runs import schema as runs_schema
from tl_core.runs.records import EpochRecord, PhaseRecord, RunRecord, epoch_record, phase_record, run_record, to_json

WORKSPACE_ENV = "TRANSFERLAB_WORKSPACE"
DEFAULT_WORKSPACE = "workspace"
_RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RunStore:
    """Runs, epochs and run folders in one workspace; safe to use from several threads and processes.

    Args:
        workspace: folder holding `transferlab.db` and `runs/`; default `$TRANSFERLAB_WORKSPACE`,
            else `./workspace`. Created when missing.
    """

    def __init__(self, workspace: str | Path | None = None) -> None:
        chosen = workspace if workspace not in (None, "") else os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
        self.workspace: Path = Path(chosen).expanduser().resolve()
        (self.workspace / "runs").mkdir(parents=True, exist_ok=True)
        self.database_path = self.workspace / RUN_DATABASE_FILE
        self._migrate()
        self.recover_interrupted()

    # -- connections and schema ------------------------------------------------------------------
    def _connect(self, *, write: bool = False) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A fresh connection; with `write`, one IMMEDIATE transaction so read-modify-write is atomic.

        `synchronous = NORMAL` is SQLite's advice for WAL databases: a commit survives the process crashing
        (a killed worker's epochs stay recorded); only a power cut or an OS crash can lose the last few.
        """
        return sqlite_store.connect(
            self.database_path, write=write, pragmas=("PRAGMA foreign_keys = ON", "PRAGMA synchronous = NORMAL")
        )

    def kept_open(self) -> contextlib.AbstractContextManager[None]:
        """Keep the database open for a block of many short writes (a run's events): see `sqlite_store.kept_open`."""
        return sqlite_store.kept_open(self.database_path)

    def _migrate(self) -> None:
        sqlite_store.use_wal(self.database_path)
        with self._connect(write=True) as connection:
            runs_schema.upgrade(connection, self.database_path)

    # -- runs ------------------------------------------------------------------------------------
    def create_run(
        self,
        *,
        config: dict,
        backbone: str,
        weights: str,
        mode: str,
        name: str | None = None,
        dataset_fingerprint: str | None = None,
        dataset_stats: dict | None = None,
        parent_run_id: str | None = None,
        owner: str = "local",
        status: str = "queued",
        held_by_queue: bool = False,
    ) -> RunRecord:
        """Add a run (queued by default) and its folder; returns the stored record.

        The creating process is recorded, so a queued run whose process died shows as interrupted,
        unless `held_by_queue`: then a durable job queue, not that process, keeps the run alive.
        """
        _check_status(status, RUN_STATUSES)
        now = time.time()
        name = name or self._unused_name(f"{backbone} · {mode} · {time.strftime('%H:%M', time.localtime(now))}")
        pid = None if held_by_queue else os.getpid()
        while True:
            run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(3)
            try:
                with self._connect(write=True) as connection:
                    connection.execute(
                        "INSERT INTO runs (id, name, status, created_at, started_at, updated_at, config_json, dataset_fingerprint,"
                        " dataset_stats_json, backbone, weights, mode, metrics_json, pid, hostname, process_start, parent_run_id, owner)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?, ?, ?, ?)",
                        (
                            run_id,
                            name,
                            status,
                            now,
                            now if status == "running" else None,
                            now,
                            to_json(config),
                            dataset_fingerprint,
                            to_json(dataset_stats or {}),
                            backbone,
                            weights,
                            mode,
                            pid,
                            socket.gethostname(),
                            None if pid is None else process_start_token(pid),
                            parent_run_id,
                            owner,
                        ),
                    )
                break
            except sqlite3.IntegrityError:  # same second and same random suffix: draw again
                continue
        self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        return self.get(run_id)

    def _unused_name(self, name: str) -> str:
        """`name`, or `name #2`, `#3` ... when runs already carry it (two runs started in one minute)."""
        with self._connect() as connection:
            taken = {row[0] for row in connection.execute("SELECT name FROM runs WHERE name LIKE ?", (f"{name}%",))}
        count = 1
        candidate = name
        while candidate in taken:
            count += 1
            candidate = f"{name} #{count}"
        return candidate

    def mark_running(self, run_id: str, pid: int | None = None, *, held_by_queue: bool = False) -> None:
        """The run started in process `pid` (default: this one) on this host.

        With `held_by_queue` no process of this host trains it (a Ray node does): no pid is recorded, so the run
        is never taken for interrupted when this process ends; the job queue watches it, as in `create_run`.
        """
        pid = None if held_by_queue else os.getpid() if pid is None else pid
        now = time.time()
        self._update(
            run_id,
            "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?), finished_at = NULL, error = NULL,"
            " updated_at = ?, pid = ?, hostname = ?, process_start = ? WHERE id = ?",
            (now, now, pid, socket.gethostname(), None if pid is None else process_start_token(pid), run_id),
        )

    def finish_run(self, run_id: str, status: str, *, metrics: dict | None = None, error: str | None = None) -> None:
        """Record the final status (completed|stopped|failed|interrupted), merging `metrics` into the run's."""
        _check_status(status, FINISHED_STATUSES)
        now = time.time()
        with self._connect(write=True) as connection:
            merged = {**self._metrics(connection, run_id), **(metrics or {})}
            connection.execute(
                "UPDATE runs SET status = ?, finished_at = ?, updated_at = ?, metrics_json = ?, error = ? WHERE id = ?",
                (status, now, now, to_json(merged), error, run_id),
            )

    def update_metrics(self, run_id: str, metrics: dict) -> None:
        """Merge `metrics` into the run's metrics (new keys added, existing keys replaced)."""
        with self._connect(write=True) as connection:
            merged = {**self._metrics(connection, run_id), **metrics}
            connection.execute(
                "UPDATE runs SET metrics_json = ?, updated_at = ? WHERE id = ?", (to_json(merged), time.time(), run_id)
            )

    def update_dataset(self, run_id: str, fingerprint: str, stats: dict) -> None:
        """Record which dataset the run trains on (set once the data has been scanned)."""
        self._update(
            run_id,
            "UPDATE runs SET dataset_fingerprint = ?, dataset_stats_json = ?, updated_at = ? WHERE id = ?",
            (fingerprint, to_json(stats), time.time(), run_id),
        )

    def get(self, run_id: str) -> RunRecord:
        """The run with this id, or with this unique id prefix.

        Raises:
            RunNotFoundError: no run (or several runs) match.
        """
        with self._connect() as connection:
            row = connection.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None and run_id:
                pattern = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                rows = connection.execute(
                    "SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 6", (pattern,)
                ).fetchall()
                if len(rows) > 1:
                    raise RunNotFoundError(
                        f"Run id prefix {run_id!r} matches several runs ({', '.join(r['id'] for r in rows)}): give more characters."
                    )
                row = rows[0] if rows else None
        if row is None:
            raise RunNotFoundError(
                f"Run {run_id!r} not found in {self.workspace}: `python -m tl_core runs` lists the runs."
            )
        return run_record(row)

    def list_runs(self, *, status: str | None = None, owner: str | None = None) -> list[RunRecord]:
        """Runs newest first, optionally only those with this status and/or owner."""
        clauses, values = [], []
        for column, value in (("status", status), ("owner", owner)):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._connect() as connection:
            rows = connection.execute(f"SELECT * FROM runs{where} ORDER BY created_at DESC, id DESC", values).fetchall()
        return [run_record(row) for row in rows]

    def delete(self, run_id: str) -> None:
        """Remove a run: its row, epochs and folder. A running run must be stopped first."""
        record = self.get(run_id)
        if record.status == "running":
            with self._connect() as connection:
                row = connection.execute(
                    "SELECT pid, hostname, process_start FROM runs WHERE id = ?", (record.id,)
                ).fetchone()
            if (
                row["hostname"] != socket.gethostname()
                or row["pid"] is None
                or process_is_alive(row["pid"], row["process_start"])
            ):
                raise TransferLabError(
                    f"Run {record.id} is running (process {row['pid']} on {row['hostname']}): stop it first, then delete it."
                )
        folder = self.run_dir(record.id)
        if folder.exists():
            shutil.rmtree(folder)
        with self._connect(write=True) as connection:
            connection.execute("DELETE FROM epochs WHERE run_id = ?", (record.id,))
            connection.execute("DELETE FROM phases WHERE run_id = ?", (record.id,))
            connection.execute("DELETE FROM runs WHERE id = ?", (record.id,))

    def recover_interrupted(self) -> list[str]:
        """Mark runs of this host whose process is gone as `interrupted`; returns their ids.

        Runs started on another host (a shared workspace) are left alone: their process cannot be checked here.
        """
        host = socket.gethostname()
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT id, status, pid, process_start FROM runs WHERE status IN ('running', 'queued') AND hostname = ? AND pid IS NOT NULL",
                (host,),
            ).fetchall()
        recovered = []
        for row in rows:
            if process_is_alive(row["pid"], row["process_start"]):
                continue
            what = "running this run" if row["status"] == "running" else "that queued this run"
            error = (
                f"The process {what} stopped unexpectedly (process {row['pid']} on {host} is gone). "
                f"Its log and checkpoints are kept in {self.run_dir(row['id'])}."
            )
            with self._connect(write=True) as connection:
                changed = connection.execute(
                    "UPDATE runs SET status = 'interrupted', error = ?, finished_at = COALESCE(finished_at, updated_at)"
                    " WHERE id = ? AND status = ? AND pid = ?",
                    (error, row["id"], row["status"], row["pid"]),
                ).rowcount
            if changed:  # another store may have recovered it at the same moment
                recovered.append(row["id"])
                self.append_log(row["id"], f"interrupted: {error}")
        return recovered

    # -- epochs ----------------------------------------------------------------------------------
    def record_epoch(
        self,
        run_id: str,
        *,
        phase: str,
        epoch: int,
        phase_epoch: int,
        metrics: dict,
        learning_rate: float,
        seconds: float,
        is_best: bool,
    ) -> None:
        """Store one epoch; recording the same epoch again replaces it."""
        with self._connect(write=True) as connection:
            self._require(connection, run_id)
            connection.execute(
                "INSERT INTO epochs (run_id, phase, epoch, phase_epoch, metrics_json, learning_rate, seconds, is_best)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, epoch) DO UPDATE SET phase = excluded.phase,"
                " phase_epoch = excluded.phase_epoch, metrics_json = excluded.metrics_json, learning_rate = excluded.learning_rate,"
                " seconds = excluded.seconds, is_best = excluded.is_best",
                (
                    run_id,
                    phase,
                    int(epoch),
                    int(phase_epoch),
                    to_json(metrics),
                    float(learning_rate),
                    float(seconds),
                    int(bool(is_best)),
                ),
            )
            connection.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (time.time(), run_id))

    def record_phase(
        self,
        run_id: str,
        *,
        phase: str,
        first_epoch: int,
        epochs: int,
        learning_rate: float,
        description: str = "",
        open_blocks: tuple[str, ...] | list[str] = (),
    ) -> None:
        """Store the start of one phase; recording the same phase again replaces it."""
        with self._connect(write=True) as connection:
            self._require(connection, run_id)
            connection.execute(
                "INSERT INTO phases (run_id, phase, first_epoch, epochs, learning_rate, description, open_blocks_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, phase) DO UPDATE SET first_epoch = excluded.first_epoch,"
                " epochs = excluded.epochs, learning_rate = excluded.learning_rate, description = excluded.description,"
                " open_blocks_json = excluded.open_blocks_json",
                (
                    run_id,
                    phase,
                    int(first_epoch),
                    int(epochs),
                    float(learning_rate),
                    description,
                    to_json(list(open_blocks)),
                ),
            )

    def phases(self, run_id: str) -> list[PhaseRecord]:
        """The run's phases in the order they started (empty before training begins, and for runs older than the table)."""
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT * FROM phases WHERE run_id = ? ORDER BY first_epoch, rowid", (run_id,)
            ).fetchall()
        return [phase_record(row) for row in rows]

    def epochs(self, run_id: str) -> list[EpochRecord]:
        """The run's epochs in order (empty before the first epoch ends)."""
        with self._connect() as connection:
            rows = connection.execute("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,)).fetchall()
        return [epoch_record(row) for row in rows]

    # -- folders and logs ------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        """`<workspace>/runs/<run_id>/` (model.keras, labels.txt, evaluation.json, log.txt, checkpoints)."""
        if not _RUN_ID_PATTERN.match(run_id):
            raise RunNotFoundError(f"{run_id!r} is not a run id: `python -m tl_core runs` lists the runs.")
        return self.workspace / "runs" / run_id

    def append_log(self, run_id: str, text: str) -> None:
        """Append `text` to the run's log.txt as one UTC-timestamped entry (continuation lines indented)."""
        folder = self.run_dir(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        entry = f"{stamp} " + "\n    ".join(text.rstrip("\n").splitlines() or [""]) + "\n"
        # One write call on an O_APPEND file: lines from concurrent writers do not interleave.
        with open(folder / LOG_FILE, "a", encoding="utf-8") as log:
            log.write(entry)

    def read_log(self, run_id: str) -> str:
        """The run's whole log ('' when nothing was logged yet)."""
        path = self.run_dir(self.get(run_id).id) / LOG_FILE
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    # -- helpers ---------------------------------------------------------------------------------
    def _update(self, run_id: str, sql: str, values: tuple) -> None:
        with self._connect(write=True) as connection:
            if connection.execute(sql, values).rowcount == 0:
                raise self._not_found(run_id)

    def _metrics(self, connection: sqlite3.Connection, run_id: str) -> dict:
        return json.loads(self._require(connection, run_id)["metrics_json"])

    def _require(self, connection: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        row = connection.execute("SELECT metrics_json FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise self._not_found(run_id)
        return row

    def _not_found(self, run_id: str) -> RunNotFoundError:
        return RunNotFoundError(
            f"Run {run_id!r} not found in {self.workspace}: `python -m tl_core runs` lists the runs."
        )


def _check_status(status: str, allowed: tuple[str, ...]) -> None:
    if status not in allowed:
        raise ValueError(f"Run status {status!r} is not one of {', '.join(allowed)}.")
