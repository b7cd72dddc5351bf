"""A backbone sweep on the Runs page: its leaderboard (each test accuracy with its 95% interval), its runs' curves
overlaid, and whether the best run is really better than the runner-up; redrawn every few seconds while any of
its runs is queued or training, and still once they have all ended."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

from tl_core.errors import TransferLabError
from tl_core.jobs.sweep import short_sweep_id
from tl_core.jobs.sweep_record import (
    SweepRecord,
    SweepRun,
    all_ended,
    finish_sweep,
    leaderboard,
    list_sweeps,
    read_sweep,
    sweep_runs,
)
from tl_core.runs.comparison import epochs_frame
from tl_core.runs.paired import compare_pair, run_accuracy
from tl_core.runs.store import RunStore
from ui.charts import overlay_chart
from ui.comparisons import interval_text, show_verdict
from ui.settings import mode_label
from ui.state import SWEEP_KEY, UserJobs
from ui.text import escape_markdown, safe_label, show_error

SWEEP_PICK_KEY = "runs_sweep"
REFRESH_S = 2.0
CURVE_METRICS = {"val_accuracy": True, "val_loss": False, "accuracy": True, "loss": False}


def show_sweep_next(sweep_id: str) -> None:
    """Show this sweep in the section below (and after a reload: the choice is kept with the user's others)."""
    st.session_state[SWEEP_KEY] = sweep_id
    st.session_state[SWEEP_PICK_KEY] = sweep_id


def sweep_label(record: SweepRecord) -> str:
    """For the picker: when it started, on what, and how many runs."""
    started = time.strftime("%d %b %H:%M", time.localtime(record.started_at)) if record.started_at else record.sweep_id
    data = safe_label(Path(record.source).name) or "unnamed data"
    return f"{started} · {data} · {len(record.run_ids)} runs ({short_sweep_id(record.sweep_id)})"


def sweep_board(store: RunStore, runs: list[SweepRun]) -> pd.DataFrame:
    """The sweep's runs, best first, unfinished ones after; accuracies as percentages, the test one with its interval."""
    rows = []
    for place, run in enumerate(leaderboard(runs), start=1):
        # A training run shows how far it got and its best validation accuracy yet: the board moves epoch by epoch.
        epochs = store.epochs(run.run_id) if run.status != "deleted" else []
        val_so_far = [epoch.metrics["val_accuracy"] for epoch in epochs if "val_accuracy" in epoch.metrics]
        val_accuracy = run.val_accuracy if run.val_accuracy is not None else max(val_so_far, default=None)
        accuracy = None
        if run.status == "completed":
            try:
                accuracy = run_accuracy(store, store.get(run.run_id))
            except TransferLabError:
                accuracy = None
        rows.append(
            {
                "rank": place if run.status == "completed" else None,
                "backbone": safe_label(run.backbone),
                "mode": run.mode,
                "status": run.status,
                "epochs": len(epochs),
                "test accuracy": None if run.test_accuracy is None else round(100 * run.test_accuracy, 1),
                "95% interval": interval_text(accuracy) if run.status == "completed" else "",
                "val accuracy": None if val_accuracy is None else round(100 * val_accuracy, 1),
                "time (s)": None if run.elapsed_s is None else round(run.elapsed_s, 1),
                "node": safe_label(run.node or ""),
                "id": run.run_id,
            }
        )
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else ["rank", "backbone", "mode", "status", "id"])


def show_sweeps(store: RunStore, jobs: UserJobs) -> None:
    """Pick a sweep (the last one started by default) and follow it."""
    sweeps = {record.sweep_id: record for record in list_sweeps(store)}
    if not sweeps:
        return
    st.subheader("Sweep")
    if st.session_state.get(SWEEP_PICK_KEY) not in sweeps:
        remembered = st.session_state.get(SWEEP_KEY)
        st.session_state[SWEEP_PICK_KEY] = remembered if remembered in sweeps else next(iter(sweeps))
    picked = st.selectbox(
        "Sweep",
        list(sweeps),
        key=SWEEP_PICK_KEY,
        format_func=lambda sweep_id: sweep_label(sweeps[sweep_id]),
        help="Every backbone comparison started here or with `python -m tl_core sweep` in this workspace.",
    )
    st.session_state[SWEEP_KEY] = picked
    active = not all_ended(sweep_runs(store, sweeps[picked], _job_state(jobs)))
    # A fragment on a timer only while runs train: an idle page does not rerun forever.
    (st.fragment(run_every=REFRESH_S)(sweep_live) if active else sweep_live)(store, jobs, picked, active)


def sweep_live(store: RunStore, jobs: UserJobs, sweep_id: str, was_active: bool) -> None:
    """The sweep as it stands: progress, leaderboard, overlaid curves, the verdict on the top two."""
    try:
        record = read_sweep(store, sweep_id)
    except TransferLabError as exc:
        show_error(exc)
        return
    runs = sweep_runs(store, record, _job_state(jobs))
    if all_ended(runs):
        if not record.finished:
            finish_sweep(store, record, runs)
            record = read_sweep(store, sweep_id)
        if was_active:
            st.rerun()  # the whole page once more, now without the timer
    ended = sum(not run.active for run in runs)
    # A run that ends changes the rest of the page too (runs table, run details, leaderboard): redraw all of it.
    ended_key = f"sweep_ended_{sweep_id}"
    seen = st.session_state.get(ended_key)
    st.session_state[ended_key] = ended
    if was_active and seen is not None and ended != seen:
        st.rerun()
    summary = f"{ended} of {len(runs)} runs ended" if ended < len(runs) else f"All {len(runs)} runs ended"
    st.caption(
        f"{summary} · one split of {escape_markdown(Path(record.source).name)} for every run "
        f"(dataset {record.dataset_fingerprint[:8]}) · {record.backend} backend. The interval is where the true "
        "accuracy lies with 95% confidence, given how few test examples there are."
    )
    for problem in record.data.get("problems") or []:
        st.warning(escape_markdown(str(problem)), icon=":material/warning:")
    if not all_ended(runs):
        stop_sweep_button(jobs, runs, sweep_id)
    st.dataframe(
        sweep_board(store, runs),
        hide_index=True,
        width="stretch",
        column_config={
            name: st.column_config.NumberColumn(format="%.1f%%") for name in ("test accuracy", "val accuracy")
        },
    )
    sweep_curves(store, runs)
    best_against_runner_up(store, runs)


def stop_sweep_button(jobs: UserJobs, runs: list[SweepRun], sweep_id: str) -> None:
    """One click stops every queued or training run of the sweep (each keeps its log and last checkpoint)."""
    active = [run.run_id for run in runs if run.active]
    label = f"Stop the sweep's {len(active)} unfinished run(s)"
    if st.button(label, key=f"sweep_stop_{sweep_id}", icon=":material/stop_circle:"):
        stopped = sum(bool(jobs.stop(run_id)) for run_id in active)
        st.toast(f"Stopping {stopped} run(s); finished runs stay on the board.", icon=":material/stop_circle:")


def sweep_curves(store: RunStore, runs: list[SweepRun]) -> None:
    """Every run's curve of one metric in one chart, named by backbone and mode."""
    metric = st.selectbox("Curve", list(CURVE_METRICS), key="sweep_metric", help="val_ metrics are on held-out data.")
    frame = epochs_frame(store, [run.run_id for run in runs if run.status != "deleted"])
    if frame.empty:
        st.caption("The curves appear here as the runs finish their first epoch.")
        return
    names = {run.run_id: f"{run.backbone} · {mode_label(run.mode, short=True)}" for run in runs}
    frame = frame.assign(run_name=frame["run_id"].map(names))
    st.altair_chart(overlay_chart(frame, metric, percent=CURVE_METRICS[metric]), width="stretch")


def best_against_runner_up(store: RunStore, runs: list[SweepRun]) -> None:
    """McNemar's verdict on the two best completed runs (they were tested on the same examples)."""
    completed = [run for run in leaderboard(runs) if run.status == "completed"]
    if len(completed) < 2:
        if not all_ended(runs):
            st.caption(
                "Whether the best run is really better than the runner-up is tested once two runs have completed."
            )
        return
    st.markdown("**Is the best really better than the runner-up?**")
    try:
        show_verdict(compare_pair(store, completed[0].run_id, completed[1].run_id))
    except TransferLabError as exc:
        show_error(exc)


def _job_state(jobs: UserJobs) -> Callable[[str], str | None]:
    """The server queue's state of a run (None for runs it never held: a CLI sweep's have their own queue)."""

    def state(run_id: str) -> str | None:
        status = jobs.status(run_id)
        return None if status is None else str(status.state)

    return state
