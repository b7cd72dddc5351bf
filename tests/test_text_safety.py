"""Names made inert (bidi and other hidden characters, Markdown and HTML) and server paths shown relative to a user's area."""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tl_core.server.shown_paths import Area, relative_paths, shown_path
from tl_core.text_safety import control_characters, markdown_text, visible_controls

BIDI_CONTROLS = ["\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]
OTHER_HIDDEN = [
    "\u200b",
    "\u2060",
    "\ufeff",
    "\u00ad",
    "\U000e0041",
    "\u2028",
    "\u2029",
    "\x00",
    "\x1b",
    "\x7f",
    "\x85",
    "\udcff",
]


@pytest.mark.parametrize("character", BIDI_CONTROLS + OTHER_HIDDEN)
def test_every_hidden_character_becomes_a_visible_marker(character: str) -> None:
    shown = visible_controls(f"cat{character}god")
    assert character not in shown
    assert shown == f"cat⟨U+{ord(character):04X}⟩god"


def test_ordinary_names_are_unchanged_and_line_breaks_can_be_kept() -> None:
    for name in ("roses", "Zoë 🌸", "قطة", "猫", "emoji 👨\u200d👩\u200d👧", "ein Haus"):
        assert visible_controls(name) == name
    assert visible_controls("a\nred\t") == "a⟨U+000A⟩red⟨U+0009⟩"
    assert visible_controls("a\nred\t", keep="\n\t") == "a\nred\t"


def test_control_characters_are_what_a_label_file_cannot_hold() -> None:
    assert control_characters("a\nred") == ["\n"]
    assert control_characters("tab\there\tand\r\n") == ["\t", "\r", "\n"]
    assert control_characters("line\u2028sep") == ["\u2028"]
    assert (
        control_characters("\u202eblue") == [] and control_characters("<script>") == []
    )  # shown neutralised, not refused


NASTY = [
    "<script>alert(1)</script>",
    "[x](javascript:alert(1))",
    "![i](http://evil.example/x.png)",
    "<javascript:alert(1)>",
    "www.evil.example",
    "a@evil.example",
    "# heading",
    "| a | b |",
    "`code`",
    "**bold**",
    "&lt;b&gt;",
    "\u202eblue",
    "a\nb",
]


@pytest.mark.parametrize("name", NASTY)
def test_markdown_text_renders_as_one_line_of_plain_text(name: str) -> None:
    escaped = markdown_text(name)
    assert "\n" not in escaped and "\u202e" not in escaped and "<" not in escaped
    html = (
        MarkdownIt("commonmark")
        .enable(["table", "strikethrough"])
        .render(f"| class |\n|---|\n| {escaped} |\n\n# {escaped}\n")
    )
    for tag in ("<a ", "<img", "<script", "<strong", "<code", "href", "<h2"):
        assert tag not in html, (name, html)
    assert html.count("<td>") == 1, "the name stays inside its table cell"
    # GFM autolinks (www., e-mail, http) need an unescaped `.`, `@` or `:`.
    assert not any(f"{c}" in escaped.replace(f"\\{c}", "") for c in ".@:")


AREAS = [Area(Path("/srv/tl/users/alice"), "your workspace"), Area(Path("/srv/tl/datasets"), "shared datasets")]


def test_paths_in_messages_are_shown_relative_to_the_users_areas() -> None:
    message = (
        "/srv/tl/users/alice/cache/extracted/empty is empty: put one sub-folder per class inside it, e.g. "
        "/srv/tl/users/alice/cache/extracted/empty/cats/1.jpg; see /srv/tl/datasets/textures and '/opt/app/tl_core/data.py'"
    )
    shown = relative_paths(message, AREAS)
    assert "/srv" not in shown and "/opt" not in shown
    assert shown.startswith("your workspace/cache/extracted/empty is empty")
    assert (
        "your workspace/cache/extracted/empty/cats/1.jpg" in shown
        and "shared datasets/textures" in shown
        and "'data.py'" in shown
    )


def test_another_users_folder_is_not_taken_for_ones_own() -> None:
    shown = relative_paths("/srv/tl/users/alicea/secret.jpg and /srv/tl/users/alice.", AREAS)
    assert shown == "secret.jpg and your workspace."


def test_relative_paths_urls_and_fractions_are_left_alone() -> None:
    text = "Skipped cats/1.jpg: decoded at 1/8 scale; see https://example.org/docs and train/<class>/."
    assert relative_paths(text, AREAS) == text


def test_one_path_is_shown_inside_its_area_or_by_name() -> None:
    assert shown_path("/srv/tl/users/alice/datasets/flowers", AREAS) == "your workspace/datasets/flowers"
    assert shown_path("/srv/tl/datasets/textures", AREAS) == "shared datasets/textures"
    assert shown_path("/srv/tl/users/bob/datasets/secret", AREAS) == "secret"
