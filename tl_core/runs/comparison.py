"""Several runs side by side: their epoch curves in one long table, and what differs between them.

Read-only views over a `RunStore` for the Runs page and scripts; pandas is imported only when called.

Example:
    >>> table = compare_runs(store, [first_id, second_id])  # one row per run: the settings that differ, then metrics
    >>> curves = epochs_frame(store, [first_id, second_id])  # run, epoch, metric, value: ready for overlaid lines
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tl_core.runs.records import to_json
from tl_core.runs.store import RunStore

if TYPE_CHECKING:
    import pandas

# Shown first in `compare_runs`, in this order, when present.
KEY_METRICS = (
    "val_accuracy",
    "test_accuracy",
    "val_loss",
    "evaluation_accuracy",
    "eval_macro_f1",
    "epochs_run",
    "elapsed_s",
)
IDENTITY_COLUMNS = ("id", "name", "backbone", "weights", "mode", "status", "epochs", "dataset_fingerprint")


def epochs_frame(store: RunStore, run_ids: list[str]) -> pandas.DataFrame:
    """Epoch metrics of several runs in long format, ready for overlaid curves.

    Returns:
        Columns run_id, run_name, phase, epoch, metric, value; one row per run, epoch and metric
        (the learning rate appears as metric `learning_rate`).
    """
    import pandas

    rows = []
    for run_id in dict.fromkeys(run_ids):
        record = store.get(run_id)
        for epoch in store.epochs(record.id):
            for metric, value in {**epoch.metrics, "learning_rate": epoch.learning_rate}.items():
                if isinstance(value, (int, float)):
                    rows.append((record.id, record.name, epoch.phase, epoch.epoch, metric, float(value)))
    return pandas.DataFrame(rows, columns=["run_id", "run_name", "phase", "epoch", "metric", "value"])


def compare_runs(store: RunStore, run_ids: list[str]) -> pandas.DataFrame:
    """One row per run: identity, epochs, the config values that differ between the runs, and metrics.

    With a single run every config value is shown. Config keys are flattened (`train.learning_rate`);
    list values are shown as JSON (`[128]`).
    """
    import pandas

    records = [store.get(run_id) for run_id in dict.fromkeys(run_ids)]
    rows = []
    for record in records:
        identity = (
            record.id,
            record.name,
            record.backbone,
            record.weights,
            record.mode,
            record.status,
            len(store.epochs(record.id)),
            record.dataset_fingerprint,
        )
        rows.append(dict(zip(IDENTITY_COLUMNS, identity, strict=True)))
    configs = [_flatten(record.config) for record in records]
    config_keys = list(dict.fromkeys(key for config in configs for key in config))
    if len(records) > 1:
        config_keys = [key for key in config_keys if len({to_json(config.get(key)) for config in configs}) > 1]
    metric_keys = list(
        dict.fromkeys(
            key for record in records for key, value in record.metrics.items() if isinstance(value, (int, float))
        )
    )
    metric_keys = [key for key in KEY_METRICS if key in metric_keys] + sorted(set(metric_keys) - set(KEY_METRICS))
    for row, config, record in zip(rows, configs, records, strict=True):
        row.update({key: config.get(key) for key in config_keys})
        row.update({key: record.metrics.get(key) for key in metric_keys})
    return pandas.DataFrame(rows, columns=list(rows[0]) if rows else list(IDENTITY_COLUMNS))


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = to_json(value) if isinstance(value, (list, tuple, dict)) else value
    return flat
