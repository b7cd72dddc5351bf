"""Train: start a run in the background and watch it live; the page can be left and reopened at any time."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from tl_core.config import ConfigError, DataConfig, RunConfig
from tl_core.errors import RunNotFoundError, TransferLabError
from tl_core.runs.records import RunRecord
from tl_core.runs.store import RunStore
from tl_core.training import classic_baseline
from ui.dataset import load_dataset
from ui.navigation import page_link, run_app_instead
from ui.settings import mode_label, weights_words
from ui.state import (
    RUN_CONFIG_KEY,
    SETTINGS_ERROR_KEY,
    UserJobs,
    chosen_settings,
    current_dataset,
    current_modality,
    current_run_id,
    get_manager,
    get_store,
    set_current_run,
    workspace_path,
)
from ui.text import escape_markdown, format_percent, show_error, user_message
from ui.training import (
    is_active,
    phase_starts,
    show_best_phase,
    show_curves,
    show_log,
    show_outcome,
    show_progress,
    show_transfer_verdict,
)
from ui.work_queue import busy_caption, follow_queue, poll_seconds


def planned_config() -> RunConfig | None:
    """The Model page's RunConfig, or the defaults on the chosen dataset; None (with a message) if neither."""
    if error := st.session_state.get(SETTINGS_ERROR_KEY):
        st.error("The model settings are invalid: " + escape_markdown(user_message(error)), icon=":material/error:")
        page_link("model", "Fix the settings", ":material/tune:")
        return None
    dataset = current_dataset()
    if not dataset:
        st.info("Choose a dataset first.", icon=":material/info:")
        page_link("data", "Choose data", ":material/folder_open:")
        return None
    config = st.session_state.get(RUN_CONFIG_KEY)
    if config is None:
        model, train = chosen_settings()
        config = RunConfig(data=DataConfig(source=dataset, modality=current_modality()), model=model, train=train)
    return config


def dataset_problem(source: str) -> str | None:
    """Why the dataset cannot be trained on (missing, nothing trainable), checked before queueing."""
    return load_dataset(source, workspace_path()).split_error


def run_panel(store: RunStore, manager: UserJobs, run_id: str, shown_status: str | None) -> None:
    """Everything about one run; as a fragment it redraws every second while the run is active.

    Args:
        store: this user's runs.
        manager: this user's view of the job queue.
        run_id: the run to show.
        shown_status: the run's status when the whole page was drawn (None: not live). When it
            changes (queued -> running -> finished) the whole page redraws, so the sidebar, the
            Start button and the timer follow.
    """
    try:
        record = store.get(run_id)
    except RunNotFoundError:
        set_current_run(None)
        st.info("That run was deleted.")
        return
    status = manager.status(run_id)
    st.subheader("Run")
    started = time.strftime("%H:%M", time.localtime(record.created_at))
    st.markdown(
        f"**{escape_markdown(record.name)}**  \n{escape_markdown(record.backbone)} · {mode_label(record.mode, short=True)} · "
        f"created {started} · **{record.status}**"
    )
    active = is_active(record, status)
    if active and record.status == "completed" and record.config.get("train", {}).get("compare_scratch"):
        st.info(
            "This run is done; now training the same network from scratch to check that pretraining helps. "
            "The verdict appears here and on the Runs page when it finishes.",
            icon=":material/compare_arrows:",
        )
    else:
        show_progress(record, status)
    if active and st.button(
        "Stop",
        key="train_stop",
        icon=":material/stop:",
        help="Stops after the current batch; the best weights so far are kept.",
    ):
        if manager.stop(run_id):
            st.toast("Stopping after the current batch…")
        else:
            st.warning("This run belongs to another process: stop it there.")
    epochs = store.epochs(run_id)
    marks = phase_starts(epochs, status, store.phases(run_id))
    if not active:
        show_outcome(record, len(epochs))
        show_best_phase(store, record, marks)
        show_transfer_verdict(store, record)
        show_classic_baseline(record)
    planned = status.progress.total_epochs if status is not None and active else None
    show_curves(epochs, marks, planned or None, live=active)
    show_log(store, run_id, expanded=record.status in ("failed", "interrupted"))
    if shown_status is not None and (record.status != shown_status or not active):
        st.rerun()  # a finished run is drawn once more without the 1-second timer


def show_classic_baseline(record: RunRecord) -> None:
    """A text run's comparison with TF-IDF + logistic regression (`compare_scratch`), beside the scratch verdict.

    An analyst sees whether transfer beats a bag of words fitted on the same training documents and scored on the
    same held-out ones; image runs have no such key and show nothing.
    """
    metrics = record.metrics
    if classic_baseline.ACCURACY_KEY not in metrics:
        return
    classic = metrics[classic_baseline.ACCURACY_KEY]
    if classic is None:
        st.caption(f"The classic baseline ({classic_baseline.NAME}) could not be fitted: the log says why.")
        return
    transfer = metrics.get("evaluation_accuracy")
    accuracies = (
        f"transfer {format_percent(transfer)} vs {format_percent(classic)} for {classic_baseline.NAME} "
        "fitted on the same training documents"
    )
    if transfer is not None and transfer > classic:
        st.info(f"Transfer beats a bag of words ({accuracies}).", icon=":material/text_fields:")
    else:
        st.warning(
            f"Transfer does not beat a bag of words ({accuracies}): try fine-tuning, another text backbone, or "
            "reading more words per document.",
            icon=":material/text_fields:",
        )


def start_button(manager: UserJobs, config: RunConfig) -> None:
    """The planned run in one line, and the button that queues it."""
    model, train = config.model, config.train
    st.caption(
        f"Dataset {escape_markdown(Path(config.data.source).name)} · backbone {escape_markdown(model.backbone)} ({escape_markdown(weights_words(model))}) · "
        f"{model.image_size or 'default'} px · {mode_label(train.mode, short=True)} · {train.epochs} epochs"
        + (
            f" + {train.stage_epochs} per unfrozen block"
            if train.mode == "progressive"
            else f" + {train.fine_tune_epochs} fine-tune"
            if train.mode != "feature-extraction"
            else ""
        )
        + f" · batch {train.batch_size} · learning rate {train.learning_rate:g}"
        + (f" · cut at {escape_markdown(model.cut_layer)}" if model.cut_layer else "")
        + (" · with a from-scratch baseline" if train.compare_scratch else "")
    )
    active = manager.active_run_ids()
    label = "Queue training" if active else "Start training"
    if st.button(
        label,
        key="train_start",
        type="primary",
        icon=":material/play_arrow:",
        help="Training runs on the server in the background: you can leave this page and come back.",
    ):
        try:
            problem = dataset_problem(config.data.source)
            if problem:
                raise ConfigError(problem)
            set_current_run(manager.submit(config))
        except (ConfigError, TransferLabError) as exc:
            show_error(exc)
    if active:
        st.caption(busy_caption(active, manager))


def watched_run(store: RunStore, manager: UserJobs, active: list[str]) -> RunRecord | None:
    """The run in view: this user's current run while it is active or nothing else is; otherwise the work in
    progress (the running run first), so the page follows a queue started elsewhere (Runs page, another tab)."""
    record = None
    if (run_id := current_run_id()) is not None:
        try:
            record = store.get(run_id)
        except RunNotFoundError:  # deleted on the Runs page
            record = None
    if record is not None and (not active or is_active(record, manager.status(record.id))):
        return record
    candidates = active or [record.id for record in store.list_runs()[:1]]
    set_current_run(candidates[0] if candidates else None)
    return store.get(candidates[0]) if candidates else None


def train_page() -> None:
    """The Train page: start the planned run, watch the run in view live, and every other queued or running run."""
    st.title("Train")
    store, manager = get_store(), get_manager()
    config = planned_config()
    if config is not None:
        start_button(manager, config)
    active = manager.active_run_ids()
    watched = watched_run(store, manager, active)
    st.fragment(run_every=poll_seconds(active))(follow_queue)(
        store, manager, tuple(active), watched.id if watched else None
    )
    if watched is None:
        st.caption("No run yet: press Start to train one.")
    elif is_active(watched, manager.status(watched.id)):
        st.fragment(run_every=1.0)(run_panel)(store, manager, watched.id, watched.status)
    else:
        run_panel(store, manager, watched.id, None)


if __name__ == "__main__":  # Streamlit ran this file itself instead of app.py: see ui.navigation.run_app_instead
    run_app_instead()
