"""One way to open our SQLite files (the run store, the job queue): short-lived connections, atomic writes.

Each call opens a fresh connection (safe from any thread or process) in autocommit mode with dict-like
rows. A writer takes one `BEGIN IMMEDIATE` transaction, so a read-check-write sequence is atomic across
processes, and rolls it back if the caller's block raises. `kept_open` holds a database open across a
burst of such connections (a training run's events), so closing each one stays cheap.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another process's transaction before failing


@contextlib.contextmanager
def connect(path: Path, *, write: bool = False, pragmas: Sequence[str] = ()) -> Iterator[sqlite3.Connection]:
    """A fresh connection to `path`; with `write`, inside one IMMEDIATE transaction.

    Args:
        path: the database file.
        write: wrap the block in `BEGIN IMMEDIATE` ... `COMMIT` (`ROLLBACK` when it raises).
        pragmas: statements run first on every connection, e.g. `PRAGMA foreign_keys = ON`.
    """
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        connection.row_factory = sqlite3.Row
        for pragma in pragmas:
            connection.execute(pragma)
        if not write:
            yield connection
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    finally:
        connection.close()


def use_wal(path: Path) -> None:
    """Switch `path` to write-ahead logging (persistent: readers never block the writer), waiting for other openers.

    Changing the journal mode needs the database to itself, and SQLite answers "database is locked" at once,
    without its busy timeout, when another connection is switching it at the same moment (several server
    processes opening an old file together). So this retries for up to `BUSY_TIMEOUT_S`.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            with connect(path) as connection:
                connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


@contextlib.contextmanager
def kept_open(path: Path) -> Iterator[None]:
    """Hold one idle connection to `path` for the block, so the short-lived connections inside it are never the last.

    When the last connection to a WAL database closes, SQLite checkpoints it (copies the log into the
    database and syncs both) and removes the log: with a fresh connection per write, every write paid for that.
    Measured for one epoch record: 2.2-2.4 ms alone, 0.2-0.6 ms with this connection held. It holds no
    transaction between statements, so it never blocks a writer or the periodic checkpoints.
    """
    keeper = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        keeper.execute(
            "SELECT count(*) FROM sqlite_master"
        ).fetchone()  # opens the log index: it now counts as a connection
        yield
    finally:
        keeper.close()
