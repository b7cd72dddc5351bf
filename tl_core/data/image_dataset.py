"""Scan, validate and split a labelled image dataset before any training.

A source is a folder with one sub-folder per class (optionally inside `train/`, `val/`, `test/`), an
archive of such a folder, or a CSV of `path,label`. Scanning reads every file once (hash + a cheap
decode) and reports what will be used and what was skipped and why; bad files never stop good ones.

Example:
    >>> report = scan_dataset("flowers/")
    >>> print(report.format_text())
    >>> split = split_dataset(report, val_fraction=0.15, test_fraction=0.15, seed=42)
    >>> split.sizes()
    {'train': 700, 'val': 150, 'test': 150}
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tl_core.data.archive import extract_archive, is_archive, is_ignored_name
from tl_core.data.checks import (
    FEW_EXAMPLES_PER_CLASS,
    MIN_EXAMPLES_PER_CLASS,
    check_classes,
    dataset_fingerprint,
    remove_duplicates,
)
from tl_core.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageDecodeError, ImageHeader, inspect_image
from tl_core.data.readable_roots import OUTSIDE_FIX, is_allowed
from tl_core.data.types import SPLIT_NAMES, DatasetSplit, Example, Problem, ScanReport, Severity
from tl_core.errors import DataError

SPLIT_FOLDERS: dict[str, str] = {"train": "train", "val": "val", "validation": "val", "test": "test"}
MIN_IMAGES_PER_CLASS = MIN_EXAMPLES_PER_CLASS
MIN_IMAGE_SIDE = 16  # pixels; smaller images are trained on, with a warning (an icon or a thumbnail by mistake)
FEW_IMAGES_PER_CLASS = FEW_EXAMPLES_PER_CLASS
DEFAULT_EXTRACT_ROOT = Path("~/.cache/transferlab/extracted")
_CSV_HEADER_CELLS = frozenset(
    {"path", "file", "filename", "filepath", "image", "image_path", "label", "class", "category", "target"}
)
_LINES_PER_KIND = 20


@dataclass
class _Collected:
    """Files found in a source before they are inspected."""

    candidates: list[tuple[Path, str, str, str | None]] = field(default_factory=list)  # path, relpath, label, split
    labels: set[str] = field(default_factory=set)  # every class named, even one with no usable image
    problems: list[Problem] = field(default_factory=list)
    files_seen: int = 0
    skipped: list[Problem] = field(default_factory=list)
    readable_roots: tuple[str, ...] = ()  # files must resolve inside one of these (none: anywhere)

    @property
    def files_skipped(self) -> int:
        return len(self.skipped)

    def skip(self, severity: Severity, kind: str, message: str, relpath: str) -> None:
        self.skipped.append(Problem(severity, kind, message, relpath))
        self.problems.append(self.skipped[-1])


def _visible_children(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not is_ignored_name(entry.name))


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _add_file(collected: _Collected, path: Path, relpath: str, label: str, split: str | None) -> None:
    collected.files_seen += 1
    if not is_allowed(path, collected.readable_roots):  # a link inside a folder that leads elsewhere
        collected.skip("warning", "outside-workspace", f"Skipped {relpath}, which {OUTSIDE_FIX}.", relpath)
    elif not _is_image_name(path):
        message = f"Skipped {relpath}: not an image file ({path.suffix or 'no extension'}); remove it, or convert it to JPEG/PNG if it is a picture."
        collected.skip("info", "not-an-image", message, relpath)
    else:
        collected.candidates.append((path, relpath, label, split))


def _collect_class_folder(collected: _Collected, root: Path, class_dir: Path, split: str | None) -> None:
    collected.labels.add(class_dir.name)
    for folder, subfolders, files in os.walk(class_dir):
        subfolders[:] = sorted(name for name in subfolders if not is_ignored_name(name))  # prunes the walk too
        for name in sorted(files):
            if not is_ignored_name(name):
                path = Path(folder) / name
                _add_file(collected, path, path.relative_to(root).as_posix(), class_dir.name, split)


def _collect_loose_files(collected: _Collected, root: Path, folder: Path, files: list[Path]) -> None:
    for path in files:
        relpath = path.relative_to(root).as_posix()
        collected.files_seen += 1
        where = f"{folder.relative_to(root).as_posix()}/<class>/" if folder != root else "<class>/"
        collected.skip(
            "warning",
            "outside-class-folder",
            f"Skipped {relpath}: it is not inside a class folder; move it into {where}.",
            relpath,
        )


def _collect_folder(root: Path, readable_roots: tuple[str, ...]) -> tuple[_Collected, bool]:
    """Files of a folder dataset and whether it uses preset `train/`, `val/`, `test/` folders."""
    collected = _Collected(readable_roots=readable_roots)
    children = _visible_children(root)
    folders = [c for c in children if c.is_dir()]
    loose = [c for c in children if c.is_file()]
    if not children:
        raise DataError(
            f"{root} is empty: put one sub-folder per class inside it, e.g. {root}/cats/1.jpg and {root}/dogs/1.jpg."
        )
    split_folders = sorted(f.name for f in folders if f.name.lower() in SPLIT_FOLDERS)
    has_presets = any(name.lower() == "train" for name in split_folders)
    if split_folders and not has_presets:
        raise DataError(
            f"{root} has {', '.join(n + '/' for n in split_folders)} but no train/ folder: add train/<class>/ with the training images."
        )
    if not folders and any(_is_image_name(f) for f in loose):
        raise DataError(
            f"{root} holds images but no class sub-folders: make one sub-folder per class and move each image "
            f"into its class, e.g. {root}/cats/1.jpg and {root}/dogs/1.jpg (or pass a CSV of path,label)."
        )
    _collect_loose_files(collected, root, root, loose)
    if not has_presets:
        for class_dir in folders:
            _collect_class_folder(collected, root, class_dir, None)
        return collected, False
    for folder in folders:
        split = SPLIT_FOLDERS.get(folder.name.lower())
        if split is None:
            message = f"Ignored folder {folder.name}/: with train/val/test folders, put every class inside them."
            collected.problems.append(Problem("warning", "ignored-folder", message, folder.name))
            continue
        inside = _visible_children(folder)
        _collect_loose_files(collected, root, folder, [c for c in inside if c.is_file()])
        for class_dir in (c for c in inside if c.is_dir()):
            _collect_class_folder(collected, root, class_dir, split)
    return collected, True


def _is_csv_header(row: list[str], csv_dir: Path, readable_roots: tuple[str, ...]) -> bool:
    first = row[0].strip()
    if first.lower() in _CSV_HEADER_CELLS:
        return True
    # A path outside the readable folders is judged as if it did not exist, so the answer tells nothing about it.
    named = csv_dir / first
    return row[1].strip().lower() in _CSV_HEADER_CELLS and not (is_allowed(named, readable_roots) and named.is_file())


def _collect_csv(csv_path: Path, readable_roots: tuple[str, ...]) -> _Collected:
    collected = _Collected(readable_roots=readable_roots)
    csv_dir = csv_path.parent
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as stream:
            rows = [
                (number, row)
                for number, row in enumerate(csv.reader(stream), start=1)
                if any(cell.strip() for cell in row)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(
            f"{csv_path} cannot be read as CSV ({error}): save it as UTF-8 text with lines `path,label`."
        ) from error
    if rows and len(rows[0][1]) >= 2 and _is_csv_header(rows[0][1], csv_dir, readable_roots):
        rows = rows[1:]
    for number, row in rows:
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            message = (
                f"{csv_path.name} line {number}: expected `path,label`, got {','.join(row)!r}; fix or delete the line."
            )
            collected.problems.append(Problem("warning", "csv-row", message, None))
            continue
        path = Path(row[0].strip()).expanduser()
        path = path if path.is_absolute() else csv_dir / path
        relpath = path.relative_to(csv_dir).as_posix() if path.is_relative_to(csv_dir) else path.as_posix()
        label = row[1].strip()
        collected.labels.add(label)
        if not is_allowed(
            path, readable_roots
        ):  # checked before existence: the message must not reveal whether it exists
            collected.files_seen += 1
            shown = row[0].strip()
            collected.skip(
                "warning",
                "outside-workspace",
                f"{csv_path.name} line {number}: {shown} {OUTSIDE_FIX} and name it relative to the CSV.",
                shown,
            )
            continue
        if not path.is_file():
            collected.files_seen += 1
            message = f"{csv_path.name} line {number}: {relpath} does not exist; fix the path (relative to the CSV's folder) or delete the line."
            collected.skip("warning", "missing-file", message, relpath)
            continue
        _add_file(collected, path, relpath, label, None)
    if not rows:
        raise DataError(f"{csv_path} has no `path,label` rows: add one line per image, e.g. `cats/1.jpg,cat`.")
    return collected


def _resolve_source(source: str | Path, extract_root: Path | None) -> tuple[Path, str]:
    """The dataset root folder (or CSV file) and its kind: folder, archive or csv."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"Dataset source {path} does not exist: check the path (a folder, a .zip/.tar/.tar.gz, or a CSV)."
        )
    if path.is_dir():
        return path.resolve(), "folder"
    if is_archive(path):
        return extract_archive(path, (extract_root or DEFAULT_EXTRACT_ROOT).expanduser()).resolve(), "archive"
    if path.suffix.lower() == ".csv":
        return path.resolve(), "csv"
    raise DataError(
        f"{path} is not a folder, archive (.zip/.tar/.tar.gz) or CSV: pass the folder that holds one sub-folder per class."
    )


def _inspect_all(candidates: list[tuple[Path, str, str, str | None]], max_pixels: int) -> list[ImageHeader | DataError]:
    def inspect(path: Path) -> ImageHeader | DataError:
        try:
            return inspect_image(path, max_pixels=max_pixels)
        except DataError as error:  # bad image, or unreadable / vanished during the scan
            return error

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:  # Pillow and hashlib release the GIL
        return list(pool.map(inspect, [candidate[0] for candidate in candidates]))


def _size_stats(examples: list[Example]) -> dict[str, float]:
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
    return stats


def scan_dataset(
    source: str | Path,
    *,
    extract_root: Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    readable_roots: Sequence[str | Path] = (),
) -> ScanReport:
    """Find, check and summarise every image of a dataset source.

    Each image is hashed and decoded cheaply (JPEG at 1/8 scale) to catch corrupt and truncated
    files now rather than mid-training.

    Args:
        source: a class-per-folder directory, a .zip/.tar/.tar.gz of one, or a CSV of `path,label`.
        extract_root: where archives are extracted (default `~/.cache/transferlab/extracted`).
        max_pixels: images with more pixels are skipped (decompression-bomb guard).
        readable_roots: on a workshop server, the folders the user may read (their area and the shared datasets):
            a CSV row or a link naming a file elsewhere is skipped, with one message whether the file exists or not.
            Empty (personal mode): any file.

    Returns:
        The report; its `examples` hold only images of trainable classes, each file content once.

    Raises:
        DataError: missing or empty source, no class folders, or fewer than 2 usable classes.
    """
    roots = tuple(str(root) for root in readable_roots)
    root, kind = _resolve_source(source, extract_root)
    if kind == "csv":
        collected, has_presets, root_folder = _collect_csv(root, roots), False, root.parent
    else:
        (collected, has_presets), root_folder = _collect_folder(root, roots), root
    headers = _inspect_all(collected.candidates, max_pixels)
    examples: list[Example] = []
    for (path, relpath, label, split), header in zip(collected.candidates, headers):
        if isinstance(header, ImageDecodeError):
            collected.skip("warning", header.kind, f"Skipped {relpath}: {header.fix}", relpath)
        elif isinstance(header, DataError):
            collected.skip("warning", "unreadable", f"Skipped {relpath}: {header}", relpath)
        else:
            examples.append(
                Example(str(path.resolve()), relpath, label, header.content_hash, split, header.width, header.height)
            )
    problems = collected.problems
    for example in examples:
        if min(example.width, example.height) < MIN_IMAGE_SIDE:
            problems.append(
                Problem(
                    "warning",
                    "tiny-image",
                    f"{example.relpath} is only {example.width}x{example.height} pixels: scaled up to the model's input "
                    f"it carries almost no detail. Replace it with a larger image (at least {MIN_IMAGE_SIDE} px a side) "
                    "or delete it; it is used as it is.",
                    example.relpath,
                )
            )
    examples, duplicate_groups = remove_duplicates(examples, problems)
    class_counts, excluded = check_classes(examples, collected.labels, has_presets, problems)
    if len(class_counts) < 2:
        found = (
            ", ".join(f"{label} ({count})" for label, count in sorted({**class_counts, **excluded}.items())) or "none"
        )
        skipped = (
            f" {collected.files_skipped} file(s) were skipped, e.g. {collected.skipped[0].message}"
            if collected.skipped
            else ""
        )
        raise DataError(
            f"{root_folder} has fewer than 2 classes with at least {MIN_IMAGES_PER_CLASS} usable images (found: {found}). "
            f"Add images so at least two classes have {MIN_IMAGES_PER_CLASS}+ each.{skipped}"
        )
    examples = sorted((e for e in examples if e.label in class_counts), key=lambda e: (e.relpath, e.label))
    return ScanReport(
        root=str(root_folder),
        source=str(source),
        examples=examples,
        class_names=sorted(class_counts),
        class_counts=class_counts,
        excluded_classes=excluded,
        problems=problems,
        files_seen=collected.files_seen,
        files_skipped=collected.files_skipped,
        duplicate_groups=sorted(duplicate_groups),
        size_stats=_size_stats(examples),
        fingerprint=dataset_fingerprint(examples),
        has_preset_splits=has_presets,
    )


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _held_out_counts(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Images of one class for val and test: rounded shares, each at least 1 while training keeps 2+.

    Training keeps two images first, then test gets one (a class never tested is invisible in the results), then
    validation; a class of 2 or 3 images misses a split, and `DatasetSplit.coverage_problems` says so.
    """
    val = _round_half_up(count * val_fraction)
    test = _round_half_up(count * test_fraction)
    if test_fraction > 0 and test == 0 and count - val - 1 >= 2:
        test = 1
    if val_fraction > 0 and val == 0 and count - test - 1 >= 2:
        val = 1
    while count - val - test < 1 and test > 0:  # training data first: give up test images, then val
        test -= 1
    while count - val - test < 1 and val > 0:
        val -= 1
    return val, test


def _stratified(
    examples: list[Example], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Example]]:
    """Per-class seeded split in which identical files (same content hash) always land together."""
    groups: dict[str, list[Example]] = defaultdict(list)
    for example in sorted(examples, key=lambda e: (e.relpath, e.label)):
        groups[example.content_hash].append(example)
    by_class: dict[str, list[list[Example]]] = defaultdict(list)
    for group in sorted(groups.values(), key=lambda g: g[0].relpath):
        by_class[group[0].label].append(group)
    parts: dict[str, list[Example]] = {name: [] for name in SPLIT_NAMES}
    for label, class_groups in sorted(by_class.items()):
        # a per-class generator keeps a class's split unchanged when other classes change
        rng = np.random.default_rng([seed & 0xFFFFFFFF, int(hashlib.sha256(label.encode()).hexdigest()[:8], 16)])
        order = rng.permutation(len(class_groups))
        val_count, test_count = _held_out_counts(sum(len(g) for g in class_groups), val_fraction, test_fraction)
        taken = dict.fromkeys(SPLIT_NAMES, 0)
        for position in order:
            group = class_groups[position]
            name = "test" if taken["test"] < test_count else "val" if taken["val"] < val_count else "train"
            taken[name] += len(group)
            parts[name].extend(group)
    return parts


def split_dataset(
    report: ScanReport, *, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 42
) -> DatasetSplit:
    """Stratified, seeded train/val/test split that never separates identical files.

    Preset `train/`, `val/`, `test/` folders are used as given; a missing `val/` or `test/` is carved
    out of `train/` with the matching fraction. The result depends only on the data and the seed.

    Args:
        report: a scan whose `examples` are the usable images.
        val_fraction: share of each class for validation.
        test_fraction: share of each class for testing.
        seed: the same seed and data always give the same split.

    Returns:
        The split; each part is sorted by relative path.
    """
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise DataError(f"{name}={fraction} must be in [0, 1): e.g. 0.15.")
    if val_fraction + test_fraction >= 0.9:
        raise DataError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction:.2f} leaves too little to train on: keep the sum below 0.9."
        )
    if report.has_preset_splits:
        given = {name: [e for e in report.examples if e.preset_split == name] for name in SPLIT_NAMES}
        carve_val = val_fraction if not given["val"] else 0.0
        carve_test = test_fraction if not given["test"] else 0.0
        carved = _stratified(given["train"], carve_val, carve_test, seed)
        parts = {"train": carved["train"], "val": given["val"] + carved["val"], "test": given["test"] + carved["test"]}
    else:
        parts = _stratified(report.examples, val_fraction, test_fraction, seed)
    if not parts["train"]:
        raise DataError(f"No training images in {report.root}: add images to the class folders (or to train/).")
    ordered = {name: tuple(sorted(parts[name], key=lambda e: (e.relpath, e.label))) for name in SPLIT_NAMES}
    return DatasetSplit(ordered["train"], ordered["val"], ordered["test"], tuple(report.class_names), seed)
