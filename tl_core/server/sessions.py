"""Workshop sign-in sessions that survive a reload: signed, expiring, revocable tokens kept on disk.

A successful sign-in starts a session and hands the browser a cookie value `<id>.<expires>.<signature>`
(HMAC-SHA256 with a server secret). Every later page run presents it again and gets the user back only
while all of these hold: the signature is right, it has not expired, the session is still in the store
(not signed out or revoked by a trainer), and the account is unchanged since it started (same
`UserDirectory.account_stamp`: a removed account, a new password or another role end it).

The store is an SQLite file next to the users file, never inside a cache a client could clear, so a
server restart keeps sessions and no websocket message resets them. Only a digest of each session id is
stored: a copy of the database signs nobody in.

The same secret signs *device* values: a browser that once signed in as an account carries one, and
wrong passwords from it are throttled apart from everyone else's (see `tl_core.server.sign_in_throttle`).

Example:
    >>> store = SessionStore(Path("workspace"))
    >>> token = store.start("alice", directory.account_stamp("alice"))
    >>> store.resolve(token, directory.account_stamp)
    'alice'
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from tl_core import sqlite_store

SESSION_LIFETIME_S = 12 * 3600  # a workshop day; then the student signs in again
DATABASE_FILE = "sessions.sqlite"
SECRET_FILE = "session_secret"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id_digest TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    account_stamp TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (username);
"""


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Sign-in sessions of one workshop server, in `<folder>/sessions.sqlite` with a secret beside it.

    Args:
        folder: where the users file lives (not readable by users); created when missing.
        lifetime_s: how long a session lasts from sign-in.
    """

    def __init__(self, folder: str | Path, lifetime_s: float = SESSION_LIFETIME_S) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DATABASE_FILE
        self.lifetime_s = lifetime_s
        self._secret: bytes | None = None
        self._ready = False

    # -- tokens ----------------------------------------------------------------------------------
    def start(self, username: str, account_stamp: str) -> str:
        """Start a session for `username` and return the cookie value that resumes it."""
        session_id = secrets.token_urlsafe(24)
        now = time.time()
        expires = int(now + self.lifetime_s)
        with self._connect(write=True) as db:
            db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                (_digest(session_id), username, account_stamp, now, expires),
            )
        return f"{session_id}.{expires}.{self._sign(f'{session_id}.{expires}')}"

    def resolve(self, token: str | None, account_stamp_of: Callable[[str], str | None]) -> str | None:
        """The user name `token` signs in, or None when it is forged, expired, ended or the account changed."""
        session_id, expires = self._verified(token)
        if session_id is None or expires < time.time():
            return None
        with self._connect() as db:
            row = db.execute(
                "SELECT username, account_stamp, expires_at FROM sessions WHERE id_digest = ?", (_digest(session_id),)
            ).fetchone()
        if row is None or row["expires_at"] < time.time():
            return None
        if account_stamp_of(row["username"]) != row["account_stamp"]:
            self.end(token)  # removed, re-created, new password or role: this session is over for good
            return None
        return row["username"]

    def end(self, token: str | None) -> None:
        """Sign this one session out (the browser's other sessions stay)."""
        session_id, _ = self._verified(token)
        if session_id is not None:
            with self._connect(write=True) as db:
                db.execute("DELETE FROM sessions WHERE id_digest = ?", (_digest(session_id),))

    def end_all(self, username: str) -> int:
        """Sign `username` out everywhere (a trainer revoking their sessions); returns how many ended."""
        with self._connect(write=True) as db:
            return db.execute("DELETE FROM sessions WHERE username = ?", (username,)).rowcount

    def active_counts(self) -> dict[str, int]:
        """Open, unexpired sessions per user name."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT username, count(*) AS n FROM sessions WHERE expires_at >= ? GROUP BY username", (time.time(),)
            ).fetchall()
        return {row["username"]: row["n"] for row in rows}

    # -- device values ---------------------------------------------------------------------------
    def device_value(self, username: str) -> str:
        """A value a browser keeps after signing in as `username`: it marks that browser as one this account used."""
        nonce = secrets.token_urlsafe(12)
        return f"{username}.{nonce}.{self._sign(f'device|{username}.{nonce}')}"

    def device_owner(self, value: str | None) -> str | None:
        """The user name a device value was issued to, or None when it is missing or forged."""
        if not value or value.count(".") != 2:
            return None
        username, nonce, signature = value.split(".")
        return username if hmac.compare_digest(signature, self._sign(f"device|{username}.{nonce}")) else None

    # -- internals -------------------------------------------------------------------------------
    def _verified(self, token: str | None) -> tuple[str | None, float]:
        if not token or token.count(".") != 2:
            return None, 0.0
        session_id, expires, signature = token.split(".")
        if not expires.isdigit() or not hmac.compare_digest(signature, self._sign(f"{session_id}.{expires}")):
            return None, 0.0
        return session_id, float(expires)

    def _sign(self, text: str) -> str:
        return hmac.new(self._key(), text.encode(), hashlib.sha256).hexdigest()[:43]

    def _key(self) -> bytes:
        if self._secret is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / SECRET_FILE
            try:  # O_EXCL: of two processes starting at once, one writes the secret and both read it
                handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(handle, "w") as output:
                    output.write(secrets.token_hex(32))
            for _ in range(50):  # the other process may not have written it yet
                text = path.read_text().strip()
                if text:
                    break
                time.sleep(0.01)
            self._secret = text.encode()
        return self._secret

    def _connect(self, *, write: bool = False):  # noqa: ANN202 - sqlite_store.connect's context manager
        if not self._ready:
            self.folder.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists()
            with sqlite_store.connect(self.path) as db:
                db.executescript(_SCHEMA)
            if fresh:
                os.chmod(self.path, 0o600)
            self._ready = True
        return sqlite_store.connect(self.path, write=write)
