"""What a run reports about itself: its `summary.json`, its final metrics, and its dataset's stats.

`run_experiment` (tl_core/training/runner.py) records these: `dataset_stats` with the run when the data has
been scanned, `experiment_summary` in the run folder when it ends (also when it failed or was stopped), and
`final_metrics`, the part of the summary the run store keeps in the run's metrics (the Runs page's columns).

With `compare_scratch` a completed run's summary (and metrics) gain the comparison afterwards: `scratch_run_id`,
`scratch_test_accuracy`, `negative_transfer[_margin]` and `transfer_verdict`; for text runs also
`classic_baseline_accuracy` (TF-IDF + logistic regression, `tl_core.training.classic_baseline`; None when it
failed) and `classic_baseline_verdict`. The verdicts are sentences for people: the metrics leave them out.

Example:
    >>> summary = experiment_summary(run_id, config, 224, "completed", started, result, evaluation, split, report, None)
    >>> final_metrics(summary, evaluation)["evaluation_accuracy"]
    0.93
"""

from __future__ import annotations

import time
from typing import Any

from tl_core.config import RunConfig
from tl_core.data.types import DatasetSplit, ScanReport
from tl_core.results.evaluate import Evaluation
from tl_core.training import classic_baseline
from tl_core.training.loop import TrainResult

# The summary entries kept as the run's final metrics (those that are set), in the summary's order.
FINAL_METRIC_KEYS = (
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "evaluation_accuracy",
    "evaluation_count",
    "elapsed_s",
    "epochs_run",
)

# Summary entries that are sentences for people (the log and the CLI show them), not metrics to sort runs by.
VERDICT_KEYS = ("transfer_verdict", classic_baseline.VERDICT_KEY)


def phase_throughput(result: TrainResult, train_count: int) -> dict[str, float]:
    """Training examples per second in each phase that ran the backbone (a head on cached features is left out).

    Args:
        result: a finished training call's result (its epoch history holds each epoch's seconds).
        train_count: training examples per epoch.

    Returns:
        {phase name: examples per second}, in phase order.
    """
    seconds: dict[str, float] = {}
    epochs: dict[str, int] = {}
    for epoch in result.history:
        if epoch.phase == "head" and result.used_feature_cache:
            continue
        seconds[epoch.phase] = seconds.get(epoch.phase, 0.0) + epoch.seconds
        epochs[epoch.phase] = epochs.get(epoch.phase, 0) + 1
    return {phase: train_count * epochs[phase] / spent for phase, spent in seconds.items() if spent > 0}


def experiment_summary(
    run_id: str,
    config: RunConfig,
    image_size: int,
    status: str,
    started: float,
    result: TrainResult | None,
    evaluation: Evaluation | None,
    split: DatasetSplit | None,
    report: ScanReport | None,
    error: str | None,
) -> dict[str, Any]:
    """The run's `summary.json`: settings, outcome, best epoch, evaluation and data; `started` is its `perf_counter` start."""
    best = result.best_metrics if result else {}
    return {
        "run_id": run_id,
        "status": status,
        "backbone": config.model.backbone,
        "weights": config.model.weights,
        "mode": config.train.mode,
        "epochs_run": result.epochs_run if result else 0,
        "best_epoch": result.best_epoch if result else None,
        "val_accuracy": best.get("val_accuracy"),
        "val_loss": best.get("val_loss"),
        "test_accuracy": evaluation.accuracy if evaluation and evaluation.split == "test" else None,
        "evaluated_on": evaluation.split if evaluation else None,
        "evaluation_accuracy": evaluation.accuracy if evaluation else None,
        "evaluation_count": evaluation.count if evaluation else None,
        "elapsed_s": round(time.perf_counter() - started, 3),
        "image_size": image_size,
        "best_phase": result.best_phase if result else None,
        "used_feature_cache": bool(result and result.used_feature_cache),
        "class_names": list(split.class_names) if split else [],
        "split_sizes": split.sizes() if split else {},
        "dataset_fingerprint": report.fingerprint if report else None,
        "dataset_root": report.root if report else None,
        "error": error,
    }


def final_metrics(summary: dict[str, Any], evaluation: Evaluation | None) -> dict[str, Any]:
    """The metrics the run store keeps for an ended run: the summary's `FINAL_METRIC_KEYS` and the evaluation's scores."""
    metrics = {key: value for key, value in summary.items() if key in FINAL_METRIC_KEYS and value is not None}
    if evaluation is not None:
        metrics.update(
            {
                "eval_loss": evaluation.loss,
                "eval_top_k_accuracy": evaluation.top_k_accuracy,
                "eval_macro_f1": evaluation.macro_f1,
            }
        )
    return metrics


def dataset_stats(report: ScanReport, split: DatasetSplit) -> dict[str, Any]:
    """What the run store keeps about the run's data: where it came from, class counts, split sizes, files skipped."""
    return {
        "source": report.source,
        "root": report.root,
        "class_counts": report.class_counts,
        "split_sizes": split.sizes(),
        "files_seen": report.files_seen,
        "files_skipped": report.files_skipped,
        "problems": len(report.problems),
    }
