"""Per-user workspaces, path checks and disk quotas for a shared (workshop) server.

Each user owns one folder, laid out exactly like a personal workspace, so the run store, the caches
and the upload helpers work unchanged inside it:

    <root>/datasets/                 shared datasets: trainers fill it, students only read it
    <root>/users/<name>/datasets/    the user's uploads (folders and archives)
    <root>/users/<name>/cache/       extracted archives, image and feature caches
    <root>/users/<name>/runs/        run folders; <root>/users/<name>/transferlab.db is their store

Every user has their own RunStore, so no query can return another user's runs and a path check
only has to keep names inside one folder. In personal mode the single user's workspace is `<root>`.

Each workspace also holds its quota (`.disk-quota.json`, see tl_core/server/disk_budget.py): archive extraction
and the caches a run writes (in the server, a worker or its helpers) read it from there and take the
workspace's lock, so they stop at the quota however many uploads and runs one user starts at once.

Example:
    >>> spaces = Workspaces(Path("workspace"), disk_quota_mb=2048, max_upload_mb=200)
    >>> space = spaces.workspace_for(student)          # the student's own folder, created on demand
    >>> spaces.check_upload(student.name, 150 * 2**20)  # QuotaExceededError when it would not fit
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from tl_core.config import RUN_WEIGHTS_PREFIX
from tl_core.errors import TransferLabError
from tl_core.layout import CACHE_FOLDER, DATASETS_FOLDER, RUNS_FOLDER, USERS_FOLDER
from tl_core.runs.records import RunRecord
from tl_core.runs.store import RunStore
from tl_core.server.accounts import User, validate_username
from tl_core.server.disk_budget import DiskBudget, QuotaExceededError, tree_size

SERVER_DATASETS_FOLDER = DATASETS_FOLDER  # <server workspace>/datasets: the shared datasets
LOCAL_USER = User("local", "trainer", "You")  # personal mode: one user who may do everything
WEIGHTS_KEYWORDS = ("imagenet", "none", "glove", "pretrained")  # the registry's named weights, no file behind them
CLEANUP_RUN_STATUSES = ("failed", "interrupted", "stopped")
USAGE_CACHE_S = 10.0  # a page redraws often; a walk of a few thousand files every time is wasteful
_MB = 1 << 20


class UnsafePathError(TransferLabError):
    """A name or path would reach outside the folder it must stay in, or into another user's files."""


@dataclass(frozen=True)
class DiskUsage:
    """Bytes one user's workspace holds, by kind."""

    datasets: int
    cache: int
    runs: int
    other: int  # the run database and anything else at the top of the workspace
    largest: tuple[tuple[str, int], ...]  # the biggest datasets, caches and runs: (relative path, bytes)

    @property
    def total(self) -> int:
        return self.datasets + self.cache + self.runs + self.other


@dataclass(frozen=True)
class CleanupCandidate:
    """Something a trainer may delete to free space: a cache entry or a failed/stopped run."""

    username: str
    kind: str  # "cache" or "run"
    path: Path
    size_bytes: int
    description: str
    run_id: str | None = None


@dataclass(frozen=True)
class UserRun:
    username: str
    record: RunRecord


def safe_join(root: str | Path, *parts: str) -> Path:
    """`root / parts...` resolved, refusing anything that would leave `root`.

    Args:
        root: the folder the result must stay inside (it need not exist yet).
        parts: untrusted names or relative paths (dataset names, file names from a browser).

    Returns:
        The resolved path, inside the resolved `root`.

    Raises:
        UnsafePathError: an empty name, a NUL byte, an absolute path or drive letter, a `..` part,
            or a symbolic link that points outside `root`.
    """
    root_path = Path(root).resolve()
    for part in parts:
        text = str(part)
        if not text.strip():
            raise UnsafePathError(f"An empty name was given inside {root_path}: pick a dataset or file by its name.")
        if "\x00" in text:
            raise UnsafePathError(f"The name {text!r} contains a NUL byte, which no file name may hold: rename it.")
        if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
            raise UnsafePathError(
                f"{text!r} is an absolute path; only names inside {root_path} are accepted: give the name alone, e.g. 'flowers'."
            )
        if ".." in text.replace("\\", "/").split("/"):
            raise UnsafePathError(
                f"{text!r} contains '..', which would leave {root_path}: give the name alone, e.g. 'flowers'."
            )
    candidate = root_path.joinpath(*parts).resolve()
    if not candidate.is_relative_to(root_path):
        raise UnsafePathError(
            f"{'/'.join(parts)!r} leads outside {root_path} (through a symbolic link to {candidate}): "
            "remove the link, or copy the data into the folder."
        )
    return candidate


def _is_within(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


@dataclass(frozen=True)
class UserWorkspace:
    """One user's folder: `root` is what `RunStore(workspace=...)` and the caches use."""

    username: str
    root: Path

    @property
    def datasets(self) -> Path:
        """Where this user's uploads go (what `ui.state.uploads_dir` returns today)."""
        return self.root / DATASETS_FOLDER

    @property
    def cache(self) -> Path:
        return self.root / CACHE_FOLDER

    @property
    def runs(self) -> Path:
        return self.root / RUNS_FOLDER

    def ensure(self) -> UserWorkspace:
        for folder in (self.datasets, self.cache, self.runs):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def store(self) -> RunStore:
        """This user's own run store (`<root>/transferlab.db`)."""
        return RunStore(self.root)

    def dataset_path(self, name: str) -> Path:
        """An uploaded dataset by name; the name cannot reach outside `datasets/`."""
        return safe_join(self.datasets, name)


class Workspaces:
    """All users' workspaces under one root, with access checks and quotas.

    Args:
        root: the server's workspace folder.
        single_user: personal mode: one user (`LOCAL_USER`) whose workspace is `root` itself.
        server_datasets_dir: shared datasets (default `<root>/datasets`); students may only read it.
        disk_quota_mb: most bytes of datasets + caches + runs per user; None for no quota.
        max_upload_mb: largest single upload; None for no limit.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        single_user: bool = False,
        server_datasets_dir: str | Path | None = None,
        disk_quota_mb: int | None = None,
        max_upload_mb: int | None = None,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.single_user = single_user
        self.server_datasets = (
            Path(server_datasets_dir).expanduser().resolve()
            if server_datasets_dir
            else self.root / SERVER_DATASETS_FOLDER
        )
        self.disk_quota_mb = disk_quota_mb
        self.max_upload_mb = max_upload_mb
        self._usage: dict[str, tuple[float, DiskUsage]] = {}
        self._usage_lock = threading.Lock()

    # -- whose folder ----------------------------------------------------------------------------
    def _root_of(self, username: str) -> Path:
        if self.single_user:
            return self.root
        return safe_join(self.root / USERS_FOLDER, validate_username(username))

    def workspace_for(self, actor: User, username: str | None = None) -> UserWorkspace:
        """`actor`'s own workspace, or (trainers only) `username`'s; created when missing.

        Raises:
            UnsafePathError: a student asking for someone else's workspace.
        """
        target = actor.name if username is None else validate_username(username)
        if target != actor.name and not actor.is_trainer:
            raise UnsafePathError(
                f"{actor.name} cannot open {target}'s workspace: students see only their own datasets and runs."
            )
        space = UserWorkspace(target, self._root_of(target)).ensure()
        self._publish_quota(space.root)
        return space

    def publish_quotas(self) -> None:
        """Write the current quota into every user's workspace (at server start: queued runs of users who have
        not opened a page since a quota change must see the new one)."""
        for name in self.usernames():
            self._publish_quota(self._root_of(name))

    def _publish_quota(self, root: Path) -> None:
        """Write the quota into the workspace, where extraction, workers and helpers find it (tl_core/server/disk_budget.py)."""
        if self.disk_quota_mb is None:
            DiskBudget.remove(root)
        else:
            DiskBudget(root, int(self.disk_quota_mb * _MB)).save()

    def usernames(self) -> list[str]:
        """Users that have a workspace folder, sorted."""
        if self.single_user:
            return [LOCAL_USER.name]
        folder = self.root / USERS_FOLDER
        if not folder.is_dir():
            return []
        names = []
        for entry in folder.iterdir():
            try:
                if entry.is_dir() and not entry.is_symlink() and validate_username(entry.name) == entry.name:
                    names.append(entry.name)
            except TransferLabError:
                continue  # a folder someone made by hand with a name no account can have
        return sorted(names)

    # -- what a user may read --------------------------------------------------------------------
    def readable_roots(self, actor: User) -> list[Path]:
        """Folders whose files `actor` may read: their workspace and the shared datasets (trainers: all)."""
        if actor.is_trainer:
            return [self.root, self.server_datasets]
        return [self._root_of(actor.name), self.server_datasets]

    def check_readable(self, actor: User, path: str | Path) -> Path:
        """`path` resolved, when `actor` may read it (a dataset source, a weights file ...).

        In personal mode (`single_user`) every path is readable.

        Raises:
            UnsafePathError: a NUL byte, or (workshop) a path outside the actor's readable folders.
        """
        if "\x00" in str(path):
            raise UnsafePathError(f"The path {str(path)!r} contains a NUL byte: pick the dataset again.")
        resolved = Path(path).expanduser().resolve()
        if self.single_user:  # personal mode: the one user owns this machine and may train on any folder
            return resolved
        if any(resolved.is_relative_to(folder.resolve()) for folder in self.readable_roots(actor)):
            return resolved
        raise UnsafePathError(
            f"{path} is outside your workspace and the shared datasets folder: upload the data on the Data page, "
            "or ask the trainer to put it in the shared datasets folder."
        )

    def check_writable(self, actor: User, path: str | Path) -> Path:
        """`path` resolved, when `actor` may change or delete it: their workspace (trainers: everything)."""
        resolved = Path(path).expanduser().resolve()
        allowed = [self.root, self.server_datasets] if actor.is_trainer else [self._root_of(actor.name)]
        if any(resolved.is_relative_to(folder.resolve()) for folder in allowed):
            return resolved
        raise UnsafePathError(
            f"{actor.name} may not change {path}: only files in your own workspace can be changed or deleted."
        )

    def server_dataset_path(self, name: str) -> Path:
        """A shared dataset by name (the name cannot leave the shared folder)."""
        return safe_join(self.server_datasets, name)

    def check_weights_source(self, actor: User, weights: str) -> str:
        """`weights` when `actor` may train from it; students only from ImageNet, random or their own runs.

        A SavedModel folder or a .keras file runs code paths a user could craft (graph ops, custom
        layers pointing at any folder), so on a shared server only trainers may name files.

        Raises:
            UnsafePathError: a file path or hub handle from a student, or a run of another user.
        """
        source = weights.strip()
        if source in WEIGHTS_KEYWORDS:
            return source
        if source.startswith(RUN_WEIGHTS_PREFIX):
            store = self.workspace_for(actor).store()
            return (
                RUN_WEIGHTS_PREFIX + store.get(source[len(RUN_WEIGHTS_PREFIX) :]).id
            )  # RunNotFoundError for others' runs
        if self.single_user or actor.is_trainer:
            if "://" not in source:
                self.check_readable(actor, source)
            return source
        raise UnsafePathError(
            f"Weights {source!r}: on a shared server students start from 'imagenet', 'none' or one of their own runs (run:<id>). "
            "Ask the trainer to provide other weights."
        )

    # -- trainer views ---------------------------------------------------------------------------
    def all_runs(self, actor: User) -> list[UserRun]:
        """Every user's runs, newest first (trainers only)."""
        self._require_trainer(actor, "see everyone's runs")
        runs = [
            UserRun(name, record)
            for name in self.usernames()
            for record in self.workspace_for(actor, name).store().list_runs()
        ]
        return sorted(runs, key=lambda run: (run.record.created_at, run.record.id), reverse=True)

    def cleanup_candidates(self, actor: User, limit: int = 50) -> list[CleanupCandidate]:
        """The biggest things to delete to free space: cache entries and failed/interrupted/stopped runs."""
        self._require_trainer(actor, "clean up other users' files")
        candidates: list[CleanupCandidate] = []
        for name in self.usernames():
            space = self.workspace_for(actor, name)
            for kind_folder in sorted(p for p in space.cache.iterdir() if p.is_dir()) if space.cache.is_dir() else []:
                for entry in kind_folder.iterdir():
                    candidates.append(
                        CleanupCandidate(
                            name, "cache", entry, tree_size(entry), f"{kind_folder.name} cache {entry.name}"
                        )
                    )
            for record in space.store().list_runs():
                if record.status in CLEANUP_RUN_STATUSES:
                    folder = space.runs / record.id
                    candidates.append(
                        CleanupCandidate(
                            name, "run", folder, tree_size(folder), f"{record.status} run {record.name}", record.id
                        )
                    )
        return sorted(candidates, key=lambda candidate: candidate.size_bytes, reverse=True)[:limit]

    def delete_candidate(self, actor: User, candidate: CleanupCandidate) -> None:
        """Delete a cleanup candidate (runs through their store, so the database forgets them too)."""
        self._require_trainer(actor, "clean up other users' files")
        space = self.workspace_for(actor, candidate.username)
        if candidate.kind == "run" and candidate.run_id:
            space.store().delete(candidate.run_id)
        elif (
            candidate.kind == "cache"
            and _is_within(candidate.path, space.cache)
            and candidate.path.resolve() != space.cache.resolve()
        ):
            if candidate.path.is_dir() and not candidate.path.is_symlink():
                shutil.rmtree(candidate.path)
            else:
                candidate.path.unlink(missing_ok=True)
        else:
            raise UnsafePathError(
                f"{candidate.path} is not a cache entry or run of {candidate.username}: refresh the cleanup list."
            )
        self.forget_usage(candidate.username)

    def _require_trainer(self, actor: User, what: str) -> None:
        if not actor.is_trainer:
            raise UnsafePathError(f"Only a trainer may {what}; {actor.name} is a student.")

    # -- quotas ----------------------------------------------------------------------------------
    def disk_usage(self, username: str, *, max_age_s: float = USAGE_CACHE_S) -> DiskUsage:
        """Bytes in the user's datasets, caches, runs and database; measured at most every `max_age_s`."""
        now = time.monotonic()
        with self._usage_lock:
            cached = self._usage.get(username)
        if cached is not None and now - cached[0] < max_age_s:
            return cached[1]
        usage = _measure(self._root_of(username))
        with self._usage_lock:
            self._usage[username] = (now, usage)
        return usage

    def forget_usage(self, username: str) -> None:
        """Measure again next time (call after an upload, a run or a deletion)."""
        with self._usage_lock:
            self._usage.pop(username, None)

    def check_upload(self, username: str, size_bytes: int) -> None:
        """Raise QuotaExceededError when an upload of `size_bytes` is over the limit or would not fit."""
        if self.max_upload_mb is not None and size_bytes > self.max_upload_mb * _MB:
            raise QuotaExceededError(
                f"This upload is {size_bytes / _MB:,.1f} MB; the server accepts at most {self.max_upload_mb:,} MB per upload. "
                "Upload a smaller archive (fewer or smaller images), or split the dataset."
            )
        self.check_disk(username, size_bytes)

    def check_disk(self, username: str, extra_bytes: int = 0) -> None:
        """Raise QuotaExceededError when the user's workspace plus `extra_bytes` would pass the quota."""
        if self.disk_quota_mb is None:
            return
        usage = self.disk_usage(username, max_age_s=0 if extra_bytes else USAGE_CACHE_S)
        limit = self.disk_quota_mb * _MB
        if usage.total + extra_bytes <= limit:
            return
        largest = ", ".join(f"{path} ({size / _MB:,.1f} MB)" for path, size in usage.largest[:3]) or "nothing large"
        needed = f" plus {extra_bytes / _MB:,.1f} MB more" if extra_bytes else ""
        raise QuotaExceededError(
            f"{username}'s workspace uses {usage.total / _MB:,.1f} MB{needed}, over its {self.disk_quota_mb:,} MB quota "
            f"(datasets {usage.datasets / _MB:,.1f} MB, caches {usage.cache / _MB:,.1f} MB, runs {usage.runs / _MB:,.1f} MB). "
            f"Largest: {largest}. Delete old runs on the Runs page or datasets you no longer need, or ask the trainer to clear caches or raise the quota."
        )


def _measure(root: Path) -> DiskUsage:
    sizes = {DATASETS_FOLDER: 0, CACHE_FOLDER: 0, RUNS_FOLDER: 0}
    other = 0
    items: list[tuple[str, int]] = []
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name in sizes and entry.is_dir() and not entry.is_symlink():
                # One level down (each dataset, cache kind's entries, each run) so the message can name the big ones.
                for child in entry.iterdir():
                    children = (
                        list(child.iterdir())
                        if entry.name == CACHE_FOLDER and child.is_dir() and not child.is_symlink()
                        else [child]
                    )
                    for item in children:
                        size = tree_size(item)
                        sizes[entry.name] += size
                        items.append((item.relative_to(root).as_posix(), size))
            elif not (entry.name == USERS_FOLDER and entry.is_dir()):  # personal mode: never count others' folders
                other += tree_size(entry)
    largest = tuple(sorted(items, key=lambda item: item[1], reverse=True)[:5])
    return DiskUsage(sizes[DATASETS_FOLDER], sizes[CACHE_FOLDER], sizes[RUNS_FOLDER], other, largest)
