"""A sweep as it is kept and followed: its record in `<workspace>/sweeps/<id>/sweep.json`, its runs as a leaderboard.

`tl_core.jobs.sweep` starts a sweep (checks the plan, records the split, queues the runs); everything here reads
that record and the run store, so whoever follows a sweep (the CLI waiting for it, the app's Runs page redrawing
every few seconds, a later visit) sees the same runs, and the first to see every run ended writes the final result.

Example:
    >>> record = read_sweep(store, sweep_id)
    >>> runs = sweep_runs(store, record)  # queued, running or ended, with accuracies once known
    >>> if all_ended(runs) and not record.finished:
    ...     finish_sweep(store, record, runs)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tl_core.data.types import SPLIT_NAMES
from tl_core.errors import RunNotFoundError, TransferLabError
from tl_core.events import ACTIVE_STATUSES
from tl_core.layout import NODE_FILE, SPLIT_FILE, SWEEP_RECORD_FILE, SWEEPS_FOLDER
from tl_core.runs.store import RunStore

DELETED = "deleted"  # a sweep's run that was deleted from the store since


@dataclass
class SweepRun:
    """One run of a sweep as the leaderboard shows it (the keys of the `--json` contract)."""

    run_id: str
    backbone: str
    mode: str
    status: str = "queued"
    test_accuracy: float | None = None
    val_accuracy: float | None = None
    elapsed_s: float | None = None
    node: str | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES


@dataclass
class SweepResult:
    """A finished sweep: its runs (best first), the best completed run and the wall time."""

    sweep_id: str
    backend: str
    runs: list[SweepRun]
    elapsed_s: float
    dataset_fingerprint: str = ""
    folder: Path | None = None
    # Runs whose split or data differ from the sweep's (a dataset changed mid-sweep; never expected otherwise).
    problems: list[str] = field(default_factory=list)

    @property
    def best_run_id(self) -> str | None:
        completed = [run for run in self.runs if run.status == "completed"]
        return leaderboard(completed)[0].run_id if completed else None

    def to_dict(self) -> dict:
        return {
            "sweep_id": self.sweep_id,
            "backend": self.backend,
            "runs": [asdict(run) for run in self.runs],
            "best_run_id": self.best_run_id,
            "elapsed_s": round(self.elapsed_s, 2),
        }


@dataclass(frozen=True)
class SweepRecord:
    """What `sweep.json` holds: the plan, the split every run shares, the runs' ids, and whether it has finished.

    Attributes:
        plan: the `SweepPlan` as a dict (source, backbones, modes, epochs, ...).
        split: split name -> the sorted relative paths of its examples, as the sweep scanned them.
        run_ids: every run queued for the sweep, in plan order (backbone by backbone, each mode in turn).
        started_at: unix time the sweep started; None in records written before it was kept.
        finished: the final result (best run, problems) has been written.
        data: the whole record as read, for `finish_sweep` to extend.
    """

    sweep_id: str
    backend: str
    plan: dict[str, Any]
    dataset_fingerprint: str
    split: dict[str, list[str]]
    run_ids: tuple[str, ...]
    started_at: float | None
    finished: bool
    folder: Path
    data: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def source(self) -> str:
        return str(self.plan.get("source", ""))


def leaderboard(runs: list[SweepRun]) -> list[SweepRun]:
    """Runs best first: completed before the rest, then by test accuracy, then validation accuracy, then the faster."""

    def key(run: SweepRun) -> tuple:
        accuracies = (-(run.test_accuracy or -1.0), -(run.val_accuracy or -1.0))
        return (run.status != "completed", *accuracies, run.elapsed_s or 0.0, run.run_id)

    return sorted(runs, key=key)


def all_ended(runs: list[SweepRun]) -> bool:
    """No run of the sweep is queued or training any more."""
    return not any(run.active for run in runs)


def sweep_folder(store: RunStore, sweep_id: str) -> Path:
    return store.workspace / SWEEPS_FOLDER / sweep_id


def write_record(folder: Path, record: dict[str, Any]) -> None:
    """Write `sweep.json` whole (a reader never sees half a record)."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{SWEEP_RECORD_FILE}.partial"
    partial.write_text(json.dumps(record, indent=1), encoding="utf-8")
    partial.replace(folder / SWEEP_RECORD_FILE)


def read_sweep(store: RunStore, sweep_id: str) -> SweepRecord:
    """The sweep's record.

    Raises:
        TransferLabError: no such sweep in this workspace, or its record cannot be read.
    """
    folder = sweep_folder(store, sweep_id)
    try:
        data = json.loads((folder / SWEEP_RECORD_FILE).read_text(encoding="utf-8"))
        # While running `runs` lists run ids; the final record lists the leaderboard's rows instead.
        run_ids = tuple(run if isinstance(run, str) else run["run_id"] for run in data.get("runs", []))
        return SweepRecord(
            sweep_id=str(data["sweep_id"]),
            backend=str(data.get("backend", "local")),
            plan=dict(data.get("plan") or {}),
            dataset_fingerprint=str(data.get("dataset_fingerprint") or ""),
            split={name: list(paths) for name, paths in (data.get("split") or {}).items()},
            run_ids=run_ids,
            started_at=data.get("started_at"),
            finished="best_run_id" in data,
            folder=folder,
            data=data,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TransferLabError(f"Sweep {sweep_id} has no readable record in {folder}: {exc}") from exc


def list_sweeps(store: RunStore) -> list[SweepRecord]:
    """Every sweep of this workspace with a readable record, newest first (ids start with their UTC start time)."""
    folder = store.workspace / SWEEPS_FOLDER
    records = []
    for path in sorted(folder.glob(f"*/{SWEEP_RECORD_FILE}"), reverse=True):
        try:
            records.append(read_sweep(store, path.parent.name))
        except TransferLabError:
            continue  # a sweep that failed before its record was complete
    return records


def sweep_runs(
    store: RunStore, record: SweepRecord, job_state: Callable[[str], str | None] | None = None
) -> list[SweepRun]:
    """The sweep's runs as they stand now, in plan order.

    Args:
        job_state: the job queue's state of a run (`queued`, `running`, `finished`, None when unknown to it), read
            for runs the store has not seen end. None: the store's status alone.
    """
    rows = {row["run_id"]: row for row in record.data.get("runs", []) if isinstance(row, dict)}
    runs = []
    for run_id in record.run_ids:
        run = stored_run(store, run_id)
        if run is None:  # deleted since: what the final record said of it, else only its id
            row = rows.get(run_id, {})
            run = SweepRun(run_id, str(row.get("backbone", "?")), str(row.get("mode", "?")), DELETED)
        elif run.active and job_state is not None and (state := job_state(run_id)) in ACTIVE_STATUSES:
            run.status = str(state)  # the queue knows a run started before its worker tells the store
        runs.append(run)
    return runs


def stored_run(store: RunStore, run_id: str) -> SweepRun | None:
    """The run as the store has it now (accuracies once ended, time so far while training); None when deleted."""
    try:
        record = store.get(run_id)
    except RunNotFoundError:
        return None
    metrics = record.metrics
    try:
        node = (store.run_dir(run_id) / NODE_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        node = None
    return SweepRun(
        run_id,
        record.backbone,
        record.mode,
        record.status,
        metrics.get("test_accuracy"),
        metrics.get("val_accuracy"),
        metrics.get("elapsed_s", record.elapsed_s) if record.started_at is not None else None,
        node,
    )


def finish_sweep(
    store: RunStore, record: SweepRecord, runs: list[SweepRun], elapsed_s: float | None = None
) -> SweepResult:
    """Rank the ended runs, check each trained on the sweep's data and split, and write the final record.

    Args:
        elapsed_s: the sweep's wall time; None: from its start to the last run's end, as the store recorded them.
    """
    if elapsed_s is None:
        ends = [stored.finished_at for run in runs if (stored := _record_or_none(store, run.run_id)) is not None]
        last = max((end for end in ends if end is not None), default=None)
        elapsed_s = max(0.0, (last or time.time()) - (record.started_at or last or time.time()))
    result = SweepResult(
        record.sweep_id,
        record.backend,
        leaderboard(runs),
        elapsed_s,
        record.dataset_fingerprint,
        record.folder,
        split_problems(runs, store, record),
    )
    write_record(record.folder, {**record.data, **result.to_dict(), "problems": result.problems})
    return result


def split_problems(runs: list[SweepRun], store: RunStore, record: SweepRecord) -> list[str]:
    """Runs that trained on other data or another split than the sweep recorded (a changed folder mid-sweep)."""
    problems = []
    for run in runs:
        stored = _record_or_none(store, run.run_id)
        if stored is None:
            continue
        if stored.dataset_fingerprint and stored.dataset_fingerprint != record.dataset_fingerprint:
            problems.append(f"run {run.run_id} saw other data (the dataset changed during the sweep)")
            continue
        try:
            split = json.loads((store.run_dir(run.run_id) / SPLIT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a run that failed before splitting has no split to compare
        if {name: sorted(split.get(name, [])) for name in SPLIT_NAMES} != record.split:
            problems.append(f"run {run.run_id} used another split than the sweep's")
    return problems


def _record_or_none(store: RunStore, run_id: str) -> Any:
    try:
        return store.get(run_id)
    except RunNotFoundError:
        return None
