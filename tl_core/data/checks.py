"""What every modality's dataset scan shares: example and problem types, duplicate and class checks, modality detection.

`tl_core.data.image_dataset` (images) and `tl_core.data.text_dataset` (documents) collect their examples differently, then
both hand them to `remove_duplicates` and `check_classes` here, so a tiny class, an imbalance or a
file labelled with two classes is reported the same way whatever the data is. `noun` words the
messages for the modality ("image", "document").

Example:
    >>> kept, groups = remove_duplicates(examples, problems)
    >>> counts, excluded = check_classes(kept, {"cat", "dog"}, has_presets=False, problems=problems)
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Literal

from tl_core.data.archive import is_archive, is_ignored_name
from tl_core.data.types import SPLIT_NAMES, TABLE_EXTENSIONS, TEXT_EXTENSIONS, Example, Problem, Severity
from tl_core.errors import DataError
from tl_core.text_safety import control_characters, describe_characters, visible_controls

MIN_EXAMPLES_PER_CLASS = 2
FEW_EXAMPLES_PER_CLASS = 10
MAX_CLASS_RATIO = 3.0


def split_rank(example: Example) -> tuple[int, str]:
    return (SPLIT_NAMES.index(example.preset_split) if example.preset_split else 0, example.relpath)


def remove_duplicates(
    examples: list[Example], problems: list[Problem], *, noun: str = "file", conflict_severity: Severity = "warning"
) -> tuple[list[Example], list[list[str]]]:
    """One copy per identical file within a class; every copy of a file labelled with two classes is dropped.

    Args:
        examples: candidates; identical ones share a `content_hash`.
        problems: receives one problem per duplicate group.
        noun: what an example is called in messages ("file", "document").
        conflict_severity: severity of a group whose copies carry different labels.

    Returns:
        The kept examples and the sorted relative paths of every duplicate group.
    """
    by_hash: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_hash[example.content_hash].append(example)
    kept: list[Example] = []
    groups: list[list[str]] = []
    for copies in by_hash.values():
        copies.sort(key=split_rank)
        if len(copies) == 1:
            kept.append(copies[0])
            continue
        groups.append(sorted(c.relpath for c in copies))
        labels = sorted({c.label for c in copies})
        if len(labels) > 1:
            named = ", ".join(f"{c.relpath} ({c.label!r})" for c in copies)
            message = f"Identical {noun}s with different labels: {named}. All copies were left out; keep the {noun} only in its true class."
            problems.append(Problem(conflict_severity, "label-conflict", message, copies[0].relpath))
            continue
        kept.append(copies[0])
        splits = sorted({c.preset_split for c in copies if c.preset_split})
        leak = (
            f" (copies in {' and '.join(s + '/' for s in splits)} would leak between splits)" if len(splits) > 1 else ""
        )
        named = ", ".join(c.relpath for c in copies)
        message = f"Identical {noun}s in class {labels[0]!r}: {named}{leak}; only {copies[0].relpath} is used. Delete the extra copies."
        problems.append(Problem("warning", "duplicate", message, copies[1].relpath))
    return kept, groups


def check_classes(
    examples: list[Example], labels: set[str], has_presets: bool, problems: list[Problem], *, noun: str = "image"
) -> tuple[dict[str, int], dict[str, int]]:
    """Counts of trainable classes and of excluded ones, with a problem for each class that needs attention.

    A class whose name holds a line break, tab or other control character is left out with an error: label
    files hold one name per line, so such a name would shift every later class and mislabel predictions.

    Args:
        examples: the usable examples.
        labels: every class named by the source, even one with no usable example.
        has_presets: whether the source has train/ (val/, test/) folders.
        problems: receives class-name, tiny-class, small-class and imbalance problems.
        noun: what an example is called in messages ("image", "document").

    Returns:
        (trainable class -> count, excluded class -> count).
    """
    counts = {label: 0 for label in labels}
    train_counts = {label: 0 for label in labels}
    first_seen: dict[str, str] = {}
    for example in examples:
        counts[example.label] += 1
        train_counts[example.label] += example.preset_split in (None, "train")
        first_seen.setdefault(example.label, example.relpath)
    trainable: dict[str, int] = {}
    excluded: dict[str, int] = {}
    for label in sorted(counts):
        count = counts[label]
        if control_characters(label):
            excluded[label] = count
            problems.append(
                Problem(
                    "error",
                    "class-name",
                    _class_name_message(label, first_seen.get(label), noun),
                    visible_controls(label),
                )
            )
        elif count < MIN_EXAMPLES_PER_CLASS:
            excluded[label] = count
            message = f"Class {label!r} has {count} usable {noun}(s) and was left out of training: add at least {MIN_EXAMPLES_PER_CLASS} (10+ recommended) or remove it."
            problems.append(Problem("error", f"too-few-{noun}s", message, label))
        elif has_presets and train_counts[label] == 0:
            excluded[label] = count
            message = f"Class {label!r} has no {noun}s in train/ and was left out of training: move some of its {noun}s into train/{label}/."
            problems.append(Problem("error", f"no-training-{noun}s", message, label))
        else:
            trainable[label] = count
            if count < FEW_EXAMPLES_PER_CLASS:
                message = f"Class {label!r} has only {count} {noun}s: results will be unreliable; aim for {FEW_EXAMPLES_PER_CLASS}+ (ideally 50+) per class."
                problems.append(Problem("warning", "small-class", message, label))
    if len(trainable) < 2:
        return trainable, excluded  # the caller raises, naming what was found
    largest, smallest = max(trainable, key=trainable.__getitem__), min(trainable, key=trainable.__getitem__)
    ratio = trainable[largest] / trainable[smallest]
    if ratio > MAX_CLASS_RATIO:
        message = (
            f"Classes are imbalanced: {largest!r} has {trainable[largest]} {noun}s, {smallest!r} only {trainable[smallest]} "
            f"(ratio {ratio:.1f} > {MAX_CLASS_RATIO:.0f}); add {noun}s to the small classes or keep class weighting on."
        )
        problems.append(Problem("warning", "imbalance", message, None))
    return trainable, excluded


def _class_name_message(label: str, first_file: str | None, noun: str) -> str:
    shown = visible_controls(label)
    where = f" (e.g. {visible_controls(first_file)})" if first_file else ""
    return (
        f"Class '{shown}' has {describe_characters(control_characters(label))} in its name{where} and was left out of training: "
        f"a class name must be one line of text. Rename the class folder '{shown}' (or change the label in the CSV/TSV) "
        f"without line breaks, tabs or other control characters; the other classes train as they are."
    )


def dataset_fingerprint(examples: list[Example]) -> str:
    """sha256 over the sorted (relative path, label, content hash) of every example."""
    digest = hashlib.sha256()
    for relpath, label, content_hash in sorted((e.relpath, e.label, e.content_hash) for e in examples):
        digest.update(f"{relpath}\x1f{label}\x1f{content_hash}\n".encode())
    return digest.hexdigest()


def _archive_names(path: Path) -> list[str]:
    import tarfile
    import zipfile

    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as bundle:
                return bundle.namelist()
        with tarfile.open(path, mode="r:*") as bundle:
            return bundle.getnames()
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
        raise DataError(f"{path} cannot be read as an archive ({error}): download or create it again.") from error


def detect_modality(source: str | Path, *, max_files: int = 5_000) -> Literal["image", "text"]:
    """ "text" when a source holds more text documents than images (a TSV, or a CSV whose first column is not image paths), else "image".

    Args:
        source: a folder, archive or CSV/TSV, as for the scanners.
        max_files: stop counting after this many files (large folders).
    """
    from tl_core.data.images import IMAGE_EXTENSIONS

    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"Dataset source {path} does not exist: check the path.")
    if path.is_file() and path.suffix.lower() in TABLE_EXTENSIONS:
        if path.suffix.lower() == ".tsv":
            return "text"
        with path.open(encoding="utf-8", errors="replace") as stream:
            cells = [line.split(",", 1)[0].strip().strip('"').lower() for _, line in zip(range(20), stream)]
        return "image" if any(cell.endswith(tuple(IMAGE_EXTENSIONS)) for cell in cells) else "text"
    if is_archive(path):
        names = _archive_names(path)[:max_files]
    else:
        names = []
        for _, _, files in os.walk(path):
            names.extend(files)
            if len(names) >= max_files:
                break
    suffixes = [Path(name).suffix.lower() for name in names if not is_ignored_name(Path(name).name)]
    texts = sum(suffix in TEXT_EXTENSIONS + TABLE_EXTENSIONS for suffix in suffixes)
    images = sum(suffix in IMAGE_EXTENSIONS for suffix in suffixes)
    return "text" if texts > images else "image"
