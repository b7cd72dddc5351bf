"""A run's live view: status line, progress with ETA, loss/accuracy curves with phase rules, log."""

from __future__ import annotations

import json
from collections.abc import Sequence

import streamlit as st

from tl_core.errors import RunNotFoundError
from tl_core.events import ACTIVE_STATUSES, PREPARATION_STEP_NAMES
from tl_core.jobs.manager import JobStatus
from tl_core.layout import SUMMARY_FILE
from tl_core.runs.records import EpochRecord, PhaseRecord, RunRecord
from tl_core.runs.store import RunStore
from ui.charts import PHASE_LABELS, PhaseMark, curve_chart, epochs_to_curves, phase_label
from ui.navigation import page_link
from ui.runs_table import NEGATIVE_TRANSFER_ADVICE, transfer_verdict
from ui.text import escape_markdown, format_duration, format_percent, safe_label, starts_in, user_message

LOG_TAIL_LINES = 300


def phase_starts(
    epochs: Sequence[EpochRecord], status: JobStatus | None, phases: Sequence[PhaseRecord] = ()
) -> list[PhaseMark]:
    """Every phase in order with its first epoch and open blocks.

    The store's phases come first (they carry the open blocks); epochs and the live job fill in runs
    recorded before phases were stored and a phase begun in another process's job.
    """
    marks: dict[str, PhaseMark] = {
        phase.phase: PhaseMark(phase.phase, phase.first_epoch, phase.open_blocks) for phase in phases
    }
    for record in epochs:
        marks.setdefault(record.phase, PhaseMark(record.phase, record.epoch))
    if status is not None:
        for phase, first_epoch in status.progress.phase_starts:
            marks.setdefault(phase, PhaseMark(phase, first_epoch))
    return sorted(marks.values(), key=lambda mark: mark.first_epoch)


def best_phase_sentence(best_phase: str | None, marks: Sequence[PhaseMark]) -> str | None:
    """`Best model found at stage-2: blocks block6, block7 open.`; None for the head phase or when unknown."""
    if not best_phase or best_phase == "head":
        return None
    blocks = next((mark.open_blocks for mark in marks if mark.phase == best_phase), ())
    if blocks:
        return f"Best model found at {best_phase}: blocks {', '.join(blocks)} open."
    return f"Best model found in the {phase_label(best_phase)} phase."


def is_active(record: RunRecord, status: JobStatus | None) -> bool:
    """Whether the run can still change: queued or running here, or in another process."""
    if status is not None:
        return status.state != "finished"
    return record.status in ACTIVE_STATUSES


def show_progress(record: RunRecord, status: JobStatus | None) -> None:
    """'Queued, position N', or a progress bar with epoch, phase, batch and ETA."""
    if status is None:
        if record.status in ACTIVE_STATUSES:
            st.info(
                f"{record.status.capitalize()} in another process: the curves update as its epochs finish.",
                icon=":material/sync:",
            )
        return
    progress = status.progress
    if status.state == "queued":
        start = status.estimated_start
        when = (
            f" Estimated start: {starts_in(start)}."
            if start is not None
            else " The start estimate appears once a run has finished on this server."
        )
        st.info(
            f"Queued, position {status.queue_position}: it starts when the runs before it finish.{when}",
            icon=":material/schedule:",
        )
        return
    if status.state == "finished":
        return
    if progress.is_preparing:  # minutes on a large folder: decoding, or the backbone's one pass over a split
        step = PREPARATION_STEP_NAMES.get(progress.preparing, progress.preparing).capitalize()
        eta = format_duration(progress.preparing_eta_s) if progress.preparing_eta_s is not None else "estimating…"
        text = f"{step} · {progress.preparing_split}: {progress.preparing_done:,} of {progress.preparing_total:,} · ETA {eta}"
        st.progress(progress.preparing_done / progress.preparing_total, text=text)
        return
    if not progress.total_epochs:
        st.progress(0.0, text="Preparing: reading images and building the model…")
        return
    phase = PHASE_LABELS.get(progress.phase, progress.phase)
    batch = f" · batch {progress.batch}/{progress.batches_per_epoch}" if progress.batches_per_epoch else ""
    eta = format_duration(progress.eta_s) if progress.eta_s is not None else "estimating…"
    text = f"Epoch {min(progress.epoch + 1, progress.total_epochs)} of {progress.total_epochs} · {phase}{batch} · ETA {eta}"
    st.progress(progress.fraction_done, text=text)


def show_outcome(record: RunRecord, epochs_recorded: int = 0) -> None:
    """The final line of a finished run: accuracy when it completed, the reason otherwise.

    `epochs_recorded`: epochs in the store (the curves); a run stopped mid-way may have more than its metrics say.
    """
    metrics = record.metrics
    epochs_run = max(int(metrics.get("epochs_run", 0) or 0), epochs_recorded)
    if record.status == "completed":
        test = metrics.get("test_accuracy")
        accuracy = (
            f"test accuracy {format_percent(test)}"
            if test is not None
            else f"validation accuracy {format_percent(metrics.get('val_accuracy'))}"
        )
        st.success(
            f"Completed in {format_duration(metrics.get('elapsed_s', record.elapsed_s))}: {accuracy}.",
            icon=":material/check_circle:",
        )
        cols = st.columns(4)
        cols[0].metric("Test accuracy", format_percent(test))
        cols[1].metric("Best validation accuracy", format_percent(metrics.get("val_accuracy")))
        cols[2].metric("Epochs", epochs_run)
        cols[3].metric("Time", format_duration(metrics.get("elapsed_s", record.elapsed_s)))
        page_link("evaluate", "See the evaluation", ":material/fact_check:")
        page_link("predict", "Try it on new images or export it", ":material/upload_file:")
    elif record.status == "stopped" and record.started_at is None:
        st.warning("Stopped while queued: it never started, so nothing was trained.", icon=":material/stop_circle:")
    elif record.status == "stopped" and not epochs_run:
        st.warning(
            "Stopped before the first epoch, so nothing was trained. The splits decoded (and their features computed) "
            "before the stop are cached: a new run on this data starts after them.",
            icon=":material/stop_circle:",
        )
    elif record.status == "stopped":
        st.warning(
            f"Stopped after {epochs_run} epoch(s); the best weights so far were kept.",
            icon=":material/stop_circle:",
        )
    elif record.status in ("failed", "interrupted"):
        st.error(
            f"Run {record.status}: " + escape_markdown(user_message(record.error or "see the log below.")),
            icon=":material/error:",
        )


def show_curves(
    epochs: Sequence[EpochRecord], starts: Sequence[PhaseMark], planned_epochs: int | None, *, live: bool = False
) -> None:
    """Loss and accuracy, training vs validation, side by side, each later phase marked with its open blocks.

    `live`: the run is still queued or training (words say "so far", and the curves are still to come).
    """
    if not epochs:
        st.caption(
            "The curves appear when the first epoch ends." if live else "No epoch finished, so there are no curves."
        )
        return
    epoch_metrics = [(record.epoch, record.metrics) for record in epochs]
    loss_col, accuracy_col = st.columns(2)
    with loss_col:
        st.altair_chart(
            curve_chart(epochs_to_curves(epoch_metrics, "loss"), "loss", starts, max_epoch=planned_epochs),
            width="stretch",
        )
    with accuracy_col:
        st.altair_chart(
            curve_chart(
                epochs_to_curves(epoch_metrics, "accuracy"), "accuracy", starts, percent=True, max_epoch=planned_epochs
            ),
            width="stretch",
        )
    best = next(
        (record for record in reversed(epochs) if record.is_best), None
    )  # the best value is tracked across phases
    if best is not None:
        where = (
            f" in {phase_label(best.phase, next((m.open_blocks for m in starts if m.phase == best.phase), ()))}"
            if len(starts) > 1
            else ""
        )
        st.caption(
            f"Best epoch{' so far' if live else ''}: {best.epoch}{escape_markdown(where)} (validation loss {best.metrics.get('val_loss', float('nan')):.4f}, "
            f"accuracy {format_percent(best.metrics.get('val_accuracy'))}); its weights are the ones kept."
        )


def show_log(store: RunStore, run_id: str, *, expanded: bool) -> None:
    """The last lines of the run's log, verbatim but for server paths (`user_message`) and hidden characters (`safe_label`)."""
    lines = [safe_label(line) for line in user_message(store.read_log(run_id)).splitlines()]
    with st.expander(f"Log ({len(lines)} lines)", expanded=expanded, icon=":material/article:"):
        st.code("\n".join(lines[-LOG_TAIL_LINES:]) or "(empty)", language=None)


def run_summary(store: RunStore, run_id: str) -> dict:
    """The run's summary.json (best phase, transfer verdict ...); empty before the run has finished."""
    path = store.run_dir(run_id) / SUMMARY_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # being written by the worker right now: the next redraw reads it


def show_best_phase(store: RunStore, record: RunRecord, marks: Sequence[PhaseMark]) -> None:
    """For a finished run trained in several phases: at which phase (and depth) the kept model was found."""
    sentence = best_phase_sentence(run_summary(store, record.id).get("best_phase"), marks)
    if sentence:
        st.info(escape_markdown(sentence), icon=":material/layers:")


def show_transfer_verdict(store: RunStore, record: RunRecord) -> None:
    """Negative transfer (red, with the margin, both accuracies, the baseline run and what to try) or that pretraining helped."""
    scratch_id = record.metrics.get("scratch_run_id")
    try:
        scratch = store.get(scratch_id) if scratch_id else None
    except RunNotFoundError:  # the baseline was deleted; its numbers stay in this run's metrics
        scratch = None
    verdict = transfer_verdict(record, scratch)
    if verdict is None:
        if scratch_id:
            st.caption(f"The from-scratch baseline (run {escape_markdown(scratch_id)}) did not finish: no verdict.")
        return
    baseline = (
        f"run {escape_markdown(scratch.name)} ({escape_markdown(scratch.id)})"
        if scratch
        else f"run {escape_markdown(verdict.scratch_run_id or '?')}"
    )
    accuracies = (
        f"pretrained {format_percent(verdict.pretrained_accuracy)} vs from scratch {format_percent(verdict.scratch_accuracy)}, "
        f"baseline {baseline}"
    )
    if verdict.negative:
        st.error(
            f"**Negative transfer**: training from scratch beats the pretrained backbone by {100 * verdict.margin:.1f} percentage points "
            f"({accuracies}). {NEGATIVE_TRANSFER_ADVICE}",
            icon=":material/trending_down:",
        )
    else:
        st.success(
            f"Pretraining helps: the pretrained backbone beats training from scratch by {100 * -verdict.margin:.1f} percentage points "
            f"({accuracies}).",
            icon=":material/trending_up:",
        )
