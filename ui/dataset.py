"""Scanning the chosen dataset once per change and shaping its report for display."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from tl_core.config import DataConfig
from tl_core.data.image_dataset import split_dataset
from tl_core.data.label_overrides import apply_label_overrides, load_decisions, overrides_path
from tl_core.data.types import SPLIT_NAMES as SPLITS
from tl_core.data.types import DatasetSplit, ScanReport
from tl_core.errors import DataError
from tl_core.modalities import get_modality, resolve_modality
from ui.state import dataset_roots
from ui.text import safe_label, user_messages

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class DatasetView:
    """A scanned dataset, its default split (None, with the reason, when it cannot be split) and what it holds."""

    report: ScanReport
    split: DatasetSplit | None
    split_error: str | None
    modality: str = "image"

    @property
    def noun(self) -> str:
        """What one example is called: "image" or "document"."""
        return get_modality(self.modality).noun


@dataclass(frozen=True)
class DocumentSample:
    """The beginning of one document, for showing what a class looks like (plain text, escape before Markdown)."""

    label: str
    file: str
    beginning: str


def source_stamp(source: str) -> tuple[int, int]:
    """(file count, newest mtime) of a folder, or (size, mtime) of a file: changes when the data does."""
    path = Path(source)
    if path.is_file():
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns
    count, newest = 0, 0
    for folder, _, files in os.walk(path):
        count += len(files)
        newest = max(
            [newest, os.stat(folder).st_mtime_ns] + [os.stat(os.path.join(folder, name)).st_mtime_ns for name in files]
        )
    return count, newest


@st.cache_resource(show_spinner=False, max_entries=8)
def _scan(
    source: str, stamp: tuple[int, int], extract_root: str, modality: str, readable_roots: tuple[str, ...]
) -> DatasetView:
    del stamp  # cache key only
    # The readable folders are part of the key: a shared cache must never hand one user's scan to another.
    report = get_modality(modality).scan(source, extract_root=Path(extract_root), readable_roots=readable_roots)
    defaults = DataConfig(source=source, modality=modality)
    try:
        split = split_dataset(
            report, val_fraction=defaults.val_fraction, test_fraction=defaults.test_fraction, seed=defaults.seed
        )
    except DataError as exc:
        return DatasetView(report, None, str(exc), modality)
    return DatasetView(report, split, None, modality)


def load_dataset(source: str, workspace: Path, modality: str | None = None) -> DatasetView:
    """Scan and split `source` (folder, archive or CSV/TSV), reusing the last scan while the files are unchanged.

    Args:
        source: the dataset.
        workspace: the user's workspace (archives are extracted into its cache).
        modality: "image" or "text"; None detects it from the files.

    Raises:
        DataError: the source is missing or cannot be read at all.
    """
    if not Path(source).exists():
        raise DataError(f"{source} does not exist any more: pick or upload the dataset again on the Data page.")
    extract_root = workspace / "cache" / "extracted"
    extract_root.mkdir(parents=True, exist_ok=True)
    view = _scan(source, source_stamp(source), str(extract_root), modality or resolve_modality(source), dataset_roots())
    return with_label_decisions(view, source, workspace)


def with_label_decisions(view: DatasetView, source: str, workspace: Path) -> DatasetView:
    """The view as the next run will train on it: the label review's relabel and exclude decisions applied.

    The same step as `tl_core.data.prep.prepare_dataset`, so the Data page's counts, split and problems are the
    run's (the cached scan stays the files' own; decisions are read fresh, they are a small JSON file).
    """
    decisions = load_decisions(workspace, source)
    if not decisions or view.split is None:
        return view
    try:
        report, split, _ = apply_label_overrides(view.report, view.split, decisions, file=overrides_path(workspace))
    except DataError as exc:
        return DatasetView(view.report, None, str(exc), view.modality)
    return DatasetView(report, split, None, view.modality)


def split_table(split: DatasetSplit) -> pd.DataFrame:
    """Examples per class in each split, with a total row (class names through `safe_label`)."""
    counts = {name: split.class_counts(name) for name in SPLITS}
    rows = [
        {"class": safe_label(label), **{name: int(counts[name].get(label, 0)) for name in SPLITS}}
        for label in split.class_names
    ]
    frame = pd.DataFrame(rows, columns=["class", *SPLITS])
    frame["total"] = frame[list(SPLITS)].sum(axis=1)
    total = {"class": "all classes", **{name: int(frame[name].sum()) for name in (*SPLITS, "total")}}
    return pd.concat([frame, pd.DataFrame([total])], ignore_index=True)


def problem_groups(report: ScanReport) -> list[tuple[str, str, pd.DataFrame]]:
    """Problems grouped by (severity, kind), errors first: (severity, kind, table of file and message).

    Names in the cells go through `safe_label`, and server paths through `user_message`.
    """
    shown = user_messages(text for problem in report.problems for text in (problem.file or "—", problem.message))
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for index, problem in enumerate(report.problems):
        row = {"file": safe_label(shown[2 * index]), "what to do": safe_label(shown[2 * index + 1])}
        groups.setdefault((problem.severity, problem.kind), []).append(row)
    ordered = sorted(groups.items(), key=lambda item: (SEVERITY_ORDER.get(item[0][0], 3), item[0][1]))
    return [(severity, kind, pd.DataFrame(rows)) for (severity, kind), rows in ordered]


def sample_paths(report: ScanReport, per_class: int) -> dict[str, list[str]]:
    """The first `per_class` image paths of every class (sorted by file name, so stable)."""
    samples: dict[str, list[str]] = {label: [] for label in report.class_names}
    for example in sorted(report.examples, key=lambda e: e.relpath):
        bucket = samples.get(example.label)
        if bucket is not None and len(bucket) < per_class:
            bucket.append(str(example.path))
    return samples


@st.cache_data(show_spinner=False, max_entries=8)
def _document_samples(paths_and_labels: tuple[tuple[str, str, str], ...], characters: int) -> list[DocumentSample]:
    from tl_core.data.text_dataset import read_document

    samples = []
    for path, relpath, label in paths_and_labels:
        try:
            text = " ".join(read_document(path).split())  # line breaks and runs of spaces would waste the preview
        except (DataError, OSError) as exc:
            text = f"(cannot be read: {exc})"
        samples.append(DocumentSample(label, relpath, text[:characters] + ("…" if len(text) > characters else "")))
    return samples


def document_samples(report: ScanReport, per_class: int, characters: int = 200) -> list[DocumentSample]:
    """The first `characters` characters of the first `per_class` documents of every class (sorted by file, so stable)."""
    chosen: dict[str, list[tuple[str, str, str]]] = {label: [] for label in report.class_names}
    for example in sorted(report.examples, key=lambda e: e.relpath):
        bucket = chosen.get(example.label)
        if bucket is not None and len(bucket) < per_class:
            bucket.append((example.path, example.relpath, example.label))
    return _document_samples(tuple(item for label in report.class_names for item in chosen[label]), characters)


def document_excerpts(items: list[tuple[str, str, str]], characters: int) -> list[DocumentSample]:
    """The first `characters` characters of each (path, relpath, label) document, in order (line breaks folded)."""
    return _document_samples(tuple(items), characters)
