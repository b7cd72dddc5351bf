"""The run store's tables and how a workspace database is brought up to date.

The schema version lives in SQLite's `user_version`; a database from an older TransferLab is upgraded in
place when a store opens it, one migration at a time, and one from a newer TransferLab is refused (its
tables may mean something this code does not know).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tl_core.errors import TransferLabError

# MIGRATIONS[i] upgrades a database from user_version i to i + 1. Append, never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
            created_at REAL NOT NULL, started_at REAL, finished_at REAL, updated_at REAL NOT NULL,
            config_json TEXT NOT NULL, dataset_fingerprint TEXT, dataset_stats_json TEXT NOT NULL,
            backbone TEXT NOT NULL, weights TEXT NOT NULL, mode TEXT NOT NULL,
            metrics_json TEXT NOT NULL, error TEXT,
            pid INTEGER, hostname TEXT, process_start TEXT,
            parent_run_id TEXT, owner TEXT NOT NULL DEFAULT 'local')""",
        "CREATE INDEX runs_by_created ON runs (created_at)",
        "CREATE INDEX runs_by_status ON runs (status)",
        """CREATE TABLE epochs (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            phase TEXT NOT NULL, epoch INTEGER NOT NULL, phase_epoch INTEGER NOT NULL,
            metrics_json TEXT NOT NULL, learning_rate REAL NOT NULL, seconds REAL NOT NULL,
            is_best INTEGER NOT NULL, PRIMARY KEY (run_id, epoch))""",
    ),
    (
        """CREATE TABLE phases (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            phase TEXT NOT NULL, first_epoch INTEGER NOT NULL, epochs INTEGER NOT NULL, learning_rate REAL NOT NULL,
            description TEXT NOT NULL, open_blocks_json TEXT NOT NULL, PRIMARY KEY (run_id, phase))""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def upgrade(connection: sqlite3.Connection, database_path: Path) -> None:
    """Apply the migrations this database lacks; call inside one write transaction (all or nothing)."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise TransferLabError(
            f"{database_path} has schema version {version}, newer than this TransferLab ({SCHEMA_VERSION}): "
            "update TransferLab, or pass another workspace."
        )
    for statements in MIGRATIONS[version:]:
        for statement in statements:
            connection.execute(statement)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
