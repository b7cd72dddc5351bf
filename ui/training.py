"""A run's live view: status line, progress with ETA, loss/accuracy curves with phase rules, log."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from tl_core.jobs import JobStatus
from tl_core.runs import EpochRecord, RunRecord, RunStore
from ui.charts import PHASE_LABELS, curve_chart, epochs_to_curves
from ui.text import escape_markdown, format_duration, format_percent

LOG_TAIL_LINES = 300
ACTIVE_STATUSES = ("queued", "running")


def phase_starts(epochs: Sequence[EpochRecord], status: JobStatus | None) -> list[tuple[str, int]]:
    """(phase, first epoch) for each phase, in order: from stored epochs plus a phase just begun."""
    starts: dict[str, int] = {}
    for record in epochs:
        starts.setdefault(record.phase, record.epoch)
    if status is not None:
        for phase, first_epoch in status.progress.phase_starts:
            starts.setdefault(phase, first_epoch)
    return sorted(starts.items(), key=lambda item: item[1])


def is_active(record: RunRecord, status: JobStatus | None) -> bool:
    """Whether the run can still change: queued or running here, or in another process."""
    if status is not None:
        return status.state != "finished"
    return record.status in ACTIVE_STATUSES


def show_progress(record: RunRecord, status: JobStatus | None) -> None:
    """'Queued, position N', or a progress bar with epoch, phase, batch and ETA."""
    if status is None:
        if record.status in ACTIVE_STATUSES:
            st.info(f"{record.status.capitalize()} in another process: the curves update as its epochs finish.", icon=":material/sync:")
        return
    progress = status.progress
    if status.state == "queued":
        st.info(f"Queued, position {status.queue_position}: it starts when the run before it finishes.", icon=":material/schedule:")
        return
    if status.state == "finished":
        return
    if not progress.total_epochs:
        st.progress(0.0, text="Preparing: reading images and building the model…")
        return
    phase = PHASE_LABELS.get(progress.phase, progress.phase)
    batch = f" · batch {progress.batch}/{progress.batches_per_epoch}" if progress.batches_per_epoch else ""
    eta = format_duration(progress.eta_s) if progress.eta_s is not None else "estimating…"
    text = f"Epoch {min(progress.epoch + 1, progress.total_epochs)} of {progress.total_epochs} · {phase}{batch} · ETA {eta}"
    st.progress(progress.fraction_done, text=text)


def show_outcome(record: RunRecord) -> None:
    """The final line of a finished run: accuracy when it completed, the reason otherwise."""
    metrics = record.metrics
    if record.status == "completed":
        test = metrics.get("test_accuracy")
        accuracy = f"test accuracy {format_percent(test)}" if test is not None else f"validation accuracy {format_percent(metrics.get('val_accuracy'))}"
        st.success(f"Completed in {format_duration(metrics.get('elapsed_s', record.elapsed_s))}: {accuracy}.", icon=":material/check_circle:")
        cols = st.columns(4)
        cols[0].metric("Test accuracy", format_percent(test))
        cols[1].metric("Best validation accuracy", format_percent(metrics.get("val_accuracy")))
        cols[2].metric("Epochs", int(metrics.get("epochs_run", 0)))
        cols[3].metric("Time", format_duration(metrics.get("elapsed_s", record.elapsed_s)))
        st.page_link("pages/evaluate.py", label="See the evaluation", icon=":material/fact_check:")
        st.page_link("pages/predict.py", label="Try it on new images or export it", icon=":material/upload_file:")
    elif record.status == "stopped":
        st.warning(f"Stopped after {int(metrics.get('epochs_run', 0))} epoch(s); the best weights so far were kept.", icon=":material/stop_circle:")
    elif record.status in ("failed", "interrupted"):
        st.error(f"Run {record.status}: " + escape_markdown(record.error or "see the log below."), icon=":material/error:")


def show_curves(epochs: Sequence[EpochRecord], starts: Sequence[tuple[str, int]], planned_epochs: int | None) -> None:
    """Loss and accuracy, training vs validation, side by side."""
    if not epochs:
        st.caption("The curves appear when the first epoch ends.")
        return
    epoch_metrics = [(record.epoch, record.metrics) for record in epochs]
    loss_col, accuracy_col = st.columns(2)
    with loss_col:
        st.altair_chart(curve_chart(epochs_to_curves(epoch_metrics, "loss"), "loss", starts, max_epoch=planned_epochs), width="stretch")
    with accuracy_col:
        st.altair_chart(curve_chart(epochs_to_curves(epoch_metrics, "accuracy"), "accuracy", starts, percent=True, max_epoch=planned_epochs),
                        width="stretch")
    best = next((record for record in reversed(epochs) if record.is_best), None)
    if best is not None:
        st.caption(f"Best epoch so far: {best.epoch} (validation loss {best.metrics.get('val_loss', float('nan')):.4f}, "
                   f"accuracy {format_percent(best.metrics.get('val_accuracy'))}); its weights are the ones kept.")


def show_log(store: RunStore, run_id: str, *, expanded: bool) -> None:
    """The last lines of the run's log, verbatim."""
    lines = store.read_log(run_id).splitlines()
    with st.expander(f"Log ({len(lines)} lines)", expanded=expanded, icon=":material/article:"):
        st.code("\n".join(lines[-LOG_TAIL_LINES:]) or "(empty)", language=None)
