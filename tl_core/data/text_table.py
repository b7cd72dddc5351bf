"""Reading a labelled CSV/TSV: one data row per document, with a text column and a label column.

The delimiter is a tab for .tsv files (or a first line with tabs and no commas), else a comma; the
header is recognised by its column names (`TEXT_COLUMN_NAMES`, `LABEL_COLUMN_NAMES`), or named
explicitly. The bytes are decoded as any document's (`tl_core.data.text_decoding`);
`tl_core.data.text_dataset.scan_text_dataset` turns the rows into examples.

Example:
    >>> documents, problems = read_table(Path("reviews.csv"))
    >>> documents[0]   # (row number, text, label); row 1 is the header
    (2, 'Great value, would buy again.', 'positive')
"""

from __future__ import annotations

import codecs
import csv
import io
import statistics
from pathlib import Path

from tl_core.data.text_decoding import FALLBACK_ENCODING, decode_bytes, is_binary
from tl_core.data.types import Problem
from tl_core.errors import DataError

TEXT_COLUMN_NAMES = (
    "text",
    "document",
    "content",
    "body",
    "sentence",
    "review",
    "message",
    "comment",
    "tweet",
    "abstract",
)
LABEL_COLUMN_NAMES = ("label", "class", "category", "target", "topic", "sentiment", "y")


def _pick_column(header: list[str], names: tuple[str, ...], explicit: str | None, role: str, table: Path) -> int | None:
    cells = [cell.strip().lower() for cell in header]
    if explicit is not None:
        if explicit.strip().lower() not in cells:
            raise DataError(
                f"{table.name} has no column {explicit!r} for the {role}: its header is {', '.join(header)}; pass one of those."
            )
        return cells.index(explicit.strip().lower())
    for name in names:  # exact names first, then names that contain one ("review_text")
        if name in cells:
            return cells.index(name)
    return next((i for i, cell in enumerate(cells) for name in names if len(name) > 1 and name in cell), None)


def read_table(
    table: Path, *, text_column: str | None = None, label_column: str | None = None
) -> tuple[list[tuple[int, str, str]], list[Problem]]:
    """(row number, text, label) of every data row of a CSV/TSV, and the rows that were unusable.

    The header is recognised by its column names (`text`, `review`, ... and `label`, `class`, ...);
    without one, a two-column table's longer column is the text. Row 1 is the header when there is one.
    """
    try:
        data = table.read_bytes()
    except OSError as error:
        raise DataError(f"{table} cannot be read ({error}): check it exists and is readable.") from error
    if is_binary(data) and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(
            f"{table.name} is binary, not a CSV/TSV: export the table as UTF-8 text with a text and a label column."
        )
    content, encoding = decode_bytes(data)
    problems: list[Problem] = []
    if encoding == FALLBACK_ENCODING:
        problems.append(
            Problem(
                "warning",
                "not-utf8",
                f"{table.name} is not valid UTF-8; it was read as Windows-1252 ({FALLBACK_ENCODING}). "
                "If characters look wrong, re-save it as UTF-8.",
                table.name,
            )
        )
    first_line = content.split("\n", 1)[0]
    delimiter = "\t" if table.suffix.lower() == ".tsv" or ("\t" in first_line and "," not in first_line) else ","
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))  # documents are long cells; the default limit is 128 KiB
    try:
        rows = list(
            csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
        )  # keeps line breaks inside quoted cells
    except csv.Error as error:
        raise DataError(
            f"{table} is not a well-formed {'TSV' if delimiter == chr(9) else 'CSV'} ({error}): quote cells that hold the delimiter or line breaks."
        ) from error
    numbered = [(number, row) for number, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not numbered:
        raise DataError(f"{table} has no rows: add one row per document with a text and a label column.")
    header = numbered[0][1]
    text_index = _pick_column(header, TEXT_COLUMN_NAMES, text_column, "text", table)
    label_index = _pick_column(header, LABEL_COLUMN_NAMES, label_column, "label", table)
    if text_index is not None and label_index is not None and text_index != label_index:
        numbered = numbered[1:]
    elif len(header) == 2 and text_column is None and label_column is None:
        mean_length = [statistics.fmean(len(row[i]) if len(row) > i else 0 for _, row in numbered) for i in (0, 1)]
        text_index = 0 if mean_length[0] >= mean_length[1] else 1
        label_index = 1 - text_index
    else:
        raise DataError(
            f"{table.name}: cannot tell which column holds the text and which the label (header: {', '.join(header)}). "
            "Name them `text` and `label` in the first row, or pass text_column= and label_column=."
        )
    documents: list[tuple[int, str, str]] = []
    for number, row in numbered:
        cells = row + [""] * (max(text_index, label_index) + 1 - len(row))
        text, label = cells[text_index], cells[label_index].strip()
        if not label:
            problems.append(
                Problem(
                    "warning",
                    "csv-row",
                    f"{table.name} row {number}: no label; add one or delete the row.",
                    f"{table.name}:row {number}",
                )
            )
            continue
        documents.append((number, text, label))
    return documents, problems
