"""Run records as tables (all runs, leaderboard) and configs for a backbone comparison."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tl_core.backbones import BackboneSpec
from tl_core.config import RunConfig
from tl_core.runs import RunRecord

PERCENT = "%.1f%%"


def dataset_name(record: RunRecord) -> str:
    """The dataset folder's name, from the scan when there was one, else from the config."""
    source = record.dataset_stats.get("source") or record.config.get("data", {}).get("source") or ""
    return Path(str(source)).name


def _percent(value: object) -> float | None:
    return round(100 * float(value), 1) if isinstance(value, (int, float)) else None


def runs_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run, newest first: what it trained, how far it got and how well it did."""
    rows = [{
        "name": record.name,
        "backbone": record.backbone,
        "mode": record.mode,
        "data": dataset_name(record),
        "epochs": int(record.metrics.get("epochs_run", 0) or 0),
        "val accuracy": _percent(record.metrics.get("val_accuracy")),
        "test accuracy": _percent(record.metrics.get("test_accuracy")),
        "time (s)": round(float(record.metrics.get("elapsed_s") or record.elapsed_s), 1),
        "status": record.status,
        "id": record.id,
    } for record in records]
    return pd.DataFrame(rows, columns=["name", "backbone", "mode", "data", "epochs", "val accuracy", "test accuracy", "time (s)", "status", "id"])


def leaderboard_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Completed runs with a test accuracy, best first (ties: the faster run first)."""
    frame = runs_frame([r for r in records if r.status == "completed" and isinstance(r.metrics.get("test_accuracy"), (int, float))])
    frame = frame.sort_values(["test accuracy", "time (s)"], ascending=[False, True]).reset_index(drop=True)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame[["rank", "name", "backbone", "mode", "data", "test accuracy", "val accuracy", "time (s)", "id"]]


def comparison_config(base: RunConfig, spec: BackboneSpec) -> RunConfig:
    """`base` with another backbone: same data, mode and training settings.

    The image size is kept when the backbone accepts it, else moved into its range. Starting from
    another run's backbone only fits that architecture, so such runs start from ImageNet weights.
    """
    size = base.model.image_size or spec.default_size
    size = max(size, spec.min_size) if spec.max_size is None else min(max(size, spec.min_size), spec.max_size)
    weights = "imagenet" if base.model.weights.startswith("run:") else base.model.weights
    model = dataclasses.replace(base.model, backbone=spec.name, image_size=size, weights=weights)
    return base.replace(model=model, name=f"compare · {spec.name} · {base.train.mode}")
