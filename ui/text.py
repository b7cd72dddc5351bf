"""Formatting helpers: safe Markdown for user-provided text, durations, percentages, errors."""

from __future__ import annotations

import math
import re
import string

import streamlit as st

# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping them all also
# defuses HTML (`<`), links and autolinks (`[`, `:`, `/`, `.`, `@`), entities (`&`) and Streamlit's
# extensions (`:red[...]`, `:material/x:`, `$...$` maths) in user text.
_MARKDOWN_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")
# Control characters (except newline and tab) and Unicode direction overrides, which can make a
# file name read backwards (`gpj.exe`), are shown as U+FFFD so the reader sees something is odd.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Indentation of four columns would turn a line into a code block: keep it as no-break spaces.
_LEADING_WHITESPACE = re.compile(r"^[ \t]+", re.MULTILINE)


def escape_markdown(text: object) -> str:
    """`text` rendered literally by st.markdown/st.caption/st.error (class, file and run names).

    No HTML, link, image, emphasis, heading, list, code or maths survives; line breaks stay line breaks.
    """
    plain = str(text).replace("\r\n", "\n").replace("\r", "\n")
    plain = _INVISIBLE.sub("\ufffd", plain)
    plain = _LEADING_WHITESPACE.sub(lambda match: match.group().replace("\t", "    ").replace(" ", "\u00a0"), plain)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", plain).replace("\n", "  \n")


def show_error(exc: BaseException) -> None:
    """A user-facing error (TransferLabError, ConfigError) as a red box with its message, no traceback."""
    st.error(escape_markdown(str(exc)), icon=":material/error:")


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
