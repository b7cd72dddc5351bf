"""Workshop accounts: argon2 hashes, sign-in, one-time class codes, safe user names, the users file."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from tl_core.server.accounts import (
    AuthError,
    User,
    UserDirectory,
    username_from_display_name,
    validate_display_name,
    validate_username,
)

# Cheap parameters keep the tests fast; production uses argon2-cffi's defaults (64 MiB, 3 passes).
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"


@pytest.fixture()
def users(tmp_path: Path) -> UserDirectory:
    return UserDirectory(tmp_path / "config" / "users.json", hasher=FAST_HASHER)


def test_hash_never_stores_the_password_and_file_is_private(users: UserDirectory) -> None:
    users.add_user("alice", PASSWORD, role="trainer", display_name="Alice A.")
    text = users.path.read_text()
    assert PASSWORD not in text and "horse" not in text
    stored = json.loads(text)["users"]["alice"]["password_hash"]
    assert stored.startswith("$argon2id$")
    assert stat.S_IMODE(users.path.stat().st_mode) == 0o600
    assert not list(users.path.parent.glob(".users.json.*"))  # no temporary file left behind


def test_right_password_signs_in_wrong_or_unknown_fails(users: UserDirectory) -> None:
    users.add_user("Alice", PASSWORD, role="trainer")
    assert users.verify("alice", PASSWORD) == User("alice", "trainer", "alice")
    assert users.verify(" ALICE ", PASSWORD) == User("alice", "trainer", "alice")  # names are case-insensitive
    assert users.verify("alice", PASSWORD + "!") is None
    assert users.verify("alice", "") is None
    assert users.verify("bob", PASSWORD) is None
    assert users.verify("../alice", PASSWORD) is None
    assert users.verify("alice", "x" * 5000) is None


class CountingHasher(PasswordHasher):
    """Records every hash it verifies against."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.checked: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 - argon2's own parameter name
        self.checked.append(str(hash))
        return super().verify(hash, password)


def test_unknown_users_cost_an_argon2_verification(tmp_path: Path) -> None:
    hasher = CountingHasher()
    users = UserDirectory(tmp_path / "users.json", hasher=hasher)
    users.add_user("alice", PASSWORD)
    assert users.verify("nobody", PASSWORD) is None
    assert users.verify("not a valid name!", PASSWORD) is None
    assert users.verify("alice", "x" * 5000) is None
    assert len(hasher.checked) == 3 and all(h.startswith("$argon2id$") for h in hasher.checked)


def test_weak_hashes_are_upgraded_on_sign_in(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    UserDirectory(path, hasher=FAST_HASHER).add_user("carol", PASSWORD)
    before = json.loads(path.read_text())["users"]["carol"]["password_hash"]
    stronger = UserDirectory(path, hasher=PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    assert stronger.verify("carol", PASSWORD) is not None
    after = json.loads(path.read_text())["users"]["carol"]["password_hash"]
    assert after != before and "m=16,t=2" in after
    assert stronger.verify("carol", PASSWORD) is not None


def test_accounts_are_managed(users: UserDirectory) -> None:
    users.add_user("bob", PASSWORD)
    with pytest.raises(AuthError, match="already exists"):
        users.add_user("BOB", PASSWORD)
    with pytest.raises(AuthError, match="too short"):
        users.add_user("dave", "short")
    with pytest.raises(AuthError, match="Role"):
        users.add_user("dave", PASSWORD, role="admin")  # type: ignore[arg-type]
    users.set_password("bob", "a new long password")
    assert users.verify("bob", PASSWORD) is None and users.verify("bob", "a new long password") is not None
    users.remove_user("bob")
    assert users.get_user("bob") is None and users.list_users() == []
    with pytest.raises(AuthError, match="No user 'bob'"):
        users.set_password("bob", PASSWORD)


@pytest.mark.parametrize(
    "name",
    [
        "../etc",
        "a/b",
        "a\\b",
        "..",
        ".hidden",
        "a",
        "x" * 33,
        "",
        "nul",
        "con",
        "users",
        "zoë",
        "a b",
        "a\x00b",
        "-dash",
    ],
)
def test_bad_usernames_are_rejected(users: UserDirectory, name: str) -> None:
    with pytest.raises(AuthError):
        validate_username(name)
    with pytest.raises(AuthError):
        users.add_user(name, PASSWORD)


def test_good_usernames_are_normalised() -> None:
    assert validate_username(" Alice_01 ") == "alice_01"
    assert validate_username("zoe-smith") == "zoe-smith"


def test_class_codes_are_one_time(users: UserDirectory) -> None:
    users.add_user("trainer1", PASSWORD, role="trainer")
    codes = users.create_class_codes(3, created_by="trainer1")
    assert len(set(codes)) == 3 and all(len(code) >= 11 for code in codes)
    assert not any(code in users.path.read_text() for code in codes)  # only digests are kept
    zoe = users.redeem_class_code(codes[0], "Zoë  Smith", "zoe's password")
    assert zoe == User("zoe-smith", "student", "Zoë Smith")
    assert users.verify("zoe-smith", "zoe's password") == zoe
    with pytest.raises(AuthError, match="already been used"):
        users.redeem_class_code(codes[0], "Someone Else", "another password")
    with pytest.raises(AuthError, match="not valid"):
        users.redeem_class_code("made-up-code", "Someone Else", "another password")
    second = users.redeem_class_code(codes[1], "Zoe Smith", "a second password")
    assert second.name == "zoe-smith-2"  # same slug: a suffix keeps names unique
    info = users.list_class_codes()
    assert sorted(i.used_by or "" for i in info) == ["", "zoe-smith", "zoe-smith-2"]
    assert users.revoke_unused_codes() == 1
    with pytest.raises(AuthError, match="not valid"):
        users.redeem_class_code(codes[2], "Late Student", "late password")


def test_bad_redemptions_do_not_use_up_the_code(users: UserDirectory) -> None:
    [code] = users.create_class_codes(1, created_by="t")
    with pytest.raises(AuthError, match="too short"):
        users.redeem_class_code(code, "Ann", "short")
    with pytest.raises(AuthError, match="control or invisible"):
        users.redeem_class_code(code, "Ann\u202e", "long enough password")
    assert users.redeem_class_code(code, "Ann", "long enough password").name == "ann"


def test_expired_codes_are_refused(users: UserDirectory) -> None:
    [code] = users.create_class_codes(1, created_by="t", lifetime_s=0.01)
    time.sleep(0.02)
    with pytest.raises(AuthError, match="expired"):
        users.redeem_class_code(code, "Ann", "long enough password")
    assert not users.list_class_codes()[0].is_usable


def test_display_names_become_safe_slugs() -> None:
    assert username_from_display_name("Zoë Smith") == "zoe-smith"
    assert username_from_display_name("<script>alert(1)</script>") == "script-alert-1-script"
    assert username_from_display_name("李") == "student"
    assert username_from_display_name("admin") == "student-admin"
    assert validate_username(username_from_display_name("../../etc/passwd")) == "etc-passwd"
    assert validate_display_name("  Ann   Lee ") == "Ann Lee"


def test_damaged_users_file_is_reported(users: UserDirectory) -> None:
    users.path.parent.mkdir(parents=True)
    users.path.write_text("{not json")
    with pytest.raises(AuthError, match="damaged"):
        users.verify("alice", PASSWORD)
    users.path.write_text('{"version": 99}')
    with pytest.raises(AuthError, match="not a TransferLab users file"):
        users.list_users()
