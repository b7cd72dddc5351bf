"""Short-lived SQLite connections: atomic writes, and a database kept open across a burst of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tl_core import sqlite_store


def _database(tmp_path: Path) -> Path:
    path = tmp_path / "store.db"
    with sqlite_store.connect(path) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE epochs (epoch INTEGER PRIMARY KEY, loss REAL)")
    return path


def _write(path: Path, epoch: int) -> None:
    with sqlite_store.connect(path, write=True) as connection:
        connection.execute("INSERT INTO epochs VALUES (?, ?)", (epoch, 1.0 / epoch))


def test_a_failing_write_block_is_rolled_back(tmp_path: Path) -> None:
    path = _database(tmp_path)
    with pytest.raises(RuntimeError), sqlite_store.connect(path, write=True) as connection:
        connection.execute("INSERT INTO epochs VALUES (1, 1.0)")
        raise RuntimeError("the caller's check failed")

    with sqlite_store.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM epochs").fetchone()[0] == 0


def test_kept_open_spares_each_connection_the_checkpoint_of_the_last_one_to_close(tmp_path: Path) -> None:
    path = _database(tmp_path)
    log = path.with_name(path.name + "-wal")
    _write(path, 1)
    assert not log.exists()  # the last connection closed: SQLite checkpointed the log and removed it

    with sqlite_store.kept_open(path):
        for epoch in range(2, 6):
            _write(path, epoch)
            assert log.exists()  # not the last connection: the commit stays in the log, no checkpoint
        with sqlite_store.connect(path) as reader:  # and another connection reads every commit
            assert [row[0] for row in reader.execute("SELECT epoch FROM epochs ORDER BY epoch")] == [1, 2, 3, 4, 5]

    assert not log.exists()  # the kept connection was the last: everything is checkpointed into the database file
    with sqlite_store.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM epochs").fetchone()[0] == 5
