"""Formatting helpers: safe labels and Markdown for user-provided text, paths in messages, durations, percentages, errors."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import streamlit as st

from tl_core.errors import TransferLabError
from tl_core.server.shown_paths import relative_paths
from tl_core.text_safety import markdown_text, visible_controls
from ui.state import path_areas


def safe_label(text: object) -> str:
    """A class, run or dataset name as plain text for charts, tables, selectbox options and `st.text`.

    Bidi controls (U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069), zero-width and other invisible format
    characters, line breaks and other controls are shown as a visible, inert `⟨U+202E⟩` marker, so a name
    can neither reverse the text around it nor hide what it is. Not Markdown: use `escape_markdown` there.

    Example:
        >>> safe_label("cat\u202egod")
        'cat⟨U+202E⟩god'
    """
    return visible_controls(str(text))


def escape_markdown(text: object) -> str:
    """`text` rendered literally by st.markdown/st.caption/st.error (class, file and run names).

    No HTML, link, image, emphasis, heading, list, code or maths survives; line breaks stay line breaks;
    hidden characters are shown as in `safe_label`.
    """
    return markdown_text(text, line_breaks=True)


def user_messages(texts: Iterable[object]) -> list[str]:
    """Messages (errors, logs, problems) with server paths as the signed-in user may see them.

    Students on a workshop server see paths relative to "your workspace" or "shared datasets" and any other
    absolute path cut to its last part; personal mode and trainers see full paths. Who is signed in is
    checked once for all `texts`.
    """
    try:
        areas = path_areas()
    except TransferLabError:  # the server's settings are broken: that error is about the server, not a user's files
        areas = None
    return [str(text) if areas is None else relative_paths(str(text), areas) for text in texts]


def user_message(text: object) -> str:
    """One message as `user_messages` shows it."""
    return user_messages([text])[0]


def show_error(exc: BaseException) -> None:
    """A user-facing error (TransferLabError, ConfigError, OSError) as a red box with its message, no traceback."""
    st.error(escape_markdown(user_message(exc)), icon=":material/error:")


def starts_in(start_at: float) -> str:
    """`in about 40 s` for an estimated unix start time; once the jobs ahead have overrun their estimate (the first
    run on a dataset computes its features first), "as soon as the job ahead ends" rather than "in about 0 s"."""
    seconds = start_at - time.time()
    return f"in about {format_duration(seconds)}" if seconds >= 5 else "as soon as the job ahead ends"


def format_duration(seconds: float | None) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`; an em dash when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def format_parameters(count: int | None) -> str:
    """Parameter counts as `2.3 M` / `410 k`."""
    if not count:
        return "—"
    return f"{count / 1e6:.1f} M" if count >= 1e6 else f"{count / 1e3:.0f} k"
