"""Trainer: accounts and class codes, everyone's runs, disk use per user, and cleaning up to free space.

`app.py` adds this page only for trainers on a workshop server; the page checks again before drawing.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from tl_core.errors import TransferLabError
from tl_core.events import ACTIVE_STATUSES
from tl_core.jobs.backend import RUN_JOB
from tl_core.jobs.manager import JobManager
from tl_core.server.accounts import User, UserDirectory
from tl_core.server.sessions import SessionStore
from tl_core.server.workspaces import Workspaces
from ui.navigation import run_app_instead
from ui.sessions import sessions
from ui.signin import users
from ui.state import current_user, get_manager, is_workshop, server_settings, workspaces
from ui.text import format_duration, safe_label, show_error

MB = 1 << 20
CLEANUP_CONFIRM_KEY = "trainer_cleanup_pending"
RUN_DELETE_CONFIRM_KEY = "trainer_runs_pending"
QUEUE_STOP_CONFIRM_KEY = "trainer_queue_pending"


JOB_KIND_LABELS = {RUN_JOB: "training run", "advice": "mode advice", "cut-probe": "cut-depth probe"}


def queue_frame(manager: JobManager, run_ids: list[str]) -> pd.DataFrame:
    """Running then queued jobs of every user, with position, device and estimated start."""
    rows = []
    for run_id in run_ids:
        status = manager.status(run_id)
        if status is None:
            continue
        start = status.estimated_start
        rows.append(
            {
                "user": status.owner,
                "id": run_id,
                "kind": JOB_KIND_LABELS.get(status.kind, status.kind),
                "state": status.state,
                "position": status.queue_position,
                "device": status.device or "",
                "progress": round(status.progress.fraction_done, 2) if status.state == "running" else None,
                "now": status.progress.activity if status.state == "running" else "",
                "starts in": format_duration(max(0.0, start - time.time()))
                if status.state == "queued" and start is not None
                else "",
            }
        )
    return pd.DataFrame(
        rows, columns=["user", "id", "kind", "state", "position", "device", "progress", "now", "starts in"]
    )


def usage_frame(spaces: Workspaces, directory: UserDirectory) -> pd.DataFrame:
    """One row per account or workspace folder: role and megabytes used by kind."""
    accounts = {account.name: account for account in directory.list_users()}
    rows = []
    for name in sorted(set(accounts) | set(spaces.usernames())):
        usage = spaces.disk_usage(name)
        account = accounts.get(name)
        rows.append(
            {
                "user": name,
                "name": safe_label(account.display_name) if account else "",
                "role": account.role if account else "(no account)",
                "datasets MB": round(usage.datasets / MB, 1),
                "caches MB": round(usage.cache / MB, 1),
                "runs MB": round(usage.runs / MB, 1),
                "total MB": round(usage.total / MB, 1),
            }
        )
    return pd.DataFrame(rows, columns=["user", "name", "role", "datasets MB", "caches MB", "runs MB", "total MB"])


def queue_tab(manager: JobManager) -> None:
    """Every user's running and queued jobs (training runs and the advisor's measurements, which hold device
    slots too); stop some after a confirmation."""
    active_ids = manager.active_job_ids()
    if not active_ids:
        st.info("No job is queued or running.", icon=":material/check_circle:")
    else:
        st.caption(
            f"{len(active_ids)} job(s); {sum(manager.slots.values())} run at once. First in, first out across users."
        )
        st.dataframe(
            queue_frame(manager, active_ids),
            hide_index=True,
            width="stretch",
            column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)},
        )
        chosen = st.multiselect("Jobs to stop or take out of the queue", active_ids, key="trainer_queue_select")
        if st.button("Stop selected", key="trainer_queue_stop", disabled=not chosen, icon=":material/stop_circle:"):
            st.session_state[QUEUE_STOP_CONFIRM_KEY] = list(chosen)
        pending = [run_id for run_id in st.session_state.get(QUEUE_STOP_CONFIRM_KEY, []) if run_id in active_ids]
        if pending:
            st.warning(
                f"Stop {len(pending)} job(s) of other users? Running ones keep their best weights; queued ones are dropped.",
                icon=":material/warning:",
            )
            yes_col, no_col = st.columns(2)
            if yes_col.button("Yes, stop", key="trainer_queue_stop_confirm", type="primary"):
                for run_id in pending:
                    manager.stop(run_id)
                st.session_state.pop(QUEUE_STOP_CONFIRM_KEY, None)
                st.rerun()
            if no_col.button("Cancel", key="trainer_queue_stop_cancel"):
                st.session_state.pop(QUEUE_STOP_CONFIRM_KEY, None)
                st.rerun()


def accounts_tab(spaces: Workspaces, directory: UserDirectory, session_store: SessionStore) -> None:
    """Accounts with their disk use, and signing a user out everywhere."""
    # Dataframes show text as text: names users typed cannot turn into links or markup here.
    st.dataframe(usage_frame(spaces, directory), hide_index=True, width="stretch")
    quota = f"{spaces.disk_quota_mb:,} MB per user" if spaces.disk_quota_mb else "no disk quota"
    st.caption(
        f"{quota}; uploads up to {spaces.max_upload_mb:,} MB. Add or remove accounts with `python -m tl_core users ...`; "
        "removing an account or setting a new password signs it out everywhere."
    )
    signed_in = session_store.active_counts()
    names = sorted(signed_in)
    if names:
        revoke_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
        chosen_user = revoke_col.selectbox(
            "Signed-in user",
            names,
            key="trainer_signout_user",
            format_func=lambda name: f"{name} ({signed_in[name]} session(s))",
        )
        if button_col.button("Sign out everywhere", key="trainer_signout", icon=":material/logout:"):
            st.success(
                f"Ended {session_store.end_all(chosen_user)} session(s) of {chosen_user}: they sign in again at their next click."
            )


def codes_tab(directory: UserDirectory, user: User) -> None:
    """Class codes: generate some (shown once), revoke the unused ones, list them all."""
    st.caption("Each code makes one student account. Codes are shown once, here and now: only a fingerprint is kept.")
    count_col, days_col = st.columns(2)
    count = count_col.number_input("How many codes", 1, 500, 20, key="trainer_code_count")
    days = days_col.number_input("Valid for (days)", 1, 60, 7, key="trainer_code_days")
    if st.button("Generate codes", key="trainer_codes_new", type="primary", icon=":material/add:"):
        try:
            codes = directory.create_class_codes(int(count), user.name, lifetime_s=float(days) * 86400)
        except TransferLabError as exc:
            show_error(exc)
        else:
            st.success(
                f"{len(codes)} new code(s): copy or print them now, they are not shown again.",
                icon=":material/check_circle:",
            )
            st.code("\n".join(codes), language=None)
    if any(info.used_by is None for info in directory.list_class_codes()):
        if st.button("Revoke every unused code", key="trainer_codes_revoke", icon=":material/block:"):
            st.success(f"Revoked {directory.revoke_unused_codes()} unused code(s).")
    codes_info = directory.list_class_codes()  # after generating or revoking, so the table is current
    if codes_info:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "code": f"{info.digest_prefix}…",
                        "made by": info.created_by,
                        "made": time.strftime("%Y-%m-%d %H:%M", time.localtime(info.created_at)),
                        "expires": time.strftime("%Y-%m-%d %H:%M", time.localtime(info.expires_at))
                        if info.expires_at
                        else "never",
                        "used by": info.used_by or "",
                        "usable": info.is_usable,
                    }
                    for info in codes_info
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    else:
        st.caption("No class codes yet.")


def runs_tab(spaces: Workspaces, user: User) -> None:
    """Every user's runs; delete finished ones after a confirmation."""
    all_runs = spaces.all_runs(user)
    if not all_runs:
        st.info("No runs yet on this server.", icon=":material/info:")
    else:
        active = sum(run.record.status in ACTIVE_STATUSES for run in all_runs)
        st.caption(f"{len(all_runs)} run(s), {active} queued or running.")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "user": run.username,
                        "run": safe_label(run.record.name),
                        "id": run.record.id,
                        "status": run.record.status,
                        "backbone": run.record.backbone,
                        "mode": run.record.mode,
                        "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.record.created_at)),
                        "time": format_duration(run.record.elapsed_s),
                        "val accuracy": run.record.metrics.get("val_accuracy"),
                    }
                    for run in all_runs
                ]
            ),
            hide_index=True,
            width="stretch",
        )
        finished = {
            f"{run.username}/{run.record.id}": run for run in all_runs if run.record.status not in ACTIVE_STATUSES
        }
        chosen = st.multiselect(
            "Runs to delete",
            list(finished),
            key="trainer_runs_delete_select",
            format_func=lambda key: safe_label(f"{finished[key].username}: {finished[key].record.name} ({key[-6:]})"),
            help="Finished, failed and stopped runs; stop a running one first.",
        )
        if st.button("Delete selected runs", key="trainer_runs_delete", disabled=not chosen, icon=":material/delete:"):
            st.session_state[RUN_DELETE_CONFIRM_KEY] = list(chosen)
        pending = [key for key in st.session_state.get(RUN_DELETE_CONFIRM_KEY, []) if key in finished]
        if pending:
            st.warning(
                f"Delete {len(pending)} run(s) of other users with their files? This cannot be undone.",
                icon=":material/warning:",
            )
            yes_col, no_col = st.columns(2)
            if yes_col.button("Yes, delete", key="trainer_runs_delete_confirm", type="primary"):
                for key in pending:
                    run = finished[key]
                    try:
                        spaces.workspace_for(user, run.username).store().delete(run.record.id)
                    except TransferLabError as exc:
                        show_error(exc)
                    spaces.forget_usage(run.username)
                st.session_state.pop(RUN_DELETE_CONFIRM_KEY, None)
                st.rerun()
            if no_col.button("Cancel", key="trainer_runs_delete_cancel"):
                st.session_state.pop(RUN_DELETE_CONFIRM_KEY, None)
                st.rerun()


def disk_tab(spaces: Workspaces, user: User) -> None:
    """The biggest things that can go, deleted after a confirmation."""
    st.caption(
        "The biggest things that can go: cached features and extracted archives (rebuilt when needed), "
        "and failed, interrupted or stopped runs."
    )
    candidates = spaces.cleanup_candidates(user)
    by_key = {f"{c.username}/{c.kind}/{c.path.parent.name}/{c.path.name}": c for c in candidates}
    if not candidates:
        st.info("Nothing to clean up.", icon=":material/check_circle:")
    else:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "user": c.username,
                        "what": safe_label(c.description),
                        "MB": round(c.size_bytes / MB, 1),
                    }
                    for c in candidates
                ]
            ),
            hide_index=True,
            width="stretch",
        )
        chosen = st.multiselect(
            "To delete",
            list(by_key),
            key="trainer_cleanup_select",
            format_func=lambda key: safe_label(
                f"{by_key[key].username}: {by_key[key].description} ({by_key[key].size_bytes / MB:,.1f} MB)"
            ),
        )
        if st.button("Delete selected", key="trainer_cleanup", disabled=not chosen, icon=":material/delete_sweep:"):
            st.session_state[CLEANUP_CONFIRM_KEY] = list(chosen)
        pending = [key for key in st.session_state.get(CLEANUP_CONFIRM_KEY, []) if key in by_key]
        if pending:
            total = sum(by_key[key].size_bytes for key in pending) / MB
            st.warning(
                f"Delete {len(pending)} item(s), {total:,.1f} MB? This cannot be undone.", icon=":material/warning:"
            )
            yes_col, no_col = st.columns(2)
            if yes_col.button("Yes, delete", key="trainer_cleanup_confirm", type="primary"):
                for key in pending:
                    try:
                        spaces.delete_candidate(user, by_key[key])
                    except TransferLabError as exc:
                        show_error(exc)
                st.session_state.pop(CLEANUP_CONFIRM_KEY, None)
                st.rerun()
            if no_col.button("Cancel", key="trainer_cleanup_cancel"):
                st.session_state.pop(CLEANUP_CONFIRM_KEY, None)
                st.rerun()


def trainer_page() -> None:
    """The Trainer page, for trainers on a workshop server only: queue, users, class codes, all runs, disk."""
    user = current_user()
    if not (is_workshop() and user.is_trainer):
        st.error("This page is for trainers on a workshop server.", icon=":material/block:")
        st.stop()
    spaces = workspaces()
    directory = users()
    session_store = sessions(server_settings())

    st.title("Trainer")
    st.caption("Everyone's accounts, runs and disk use. Students see only their own datasets and runs.")
    queue, accounts, codes, runs, disk = st.tabs(
        [
            ":material/queue: Queue",
            ":material/group: Users",
            ":material/confirmation_number: Class codes",
            ":material/table_rows: All runs",
            ":material/hard_drive: Disk",
        ]
    )
    with queue:
        queue_tab(get_manager().manager)  # the server's one queue, every user's jobs
    with accounts:
        accounts_tab(spaces, directory, session_store)
    with codes:
        codes_tab(directory, user)
    with runs:
        runs_tab(spaces, user)
    with disk:
        disk_tab(spaces, user)


if __name__ == "__main__":  # Streamlit ran this file itself instead of app.py: see ui.navigation.run_app_instead
    run_app_instead()
