"""What the run store hands back, and how its rows become it: `RunRecord`, `EpochRecord`, `PhaseRecord`.

The records are plain frozen dataclasses, so pages, comparisons and tests can use them without opening a
store. `run_record`, `epoch_record` and `phase_record` read one SQLite row each (the `*_json` columns
parsed); `to_json` is how every such column is written. `tl_core.runs.store.RunStore` reads and writes them.

Example:
    >>> row = connection.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    >>> run_record(row).status
    'completed'
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunRecord:
    """One run as stored: what was asked (config) and what happened (status, metrics, error)."""

    id: str
    name: str
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    config: dict
    dataset_fingerprint: str | None
    dataset_stats: dict
    backbone: str
    weights: str
    mode: str
    metrics: dict
    error: str | None
    parent_run_id: str | None
    owner: str

    @property
    def modality(self) -> str:
        """What the run was trained on: its DataConfig's modality (runs from before text existed are image runs)."""
        return str((self.config.get("data") or {}).get("modality", "image"))

    @property
    def elapsed_s(self) -> float:
        """Seconds from start to finish; up to now while running; 0 before it starts."""
        if self.started_at is None:
            return 0.0
        end = time.time() if self.status == "running" else (self.finished_at or self.started_at)
        return max(0.0, end - self.started_at)


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch; `epoch` counts across phases, `phase_epoch` restarts in each phase."""

    run_id: str
    phase: str
    epoch: int
    phase_epoch: int
    metrics: dict
    learning_rate: float
    seconds: float
    is_best: bool


@dataclass(frozen=True)
class PhaseRecord:
    """One training phase as it started: `first_epoch` is its first global epoch; `open_blocks` the
    backbone blocks training in a progressive stage (top block last), empty for other phases."""

    run_id: str
    phase: str
    first_epoch: int
    epochs: int
    learning_rate: float
    description: str
    open_blocks: tuple[str, ...]


def to_json(value: Any) -> str:
    """`value` as the store writes it: JSON, with numpy scalars as numbers and anything else unknown (paths, ...) as text."""

    def fallback(item: Any) -> Any:
        return item.item() if hasattr(item, "item") else str(item)  # numpy scalars, paths, ...

    return json.dumps(value, default=fallback)


def run_record(row: sqlite3.Row) -> RunRecord:
    """A `runs` row as a `RunRecord`."""
    return RunRecord(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        config=json.loads(row["config_json"]),
        dataset_fingerprint=row["dataset_fingerprint"],
        dataset_stats=json.loads(row["dataset_stats_json"]),
        backbone=row["backbone"],
        weights=row["weights"],
        mode=row["mode"],
        metrics=json.loads(row["metrics_json"]),
        error=row["error"],
        parent_run_id=row["parent_run_id"],
        owner=row["owner"],
    )


def epoch_record(row: sqlite3.Row) -> EpochRecord:
    """An `epochs` row as an `EpochRecord`."""
    return EpochRecord(
        row["run_id"],
        row["phase"],
        row["epoch"],
        row["phase_epoch"],
        json.loads(row["metrics_json"]),
        row["learning_rate"],
        row["seconds"],
        bool(row["is_best"]),
    )


def phase_record(row: sqlite3.Row) -> PhaseRecord:
    """A `phases` row as a `PhaseRecord`."""
    return PhaseRecord(
        row["run_id"],
        row["phase"],
        row["first_epoch"],
        row["epochs"],
        row["learning_rate"],
        row["description"],
        tuple(json.loads(row["open_blocks_json"])),
    )
