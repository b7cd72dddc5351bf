"""The sign-in screen of a workshop server: password, one-time class code, or the identity provider (st.login).

Nothing of the app is drawn before someone signs in: `app.py` calls `show_sign_in` and stops.
"""

from __future__ import annotations

import hashlib

import streamlit as st

from tl_core.server.accounts import AuthError, User, UserDirectory
from tl_core.server.settings import ServerSettings
from ui import sessions
from ui.sessions import ENDED_KEY, OIDC_USER_PREFIX, client_key, sign_in_throttle
from ui.state import server_settings, sign_in
from ui.text import escape_markdown, show_error


def users() -> UserDirectory:
    """The server's accounts and class codes."""
    return sessions.users(server_settings())


def oidc_user() -> User:
    """The TransferLab user for the identity provider's signed-in person (a student).

    The name is derived from the provider's stable subject id, never from an e-mail a person could
    choose, so two people never share a workspace.
    """
    subject = f"{st.user.get('iss', '')}|{st.user.get('sub') or st.user.get('email', '')}"
    name = OIDC_USER_PREFIX + hashlib.sha256(subject.encode()).hexdigest()[:16]
    shown = str(st.user.get("name") or st.user.get("email") or name)
    return User(name, "student", " ".join(shown.split())[:60] or name)


def sign_in_page() -> None:
    """The page a workshop server shows until someone signs in (see `show_sign_in`)."""
    show_sign_in(server_settings())


def show_sign_in(settings: ServerSettings) -> None:
    """Draw the sign-in tabs; on success start the session as that user and rerun into the app."""
    if settings.oidc_configured and st.user.get("is_logged_in"):
        sign_in(oidc_user())
        st.rerun()
    st.title("TransferLab")
    st.caption("This is a shared workshop server: sign in to see your datasets and runs.")
    ended = st.session_state.pop(ENDED_KEY, None)
    if ended:
        st.info(ended, icon=":material/logout:")
    labels = [":material/password: Password", ":material/confirmation_number: Class code"]
    if settings.oidc_configured:
        labels.append(":material/badge: Organisation account")
    tabs = st.tabs(labels)
    with tabs[0]:
        _password_form()
    with tabs[1]:
        _class_code_form()
    if settings.oidc_configured:
        with tabs[2]:
            st.caption("Sign in with your organisation's account; you come back here afterwards.")
            for provider in _oidc_providers():
                label = "Continue to sign-in" if provider is None else f"Sign in with {provider}"
                if st.button(label, key=f"signin_oidc_{provider or 'default'}", icon=":material/login:"):
                    st.login(provider)


def _oidc_providers() -> list[str | None]:
    """The `[auth.NAME]` provider tables of Streamlit's secrets, or [None] when `[auth]` itself names the provider."""
    auth = st.secrets.get("auth", {})
    named = [name for name, table in auth.items() if hasattr(table, "get") and table.get("client_id")]
    return named or [None]


def _password_form() -> None:
    with st.form("signin_password_form", clear_on_submit=True, border=False):
        name = st.text_input("User name", key="signin_name", autocomplete="username")
        password = st.text_input("Password", type="password", key="signin_password", autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", key="signin_submit", type="primary")
    if not submitted:
        return
    throttle, client = sign_in_throttle(), client_key(server_settings(), name)
    wait = throttle.wait_s(name, client)
    if wait > 0:
        st.error(
            f"Too many wrong passwords for this name from this browser: try again in {wait:.0f} s, "
            "or ask your trainer to reset your password.",
            icon=":material/timer:",
        )
        return
    try:
        user = users().verify(name, password)
    except AuthError as exc:  # a damaged or unreadable users file
        show_error(exc)
        return
    if user is None:
        throttle.record_failure(name, client)
        st.error(
            "Wrong user name or password. Check both (they are case-sensitive), or ask your trainer.",
            icon=":material/error:",
        )
        return
    throttle.record_success(name, client)
    sign_in(user)
    st.rerun()


def _class_code_form() -> None:
    st.caption(
        "First time here? Your trainer gave you a class code: it makes your account once. "
        "Afterwards, sign in with the user name shown and your password."
    )
    with st.form("signin_code_form", clear_on_submit=False, border=False):
        code = st.text_input("Class code", key="signin_code", autocomplete="off")
        display_name = st.text_input(
            "Your name",
            key="signin_display_name",
            max_chars=60,
            help="Shown to your trainer; your user name is made from it.",
        )
        password = st.text_input(
            "Choose a password", type="password", key="signin_new_password", autocomplete="new-password"
        )
        repeated = st.text_input(
            "Password again", type="password", key="signin_new_password_again", autocomplete="new-password"
        )
        submitted = st.form_submit_button("Create my account", key="signin_code_submit", type="primary")
    if not submitted:
        return
    if password != repeated:
        st.error("The two passwords differ: type the same password twice.", icon=":material/error:")
        return
    try:
        user = users().redeem_class_code(code, display_name, password)
    except AuthError as exc:
        show_error(exc)
        return
    sign_in(user)
    st.session_state["signin_welcome"] = (
        f"Welcome, {user.display_name}! Your user name is {user.name}: sign in with it and your password next time."
    )
    st.rerun()


def show_welcome() -> None:
    """The one-time welcome after a class code made an account (it names the new user name)."""
    message = st.session_state.pop("signin_welcome", None)
    if message:
        st.success(escape_markdown(message), icon=":material/celebration:")
