"""Run records as tables (all runs, leaderboard), transfer verdicts and lineage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tl_core.config import RUN_WEIGHTS_PREFIX
from tl_core.runs.records import RunRecord
from ui.text import safe_label, user_messages

PERCENT = "%.1f%%"
# Said in the app's words (the engine's message names CLI flags).
NEGATIVE_TRANSFER_ADVICE = (
    "Try another backbone, an earlier cut layer (Model page: measure cut depths, then pick one), "
    "or fine-tuning deeper (mode full or progressive)."
)


@dataclass(frozen=True)
class TransferVerdict:
    """How a pretrained run did against its from-scratch baseline (`--compare-scratch`).

    `margin` is scratch accuracy minus pretrained accuracy: positive means negative transfer.
    """

    negative: bool
    margin: float
    pretrained_accuracy: float | None
    scratch_accuracy: float | None
    scratch_run_id: str | None

    @property
    def short(self) -> str:
        """For a table cell: `negative (-4.0 pts)` or `helps (+12.5 pts)`."""
        points = 100 * -self.margin
        return f"{'⚠ negative' if self.negative else '✓ helps'} ({points:+.1f} pts)"


def transfer_verdict(record: RunRecord, scratch: RunRecord | None = None) -> TransferVerdict | None:
    """The verdict stored in the run's metrics, or None when no baseline was compared (or it failed).

    Args:
        record: the pretrained run.
        scratch: its baseline run, when it still exists (its accuracy is read from it; else from the metrics).
    """
    metrics = record.metrics
    if metrics.get("negative_transfer") is None or not isinstance(
        metrics.get("negative_transfer_margin"), (int, float)
    ):
        return None
    margin = float(metrics["negative_transfer_margin"])
    pretrained = metrics.get("evaluation_accuracy", metrics.get("test_accuracy"))
    scratch_accuracy = scratch.metrics.get("evaluation_accuracy") if scratch is not None else None
    if scratch_accuracy is None:
        scratch_accuracy = metrics.get("scratch_test_accuracy")
    if scratch_accuracy is None and isinstance(pretrained, (int, float)):
        scratch_accuracy = pretrained + margin
    return TransferVerdict(
        bool(metrics["negative_transfer"]), margin, pretrained, scratch_accuracy, metrics.get("scratch_run_id")
    )


def parent_run_id(record: RunRecord) -> str | None:
    """The run whose backbone this one started from: recorded lineage, else read from the `run:ID` weights."""
    if record.parent_run_id:
        return record.parent_run_id
    return record.weights[len(RUN_WEIGHTS_PREFIX) :] if record.weights.startswith(RUN_WEIGHTS_PREFIX) else None


def child_runs(record: RunRecord, records: Sequence[RunRecord]) -> list[RunRecord]:
    """Runs that started from `record`'s backbone, newest first."""
    return [other for other in records if other.id != record.id and parent_run_id(other) == record.id]


def dataset_name(record: RunRecord) -> str:
    """The dataset folder's name, from the scan when there was one, else from the config."""
    source = record.dataset_stats.get("source") or record.config.get("data", {}).get("source") or ""
    return Path(str(source)).name


def _percent(value: object) -> float | None:
    return round(100 * float(value), 1) if isinstance(value, (int, float)) else None


def runs_frame(records: Sequence[RunRecord], sweeps: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per run, newest first: what it trained, how far it got, how well it did, whether pretraining helped,
    and the sweep it belongs to (`sweeps`: run id -> sweep id).

    Run and dataset names are shown through `safe_label` (no bidi control or line break acts on the table).
    """
    names = {record.id: safe_label(record.name) for record in records}
    rows = [
        {
            "name": safe_label(record.name),
            "backbone": safe_label(record.backbone),
            "mode": record.mode,
            "data": safe_label(dataset_name(record)),
            "epochs": int(record.metrics.get("epochs_run", 0) or 0),
            "val accuracy": _percent(record.metrics.get("val_accuracy")),
            "test accuracy": _percent(record.metrics.get("test_accuracy")),
            "time (s)": round(float(record.metrics.get("elapsed_s") or record.elapsed_s), 1),
            "transfer": verdict.short if (verdict := transfer_verdict(record)) else "",
            "from run": names.get(parent, safe_label(parent)) if (parent := parent_run_id(record)) else "",
            "sweep": (sweeps or {}).get(record.id, ""),
            "status": record.status,
            "id": record.id,
        }
        for record in records
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "name",
            "backbone",
            "mode",
            "data",
            "epochs",
            "val accuracy",
            "test accuracy",
            "time (s)",
            "transfer",
            "from run",
            "sweep",
            "status",
            "id",
        ],
    )


def shown_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every text cell as the signed-in user may see it: through `safe_label`, server paths
    (`data.source`, a weights file) relative to their workspace (see `ui.text.user_message`)."""
    shown = frame.copy()
    for column in shown.columns:
        if any(isinstance(value, str) for value in shown[column]):  # numbers keep their column's dtype
            texts = iter(user_messages(value for value in shown[column] if isinstance(value, str)))
            shown[column] = [safe_label(next(texts)) if isinstance(value, str) else value for value in shown[column]]
    return shown
