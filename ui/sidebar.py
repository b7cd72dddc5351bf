"""The sidebar every page shares: which dataset and which run this user is working on."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from tl_core.errors import RunNotFoundError
from ui.state import current_dataset, current_run_id, get_store
from ui.text import escape_markdown

ACTIVE_STATUSES = ("queued", "running")
ACTIVE_POLL_S = 2.0
STATUS_ICONS = {
    "queued": ":material/schedule:", "running": ":material/autorenew:", "completed": ":material/check_circle:",
    "stopped": ":material/stop_circle:", "failed": ":material/error:", "interrupted": ":material/warning:",
}


def show_context() -> None:
    """Current dataset and run in the sidebar (plain text: both names come from users)."""
    with st.sidebar:
        st.caption("Dataset")
        dataset = current_dataset()
        st.markdown(f"**{escape_markdown(Path(dataset).name)}**" if dataset else "_none chosen_")
        st.caption("Run")
        run_id = current_run_id()
        if run_id is None:
            st.markdown("_none yet_")
            return
        try:
            status = get_store().get(run_id).status
        except RunNotFoundError:
            st.markdown("_deleted_")
            return
        # While the run is active the status re-reads itself: the page's own live fragment never reruns the sidebar.
        st.fragment(run_every=ACTIVE_POLL_S if status in ACTIVE_STATUSES else None)(_show_run)(run_id)


def _show_run(run_id: str) -> None:
    try:
        record = get_store().get(run_id)
    except RunNotFoundError:
        st.markdown("_deleted_")
        return
    st.markdown(f"{STATUS_ICONS.get(record.status, '')} **{escape_markdown(record.name)}**  \n{record.status}")
