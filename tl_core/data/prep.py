"""A dataset ready for a run: scanned, validated and split, with the workspace's caches.

A folder's scan is reused from the workspace while no file's size or modification time changed, so a
second run on the same folder skips hashing and decoding every image. The label review's decisions
(`tl_core.data.label_overrides`) are applied after the split, to the scan as found, so a reused scan never
carries an old decision.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tl_core.config import DataConfig
from tl_core.data import image_dataset as data_module
from tl_core.data import images as images_module
from tl_core.data.image_dataset import split_dataset
from tl_core.data.label_overrides import AppliedOverrides, apply_label_overrides, load_decisions, overrides_path
from tl_core.data.types import DatasetSplit, Example, Problem, ScanReport
from tl_core.modalities import DataModality, get_modality
from tl_core.runs.store import RunStore


@dataclass
class PreparedDataset:
    """The dataset a run trains on; `overrides` says what the workspace's label decisions changed in it."""

    report: ScanReport
    split: DatasetSplit
    overrides: AppliedOverrides = AppliedOverrides()


def workspace_cache(store: RunStore, kind: str) -> Path:
    path = store.workspace / "cache" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def prepare_dataset(config: DataConfig, store: RunStore) -> PreparedDataset:
    """Scan, validate and split the examples of `config.modality`, then apply the workspace's label decisions.

    Raises:
        DataError: nothing trainable is left, or the labels-override file is damaged (the message says how to fix it).
    """
    roots, modality = config.readable_roots, get_modality(config.modality)
    report = (
        _scan_folder_reusing_earlier_scan(config.source, store, roots, modality)
        if modality.reuses_folder_scans
        else None
    )
    if report is None:
        report = modality.scan(config.source, extract_root=workspace_cache(store, "extracted"), readable_roots=roots)
    split = split_dataset(
        report, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed
    )
    decisions = load_decisions(store.workspace, config.source)
    if not decisions:
        return PreparedDataset(report, split)
    report, split, applied = apply_label_overrides(report, split, decisions, file=overrides_path(store.workspace))
    return PreparedDataset(report, split, applied)


def _folder_listing_key(folder: Path, readable_roots: tuple[str, ...]) -> str:
    """sha256 of every file's path, size and modification time under `folder`, and of the scanning code.

    Like make or git, an unchanged size and mtime stand for unchanged content: a scan hashes and
    decodes every image (0.5-1 s per 600 files here), listing them costs milliseconds.
    """
    digest = hashlib.sha256(str(folder).encode())
    digest.update(repr(readable_roots).encode())  # a scan limited to other folders skipped other files
    for module in (data_module, images_module):  # a changed scanner must not reuse old reports
        digest.update(Path(module.__file__ or "").read_bytes())
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        subdirectories.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            try:
                stat = os.stat(path)
            except OSError:  # a dangling link: the scan reports it; keep it in the key by name only
                digest.update(f"{path}|missing\n".encode())
                continue
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _scan_folder_reusing_earlier_scan(
    source: str, store: RunStore, readable_roots: tuple[str, ...], modality: DataModality
) -> ScanReport | None:
    """The scan of a dataset folder, reused from the workspace when no file changed since; None for archives and CSVs.

    A second run on the same folder then skips hashing and decoding every image.
    """
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return None
    folder = folder.resolve()
    saved = workspace_cache(store, "scans") / f"{_folder_listing_key(folder, readable_roots)}.json"
    if saved.is_file():
        try:
            fields = json.loads(saved.read_text())
            fields["examples"] = [Example(**example) for example in fields["examples"]]
            fields["problems"] = [Problem(**problem) for problem in fields["problems"]]
            return ScanReport(**{**fields, "source": source})
        except (OSError, ValueError, TypeError, KeyError):  # an unreadable or older report: scan again
            saved.unlink(missing_ok=True)
    report = modality.scan(folder, extract_root=None, readable_roots=readable_roots)
    report.source = source  # as the caller named it, like a fresh scan
    partial = saved.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(report.to_dict()))
    os.replace(partial, saved)  # atomic: a concurrent run never reads half a report
    return report
