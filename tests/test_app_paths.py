"""Server paths in what students read: errors, a run's failure and its log show paths relative to "your workspace";
trainers keep full paths. Workshop mode through AppTest, with real archives, run stores and a really dead worker process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.server.accounts import User, UserDirectory  # noqa: E402
from tl_core.server.sessions import SessionStore  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TRAINER = User("tara", "trainer", "Tara")
ALICE = User("alice", "student", "Alice")
PASSWORDS = {"tara": "trainer password", "alice": "alice password"}


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workshop server's workspace with a trainer and a student."""
    workspace = tmp_path / "workspace"
    monkeypatch.setenv("TRANSFERLAB_MODE", "workshop")
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(workspace))
    for variable in (
        "TRANSFERLAB_DATASETS_DIR",
        "TRANSFERLAB_USERS_FILE",
        "TRANSFERLAB_CONFIG",
        "TRANSFERLAB_DISK_QUOTA_MB",
        "TRANSFERLAB_MAX_UPLOAD_MB",
    ):
        monkeypatch.delenv(variable, raising=False)
    directory = UserDirectory(workspace / "users.json")
    for user in (TRAINER, ALICE):
        directory.add_user(user.name, PASSWORDS[user.name], role=user.role, display_name=user.display_name)
    return workspace


def signed_in_app(workspace: Path, user: User, **state: str) -> AppTest:
    """The app with `user` signed in as a real sign-in leaves it, and `state` in the session."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["signed_in_user"] = user
    at.session_state["session_token"] = SessionStore(workspace).start(
        user.name, UserDirectory(workspace / "users.json").account_stamp(user.name)
    )
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def shown(elements: object) -> list[str]:
    """What the user reads in these elements (Markdown escapes removed)."""
    return [element.value.replace("\\", "") for element in elements]


def empty_archive(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "empty.zip", "w"):
        pass
    return folder / "empty.zip"


def test_a_student_sees_an_error_with_paths_relative_to_their_workspace(server: Path) -> None:
    archive = empty_archive(server / "users" / "alice" / "datasets")
    at = signed_in_app(server, ALICE, dataset_path=str(archive))
    assert not at.exception
    errors = shown(at.error)
    assert errors, "the empty archive is reported"
    assert not [error for error in errors if str(server) in error or str(server.parent) in error], errors
    assert any("your workspace/" in error for error in errors), errors


def test_a_trainer_keeps_full_paths(server: Path) -> None:
    archive = empty_archive(server / "users" / "tara" / "datasets")
    at = signed_in_app(server, TRAINER, dataset_path=str(archive))
    assert not at.exception
    assert any(str(server / "users" / "tara") in error for error in shown(at.error))


def test_an_interrupted_runs_message_and_log_name_no_server_path(server: Path) -> None:
    store = RunStore(server / "users" / "alice")
    record = store.create_run(
        config={},
        backbone="mobilenet_v2_035",
        weights="none",
        mode="feature-extraction",
        name="cut short",
        owner="alice",
    )
    worker = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    store.mark_running(record.id, pid=int(worker.stdout))  # a worker process that has really exited
    assert RunStore(server / "users" / "alice").get(record.id).status == "interrupted"
    assert str(server) in RunStore(server / "users" / "alice").get(record.id).error, (
        "the engine's message names the run folder"
    )

    at = signed_in_app(server, ALICE, run_id=record.id)
    open_page(at, "train").run()
    assert not at.exception
    texts = shown(at.error) + [block.value for block in at.code]
    assert any("interrupted" in text for text in texts)
    assert not [text for text in texts if str(server) in text or str(server.parent) in text], texts
    assert any(f"your workspace/runs/{record.id}" in text for text in texts), texts
