"""Browser cookies for the workshop session: read from the page's connection, written by a one-line script.

Streamlit has no API to set a cookie. Its websocket handshake carries the browser's cookies
(`st.context.cookies`), so a cookie set by a small script on the page is read by every later session of
that browser: a reload or a new tab. Writes are queued in session state and drawn at the top of the next
run (`draw_pending_cookies`), because the run that signs someone in reruns at once and would never reach
the browser. Values are our own tokens (URL-safe characters, digits and dots), never user input.
"""

from __future__ import annotations

import json
import re

import streamlit as st

_PENDING_KEY = "pending_cookie_writes"
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._\-]*$")


def get_cookie(name: str) -> str | None:
    """The cookie `name` the browser sent when this session connected, or None."""
    try:
        value = st.context.cookies.get(name)
    except (AttributeError, RuntimeError):
        return None
    return value if isinstance(value, str) else None  # AppTest has no browser: its context answers with mocks


def queue_cookie(name: str, value: str, max_age_s: int) -> None:
    """Set `name=value` in the browser at the next run; `max_age_s=0` deletes it."""
    if not _SAFE_VALUE.match(value) or not _SAFE_VALUE.match(name):
        raise ValueError(f"Cookie {name!r}: only letters, digits, '.', '_' and '-' may be written.")
    st.session_state.setdefault(_PENDING_KEY, []).append((name, value, int(max_age_s)))


def draw_pending_cookies() -> None:
    """Write the queued cookies in the browser (SameSite=Strict; Secure where the page is served over HTTPS).

    Call it at the same place on every run: it always takes one slot, so the elements after it keep their
    places (a slot that came and went would shift them, and Streamlit would redraw them, tabs reset).
    """
    slot = st.empty()
    pending = st.session_state.pop(_PENDING_KEY, [])
    if not pending:
        return
    lines = "".join(
        f"document.cookie = {json.dumps(f'{name}={value}; path=/; max-age={max_age}; SameSite=Strict')}"
        " + (location.protocol === 'https:' ? '; Secure' : '');"
        for name, value, max_age in pending
    )
    slot.html(f"<script>{lines}</script>", unsafe_allow_javascript=True)
