"""The plain containers every concept package passes around: examples, problems, scan reports, splits, training data.

They import nothing heavy (no TensorFlow, no scanning code), so data scans, modalities and the training loop
all use them without importing each other.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tl_core.data.archive import is_archive

Severity = Literal["error", "warning", "info"]
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
TEXT_EXTENSIONS: tuple[str, ...] = (
    ".txt",
    ".text",
    ".md",
)  # plain text; Keras reads .txt only, .text/.md are plain text too
TABLE_EXTENSIONS: tuple[str, ...] = (".csv", ".tsv")
REPORT_LINES_PER_KIND = 20


@dataclass(frozen=True)
class Example:
    """One usable example.

    For images `width`/`height` are pixels; for text documents `width` is the character count and
    `height` the word-token count (after truncation to `tl_core.data.text_decoding.MAX_DOCUMENT_CHARS`).
    """

    path: str  # absolute
    relpath: str  # relative to the dataset root (posix), or absolute for CSV rows outside its folder
    label: str
    content_hash: str  # sha256 of the file bytes
    preset_split: str | None  # train / val / test when the dataset has split folders
    width: int
    height: int


@dataclass(frozen=True)
class Problem:
    severity: Severity
    kind: str
    message: str  # says what is wrong and what to do
    file: str | None = None  # relative to the dataset root


def format_problems(problems: list[Problem], per_kind: int = 20) -> list[str]:
    """Report lines for people: problems grouped by kind, at most `per_kind` messages each."""
    by_kind: dict[str, list[Problem]] = defaultdict(list)
    for problem in problems:
        by_kind[problem.kind].append(problem)
    lines: list[str] = []
    for kind, group in by_kind.items():
        lines.append(f"\n{group[0].severity.upper()} {kind} ({len(group)}):")
        lines.extend(f"  - {p.message}" for p in group[:per_kind])
        if len(group) > per_kind:
            lines.append(f"  ... and {len(group) - per_kind} more")
    return lines or ["\nNo problems found."]


@dataclass
class ScanReport:
    """Everything learned about a dataset; `examples` are exactly the images training may use."""

    root: str
    source: str
    examples: list[Example]
    class_names: list[str]
    class_counts: dict[str, int]
    excluded_classes: dict[str, int]
    problems: list[Problem]
    files_seen: int
    files_skipped: int  # not an image, unreadable, or outside any class folder
    duplicate_groups: list[list[str]]
    size_stats: dict[str, float]
    fingerprint: str
    has_preset_splits: bool

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (examples and problems become plain dicts)."""
        return dataclasses.asdict(self)

    def format_text(self) -> str:
        """The report for people: class table, sizes, then problems grouped by kind."""
        width = max([len("class"), *(len(name) for name in [*self.class_counts, *self.excluded_classes])])
        lines = [
            f"Dataset {self.source}" + (f" (extracted to {self.root})" if is_archive(self.source) else ""),
            f"{self.files_seen} files seen, {self.files_skipped} skipped, {len(self.examples)} images used "
            f"in {len(self.class_names)} classes"
            + (" (preset train/val/test folders)" if self.has_preset_splits else ""),
            "",
            f"{'class':<{width}}  images",
            *(f"{name:<{width}}  {count:>6}" for name, count in self.class_counts.items()),
            *(
                f"{name:<{width}}  {count:>6}  (excluded: see the problems below)"
                for name, count in self.excluded_classes.items()
            ),
        ]
        if self.size_stats:
            s = self.size_stats
            lines.append(
                f"\nimage size (w x h): min {s['width_min']:.0f}x{s['height_min']:.0f}, "
                f"median {s['width_median']:.0f}x{s['height_median']:.0f}, max {s['width_max']:.0f}x{s['height_max']:.0f}"
            )
        return "\n".join(lines + format_problems(self.problems, per_kind=REPORT_LINES_PER_KIND))


@dataclass(frozen=True)
class DatasetSplit:
    train: tuple[Example, ...]
    val: tuple[Example, ...]
    test: tuple[Example, ...]
    class_names: tuple[str, ...]
    seed: int

    def examples(self, split_name: str) -> tuple[Example, ...]:
        if split_name not in SPLIT_NAMES:
            raise ValueError(f"Unknown split {split_name!r}: choose one of {SPLIT_NAMES}.")
        return getattr(self, split_name)

    def labels(self, split_name: str) -> np.ndarray:
        """int32 class indices (into `class_names`) of a split's examples, in order."""
        index = {name: i for i, name in enumerate(self.class_names)}
        return np.array([index[e.label] for e in self.examples(split_name)], dtype=np.int32)

    def sizes(self) -> dict[str, int]:
        return {name: len(self.examples(name)) for name in SPLIT_NAMES}

    def class_counts(self, split_name: str) -> dict[str, int]:
        counts = dict.fromkeys(self.class_names, 0)
        for example in self.examples(split_name):
            counts[example.label] += 1
        return counts

    def missing_classes(self) -> dict[str, list[str]]:
        """For each held-out split that has examples, the classes it has none of (an empty split is left out:
        no test split at all is a choice, a test split without one class is an accident)."""
        missing = {}
        for name in ("val", "test"):
            counts = self.class_counts(name)
            if self.examples(name) and (absent := [label for label, count in counts.items() if not count]):
                missing[name] = absent
        return missing

    def coverage_problems(self, noun: str = "image") -> list[str]:
        """What to tell people about `missing_classes`: which split lacks which class, and how to fix it."""
        messages = []
        for name, absent in self.missing_classes().items():
            split = "validation" if name == "val" else name
            shown = ", ".join(repr(label) for label in absent[:5]) + (
                f" and {len(absent) - 5} more" if len(absent) > 5 else ""
            )
            messages.append(
                f"The {split} split has no {noun}s of {shown}, so its {split} results say nothing about "
                f"{'them' if len(absent) > 1 else 'it'}: give each such class at least 3 {noun}s (one for each of "
                f"training, validation and test), or, with a {name}/ folder, add some of them to it."
            )
        return messages


@dataclass
class TrainingData:
    """Examples and int labels per split; `val` may be empty on tiny data.

    `images[split]` holds decoded uint8 images (memmaps) for the image modality and a 1-D object array
    of document strings for text; `modality` names which, so batching follows it.
    """

    class_names: tuple[str, ...]
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    modality: str = "image"

    def has(self, split: str) -> bool:
        return split in self.images and len(self.images[split]) > 0
