"""Who is signed in on a workshop server, kept across reloads and tabs, and ended when the account changes.

A sign-in starts a `tl_core.server.sessions` session whose token the browser keeps in a cookie, so a reload or a
new tab resumes it. Every page run checks the session again: a trainer revoking it, removing the account
or setting a new password ends it at the user's next click. The accounts, sessions and the password
throttle are process-wide objects (`ui.singletons`), never in a cache a client could clear.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from tl_core.server.accounts import User, UserDirectory
from tl_core.server.sessions import SessionStore
from tl_core.server.settings import ServerSettings
from tl_core.server.sign_in_throttle import SignInThrottle
from ui.cookies import get_cookie, queue_cookie
from ui.singletons import process_wide

USER_KEY = "signed_in_user"
TOKEN_KEY = "session_token"
ENDED_KEY = "session_ended"
SESSION_COOKIE = "transferlab_session"
DEVICE_COOKIE = "transferlab_device"
DEVICE_COOKIE_AGE_S = 180 * 24 * 3600
OIDC_USER_PREFIX = "sso_"  # an underscore: names made from class codes never hold one, so they cannot collide


@process_wide
def user_directory(users_file: str) -> UserDirectory:
    """The server's accounts and class codes (it re-reads its file on every call)."""
    return UserDirectory(users_file)


@process_wide
def session_store(folder: str) -> SessionStore:
    """The server's sign-in sessions, in a database next to the users file."""
    return SessionStore(folder)


@process_wide
def sign_in_throttle() -> SignInThrottle:
    """Wrong passwords per account and client (one per server process)."""
    return SignInThrottle()


def users(settings: ServerSettings) -> UserDirectory:
    return user_directory(str(settings.users_file))


def sessions(settings: ServerSettings) -> SessionStore:
    return session_store(str(Path(settings.users_file).parent))


def resume_user(settings: ServerSettings) -> User | None:
    """The user this browser session belongs to, checked again now; None when nobody is (or is no longer) signed in."""
    user = st.session_state.get(USER_KEY)
    if isinstance(user, User):
        if _still_signed_in(settings, user):
            return user
        st.session_state.clear()
        st.session_state[ENDED_KEY] = (
            "Your session has ended (signed out by the trainer, or your account changed): sign in again."
        )
        return None
    token = get_cookie(SESSION_COOKIE)
    if not token:
        return None
    directory = users(settings)
    name = sessions(settings).resolve(token, directory.account_stamp)
    resumed = directory.get_user(name) if name else None
    if resumed is not None:  # a reload or a new tab of a signed-in browser
        st.session_state[USER_KEY] = resumed
        st.session_state[TOKEN_KEY] = token
    return resumed


def start_session(settings: ServerSettings, user: User) -> None:
    """Sign this browser in as `user`, forgetting anything a previous user of this tab picked.

    Password and class-code users get a session token in a cookie (resumed by a reload or a new tab) and a
    device value that keeps their own browser apart from anyone guessing their password. Identity-provider
    users are resumed by Streamlit's own `st.login` cookie instead.
    """
    st.session_state.clear()
    st.session_state[USER_KEY] = user
    if user.name.startswith(OIDC_USER_PREFIX):
        return
    store = sessions(settings)
    token = store.start(user.name, users(settings).account_stamp(user.name) or "")
    st.session_state[TOKEN_KEY] = token
    queue_cookie(SESSION_COOKIE, token, int(store.lifetime_s))
    queue_cookie(DEVICE_COOKIE, store.device_value(user.name), DEVICE_COOKIE_AGE_S)


def end_session(settings: ServerSettings) -> None:
    """Sign this browser out: the session ends on the server, and its cookie is deleted."""
    sessions(settings).end(st.session_state.get(TOKEN_KEY))
    st.session_state.clear()
    queue_cookie(SESSION_COOKIE, "", 0)


def client_key(settings: ServerSettings, account: str) -> str:
    """Whose wrong passwords these are: this browser's device value when it signed in as `account` before, else its address."""
    device = get_cookie(DEVICE_COOKIE)
    if device and (sessions(settings).device_owner(device) or "").lower() == account.strip().lower():
        return f"device:{device}"
    try:
        address = st.context.ip_address  # None on loopback
    except (AttributeError, RuntimeError):
        address = None
    return (
        f"ip:{address}" if isinstance(address, str) and address else "ip:loopback"
    )  # AppTest's context answers with mocks


def _still_signed_in(settings: ServerSettings, user: User) -> bool:
    if user.name.startswith(OIDC_USER_PREFIX):
        return bool(st.user.get("is_logged_in"))
    token = st.session_state.get(TOKEN_KEY)
    return sessions(settings).resolve(token, users(settings).account_stamp) == user.name
