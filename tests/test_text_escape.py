"""`escape_markdown` keeps user text (class, file, run and user names) literal: no HTML or Markdown injection.

Rendered with markdown-it (CommonMark, installed with Keras' `rich`): Streamlit's renderer follows the
same CommonMark rules, so a name that parses to plain text here parses to plain text there.
"""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt

from ui.text import escape_markdown

NASTY_NAMES = [
    "<img src=x onerror=alert(1)>",
    "<script>alert('x')</script>",
    "**bold** and __also__ and *it* _it_",
    "[link](javascript:alert(1))",
    "![image](http://evil.example/x.png)",
    "<https://evil.example>",
    "https://evil.example/path and www.evil.example and someone@evil.example",
    "$E = mc^2$ and $$x$$",
    "# heading",
    "line one\nline two\n\n# not a heading\n- not a list\n> not a quote",
    "1. not a list",
    "+ plus",
    "`code` and ```fence```",
    "~~~\nfenced\n~~~",
    "    indented four spaces",
    "\tindented by a tab",
    "~~strike~~",
    "| a | b |\n|---|---|\n| c | d |",
    "title\n===",
    "&lt;b&gt; &amp; &#60;",
    ":red[coloured] :material/home: :smile:",
    "back\\slash\\",
    "trailing backslash \\",
    "windows\r\nline\rendings",
    "<!-- comment -->",
    "[ref]: http://evil.example",
    "emoji 🌸 and accents Zoë",
]


def _inline_text(source: str) -> tuple[set[str], str]:
    """Block token types and the inline text (breaks as newlines) CommonMark makes of `source`."""
    tokens = MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(source)
    block_types = {token.type for token in tokens}
    pieces: list[str] = []
    for token in tokens:
        if token.type == "paragraph_open" and pieces:
            pieces.append("\n\n")
        for child in token.children or []:
            assert child.type in ("text", "hardbreak", "softbreak"), f"{child.type} in {source!r}"
            pieces.append(child.content if child.type == "text" else "\n")
    return block_types, "".join(pieces)


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_nasty_names_render_as_plain_text(name: str) -> None:
    escaped = escape_markdown(name)
    block_types, text = _inline_text(escaped)
    assert block_types <= {"paragraph_open", "paragraph_close", "inline"}, (name, block_types)
    expected_lines = [line.strip() for line in name.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    shown_lines = [line.replace("\u00a0", " ").strip() for line in text.split("\n")]
    assert [line.expandtabs(4) for line in expected_lines if line] == [line for line in shown_lines if line]


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_rendered_html_has_no_markup_from_the_name(name: str) -> None:
    html = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(escape_markdown(name))
    for tag in (
        "<a ",
        "<img",
        "<script",
        "<strong",
        "<em",
        "<h1",
        "<code",
        "<ul",
        "<ol",
        "<blockquote",
        "<pre",
        "<table",
        "<s>",
        "<!--",
    ):
        assert tag not in html, (name, html)


def test_streamlit_extensions_and_autolinks_are_defused() -> None:
    escaped = escape_markdown(NASTY_NAMES[6] + " " + NASTY_NAMES[7] + " " + NASTY_NAMES[20])
    # GFM autolinks, Streamlit maths and directives all need one of these characters unescaped.
    assert re.search(r"(?<!\\)[:@$./\[]", escaped) is None, escaped
    assert "\\$" in escaped and "\\:" in escaped


def test_control_and_direction_characters_become_visible() -> None:
    escaped = escape_markdown("invoice\u202egpj.exe\x00\x1b[31m")
    assert "\u202e" not in escaped and "\x00" not in escaped and "\x1b" not in escaped
    assert _inline_text(escaped)[1] == "invoice⟨U+202E⟩gpj.exe⟨U+0000⟩⟨U+001B⟩[31m"


def test_newlines_become_line_breaks_and_non_strings_are_accepted() -> None:
    assert escape_markdown("a\nb") == "a  \nb"
    assert escape_markdown(3.5) == "3\\.5"
    assert escape_markdown("plain words") == "plain words"
