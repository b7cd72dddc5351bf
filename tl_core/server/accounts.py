"""Workshop accounts that work offline: a JSON users file with argon2 password hashes, and class codes.

A trainer adds accounts (`add_user`) or generates one-time class codes (`create_class_codes`); a
student redeems a code with a display name and a password of their choice (`redeem_class_code`),
which creates a student account. Passwords are stored only as argon2id hashes; class codes are
random 64-bit tokens, so they are stored as SHA-256 digests (a slow hash buys nothing for a secret
that cannot be guessed, and a digest can be looked up without trying every code).

The users file is rewritten atomically (temporary file + rename) with mode 0600, under an exclusive
lock, so the CLI and the server can change it at the same time.

Example:
    >>> users = UserDirectory(Path("workspace/users.json"))
    >>> users.add_user("alice", "correct horse battery", role="trainer")
    >>> users.verify("alice", "correct horse battery")
    User(name='alice', role='trainer', display_name='alice')
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from tl_core.errors import TransferLabError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; atomic renames still keep the file whole
    fcntl = None  # type: ignore[assignment]

Role = Literal["student", "trainer"]
FILE_VERSION = 1
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # argon2 accepts any length; this bounds the work one sign-in can cause
MAX_DISPLAY_NAME_LENGTH = 60
CLASS_CODE_BYTES = 8  # 64 random bits: `secrets.token_urlsafe(8)` is 11 characters to type
DEFAULT_CODE_LIFETIME_S = 7 * 24 * 3600
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9_-]{1,31}$")
# Names a folder cannot safely take on some file system (Windows devices) or that read as roles.
_RESERVED_NAMES = frozenset(
    {"con", "prn", "aux", "nul", "admin", "root", "trainer", "users", "shared", "local"}
    | {f"com{i}" for i in range(10)}
    | {f"lpt{i}" for i in range(10)}
)


class AuthError(TransferLabError):
    """An account or class-code operation cannot be done as asked (bad name, taken name, used code ...)."""


@dataclass(frozen=True)
class User:
    """A signed-in person. `name` is a safe slug (it names their workspace folder)."""

    name: str
    role: Role
    display_name: str

    @property
    def is_trainer(self) -> bool:
        return self.role == "trainer"


@dataclass(frozen=True)
class ClassCodeInfo:
    """What is kept about one class code (never the code itself)."""

    digest_prefix: str
    created_at: float
    created_by: str
    expires_at: float | None
    used_by: str | None
    used_at: float | None

    @property
    def is_usable(self) -> bool:
        return self.used_by is None and (self.expires_at is None or time.time() < self.expires_at)


def validate_username(name: str) -> str:
    """`name` lower-cased when it is a safe account name (it becomes a folder name).

    Returns:
        The normalised name: 2-32 characters of a-z, 0-9, `_` and `-`, starting with a letter or digit.

    Raises:
        AuthError: the name could not be a folder name everywhere, or is reserved.
    """
    normalised = str(name).strip().lower()
    if not _USERNAME.match(normalised):
        raise AuthError(
            f"User name {name!r} is not allowed: use 2-32 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit (it becomes the name of the user's folder)."
        )
    if normalised in _RESERVED_NAMES:
        raise AuthError(f"User name {name!r} is reserved: pick another one, e.g. {normalised}1.")
    return normalised


def username_from_display_name(display_name: str) -> str:
    """A slug for `display_name` (`Zoë Smith` -> `zoe-smith`); may still need a suffix to be unique."""
    ascii_text = unicodedata.normalize("NFKD", display_name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:28].strip("-")
    return slug if len(slug) >= 2 and slug not in _RESERVED_NAMES else f"student-{slug}".strip("-")


def validate_display_name(display_name: str) -> str:
    """`display_name` without surrounding spaces; 1-60 printable characters (shown escaped on pages)."""
    cleaned = " ".join(str(display_name).split())
    if not cleaned or len(cleaned) > MAX_DISPLAY_NAME_LENGTH:
        raise AuthError(f"Display name {display_name!r} must be 1-{MAX_DISPLAY_NAME_LENGTH} characters.")
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in cleaned):
        raise AuthError(
            f"Display name {display_name!r} contains control or invisible characters: type it with letters only."
        )
    return cleaned


def check_password(password: str) -> None:
    """Raise AuthError when `password` is too short or absurdly long."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(
            f"The password is too short: use at least {MIN_PASSWORD_LENGTH} characters (a few words work well)."
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AuthError(f"The password is longer than {MAX_PASSWORD_LENGTH} characters: use a shorter one.")


def _code_digest(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


class UserDirectory:
    """Accounts and class codes in one JSON file (created on first write).

    Args:
        path: the users file, e.g. `<workspace>/users.json`.
        hasher: the argon2 hasher; the default uses argon2-cffi's recommended parameters. Hashes made
            with other parameters are upgraded on the next successful sign-in.
    """

    def __init__(self, path: str | Path, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path).expanduser()
        self.hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None

    # -- accounts --------------------------------------------------------------------------------
    def add_user(self, name: str, password: str, role: Role = "student", display_name: str | None = None) -> User:
        """Create an account; the password is stored only as an argon2id hash.

        Raises:
            AuthError: bad or taken name, unknown role, or a password that is too short.
        """
        name = validate_username(name)
        if role not in get_args(Role):
            raise AuthError(f"Role {role!r} is not one of {', '.join(get_args(Role))}.")
        check_password(password)
        shown = validate_display_name(display_name or name)
        password_hash = self.hasher.hash(password)
        with self._editing() as data:
            if name in data["users"]:
                raise AuthError(
                    f"User {name!r} already exists in {self.path}: pick another name, or reset the password instead."
                )
            data["users"][name] = {
                "role": role,
                "display_name": shown,
                "password_hash": password_hash,
                "created_at": time.time(),
            }
        return User(name, role, shown)

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password (a trainer resetting it, or the user changing it)."""
        name = validate_username(name)
        check_password(password)
        password_hash = self.hasher.hash(password)
        with self._editing() as data:
            entry = self._require(data, name)
            entry["password_hash"] = password_hash
            entry["password_changed_at"] = time.time()  # changes the account stamp: open sessions end

    def remove_user(self, name: str) -> None:
        """Delete an account (its workspace folder is left for the trainer to clean up)."""
        name = validate_username(name)
        with self._editing() as data:
            self._require(data, name)
            del data["users"][name]

    def get_user(self, name: str) -> User | None:
        try:
            name = validate_username(name)
        except AuthError:
            return None
        entry = self._read()["users"].get(name)
        return None if entry is None else User(name, entry["role"], entry["display_name"])

    def account_stamp(self, name: str) -> str | None:
        """A short digest that changes when the account is removed, re-created, its role changed or its password set.

        Sessions remember it when they start, and end when it no longer matches (`tl_core.server.sessions`).
        None for an unknown user.
        """
        try:
            name = validate_username(name)
        except AuthError:
            return None
        entry = self._read()["users"].get(name)
        if entry is None:
            return None
        facts = f"{name}|{entry['role']}|{entry.get('created_at')}|{entry.get('password_changed_at')}"
        return hashlib.sha256(facts.encode()).hexdigest()[:16]

    def list_users(self) -> list[User]:
        """Every account, sorted by name."""
        return [
            User(name, entry["role"], entry["display_name"]) for name, entry in sorted(self._read()["users"].items())
        ]

    def verify(self, name: str, password: str) -> User | None:
        """The user when `password` is theirs, else None (unknown users cost the same argon2 work).

        A hash made with weaker parameters than the hasher's is replaced by a new one.
        """
        try:
            name = validate_username(name)
        except AuthError:
            name = ""
        too_long = len(password) > MAX_PASSWORD_LENGTH
        entry = self._read()["users"].get(name) if name and not too_long else None
        stored = entry["password_hash"] if entry else self._dummy()
        try:
            self.hasher.verify(stored, password[:MAX_PASSWORD_LENGTH])
        except (VerificationError, InvalidHashError):
            return None
        if entry is None:
            return None
        if self.hasher.check_needs_rehash(stored):
            new_hash = self.hasher.hash(password)
            with self._editing() as data:
                if name in data["users"] and data["users"][name]["password_hash"] == stored:
                    data["users"][name]["password_hash"] = new_hash
        return User(name, entry["role"], entry["display_name"])

    # -- class codes -----------------------------------------------------------------------------
    def create_class_codes(
        self, count: int, created_by: str, lifetime_s: float | None = DEFAULT_CODE_LIFETIME_S
    ) -> list[str]:
        """`count` new one-time codes; they are shown now and only their digests are kept.

        Args:
            count: how many students the codes are for (1-500).
            created_by: the trainer's user name (recorded with each code).
            lifetime_s: seconds until unused codes expire; None for never.

        Returns:
            The codes, to hand out (printed or shown on the projector).
        """
        if not 1 <= count <= 500:
            raise AuthError(f"Asked for {count} class codes: generate between 1 and 500 at a time.")
        now = time.time()
        codes = [secrets.token_urlsafe(CLASS_CODE_BYTES) for _ in range(count)]
        with self._editing() as data:
            for code in codes:
                data["class_codes"][_code_digest(code)] = {
                    "created_at": now,
                    "created_by": created_by,
                    "expires_at": None if lifetime_s is None else now + lifetime_s,
                    "used_by": None,
                    "used_at": None,
                }
        return codes

    def redeem_class_code(self, code: str, display_name: str, password: str) -> User:
        """Turn an unused class code into a student account with this display name and password.

        The user name is made from the display name (`zoe-smith`, `zoe-smith-2`, ...).

        Raises:
            AuthError: unknown, used or expired code; bad display name; short password.
        """
        shown = validate_display_name(display_name)
        check_password(password)
        digest = _code_digest(code)
        password_hash = self.hasher.hash(password)
        with self._editing() as data:
            matches = [key for key in data["class_codes"] if hmac.compare_digest(key, digest)]
            entry = data["class_codes"][matches[0]] if matches else None
            if entry is None:
                raise AuthError(
                    "This class code is not valid: check it letter by letter (codes are case-sensitive), or ask your trainer."
                )
            if entry["used_by"] is not None:
                raise AuthError(
                    "This class code has already been used: each code makes one account. Sign in with your name and password, or ask your trainer for a new code."
                )
            if entry["expires_at"] is not None and time.time() >= entry["expires_at"]:
                raise AuthError("This class code has expired: ask your trainer for a new one.")
            base = username_from_display_name(shown)
            name, counter = base, 2
            while name in data["users"]:
                name, counter = f"{base}-{counter}", counter + 1
            name = validate_username(name)
            data["users"][name] = {
                "role": "student",
                "display_name": shown,
                "password_hash": password_hash,
                "created_at": time.time(),
            }
            entry.update(used_by=name, used_at=time.time())
        return User(name, "student", shown)

    def list_class_codes(self) -> list[ClassCodeInfo]:
        """Every code's record (digest prefix, who made it, who used it), oldest first."""
        return sorted(
            (
                ClassCodeInfo(digest[:8], e["created_at"], e["created_by"], e["expires_at"], e["used_by"], e["used_at"])
                for digest, e in self._read()["class_codes"].items()
            ),
            key=lambda info: info.created_at,
        )

    def revoke_unused_codes(self) -> int:
        """Delete every code not yet used; returns how many were deleted."""
        with self._editing() as data:
            unused = [digest for digest, entry in data["class_codes"].items() if entry["used_by"] is None]
            for digest in unused:
                del data["class_codes"][digest]
        return len(unused)

    # -- the file --------------------------------------------------------------------------------
    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def _require(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        if name not in data["users"]:
            raise AuthError(f"No user {name!r} in {self.path}: `python -m tl_core users list` shows the accounts.")
        return data["users"][name]

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"version": FILE_VERSION, "users": {}, "class_codes": {}}
        except OSError as exc:
            raise AuthError(f"Cannot read the users file {self.path} ({exc}): check its permissions.") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AuthError(
                f"The users file {self.path} is damaged ({exc}): restore it from a backup, or move it away to start over."
            ) from exc
        if not isinstance(data, dict) or data.get("version") != FILE_VERSION:
            raise AuthError(
                f"{self.path} is not a TransferLab users file (version {FILE_VERSION}): point TRANSFERLAB_USERS_FILE at the right file."
            )
        data.setdefault("users", {})
        data.setdefault("class_codes", {})
        return data

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        """Read, let the caller change, then atomically replace the file; all under an exclusive lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data  # an exception in the caller's block leaves the file untouched
            # mkstemp creates the file with mode 0600: password hashes are readable by the server's user only.
            handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as output:
                    json.dump(data, output, indent=2, sort_keys=True)
                    output.flush()
                    os.fsync(output.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
