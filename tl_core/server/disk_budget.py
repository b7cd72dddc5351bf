"""A user's disk quota as every process that writes into their workspace sees it: the server, workers, helpers.

On a workshop server each user's workspace holds `.disk-quota.json` (written by `Workspaces`) and
`.disk-quota.lock`. Whatever writes much into a workspace (archive extraction, the image and feature
caches) finds the quota from the folder it writes to, takes the lock, measures the workspace and writes
only what fits, so two uploads or runs of one user, in threads or processes, cannot both take the
last free megabytes. Writes of a known size reserve it: the file is created at its full size under the
lock, so it counts before its first byte is written. Writes of an unknown size (an archive) count bytes
as they are written, with the lock held until they end.

A workspace without the file (personal mode) has no quota: nothing is locked or measured.

Example:
    >>> DiskBudget(Path("workspace/users/alice"), quota_bytes=2 << 30).save()
    >>> with reserved(Path("workspace/users/alice/cache/images"), 300 << 20, "The image cache", "Use fewer images."):
    ...     write_the_file()  # QuotaExceededError instead when 300 MB do not fit
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tl_core.errors import TransferLabError
from tl_core.layout import USERS_FOLDER  # personal mode: other users' folders below the workspace are never counted

try:
    import fcntl
except ImportError:  # Windows: no advisory locks (workshop servers run on POSIX)
    fcntl = None  # type: ignore[assignment]

QUOTA_FILE = ".disk-quota.json"
LOCK_FILE = ".disk-quota.lock"
MAKE_ROOM = "delete old runs on the Runs page or datasets you no longer need, or ask the trainer to clear your caches or raise the quota"
_MB = 1 << 20


class QuotaExceededError(TransferLabError):
    """An upload, an archive or a run would take a user over the server's upload limit or disk quota."""


def megabytes(size_bytes: int) -> str:
    """`size_bytes` as shown in quota messages, e.g. `1,024.0 MB`."""
    return f"{size_bytes / _MB:,.1f} MB"


def tree_size(path: Path) -> int:
    """Bytes of every file under `path` (links are counted as themselves, never followed).

    Files count by their length, so a cache file created at its full size counts in full at once.
    """
    try:
        info = path.lstat()
    except OSError:
        return 0
    if not path.is_dir() or path.is_symlink():
        return info.st_size
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # removed while we walked: a run or cache being cleaned up
        except OSError:
            continue
    return total


def workspace_bytes(root: Path) -> int:
    """Bytes a workspace holds: everything under `root` except a personal workspace's `users/` folder."""
    if not root.is_dir():
        return 0
    return sum(tree_size(entry) for entry in root.iterdir() if not (entry.name == USERS_FOLDER and entry.is_dir()))


@dataclass(frozen=True)
class DiskBudget:
    """The quota of the workspace at `root`, and the lock every large write into it takes.

    Args:
        root: the user's workspace folder.
        quota_bytes: most bytes the whole workspace may hold.
    """

    root: Path
    quota_bytes: int

    @classmethod
    def find(cls, path: str | Path) -> DiskBudget | None:
        """The budget of the workspace that holds `path` (the nearest folder above with a quota file); None without one."""
        start = Path(path).expanduser().absolute()
        for folder in (start, *start.parents):
            quota_file = folder / QUOTA_FILE
            if quota_file.is_file():
                try:
                    return cls(folder, int(json.loads(quota_file.read_text())["quota_bytes"]))
                except (OSError, ValueError, KeyError, TypeError) as error:
                    raise QuotaExceededError(
                        f"The disk quota file of your workspace cannot be read ({type(error).__name__}), so nothing more is written there: "
                        "ask the trainer to restart the server, which writes it again."
                    ) from error
        return None

    def save(self) -> None:
        """Write the quota into the workspace (atomically; left alone when it already says the same)."""
        quota_file = self.root / QUOTA_FILE
        text = json.dumps({"quota_bytes": self.quota_bytes})
        with contextlib.suppress(OSError):
            if quota_file.read_text() == text:
                return
        self.root.mkdir(parents=True, exist_ok=True)
        partial = quota_file.with_name(
            f"{QUOTA_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
        )  # pages save it from many threads
        partial.write_text(text)
        os.replace(partial, quota_file)

    @staticmethod
    def remove(root: Path) -> None:
        """Take the quota off the workspace at `root` (the server has none now)."""
        (root / QUOTA_FILE).unlink(missing_ok=True)

    def used_bytes(self) -> int:
        """Bytes the workspace holds now."""
        return workspace_bytes(self.root)

    @contextlib.contextmanager
    def locked(self) -> Iterator[int]:
        """Hold the workspace's disk lock (threads and processes alike) for the block.

        Yields:
            The bytes left under the quota, measured under the lock; negative when already over it.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+b") as lock:  # its own open file: flock then excludes other threads too
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield self.quota_bytes - self.used_bytes()  # closing the file releases the lock, also after an exception

    @contextlib.contextmanager
    def reserve(self, needed: int, what: str, advice: str) -> Iterator[None]:
        """Hold the lock while `needed` bytes are written in the block (create the file at its full size there).

        Args:
            needed: bytes the block writes.
            what: what is written, for the message (e.g. "The image cache for this run").
            advice: what the user can do instead (e.g. "Train at a smaller image size.").

        Raises:
            QuotaExceededError: `needed` bytes do not fit in what is left; nothing is written.
        """
        with self.locked() as left:
            if needed > left:
                raise QuotaExceededError(self.refusal(what, needed, left, advice))
            yield

    def refusal(self, what: str, needed: int, left: int, advice: str, *, at_least: bool = False) -> str:
        """The message for `what` needing `needed` bytes where `left` are free: how much, what is left, what to do.

        Args:
            what: what would be written, e.g. "The image cache for this run".
            needed: bytes it needs (`at_least`: bytes it needs so far, the total being unknown).
            left: bytes left under the quota.
            advice: what the user can do instead; the message adds how to make room.

        Returns:
            e.g. "The image cache ... would need ~1,875.0 MB; your workspace has 52.3 MB left of its 60.0 MB quota. ..."
        """
        amount = f"at least {megabytes(needed)}" if at_least else f"~{megabytes(needed)}"
        return (
            f"{what} would need {amount}; your workspace has {megabytes(max(left, 0))} left of its {megabytes(self.quota_bytes)} quota. "
            f"{advice.rstrip('.')}, or make room: {MAKE_ROOM}."
        )


def reserved(folder: Path, needed: int, what: str, advice: str) -> contextlib.AbstractContextManager[None]:
    """`DiskBudget.reserve` of the workspace holding `folder`; does nothing where there is no quota (personal mode)."""
    budget = DiskBudget.find(folder)
    return contextlib.nullcontext() if budget is None else budget.reserve(needed, what, advice)


def check_room(folder: Path, needed: int, what: str, advice: str) -> None:
    """Raise QuotaExceededError now when `needed` bytes would not fit in the workspace holding `folder` (a check before long work)."""
    with reserved(folder, needed, what, advice):
        pass
