"""One way to open our SQLite files (the run store, the job queue): short-lived connections, atomic writes.

Each call opens a fresh connection (safe from any thread or process) in autocommit mode with dict-like
rows. A writer takes one `BEGIN IMMEDIATE` transaction, so a read-check-write sequence is atomic across
processes, and rolls it back if the caller's block raises.
"""

from __future__ import annotations

import contextlib
import sqlite3
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
