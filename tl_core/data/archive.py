"""Safe extraction of dataset archives (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz).

Archives come from users and the internet, so nothing in one may write outside the target folder
(zip-slip, absolute paths, `..`, links) and the total size and file count are capped against archive
bombs. Extraction goes to a temporary folder renamed into place at the end, so a crash never leaves
a half-extracted dataset, and the folder is named after the archive's content hash so extracting the
same archive again reuses it.

In a workspace with a disk quota (tl_core/server/disk_budget.py) extraction also stops at what is left of it:
the workspace's lock is held while extracting, the space left is measured under it, and bytes count
as they are written, so a small archive that unpacks to gigabytes, or several archives unpacked at
once by one user, never take the workspace over its quota.

Example:
    >>> root = extract_archive(Path("flowers.zip"), Path("~/.cache/transferlab/extracted").expanduser())
    >>> sorted(p.name for p in root.iterdir())
    ['daisy', 'rose', 'tulip']
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from tl_core.errors import DataError
from tl_core.server.disk_budget import DiskBudget, QuotaExceededError

ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
SYSTEM_FILE_NAMES: frozenset[str] = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
DEFAULT_MAX_TOTAL_BYTES = 4 << 30
DEFAULT_MAX_FILES = 200_000
_CHUNK = 1 << 20
_REBUILD_HINT = "Re-create the archive from the dataset folder (e.g. `zip -r data.zip data/`), or extract it yourself and pass the folder."
_QUOTA_ADVICE = "Nothing was extracted. Upload a smaller archive (fewer or smaller images)"


def is_ignored_name(name: str) -> bool:
    """Hidden files and folders and OS clutter (`__MACOSX`, `.DS_Store`, `Thumbs.db`) are never data."""
    return name.startswith(".") or name in SYSTEM_FILE_NAMES


def is_archive(path: str | Path) -> bool:
    """Whether `path` names an archive TransferLab extracts (judged by its suffix)."""
    return Path(path).name.lower().endswith(ARCHIVE_SUFFIXES)


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_relative_path(archive: Path, name: str) -> PurePosixPath:
    """The entry's path inside the target folder; refuses anything that could land outside it."""
    posix_name = name.replace("\\", "/")
    parts = [part for part in posix_name.split("/") if part not in ("", ".")]
    is_absolute = posix_name.startswith("/") or (len(posix_name) > 1 and posix_name[1] == ":")
    if is_absolute or ".." in parts or not parts:
        raise DataError(
            f"{archive.name} contains an unsafe entry {name!r} (absolute path or `..`) that would be written "
            f"outside the extraction folder, so it was not extracted. {_REBUILD_HINT}"
        )
    return PurePosixPath(*parts)


@dataclass(frozen=True)
class _QuotaRoom:
    """What is left of a workspace's disk quota for one extraction (measured under the workspace's lock)."""

    budget: DiskBudget
    left_bytes: int


def _is_hidden(relative: PurePosixPath) -> bool:
    """Hidden entries are never data (scans skip them), and one could pose as a workspace's own files
    (its disk quota file): they are not extracted."""
    return any(part.startswith(".") for part in relative.parts)


class _ExtractionBudget:
    """Counts files and bytes as they are written, so headers that lie about sizes do not get past the caps.

    Args:
        archive: the archive, for messages.
        max_total_bytes: most bytes it may unpack to.
        max_files: most files (and, separately, folders) it may hold.
        room: what is left of the workspace's quota; None where there is no quota.
    """

    def __init__(self, archive: Path, max_total_bytes: int, max_files: int, room: _QuotaRoom | None = None) -> None:
        self.archive, self.max_total_bytes, self.max_files, self.room = archive, max_total_bytes, max_files, room
        self.total_bytes = 0
        self.files = 0
        self.folders = 0

    def add_file(self) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise DataError(
                f"{self.archive.name} holds more than {self.max_files:,} files (limit `max_files`), a sign of an "
                "archive bomb or the wrong archive. Split the dataset, or raise max_files if you trust it."
            )

    def add_folder(self) -> None:
        self.folders += 1
        if self.folders > self.max_files:
            raise DataError(
                f"{self.archive.name} holds more than {self.max_files:,} folders (limit `max_files`): check it is the right archive."
            )

    def refuse_declared(self, files: int, total_bytes: int) -> None:
        """Fail before writing anything when the archive's own index already exceeds a cap."""
        if files > self.max_files:
            self.files = files - 1
            self.add_file()
        self.add_bytes(0, declared=total_bytes, whole_archive=True)

    def add_bytes(self, count: int, *, declared: int = 0, whole_archive: bool = False) -> None:
        """Count `count` bytes written; refuse before writing when `declared` more bytes (what the next entries say) would pass a cap.

        `whole_archive`: `declared` is the whole archive's size (a zip's index), so a refusal can say it exactly.
        """
        self.total_bytes += count
        needed = self.total_bytes + declared
        if self.room is not None and needed > self.room.left_bytes and self.room.left_bytes < self.max_total_bytes:
            what = f"Unpacking {self.archive.name}"
            raise QuotaExceededError(
                self.room.budget.refusal(what, needed, self.room.left_bytes, _QUOTA_ADVICE, at_least=not whole_archive)
            )
        if needed > self.max_total_bytes:
            raise DataError(
                f"{self.archive.name} unpacks to more than {self.max_total_bytes:,} bytes (limit `max_total_bytes`), "
                "a sign of an archive bomb or a dataset too large to extract here. Raise max_total_bytes if you trust it, "
                "or extract it yourself and pass the folder."
            )


def _copy_capped(source: IO[bytes], destination: Path, budget: _ExtractionBudget) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    with destination.open("wb") as output:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            budget.add_bytes(len(chunk))
            output.write(chunk)


def _zip_entries(archive: Path, budget: _ExtractionBudget, target: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        infos = bundle.infolist()
        files = [info for info in infos if not info.is_dir()]
        budget.refuse_declared(len(files), sum(info.file_size for info in files))
        for info in infos:
            relative = _safe_relative_path(archive, info.filename)
            if _is_hidden(relative):
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DataError(
                    f"{archive.name} contains a symbolic link {info.filename!r}, which could point outside the dataset. {_REBUILD_HINT}"
                )
            if info.is_dir():
                budget.add_folder()
                (target / relative).mkdir(parents=True, exist_ok=True)
                continue
            budget.add_file()
            with bundle.open(info) as source:
                _copy_capped(source, target / relative, budget)


def _tar_entries(archive: Path, budget: _ExtractionBudget, target: Path) -> None:
    with tarfile.open(archive, mode="r:*") as bundle:
        for member in bundle:  # streams members; never reads the whole index up front
            relative = _safe_relative_path(archive, member.name)
            if _is_hidden(relative):
                continue
            if member.issym() or member.islnk():
                raise DataError(
                    f"{archive.name} contains a link {member.name!r} -> {member.linkname!r}, which could point outside "
                    f"the dataset. {_REBUILD_HINT}"
                )
            if member.isdir():
                budget.add_folder()
                (target / relative).mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise DataError(
                    f"{archive.name} contains a special file {member.name!r} (device or pipe), which a dataset never needs. {_REBUILD_HINT}"
                )
            budget.add_file()
            budget.add_bytes(0, declared=member.size)
            source = bundle.extractfile(member)
            if source is not None:
                with source:
                    _copy_capped(source, target / relative, budget)


def _visible_entries(folder: Path) -> Iterator[Path]:
    return (entry for entry in folder.iterdir() if not is_ignored_name(entry.name))


def unwrap_single_folder(folder: Path) -> Path:
    """`folder/<only sub-folder>` when the folder holds exactly one visible sub-folder and nothing else."""
    entries = list(_visible_entries(folder))
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def extract_archive(
    archive: Path,
    target_root: Path,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> Path:
    """Extract a dataset archive safely under `target_root` and return the dataset root inside it.

    Args:
        archive: a .zip, .tar, .tar.gz/.tgz, .tar.bz2 or .tar.xz file.
        target_root: folder that receives one sub-folder per distinct archive (by content hash).
        max_total_bytes: refuse archives that unpack to more bytes than this.
        max_files: refuse archives with more files than this.

    Returns:
        The extracted folder, or its only sub-folder when the archive wraps everything in one folder.

    Raises:
        DataError: missing, unreadable or unsafe archive, or one over the caps; nothing is left behind.
        QuotaExceededError: in a workspace with a disk quota, the archive unpacks to more than is left of it;
            nothing is left behind.
    """
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise DataError(f"Archive {archive} does not exist: check the path.")
    if not is_archive(archive):
        raise DataError(f"{archive.name} is not a supported archive: use one of {', '.join(ARCHIVE_SUFFIXES)}.")
    target_root = Path(target_root).expanduser()
    target_root.mkdir(parents=True, exist_ok=True)
    stem = archive.name[: -len(next(s for s in ARCHIVE_SUFFIXES if archive.name.lower().endswith(s)))] or "archive"
    destination = target_root / f"{stem}-{_content_hash(archive)[:16]}"
    if destination.is_dir():  # only ever created by the rename below, so it is complete
        return unwrap_single_folder(destination)
    quota = DiskBudget.find(target_root)
    # With a quota, one extraction at a time per workspace, capped by what is left when it starts.
    with quota.locked() if quota is not None else nullcontext(None) as left_bytes:
        if not destination.is_dir():  # not unpacked by another upload of it while this one waited for the lock
            room = None if quota is None else _QuotaRoom(quota, left_bytes)
            _extract_into(archive, destination, _ExtractionBudget(archive, max_total_bytes, max_files, room))
    return unwrap_single_folder(destination)


def _extract_into(archive: Path, destination: Path, budget: _ExtractionBudget) -> None:
    """Unpack `archive` into a temporary folder beside `destination`, renamed to it once complete (removed otherwise)."""
    partial = destination.with_name(f".partial-{destination.name}-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        if archive.name.lower().endswith(".zip"):
            _zip_entries(archive, budget, partial)
        else:
            _tar_entries(archive, budget, partial)
        try:
            partial.rename(destination)
        except OSError:
            if not destination.is_dir():  # another process finishing the same archive first is fine
                raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise DataError(
            f"{archive} cannot be extracted ({type(error).__name__}: {error}): the archive is damaged or incomplete; download or create it again."
        ) from error
    finally:
        shutil.rmtree(partial, ignore_errors=True)
