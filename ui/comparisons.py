"""Comparing runs fairly on the Runs page: one dataset at a time, accuracies with their 95% intervals, what
differs between runs as settings down the side, and a plain verdict from McNemar's test (tl_core.runs.paired)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from tl_core.errors import TransferLabError
from tl_core.runs.comparison import compare_runs
from tl_core.runs.paired import PairedComparison, RunAccuracy, accuracy_label, compare_pair, run_accuracy
from tl_core.runs.records import RunRecord
from tl_core.runs.store import RunStore
from ui.runs_table import dataset_name, shown_cells
from ui.text import escape_markdown, safe_label, show_error

ALL_DATASETS = "*"
UNKNOWN_DATASET = "?"  # runs that failed before their data was scanned, or recorded without a fingerprint
# Results shown under the settings in "What differs", as percentages where they are fractions.
RESULT_ROWS = {
    "test_accuracy": "test accuracy",
    "val_accuracy": "val accuracy",
    "epochs_run": "epochs run",
    "elapsed_s": "time (s)",
}
PERCENT_RESULTS = {"test_accuracy", "val_accuracy"}


def dataset_key(record: RunRecord) -> str:
    return record.dataset_fingerprint or UNKNOWN_DATASET


def dataset_choices(records: Sequence[RunRecord]) -> dict[str, str]:
    """Datasets the runs were trained on (by fingerprint, newest first) -> a label; "All datasets" last.

    Two versions of one folder (files added or changed) are two datasets: their accuracies are not comparable.
    """
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(dataset_key(record), []).append(record)
    names = {key: safe_label(dataset_name(runs[0])) or "unnamed data" for key, runs in groups.items()}
    labels = {}
    for key, runs in groups.items():
        label = names[key] if key != UNKNOWN_DATASET else "unknown data (the run never read it)"
        if list(names.values()).count(names[key]) > 1 and key != UNKNOWN_DATASET:
            label += f" (version {key[:6]})"
        labels[key] = f"{label} · {len(runs)} run(s)"
    labels[ALL_DATASETS] = "All datasets (accuracies not comparable across them)"
    return labels


def runs_of(records: Sequence[RunRecord], dataset: str) -> list[RunRecord]:
    return list(records) if dataset == ALL_DATASETS else [r for r in records if dataset_key(r) == dataset]


def interval_text(accuracy: RunAccuracy | None) -> str:
    """A leaderboard cell: the 95% Wilson interval as `78.7-98.2%`, `-` without a test evaluation."""
    return "-" if accuracy is None else "{:.1f}-{:.1f}%".format(*(100 * x for x in accuracy.interval))


def leaderboard_frame(store: RunStore, records: Sequence[RunRecord]) -> pd.DataFrame:
    """Completed runs with a test accuracy, best first (ties: the faster run), ranked within each dataset, with
    each accuracy's 95% Wilson interval and the number of test examples it rests on."""
    rows = []
    for record in records:
        test = record.metrics.get("test_accuracy")
        if record.status != "completed" or not isinstance(test, (int, float)):
            continue
        accuracy = run_accuracy(store, record)  # None: its evaluation (and so its test count) is gone
        interval = interval_text(accuracy)
        val = record.metrics.get("val_accuracy")
        rows.append(
            {
                "dataset": dataset_key(record),
                "name": safe_label(record.name),
                "backbone": safe_label(record.backbone),
                "mode": record.mode,
                "data": safe_label(dataset_name(record)),
                "test accuracy": round(100 * float(test), 1),
                "95% interval": interval,
                "test examples": None if accuracy is None else accuracy.count,
                "val accuracy": round(100 * float(val), 1) if isinstance(val, (int, float)) else None,
                "time (s)": round(float(record.metrics.get("elapsed_s") or record.elapsed_s), 1),
                "id": record.id,
            }
        )
    columns = ["rank", "name", "backbone", "mode", "data", "test accuracy", "95% interval", "test examples"]
    columns += ["val accuracy", "time (s)", "id"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows).sort_values(["test accuracy", "time (s)"], ascending=[False, True])
    frame["rank"] = frame.groupby("dataset").cumcount() + 1
    frame = frame.sort_values(["dataset", "rank"], kind="stable") if frame["dataset"].nunique() > 1 else frame
    return frame.reset_index(drop=True)[columns]


def what_differs(store: RunStore, run_ids: list[str], labels: dict[str, str]) -> pd.DataFrame:
    """Settings that differ between the runs (one row each, one column per run), then their results.

    Only the settings that differ: the run's own name and the identity columns that repeat a setting
    (`mode` beside `train.mode`) are left out; unset settings read "default"; accuracies are percentages.
    """
    compared = compare_runs(store, run_ids).set_index("id")
    settings = [
        column
        for column in compared.columns
        if "." in column and column != "name" and compared[column].astype(str).nunique(dropna=False) > 1
    ]
    rows: dict[str, list[object]] = {}
    for column in settings:
        rows[column] = ["default" if value is None or value != value else value for value in compared[column]]
    for metric, title in RESULT_ROWS.items():
        if metric in compared.columns:
            values = compared[metric]
            rows[title] = [
                "-"
                if not isinstance(value, (int, float)) or value != value
                else f"{100 * value:.1f}%"
                if metric in PERCENT_RESULTS
                else round(float(value), 1)
                for value in values
            ]
    frame = pd.DataFrame(rows, index=[labels.get(run_id, run_id) for run_id in compared.index]).T.astype(str)
    return shown_cells(frame.rename_axis("setting").reset_index())


def show_paired_test(store: RunStore, board: pd.DataFrame, labels: dict[str, str]) -> None:
    """Two runs of the leaderboard (the top two by default) and whether their difference is real."""
    run_ids = list(board["id"])
    if len(run_ids) < 2:
        return
    st.markdown("**Is the difference real?** Two runs tested on the same images, compared image by image:")
    left, right = st.columns(2)
    first = left.selectbox("Run", run_ids, index=0, key="runs_pair_first", format_func=labels.get)
    second = right.selectbox("against", run_ids, index=1, key="runs_pair_second", format_func=labels.get)
    if first == second:
        st.caption("Pick two different runs.")
        return
    try:
        comparison = compare_pair(store, first, second)
    except TransferLabError as exc:
        show_error(exc)
        return
    show_verdict(comparison)


def show_verdict(comparison: PairedComparison) -> None:
    """Both runs' accuracies with their intervals, then McNemar's verdict in plain words."""
    st.caption(" · ".join(f"{escape_markdown(run.name)}: {accuracy_label(run)}" for run in comparison.runs))
    if not comparison.comparable:
        st.warning(escape_markdown(comparison.verdict), icon=":material/block:")
    elif comparison.significant:
        st.success(escape_markdown(comparison.verdict), icon=":material/verified:")
    else:
        st.info(escape_markdown(comparison.verdict), icon=":material/balance:")
