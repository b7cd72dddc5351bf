"""Runs: every run in the workspace, overlaid curves with what differs between those runs, a leaderboard, backbone comparisons, deleting."""

from __future__ import annotations

import streamlit as st

from tl_core.config import MODES, RUN_WEIGHTS_PREFIX, ConfigError
from tl_core.errors import TransferLabError
from tl_core.events import ACTIVE_STATUSES
from tl_core.jobs.sweep_record import list_sweeps
from tl_core.layout import CHECKPOINT_FILE
from tl_core.models.registry import list_backbones
from tl_core.runs.comparison import epochs_frame
from tl_core.runs.records import RunRecord
from tl_core.runs.store import RunStore
from ui.advisor import CUT_LAYER_WIDGET_KEY, parent_image_size
from ui.charts import overlay_chart
from ui.comparisons import (
    ALL_DATASETS,
    dataset_choices,
    dataset_key,
    leaderboard_frame,
    runs_of,
    show_paired_test,
    what_differs,
)
from ui.navigation import page_link, run_app_instead, switch_to
from ui.runs_table import child_runs, parent_run_id, runs_frame
from ui.settings import has_offline_weights, mode_label
from ui.state import (
    UserJobs,
    chosen_settings,
    current_dataset,
    current_modality,
    current_run_id,
    get_manager,
    get_store,
    server_settings,
    session_value,
    set_current_run,
)
from ui.sweep_start import app_sweep_plan, plan_problems, start_app_sweep
from ui.sweep_view import show_sweep_next, show_sweeps
from ui.text import escape_markdown, safe_label, show_error, user_message
from ui.training import phase_starts, show_best_phase, show_curves, show_transfer_verdict

PENDING_DELETE_KEY = "runs_pending_delete"
DELETE_MESSAGES_KEY = "runs_delete_messages"
SWEEP_STARTED_KEY = "runs_sweep_started"
OVERLAY_METRICS = {"val_accuracy": True, "val_loss": False, "accuracy": True, "loss": False, "learning_rate": False}


def percent_columns() -> dict:
    """Column settings that show the accuracy columns as percentages."""
    return {name: st.column_config.NumberColumn(format="%.1f%%") for name in ("val accuracy", "test accuracy")}


def start_from_backbone(store: RunStore, record: RunRecord) -> None:
    """Preselect this run's backbone as the starting weights on the Model page (a button callback)."""
    st.session_state["model_weights"] = f"{RUN_WEIGHTS_PREFIX}{record.id}"
    st.session_state["model_backbone"] = record.backbone
    size = parent_image_size(store.run_dir(record.id), record.config)
    if size:
        st.session_state["model_image_size"] = size
    st.session_state[CUT_LAYER_WIDGET_KEY] = None


def run_name(run_id: str, records: list[RunRecord]) -> str:
    return next((record.name for record in records if record.id == run_id), "(deleted)")


def run_details(store: RunStore, manager: UserJobs, records: list[RunRecord], record: RunRecord) -> None:
    """One run: lineage, the transfer verdict, where the best model was found, its curves with phase labels."""
    st.markdown(
        f"**{escape_markdown(record.name)}** · {escape_markdown(record.backbone)} · {escape_markdown(record.mode)} · "
        f"{escape_markdown(record.weights)} weights · **{record.status}**"
    )
    parent = parent_run_id(record)
    if parent:
        st.markdown(
            f"Backbone from run **{escape_markdown(run_name(parent, records))}** ({escape_markdown(parent)}): "
            "this run started from the backbone that run trained."
        )
    children = child_runs(record, records)
    if children:
        st.markdown(
            "Runs started from this backbone: "
            + ", ".join(f"**{escape_markdown(child.name)}** ({escape_markdown(child.id)})" for child in children)
        )
    show_transfer_verdict(store, record)
    epochs = store.epochs(record.id)
    marks = phase_starts(epochs, None, store.phases(record.id))
    if record.status == "completed":
        show_best_phase(store, record, marks)
        if record.mode != "feature-extraction" and st.button(
            "Start a new run from this backbone",
            key="runs_start_from",
            icon=":material/call_split:",
            on_click=start_from_backbone,
            args=(store, record),
            help="Opens the Model page with this run's trained backbone as the starting weights; the new run records where it came from.",
        ):
            switch_to("model")
    elif (
        record.status in ("interrupted", "failed", "stopped") and (store.run_dir(record.id) / CHECKPOINT_FILE).is_file()
    ):
        st.caption(
            "This run ended early but kept its best weights so far: a new run with the same settings can start from them."
        )
        if st.button(
            "Resume from its checkpoint",
            key="runs_resume",
            icon=":material/replay:",
            help="Queues a new run (same data and settings) that starts from this run's last checkpoint; it runs every epoch again.",
        ):
            try:
                set_current_run(manager.resume(record.id))
            except TransferLabError as exc:
                show_error(exc)
            else:
                switch_to("train")
    show_curves(epochs, marks, None, live=record.status in ACTIVE_STATUSES)


def runs_table(store: RunStore) -> None:
    """Every run, newest first, read fresh from the store; a sweep's runs carry its id."""
    sweeps = {run_id: sweep.sweep_id for sweep in list_sweeps(store) for run_id in sweep.run_ids}
    st.dataframe(
        runs_frame(store.list_runs(), sweeps), hide_index=True, width="stretch", column_config=percent_columns()
    )


def runs_overview(store: RunStore, manager: UserJobs, records: list[RunRecord], labels: dict[str, str]) -> None:
    """The runs table, one run's details, overlaid curves and the leaderboard."""
    # While runs train, the table refreshes itself every 2 seconds.
    (st.fragment(run_every=2.0)(runs_table) if manager.active_run_ids() else runs_table)(store)

    st.subheader("Run details")
    if st.session_state.get("runs_detail") not in labels:
        st.session_state["runs_detail"] = current_run_id() if current_run_id() in labels else records[0].id
    detail_id = st.selectbox(
        "Run",
        list(labels),
        key="runs_detail",
        format_func=labels.get,
        help="Lineage, the comparison with training from scratch, and the curves with each phase marked.",
    )
    run_details(store, manager, records, next(record for record in records if record.id == detail_id))

    compare_on_one_dataset(store, records, labels, detail_id)


def compare_on_one_dataset(store: RunStore, records: list[RunRecord], labels: dict[str, str], detail_id: str) -> None:
    """Curves, what differs and the leaderboard for the runs of one dataset (the one of the run in view by default):
    accuracies on different data are not comparable."""
    st.subheader("Compare runs")
    datasets = dataset_choices(records)
    if st.session_state.get("runs_dataset") not in datasets:
        shown = next((record for record in records if record.id == detail_id), records[0])
        st.session_state["runs_dataset"] = dataset_key(shown)
    dataset = st.selectbox(
        "Dataset",
        list(datasets),
        key="runs_dataset",
        format_func=datasets.get,
        help="Runs are compared on one dataset at a time; a folder whose files changed is a new version of it.",
    )
    records = runs_of(records, dataset)
    labels = {run_id: label for run_id, label in labels.items() if any(r.id == run_id for r in records)}

    with_epochs = [record.id for record in records if record.metrics.get("epochs_run") or record.status == "running"]
    # A new dataset shows its newest runs, not the old pick; so does a return to this page (Streamlit drops the
    # state of widgets that the previous page did not draw, but not `runs_overlay_dataset`).
    if st.session_state.get("runs_overlay_dataset") != dataset or "runs_overlay" not in st.session_state:
        st.session_state["runs_overlay"] = with_epochs[:3]
        st.session_state["runs_overlay_dataset"] = dataset
    st.session_state["runs_overlay"] = [run_id for run_id in st.session_state["runs_overlay"] if run_id in labels]
    left, right = st.columns([3, 1])
    chosen = left.multiselect(
        "Runs to overlay",
        list(labels),
        key="runs_overlay",
        format_func=labels.get,
        help="Pick several runs to compare their curves epoch by epoch.",
    )
    metric = right.selectbox(
        "Metric", list(OVERLAY_METRICS), key="runs_metric", help="val_ metrics are on held-out images."
    )
    frame = epochs_frame(store, chosen) if chosen else None
    if frame is None or frame.empty:
        st.caption("Pick runs that have finished at least one epoch.")
    else:
        st.altair_chart(overlay_chart(frame, metric, percent=OVERLAY_METRICS[metric]), width="stretch")
    if len(chosen) > 1:
        st.caption("What differs between these runs (settings that are the same in all of them are left out):")
        st.dataframe(what_differs(store, chosen, labels), hide_index=True, width="stretch")

    st.subheader("Leaderboard")
    board = leaderboard_frame(store, records)
    if board.empty:
        st.caption("Completed runs with a test accuracy appear here, best first.")
        return
    if dataset == ALL_DATASETS:
        st.caption("Ranked within each dataset: an accuracy on one dataset says nothing about another.")
    else:
        st.caption(
            "Best first. The interval is where the true accuracy lies with 95% confidence, given how few test "
            "images there are: runs whose intervals overlap may not really differ (the test below tells)."
        )
    st.dataframe(board, hide_index=True, width="stretch", column_config=percent_columns())
    if dataset != ALL_DATASETS:
        show_paired_test(store, board, labels)


def compare_backbones(store: RunStore, manager: UserJobs) -> None:
    """Start a sweep: one run per chosen backbone and mode, on one split of the current dataset, with the Model
    page's settings; all are queued at once and followed in the section below."""
    st.subheader("Compare backbones")
    st.caption(
        "One run per backbone and mode, all on the same split of the current dataset with the Model page's "
        "settings, queued at once and ranked as they end (the same sweep as `python -m tl_core sweep`)."
    )
    dataset = current_dataset()
    model, train = chosen_settings()
    modality = current_modality() if dataset else "image"
    specs = list_backbones(None, modality=modality)
    offline = {spec.name: has_offline_weights(spec) for spec in specs}
    left, right = st.columns([3, 2])
    picked = left.multiselect(
        "Backbones",
        [spec.name for spec in specs],
        key="compare_backbones",
        format_func=lambda name: name + ("" if offline.get(name, True) else " (pretrained weights not installed)"),
        help="Each becomes one run per mode, with the settings from the Model page.",
    )
    session_value("compare_modes", ["feature-extraction"])
    modes = right.multiselect(
        "Modes", list(MODES), key="compare_modes", format_func=lambda mode: mode_label(mode, short=True)
    )
    if not dataset:
        st.caption("Choose a dataset on the Data page first.")
    count = len(picked) * len(modes)
    clicked = st.button(
        f"Start sweep of {count} runs" if count else "Start sweep",
        key="compare_submit",
        type="primary",
        icon=":material/leaderboard:",
        disabled=not (count and dataset),
    )
    if started := st.session_state.pop(SWEEP_STARTED_KEY, None):
        st.success(started, icon=":material/schedule:")
        page_link("train", "Watch training", ":material/monitoring:")
    if not clicked:
        return
    plan, template = app_sweep_plan(str(dataset), modality, picked, modes, model, train)
    problems = plan_problems(plan, modality, offline)
    if problems:
        st.error(
            "Nothing was started: " + "; ".join(escape_markdown(problem) for problem in problems) + ".",
            icon=":material/block:",
        )
        return
    try:
        with st.spinner("Splitting the dataset once for every run…"):
            record = start_app_sweep(store, manager, plan, template, server_settings().job_backend)
    except (ConfigError, TransferLabError) as exc:  # ConfigError: a Model page setting no backbone of the sweep takes
        show_error(exc)
        return
    show_sweep_next(record.sweep_id)
    if current_run_id() is None:
        set_current_run(record.run_ids[0])
    st.session_state[SWEEP_STARTED_KEY] = (
        f"Started a sweep of {len(record.run_ids)} runs on one split; follow it below or on the Train page."
    )
    st.rerun()  # the runs table and the sweep's section draw its runs from the start


def delete_runs(store: RunStore, manager: UserJobs, labels: dict[str, str]) -> None:
    """Delete chosen runs after a confirmation; queued or training ones are refused."""
    st.subheader("Delete runs")
    for message in st.session_state.pop(DELETE_MESSAGES_KEY, []):
        st.error(escape_markdown(user_message(message)), icon=":material/error:")
    to_delete = st.multiselect(
        "Runs to delete",
        list(labels),
        key="runs_delete_select",
        format_func=labels.get,
        help="Deletes the run, its curves, model and log.",
    )
    if st.button("Delete selected", key="runs_delete", icon=":material/delete:", disabled=not to_delete):
        st.session_state[PENDING_DELETE_KEY] = list(to_delete)
    pending = [run_id for run_id in st.session_state.get(PENDING_DELETE_KEY, []) if run_id in labels]
    if not pending:
        return
    st.warning(f"Delete {len(pending)} run(s) and all their files? This cannot be undone.", icon=":material/warning:")
    st.text("\n".join(labels[run_id] for run_id in pending))
    yes, no = st.columns([1, 6])
    if yes.button("Yes, delete", key="runs_delete_confirm", type="primary"):
        active = set(manager.active_run_ids())
        messages = []
        for run_id in pending:
            if run_id in active:
                messages.append(f"{labels[run_id]} is queued or training: stop it on the Train page first.")
                continue
            try:
                store.delete(run_id)
            except TransferLabError as exc:
                messages.append(str(exc))
            else:
                if current_run_id() == run_id:
                    set_current_run(None)
        st.session_state[DELETE_MESSAGES_KEY] = messages
        st.session_state.pop(PENDING_DELETE_KEY, None)
        st.session_state.pop("runs_delete_select", None)
        st.rerun()
    if no.button("Cancel", key="runs_delete_cancel"):
        st.session_state.pop(PENDING_DELETE_KEY, None)
        st.rerun()


def runs_page() -> None:
    """The Runs page: every run of this user, comparisons, queueing a backbone comparison, deleting."""
    st.title("Runs")
    store, manager = get_store(), get_manager()
    records = store.list_runs()
    labels = {
        record.id: f"{safe_label(record.name)} ({record.id[-6:]})" for record in records
    }  # selectbox options are plain text
    if records:
        runs_overview(store, manager, records, labels)
    else:
        st.info("No runs yet: train one on the Train page, or start a backbone sweep below.", icon=":material/info:")
    compare_backbones(store, manager)
    show_sweeps(store, manager)
    if records:
        delete_runs(store, manager, labels)


if __name__ == "__main__":  # Streamlit ran this file itself instead of app.py: see ui.navigation.run_app_instead
    run_app_instead()
