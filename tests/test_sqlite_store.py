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


def test_many_openers_switching_an_old_file_to_wal_at_once_all_succeed(tmp_path: Path) -> None:
    import sqlite3
    import threading

    for round_number in range(150):  # a matter of timing: a bare PRAGMA failed about 1 round in 35 here
        path = tmp_path / f"old-{round_number}.db"
        with sqlite3.connect(path) as connection:  # a rollback-journal file, as an older TransferLab wrote it
            connection.execute("CREATE TABLE jobs (run_id TEXT)")
        errors: list[BaseException] = []

        def open_it(path: Path = path, errors: list[BaseException] = errors) -> None:
            try:
                sqlite_store.use_wal(path)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)

        openers = [threading.Thread(target=open_it) for _ in range(8)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
        assert errors == []
        with sqlite_store.connect(path) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
