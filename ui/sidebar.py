"""The sidebar every page shares: who is signed in, and which dataset and run this user is working on."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from tl_core.errors import RunNotFoundError
from tl_core.events import ACTIVE_STATUSES
from tl_core.server.accounts import User
from ui.state import current_dataset, current_run_id, current_user, get_store, set_current_run, sign_out
from ui.text import escape_markdown

ACTIVE_POLL_S = 2.0
STATUS_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/autorenew:",
    "completed": ":material/check_circle:",
    "stopped": ":material/stop_circle:",
    "failed": ":material/error:",
    "interrupted": ":material/warning:",
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
        except RunNotFoundError:  # deleted on the Runs page or in another tab: no chip for a run that is gone
            set_current_run(None)
            st.markdown("_none yet_")
            return
        # While the run is active the status re-reads itself: the page's own live fragment never reruns the sidebar.
        st.fragment(run_every=ACTIVE_POLL_S if status in ACTIVE_STATUSES else None)(_show_run)(run_id)


def show_account() -> None:
    """Who is signed in (top of the sidebar), with their user name and role, and a sign-out button."""
    user = current_user()
    with st.sidebar:
        _show_account(user)


def _show_account(user: User) -> None:
    st.caption("Signed in as")
    st.markdown(f"**{escape_markdown(user.display_name)}**  \n{escape_markdown(user.name)} · {user.role}")
    if st.button("Sign out", key="signout", icon=":material/logout:"):
        from_identity_provider = bool(st.user.get("is_logged_in"))
        sign_out()
        if from_identity_provider:
            st.logout()  # also drops the provider's cookie, or the next run would sign the same person in again
        st.rerun()
    st.divider()


def _show_run(run_id: str) -> None:
    try:
        record = get_store().get(run_id)
    except RunNotFoundError:
        st.markdown("_deleted_")
        return
    st.markdown(f"{STATUS_ICONS.get(record.status, '')} **{escape_markdown(record.name)}**  \n{record.status}")
