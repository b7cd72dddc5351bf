"""`python -m tl_core users ...`, `codes ...` and `serve`: workshop accounts from the command line."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from tl_core.cli import accounts as cli_accounts
from tl_core.cli.main import main
from tl_core.server.accounts import UserDirectory


@pytest.fixture()
def users_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The users file the server settings name (TRANSFERLAB_USERS_FILE), so commands need no flag."""
    path = tmp_path / "server" / "users.json"
    for variable in ("TRANSFERLAB_MODE", "TRANSFERLAB_CONFIG", "TRANSFERLAB_DATASETS_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "server"))
    monkeypatch.setenv("TRANSFERLAB_USERS_FILE", str(path))
    monkeypatch.chdir(tmp_path)  # no transferlab.toml here
    return path


def run(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_users_add_list_passwd_remove(
    users_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(
        ["users", "add", "tara", "--role", "trainer", "--display-name", "Tara T", "--password-stdin"],
        monkeypatch,
        capsys,
        "trainer password\n",
    )
    assert status == 0 and "added trainer tara" in out
    assert run(["users", "add", "sam", "--password-stdin"], monkeypatch, capsys, "sam's password\n")[0] == 0
    assert "trainer password" not in users_file.read_text() and oct(users_file.stat().st_mode & 0o777) == "0o600"

    status, out, _ = run(["users", "list", "--json"], monkeypatch, capsys)
    assert status == 0
    assert json.loads(out.splitlines()[-1]) == [
        {"name": "sam", "role": "student", "display_name": "sam"},
        {"name": "tara", "role": "trainer", "display_name": "Tara T"},
    ]
    assert "Tara T" in run(["users", "list"], monkeypatch, capsys)[1]

    assert run(["users", "passwd", "sam", "--password-stdin"], monkeypatch, capsys, "a new password\n")[0] == 0
    directory = UserDirectory(users_file)
    assert directory.verify("sam", "a new password") is not None and directory.verify("sam", "sam's password") is None

    status, _, err = run(["users", "add", "sam", "--password-stdin"], monkeypatch, capsys, "whatever password\n")
    assert status == 2 and "already exists" in err and "Traceback" not in err
    status, _, err = run(["users", "add", "kim", "--password-stdin"], monkeypatch, capsys, "short\n")
    assert status == 2 and "too short" in err

    assert run(["users", "remove", "sam"], monkeypatch, capsys)[0] == 0
    assert [user.name for user in UserDirectory(users_file).list_users()] == ["tara"]
    status, _, err = run(["users", "passwd", "sam", "--password-stdin"], monkeypatch, capsys, "another password\n")
    assert status == 2 and "No user 'sam'" in err


def test_password_is_asked_twice_without_echo(
    users_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["first password", "second password"])
    monkeypatch.setattr(cli_accounts.getpass, "getpass", lambda prompt="": next(answers))
    status, _, err = run(["users", "add", "tara"], monkeypatch, capsys)
    assert status == 2 and "differ" in err
    assert UserDirectory(users_file).list_users() == []


def test_codes_new_list_and_revoke(
    users_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run(["users", "add", "tara", "--role", "trainer", "--password-stdin"], monkeypatch, capsys, "trainer password\n")
    run(["users", "add", "sam", "--password-stdin"], monkeypatch, capsys, "sam's password\n")

    status, _, err = run(["codes", "new", "2", "--by", "sam"], monkeypatch, capsys)
    assert status == 2 and "trainer" in err, "students cannot make codes"

    status, out, err = run(["codes", "new", "3", "--by", "tara", "--days", "2"], monkeypatch, capsys)
    codes = out.split()
    assert status == 0 and len(codes) == 3 and "shown only now" in err
    assert not any(code in users_file.read_text() for code in codes), "only digests are stored"
    assert UserDirectory(users_file).redeem_class_code(codes[0], "Kim Lee", "kim's password").name == "kim-lee"

    status, out, _ = run(["codes", "list", "--json"], monkeypatch, capsys)
    listed = json.loads(out.splitlines()[-1])
    assert status == 0 and len(listed) == 3
    assert sorted(str(entry["used_by"]) for entry in listed) == ["None", "None", "kim-lee"]
    assert all(
        entry["created_by"] == "tara" and 1.9 * 86400 < entry["expires_at"] - entry["created_at"] <= 2 * 86400
        for entry in listed
    )
    assert "kim-lee" in run(["codes", "list"], monkeypatch, capsys)[1]

    status, out, _ = run(["codes", "revoke"], monkeypatch, capsys)
    assert status == 0 and "revoked 2" in out
    assert [info.used_by for info in UserDirectory(users_file).list_class_codes()] == ["kim-lee"]


def test_an_explicit_users_file_wins(
    users_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.json"
    assert (
        run(
            ["users", "add", "tara", "--users-file", str(other), "--password-stdin"],
            monkeypatch,
            capsys,
            "trainer password\n",
        )[0]
        == 0
    )
    assert [user.name for user in UserDirectory(other).list_users()] == ["tara"]
    assert not users_file.exists()


def test_serve_starts_streamlit_with_the_servers_flags(
    users_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(cli_accounts.os, "execv", lambda program, argv: started.append(argv))
    monkeypatch.setenv("TRANSFERLAB_MODE", "workshop")
    monkeypatch.setenv("TRANSFERLAB_PORT", "8612")
    status, _, err = run(["serve"], monkeypatch, capsys)
    assert status == 2 and "trainer account" in err and not started, "a workshop server needs a trainer first"

    run(["users", "add", "tara", "--role", "trainer", "--password-stdin"], monkeypatch, capsys, "trainer password\n")
    assert run(["serve"], monkeypatch, capsys)[0] == 0
    [argv] = started
    assert argv[:4] == [sys.executable, "-m", "streamlit", "run"] and Path(argv[4]).name == "app.py"
    flags = dict(zip(argv[5::2], argv[6::2]))
    assert (
        flags["--server.address"] == "0.0.0.0"
        and flags["--server.port"] == "8612"
        and flags["--server.headless"] == "true"
    )


def test_existing_commands_are_unchanged(
    users_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["runs", "--json", "--workspace", os.fspath(users_file.parent)], monkeypatch, capsys)
    assert status == 0 and json.loads(out.splitlines()[-1]) == []
