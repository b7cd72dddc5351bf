"""Scan, validate and load a labelled text dataset (the text modality's counterpart of `tl_core.data.image_dataset`).

A source is a folder with one sub-folder per class of .txt files (Keras' `text_dataset_from_directory`
layout; optional `train/`, `val/`, `test/` folders as for images), a .zip/.tar of one, or a CSV/TSV
with a text and a label column. The report reuses `data.py`'s types, so `data.split_dataset` works:

- `Example.width` is the document's character count and `Example.height` its word-token count,
  both after truncation to `MAX_DOCUMENT_CHARS`; `Example.content_hash` hashes the normalised text
  (NFKC, case-folded, whitespace collapsed), so re-encoded or re-wrapped copies count as duplicates.
- A CSV row's `relpath` is `reviews.csv:row 12` (row 1 is the header) and its `path` is
  `/abs/reviews.csv#row=12`; `read_document(path)` returns any example's text.

Bytes are decoded as UTF-8 (a UTF-8 or UTF-16 byte-order mark is honoured), else as Windows-1252
(`FALLBACK_ENCODING`) with a warning naming the file: decoding, binary sniffing and the length cap live in
`tl_core.data.text_decoding`, reading a CSV/TSV's rows in `tl_core.data.text_table`.

Example:
    >>> report = scan_text_dataset("reviews/")
    >>> split = split_dataset(report, val_fraction=0.15, test_fraction=0.15, seed=42)
    >>> data = load_texts(split)   # data.images["train"]: 1-D object array of str
"""

from __future__ import annotations

import hashlib
import os
import re
import statistics
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from tl_core.data.archive import extract_archive, is_archive, is_ignored_name
from tl_core.data.checks import MIN_EXAMPLES_PER_CLASS, check_classes, dataset_fingerprint, remove_duplicates
from tl_core.data.image_dataset import DEFAULT_EXTRACT_ROOT, SPLIT_FOLDERS
from tl_core.data.readable_roots import OUTSIDE_FIX, is_allowed
from tl_core.data.text_decoding import (
    FALLBACK_ENCODING,
    MAX_DOCUMENT_CHARS,
    DecodedText,
    fit_document,
    read_text_file,
)
from tl_core.data.text_table import read_table
from tl_core.data.types import (
    SPLIT_NAMES,
    TABLE_EXTENSIONS,
    TEXT_EXTENSIONS,
    DatasetSplit,
    Example,
    Problem,
    ScanReport,
    format_problems,
)
from tl_core.errors import DataError

if TYPE_CHECKING:
    from tl_core.data.types import TrainingData

_ROW_MARK = "#row="
_TOKEN = re.compile(r"[^\W_]+")  # runs of letters/digits: how the text models split words


def normalise_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: what makes two documents duplicates."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def count_tokens(text: str) -> int:
    """Words as the text models split them (runs of letters or digits)."""
    return len(_TOKEN.findall(text))


@dataclass
class TextScanReport(ScanReport):
    """A `ScanReport` of documents: `size_stats` width_* are characters, height_* word tokens."""

    def format_text(self) -> str:
        """The report for people: class table, document lengths, then problems grouped by kind."""
        width = max([len("class"), *(len(name) for name in [*self.class_counts, *self.excluded_classes])])
        lines = [
            f"Text dataset {self.source}" + (f" (extracted to {self.root})" if is_archive(self.source) else ""),
            f"{self.files_seen} files or rows seen, {self.files_skipped} skipped, {len(self.examples)} documents used "
            f"in {len(self.class_names)} classes"
            + (" (preset train/val/test folders)" if self.has_preset_splits else ""),
            "",
            f"{'class':<{width}}  documents",
            *(f"{name:<{width}}  {count:>9}" for name, count in self.class_counts.items()),
            *(
                f"{name:<{width}}  {count:>9}  (excluded: see the problems below)"
                for name, count in self.excluded_classes.items()
            ),
        ]
        if self.size_stats:
            s = self.size_stats
            lines.append(
                f"\ndocument length: characters min {s['width_min']:.0f}, median {s['width_median']:.0f}, max {s['width_max']:.0f}; "
                f"words min {s['height_min']:.0f}, median {s['height_median']:.0f}, max {s['height_max']:.0f} "
                f"(documents are cut at {MAX_DOCUMENT_CHARS:,} characters)"
            )
        return "\n".join(lines + format_problems(self.problems))


@dataclass
class _Found:
    """Documents read from a source, before duplicate and class checks."""

    examples: list[Example] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)
    seen: int = 0
    skipped: int = 0
    readable_roots: tuple[str, ...] = ()  # files must resolve inside one of these (none: anywhere)

    def skip(
        self, kind: str, message: str, relpath: str | None, severity: Literal["warning", "info"] = "warning"
    ) -> None:
        self.skipped += 1
        self.problems.append(Problem(severity, kind, message, relpath))

    def add(self, decoded: DecodedText, path: str, relpath: str, label: str, split: str | None) -> None:
        """Check one decoded document and keep it when it has text."""
        if not decoded.text.strip():
            self.skip(
                "empty-document",
                f"Skipped {relpath}: it holds no text (empty or only whitespace); delete it or add its text.",
                relpath,
            )
            return
        if decoded.encoding == FALLBACK_ENCODING:
            message = (
                f"{relpath} is not valid UTF-8; it was read as Windows-1252 ({FALLBACK_ENCODING}). If characters look wrong, "
                "re-save it as UTF-8 (e.g. `iconv -f <its encoding> -t utf-8`)."
            )
            self.problems.append(Problem("warning", "not-utf8", message, relpath))
        if decoded.truncated:
            message = (
                f"{relpath} has {'' if decoded.read_all else 'more than '}{decoded.characters:,} characters; only the first "
                f"{MAX_DOCUMENT_CHARS:,} are used. Split it into several documents if its end matters for the label."
            )
            self.problems.append(Problem("warning", "long-document", message, relpath))
        content_hash = hashlib.sha256(normalise_text(decoded.text).encode()).hexdigest()
        self.examples.append(
            Example(path, relpath, label, content_hash, split, len(decoded.text), count_tokens(decoded.text))
        )


def _add_text_file(found: _Found, path: Path, relpath: str, label: str, split: str | None) -> None:
    found.seen += 1
    if not is_allowed(path, found.readable_roots):  # a link inside the folder that leads elsewhere: never read it
        found.skip("outside-workspace", f"Skipped {relpath}, which {OUTSIDE_FIX}.", relpath)
        return
    if path.suffix.lower() not in TEXT_EXTENSIONS:
        found.skip(
            "not-a-text-file",
            f"Skipped {relpath}: not a text file ({path.suffix or 'no extension'}); "
            f"save documents as {', '.join(TEXT_EXTENSIONS)} or remove it.",
            relpath,
            "info",
        )
        return
    try:
        decoded = read_text_file(path)
    except DataError as error:
        found.skip("binary-file" if "binary" in str(error) else "unreadable", f"Skipped {relpath}: {error}", relpath)
        return
    found.add(decoded, str(path.resolve()), relpath, label, split)


def _visible(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not is_ignored_name(entry.name))


def _scan_class_folder(found: _Found, root: Path, class_dir: Path, split: str | None) -> None:
    found.labels.add(class_dir.name)
    for folder, subfolders, files in os.walk(class_dir):
        subfolders[:] = sorted(name for name in subfolders if not is_ignored_name(name))
        for name in sorted(name for name in files if not is_ignored_name(name)):
            path = Path(folder) / name
            _add_text_file(found, path, path.relative_to(root).as_posix(), class_dir.name, split)


def _scan_folder(root: Path, readable_roots: tuple[str, ...]) -> tuple[_Found, bool]:
    found, children = _Found(readable_roots=readable_roots), _visible(root)
    folders = [c for c in children if c.is_dir()]
    if not children:
        raise DataError(
            f"{root} is empty: put one sub-folder per class inside it, e.g. {root}/sport/1.txt and {root}/politics/1.txt."
        )
    if not folders:
        raise DataError(
            f"{root} holds files but no class sub-folders: make one sub-folder per class and move each .txt file into "
            f"its class, e.g. {root}/sport/1.txt (or pass a CSV/TSV with a text and a label column)."
        )
    split_folders = [f for f in folders if f.name.lower() in SPLIT_FOLDERS]
    has_presets = any(f.name.lower() == "train" for f in split_folders)
    if split_folders and not has_presets:
        raise DataError(
            f"{root} has {', '.join(f.name + '/' for f in split_folders)} but no train/ folder: add train/<class>/ with the training documents."
        )
    for loose in (c for c in children if c.is_file()):
        found.seen += 1
        found.skip(
            "outside-class-folder",
            f"Skipped {loose.name}: it is not inside a class folder; move it into <class>/.",
            loose.name,
        )
    for folder in folders:
        if not has_presets:
            _scan_class_folder(found, root, folder, None)
        elif folder.name.lower() in SPLIT_FOLDERS:
            for class_dir in (c for c in _visible(folder) if c.is_dir()):
                _scan_class_folder(found, root, class_dir, SPLIT_FOLDERS[folder.name.lower()])
        else:
            found.problems.append(
                Problem(
                    "warning",
                    "ignored-folder",
                    f"Ignored folder {folder.name}/: with train/val/test folders, put every class inside them.",
                    folder.name,
                )
            )
    return found, has_presets


def _scan_table(table: Path, text_column: str | None, label_column: str | None) -> _Found:
    found = _Found()
    documents, found.problems = read_table(table, text_column=text_column, label_column=label_column)
    found.seen = len(documents) + sum(1 for p in found.problems if p.kind == "csv-row")
    found.skipped = found.seen - len(documents)
    for number, text, label in documents:
        found.labels.add(label)
        found.add(
            fit_document(text, "utf-8", False),
            f"{table.resolve()}{_ROW_MARK}{number}",
            f"{table.name}:row {number}",
            label,
            None,
        )
    return found


def _resolve(source: str | Path, extract_root: Path | None) -> tuple[Path, str]:
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"Dataset source {path} does not exist: check the path (a folder, a .zip/.tar/.tar.gz, or a CSV/TSV)."
        )
    if is_archive(path):
        path = extract_archive(path, (extract_root or DEFAULT_EXTRACT_ROOT).expanduser())
        tables = [c for c in _visible(path) if c.suffix.lower() in TABLE_EXTENSIONS]
        if len(tables) == 1 and not any(c.is_dir() for c in _visible(path)):
            return tables[0].resolve(), "table"  # an archive of one CSV/TSV
    if path.is_dir():
        return path.resolve(), "folder"
    if path.suffix.lower() in TABLE_EXTENSIONS:
        return path.resolve(), "table"
    raise DataError(
        f"{path} is not a folder, archive (.zip/.tar/.tar.gz) or CSV/TSV: pass the folder that holds one sub-folder per class."
    )


def scan_text_dataset(
    source: str | Path,
    *,
    extract_root: Path | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    readable_roots: Sequence[str | Path] = (),
) -> TextScanReport:
    """Find, decode, check and summarise every document of a text dataset source.

    Args:
        source: a class-per-folder directory of .txt files, a .zip/.tar of one, or a CSV/TSV.
        extract_root: where archives are extracted (default `~/.cache/transferlab/extracted`).
        text_column: CSV/TSV header name of the text column (default: recognised by name).
        label_column: CSV/TSV header name of the label column (default: recognised by name).
        readable_roots: on a workshop server, the folders the user may read: a file that resolves elsewhere (a link)
            is skipped unread. Empty (personal mode): any file.

    Returns:
        The report; its `examples` hold only documents of trainable classes, each text once.

    Raises:
        DataError: missing or empty source, no class folders, unreadable table, or fewer than 2 usable classes.
    """
    root, kind = _resolve(source, extract_root)
    if kind == "table":
        found, has_presets, root_folder = _scan_table(root, text_column, label_column), False, root.parent
    else:
        (found, has_presets), root_folder = _scan_folder(root, tuple(str(r) for r in readable_roots)), root
    problems = found.problems
    examples, duplicate_groups = remove_duplicates(found.examples, problems, noun="document", conflict_severity="error")
    class_counts, excluded = check_classes(examples, found.labels, has_presets, problems, noun="document")
    if len(class_counts) < 2:
        counted = (
            ", ".join(f"{label} ({count})" for label, count in sorted({**class_counts, **excluded}.items())) or "none"
        )
        example = next(
            (
                f" {found.skipped} file(s) or row(s) were skipped, e.g. {p.message}"
                for p in problems
                if p.message.startswith("Skipped")
            ),
            "",
        )
        raise DataError(
            f"{root if kind == 'table' else root_folder} has fewer than 2 classes with at least {MIN_EXAMPLES_PER_CLASS} usable documents "
            f"(found: {counted}). Add documents so at least two classes have {MIN_EXAMPLES_PER_CLASS}+ each.{example}"
        )
    examples = sorted((e for e in examples if e.label in class_counts), key=lambda e: (e.relpath, e.label))
    stats: dict[str, float] = {}
    for side in ("width", "height"):
        values = [getattr(e, side) for e in examples]
        stats.update(
            {
                f"{side}_min": float(min(values)),
                f"{side}_median": float(statistics.median(values)),
                f"{side}_max": float(max(values)),
            }
        )
    return TextScanReport(
        root=str(root_folder),
        source=str(source),
        examples=examples,
        class_names=sorted(class_counts),
        class_counts=class_counts,
        excluded_classes=excluded,
        problems=problems,
        files_seen=found.seen,
        files_skipped=found.skipped,
        duplicate_groups=sorted(duplicate_groups),
        size_stats=stats,
        fingerprint=dataset_fingerprint(examples),
        has_preset_splits=has_presets,
    )


def read_document(path: str, *, _tables: dict[str, dict[int, str]] | None = None) -> str:
    """The (truncated) text of an example's `path`: a text file, or a table row `/abs/table.csv#row=12`."""
    if _ROW_MARK in path:
        table, _, number = path.rpartition(_ROW_MARK)
        rows = _tables.get(table) if _tables is not None else None
        if rows is None:
            rows = {row: text for row, text, _ in read_table(Path(table))[0]}
            if _tables is not None:
                _tables[table] = rows
        if int(number) not in rows:
            raise DataError(f"{table} has no row {number} any more: scan the dataset again.")
        return fit_document(rows[int(number)], "utf-8", False).text
    return read_text_file(Path(path)).text


def load_texts(split: DatasetSplit) -> TrainingData:
    """Every split's documents as `TrainingData`: `images[name]` is a 1-D object array of str (texts, not images)."""
    from tl_core.data.types import TrainingData

    tables: dict[str, dict[int, str]] = {}
    texts = {
        name: np.array([read_document(e.path, _tables=tables) for e in split.examples(name)] or [], dtype=object)
        for name in SPLIT_NAMES
    }
    return TrainingData(
        tuple(split.class_names), texts, {name: split.labels(name) for name in SPLIT_NAMES}, modality="text"
    )
