r"""User-given names (classes, runs, datasets) made safe to show, to write into label files and into Markdown.

A name can hold characters that change what the text around it says: the bidi control U+202E between
`invoice` and `gpj.exe` makes the name read `invoiceexe.jpg`, a line break turns one class into two lines of `labels.txt`,
and in Markdown a name can carry HTML or a `javascript:` link. The app (`ui.text.safe_label`,
`ui.text.escape_markdown`) and the export's model card both use these functions, so a name looks the same
wherever it is shown.

Example:
    >>> print(visible_controls("invoice\u202egpj.exe"))
    invoice⟨U+202E⟩gpj.exe
    >>> control_characters("a\nred")
    ['\n']
    >>> print(markdown_text("<b>[x](javascript:alert(1))</b>"))
    &lt;b&gt;\[x\]\(javascript\:alert\(1\)\)&lt;\/b&gt;
"""

from __future__ import annotations

import re
import string
import unicodedata

# Cc: C0/C1 controls (line breaks, tabs, NUL, escape); Cf: format characters (bidi controls such as
# U+061C, U+200E/F, U+202A-E, U+2066-9, zero-width spaces, the BOM, tag characters); Zl/Zp: line and
# paragraph separators; Cs: lone surrogates, which is how Python shows undecodable bytes in file names.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# The zero-width joiners shape Persian, Indic scripts and emoji sequences; they never reorder or hide text.
_JOINERS = frozenset("\u200c\u200d")
# Characters a one-name-per-line label file, a JSON file or a terminal cannot hold faithfully.
_LABEL_BREAKING_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})
# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping them all also defuses
# links and autolinks (`[`, `:`, `/`, `.`, `@`), emphasis, headings, tables (`|`) and Streamlit's extensions
# (`:red[...]`, `$...$`). `<`, `>` and `&` become HTML entities, which every Markdown renderer shows as text.
_MARKDOWN_PUNCTUATION = re.compile("[" + re.escape(string.punctuation) + "]")
_HTML_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
# Indentation of four columns would turn a line into a code block: keep it as no-break spaces.
_LEADING_WHITESPACE = re.compile(r"^[ \t]+", re.MULTILINE)
# One word of letters, digits, `_` and `-` that starts with a letter or digit is never Markdown syntax
# (an underscore inside a word opens no emphasis): such names (`mobilenet_v2`, run ids) stay readable as they are.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_CONTROL_NAMES = {
    "\n": "line feed",
    "\r": "carriage return",
    "\t": "tab",
    "\x00": "NUL",
    "\x0b": "vertical tab",
    "\x0c": "form feed",
    "\x1b": "escape",
    "\x85": "next line",
}  # Unicode gives C0/C1 controls no names


def is_hidden_control(character: str) -> bool:
    """Whether `character` is invisible or changes how the text around it is shown (controls, bidi, separators)."""
    return unicodedata.category(character) in _HIDDEN_CATEGORIES and character not in _JOINERS


def visible_controls(text: str, *, keep: str = "") -> str:
    """`text` with every control, bidi, zero-width and separator character shown as a visible `⟨U+XXXX⟩` marker.

    Args:
        text: a name or message from a user.
        keep: characters to leave as they are (e.g. "\\n" where line breaks are wanted).

    Returns:
        The text, unchanged when it holds none of them.
    """
    if text.isprintable():  # the common case: no control, format or separator character at all
        return text
    return "".join(
        f"⟨U+{ord(character):04X}⟩" if character not in keep and is_hidden_control(character) else character
        for character in text
    )


def control_characters(name: str) -> list[str]:
    """The characters of `name` that a label file cannot hold: line breaks, tabs and other controls,
    line and paragraph separators (U+2028/9) and undecodable bytes, each once, in order of appearance."""
    return list(dict.fromkeys(c for c in name if unicodedata.category(c) in _LABEL_BREAKING_CATEGORIES))


def describe_characters(characters: list[str]) -> str:
    """`U+000A (LINE FEED), U+0009 (CHARACTER TABULATION)`: what a refusal message names."""
    return ", ".join(
        f"U+{ord(c):04X} ({unicodedata.name(c, _CONTROL_NAMES.get(c, 'control character')).lower()})"
        for c in characters
    )


def markdown_text(text: object, *, line_breaks: bool = False) -> str:
    """`text` rendered literally by any CommonMark renderer: no HTML, link, image, emphasis, heading, list, table, code or maths.

    Hidden characters become `⟨U+XXXX⟩` markers (see `visible_controls`).

    Args:
        text: a user-given name or message (anything; it is converted with `str`).
        line_breaks: keep line breaks as Markdown hard breaks (messages); otherwise they become markers,
            so the result stays on one line (headings, table cells, list items).
    """
    plain = str(text)
    if _PLAIN_WORD.fullmatch(plain):
        return plain
    if line_breaks:
        plain = plain.replace("\r\n", "\n").replace("\r", "\n")
    plain = visible_controls(plain, keep="\n\t" if line_breaks else "")
    plain = _LEADING_WHITESPACE.sub(lambda match: match.group().replace("\t", "    ").replace(" ", "\u00a0"), plain)
    escaped = _MARKDOWN_PUNCTUATION.sub(lambda match: _HTML_ENTITIES.get(match.group(), "\\" + match.group()), plain)
    return escaped.replace("\n", "  \n") if line_breaks else escaped
