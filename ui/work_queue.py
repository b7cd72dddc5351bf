"""This user's queued and running jobs on the Train page, each with its Stop, always current.

A fragment re-reads the queue every few seconds; when the set of active runs changes (a run starts, finishes or
is stopped, here or in another tab) it redraws the whole page, so the Start button's label, the counts and the
run in view follow the queue's real state.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from tl_core.errors import RunNotFoundError
from tl_core.runs.store import RunStore
from ui.settings import mode_label
from ui.state import UserJobs, set_current_run
from ui.text import escape_markdown, starts_in

ACTIVE_POLL_S = 2.0
IDLE_POLL_S = 5.0  # nothing active: a run queued from another tab or the Runs page still shows up


def busy_caption(active: Sequence[str], manager: UserJobs) -> str:
    """`1 run training and 2 queued: a new one starts after them.` (only for a non-empty queue)."""
    running = sum(1 for run_id in active if (status := manager.status(run_id)) and status.state == "running")
    waiting = len(active) - running
    parts = [f"{running} run{'s' if running != 1 else ''} training"] if running else []
    parts += [f"{waiting} queued"] if waiting else []
    return " and ".join(parts) + ": a new one starts after them (one run trains at a time)."


def follow_queue(store: RunStore, manager: UserJobs, drawn: tuple[str, ...], focus: str | None) -> None:
    """Redraw the page when the active runs differ from `drawn`; list the active runs other than `focus`."""
    active = tuple(manager.active_run_ids())
    if active != drawn:
        st.rerun()
    others = [run_id for run_id in active if run_id != focus]
    if not others:
        return
    st.markdown(f"**Also in your queue** ({len(others)})")
    for run_id in others:
        _queue_row(store, manager, run_id)


def _queue_row(store: RunStore, manager: UserJobs, run_id: str) -> None:
    try:
        record = store.get(run_id)
    except RunNotFoundError:
        return
    status = manager.status(run_id)
    if status is None or status.state == "finished":
        return
    if status.state == "queued":
        when = f", starts {starts_in(status.estimated_start)}" if status.estimated_start is not None else ""
        state = f"queued, position {status.queue_position}{when}"
    else:
        progress = status.progress
        state = (
            f"training, epoch {min(progress.epoch + 1, progress.total_epochs)} of {progress.total_epochs}"
            if progress.total_epochs
            else "preparing"
        )
    text, watch, stop = st.columns([6, 1, 1], vertical_alignment="center")
    what = (
        ""  # a default or comparison name already says both
        if record.backbone in record.name
        else f" · {escape_markdown(record.backbone)} · {mode_label(record.mode, short=True)}"
    )
    text.markdown(f"**{escape_markdown(record.name)}**{what} · {state}")
    if watch.button("Watch", key=f"queue_watch_{run_id}", icon=":material/visibility:"):
        set_current_run(run_id)
        st.rerun()
    if stop.button("Stop", key=f"queue_stop_{run_id}", icon=":material/stop:", help="Stops this run only."):
        manager.stop(run_id)
        st.rerun()


def poll_seconds(active: Sequence[str]) -> float:
    return ACTIVE_POLL_S if active else IDLE_POLL_S
