"""Saving browser uploads (a folder of images or text files, an archive, a CSV/TSV table, loose images) safely on the server.

A directory upload gives one file per image or document whose `.name` is its path relative to the
chosen folder (`flowers/roses/1.jpg`, `news/sport/1.txt`), so the class is the parent folder. Names come from the browser and
are untrusted: absolute paths, `..` and odd characters never reach the file system.

In a workspace with a disk quota, an upload is written under the workspace's disk lock and only when it
fits (tl_core/server/disk_budget.py), so uploads from several tabs at once cannot pass the quota together.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from tl_core.data.archive import is_archive
from tl_core.server.disk_budget import reserved

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")
_DRIVE = re.compile(r"^[A-Za-z]:")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
TABLE_SUFFIXES = (".csv", ".tsv")  # one row per example: a text and a label column (or image paths and labels)
UPLOAD_ADVICE = "Upload a smaller dataset (fewer or smaller files)"


class UploadedFileLike(Protocol):
    """What Streamlit's UploadedFile offers and these helpers use."""

    name: str

    def getvalue(self) -> bytes: ...


@dataclass
class SavedFolder:
    """Where an uploaded folder went, and which names were refused (with the reason)."""

    root: Path
    saved: int
    rejected: list[tuple[str, str]] = field(default_factory=list)


def safe_relative_path(name: str) -> PurePosixPath | None:
    """`name` as a relative path below an upload folder, or None when it could escape it.

    Args:
        name: a browser-provided path such as `roses/1.jpg` (backslashes count as separators).

    Returns:
        The cleaned relative path; None for absolute paths, drive letters, `..` parts or empty names.
    """
    text = name.replace("\\", "/").strip()
    if not text or text.startswith("/") or _DRIVE.match(text) or "\x00" in text:
        return None
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if not parts or any(part == ".." for part in parts):
        return None
    return PurePosixPath(*parts)


def safe_name(name: str, fallback: str = "dataset") -> str:
    """A folder or file name made of letters, digits, `._ -` only (no separators, not hidden)."""
    cleaned = _SAFE_NAME.sub("_", PurePosixPath(name.replace("\\", "/")).name).strip(" .")
    return cleaned[:80] or fallback


def common_top_folder(paths: Sequence[PurePosixPath]) -> str | None:
    """The folder the user picked, when every file sits at least two levels below it.

    `flowers/roses/1.jpg` -> `flowers` (classes are one level down); `roses/1.jpg` -> None (the
    picked folder is itself one class, so it is kept as the class folder).
    """
    tops = {path.parts[0] for path in paths}
    if len(tops) == 1 and all(len(path.parts) >= 3 for path in paths):
        return tops.pop()
    return None


def unused_folder(parent: Path, name: str) -> Path:
    """`parent/name`, or `name-2`, `name-3`, ... so an earlier dataset is never overwritten."""
    candidate, counter = parent / name, 2
    while candidate.exists():
        candidate, counter = parent / f"{name}-{counter}", counter + 1
    return candidate


def save_uploaded_folder(files: Sequence[UploadedFileLike], parent: Path, name: str | None = None) -> SavedFolder:
    """Write a directory upload under `parent/<name>/`, keeping relative paths (class = folder).

    Args:
        files: the uploaded files; each `.name` is a relative path.
        parent: the datasets folder.
        name: the dataset's folder name; default the uploaded folder's own name.

    Returns:
        The new dataset folder, how many files were saved and which names were refused.

    Raises:
        QuotaExceededError: the files would take the workspace over its disk quota; nothing is saved.
    """
    accepted: list[tuple[PurePosixPath, UploadedFileLike]] = []
    rejected: list[tuple[str, str]] = []
    for upload in files:
        relative = safe_relative_path(upload.name)
        if relative is None:
            rejected.append((upload.name, "absolute path or '..' in the name: refused for safety"))
        else:
            accepted.append((relative, upload))
    top = common_top_folder([relative for relative, _ in accepted])
    if top is not None:
        accepted = [(PurePosixPath(*relative.parts[1:]), upload) for relative, upload in accepted]
    target = unused_folder(parent, safe_name(name or top or "upload", "upload"))
    with reserved(
        parent, upload_size([upload for _, upload in accepted]), f"The folder upload {target.name}", UPLOAD_ADVICE
    ):
        staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=parent))
        try:
            for relative, upload in accepted:
                destination = staging.joinpath(*(safe_name(part, "_") for part in relative.parts))
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(upload.getvalue())
            staging.rename(target)  # appear complete or not at all
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return SavedFolder(target, len(accepted), rejected)


def save_uploaded_file(upload: UploadedFileLike, folder: Path) -> Path:
    """Write one uploaded file (an archive, an image) into `folder` under a safe, unused name.

    Raises:
        QuotaExceededError: the file would take the workspace over its disk quota; nothing is saved.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = safe_name(upload.name, "upload")
    suffix = next((s for s in ARCHIVE_SUFFIXES if name.lower().endswith(s)), Path(name).suffix)
    stem = name[: len(name) - len(suffix)] if suffix else name
    with reserved(folder, upload_size([upload]), f"The upload {name}", UPLOAD_ADVICE):
        target = folder / name
        counter = 2
        while target.exists():
            target, counter = folder / f"{stem}-{counter}{suffix}", counter + 1
        target.write_bytes(upload.getvalue())
    return target


def upload_size(files: Sequence[UploadedFileLike | None]) -> int:
    """Total bytes of the uploaded files (what the upload limit and the disk quota are checked against)."""
    return sum(len(upload.getvalue()) for upload in files if upload is not None)


def dataset_choices(folder: Path) -> list[str]:
    """Names of the datasets in `folder`: sub-folders, archives and CSV/TSV tables, hidden entries (staging uploads) left out."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if not p.name.startswith(".")
        and (p.is_dir() or is_archive(p) or (p.is_file() and p.suffix.lower() in TABLE_SUFFIXES))
    )
