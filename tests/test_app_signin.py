"""Workshop mode in the app: sign-in before anything, class codes, per-user isolation, the trainer page, quotas."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.server.accounts import User, UserDirectory  # noqa: E402
from tl_core.server.sessions import SessionStore  # noqa: E402
from ui.text import escape_markdown  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TRAINER = User("tara", "trainer", "Tara <b>T</b>")
ALICE = User("alice", "student", "Alice")
BOB = User("bob", "student", "Bob")
PASSWORDS = {"tara": "trainer password", "alice": "alice password", "bob": "bob password"}


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workshop server's workspace with a trainer and two students (users file in the workspace)."""
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
    for user in (TRAINER, ALICE, BOB):
        directory.add_user(user.name, PASSWORDS[user.name], role=user.role, display_name=user.display_name)
    return workspace


def finished_run(workspace: Path, owner: str, name: str) -> str:
    """A completed run recorded straight into `owner`'s own run store (no training needed)."""
    store = RunStore(workspace / "users" / owner)
    record = store.create_run(
        config={}, backbone="mobilenet_v2_035", weights="none", mode="feature-extraction", name=name, owner=owner
    )
    store.finish_run(record.id, "completed", metrics={"val_accuracy": 0.5})
    return record.id


def as_signed_in(at: AppTest, user: User) -> AppTest:
    """`user`'s session in the app's state, as a real sign-in leaves it (a token from the server's session store)."""
    workspace = Path(os.environ["TRANSFERLAB_WORKSPACE"])
    at.session_state["signed_in_user"] = user
    at.session_state["session_token"] = SessionStore(workspace).start(
        user.name, UserDirectory(workspace / "users.json").account_stamp(user.name)
    )
    return at


def signed_in_app(user: User) -> AppTest:
    """The app with `user` already signed in (the sign-in forms themselves are tested separately)."""
    at = as_signed_in(AppTest.from_file(APP, default_timeout=60), user)
    at.run()
    assert not at.exception
    return at


def sign_in_with_password(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="signin_name").set_value(name)
    at.text_input(key="signin_password").set_value(password)
    return at.button(key="signin_submit").click().run()


def redeem(at: AppTest, code: str, display_name: str, password: str) -> AppTest:
    at.text_input(key="signin_code").set_value(code)
    at.text_input(key="signin_display_name").set_value(display_name)
    at.text_input(key="signin_new_password").set_value(password)
    at.text_input(key="signin_new_password_again").set_value(password)
    return at.button(key="signin_code_submit").click().run()


def titles(at: AppTest) -> list[str]:
    return [title.value for title in at.title]


def test_nothing_but_the_sign_in_screen_before_sign_in(server: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert titles(at) == ["TransferLab"]
    assert not at.get("file_uploader") and not at.sidebar.markdown and not at.metric
    with pytest.raises(ValueError, match="No page registered"):
        open_page(at, "data")


def test_wrong_password_is_refused_and_right_one_shows_the_pages(server: Path) -> None:
    at = sign_in_with_password(AppTest.from_file(APP, default_timeout=60).run(), "tara", "not the password")
    assert not at.exception
    assert titles(at) == ["TransferLab"]
    assert any("Wrong user name or password" in error.value for error in at.error)

    sign_in_with_password(at, "tara", PASSWORDS["tara"])
    assert not at.exception
    assert titles(at) == ["Data"]
    shown = [markdown.value for markdown in at.sidebar.markdown]
    assert shown[0] == f"**{escape_markdown(TRAINER.display_name)}**  \ntara · trainer", (
        "the display name is escaped, never HTML"
    )
    assert "<b>" not in shown[0]


def test_guessing_passwords_is_slowed_down(server: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    for attempt in range(5):
        sign_in_with_password(at, "bob", f"guess number {attempt}")
    sign_in_with_password(at, "bob", PASSWORDS["bob"])
    assert titles(at) == ["TransferLab"]
    assert any("Too many wrong passwords" in error.value for error in at.error)


def test_a_class_code_makes_one_account_once(server: Path) -> None:
    [code] = UserDirectory(server / "users.json").create_class_codes(1, "tara")
    at = redeem(AppTest.from_file(APP, default_timeout=60).run(), code, "Zoë Smith", "zoe's password")
    assert not at.exception
    assert titles(at) == ["Data"]
    assert any("Your user name is zoe\\-smith" in success.value for success in at.success)
    assert UserDirectory(server / "users.json").verify("zoe-smith", "zoe's password") == User(
        "zoe-smith", "student", "Zoë Smith"
    )

    again = redeem(AppTest.from_file(APP, default_timeout=60).run(), code, "Someone Else", "another password")
    assert titles(again) == ["TransferLab"]
    assert any("already been used" in error.value for error in again.error)


def test_mismatched_passwords_do_not_use_up_the_code(server: Path) -> None:
    [code] = UserDirectory(server / "users.json").create_class_codes(1, "tara")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input(key="signin_code").set_value(code)
    at.text_input(key="signin_display_name").set_value("Yan")
    at.text_input(key="signin_new_password").set_value("first password")
    at.text_input(key="signin_new_password_again").set_value("second password")
    at.button(key="signin_code_submit").click().run()
    assert any("passwords differ" in error.value for error in at.error)
    assert UserDirectory(server / "users.json").list_class_codes()[0].is_usable


def test_a_student_sees_only_their_own_runs(server: Path) -> None:
    finished_run(server, "alice", "alice's run")
    finished_run(server, "bob", "bob's run")
    at = signed_in_app(BOB)
    open_page(at, "runs").run()
    assert not at.exception
    assert list(at.dataframe[0].value["name"]) == ["bob's run"]


def test_a_student_cannot_open_another_users_dataset(server: Path) -> None:
    theirs = make_shapes_dataset(
        server / "users" / "alice" / "datasets" / "secret-shapes", num_classes=2, images_per_class=4, image_size=32
    )
    make_shapes_dataset(server / "datasets" / "class-shapes", num_classes=2, images_per_class=4, image_size=32)
    at = as_signed_in(AppTest.from_file(APP, default_timeout=60), BOB)
    at.session_state["dataset_path"] = str(theirs)  # as if a stale or forged choice named alice's folder
    at.run()
    assert not at.exception
    assert any("secret\\-shapes is not one of your datasets" in error.value for error in at.error)
    assert not at.metric, "no report of another user's dataset"
    assert "dataset_path" not in at.session_state, "the refused choice is forgotten"
    choices = at.selectbox(key="data_server_choice").options
    assert choices == ["class-shapes (shared)"], "only shared datasets and the student's own are offered by name"
    at.button(key="data_server_use").click().run()
    assert {metric.label: metric.value for metric in at.metric}["Images"] == "8"
    assert at.text[0].value == "Dataset: shared datasets/class-shapes"
    shown = [element.value for element in (*at.text, *at.caption, *at.markdown, *at.error, *at.info)]
    assert not any(str(server) in text.replace("\\", "") for text in shown), "no server paths shown to students"


def test_student_uploads_go_to_their_own_folder(server: Path, tmp_path: Path) -> None:
    source = make_shapes_dataset(tmp_path / "source", num_classes=2, images_per_class=4, image_size=32)
    at = signed_in_app(ALICE)
    files = [
        (f"mine/{path.relative_to(source).as_posix()}", path.read_bytes(), "image/png")
        for path in sorted(source.rglob("*.png"))
    ]
    at.file_uploader(key="data_folder_files").set_value(files).run()
    at.button(key="data_folder_save").click().run()
    assert not at.exception
    assert len(list((server / "users" / "alice" / "datasets" / "mine").rglob("*.png"))) == 8
    assert not (server / "datasets" / "mine").exists()
    assert not any(radio.key == "data_upload_target" for radio in at.radio), "students cannot write shared datasets"


def test_uploads_over_the_limit_are_refused_with_a_message(
    server: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFERLAB_MAX_UPLOAD_MB", "1")
    monkeypatch.setenv("TRANSFERLAB_DISK_QUOTA_MB", "2")
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as bundle:
        bundle.writestr("big/a/noise.bin", os.urandom(3 << 19))  # 1.5 MB
    at = signed_in_app(ALICE)
    at.file_uploader(key="data_archive_file").set_value(("big.zip", archive.read_bytes(), "application/zip")).run()
    at.button(key="data_archive_save").click().run()
    assert not at.exception
    assert any("at most 1 MB per upload" in error.value for error in at.error)
    assert not list((server / "users" / "alice" / "datasets").iterdir())


def test_trainer_page_is_for_trainers_only_and_lists_everyones_runs(server: Path) -> None:
    finished_run(server, "alice", "alice's run")
    finished_run(server, "bob", "bob's run")
    student = signed_in_app(ALICE)
    with pytest.raises(ValueError, match="No page registered"):
        open_page(student, "trainer")

    trainer = signed_in_app(TRAINER)
    open_page(trainer, "trainer").run()
    assert not trainer.exception
    assert titles(trainer) == ["Trainer"]
    runs = next(frame.value for frame in trainer.dataframe if "run" in frame.value.columns)
    assert sorted(zip(runs["user"], runs["run"])) == [("alice", "alice's run"), ("bob", "bob's run")]
    users = trainer.dataframe[0].value
    assert {"alice", "bob", "tara"} <= set(users["user"])


def test_trainer_generates_codes_shown_once(server: Path) -> None:
    trainer = signed_in_app(TRAINER)
    open_page(trainer, "trainer").run()
    trainer.number_input(key="trainer_code_count").set_value(3)
    trainer.button(key="trainer_codes_new").click().run()
    assert not trainer.exception
    codes = trainer.code[0].value.splitlines()
    assert len(codes) == 3
    directory = UserDirectory(server / "users.json")
    assert directory.redeem_class_code(codes[0], "Kim", "kim's password").role == "student"
    trainer.run()
    assert not trainer.code, "codes are not shown again"


def test_trainer_cleans_up_a_failed_run_after_confirming(server: Path) -> None:
    store = RunStore(server / "users" / "bob")
    failed = store.create_run(
        config={}, backbone="mobilenet_v2_035", weights="none", mode="feature-extraction", name="broken", owner="bob"
    )
    store.finish_run(failed.id, "failed", error="out of memory")
    (store.run_dir(failed.id) / "weights.bin").write_bytes(b"x" * 2048)
    trainer = signed_in_app(TRAINER)
    open_page(trainer, "trainer").run()
    select = trainer.multiselect(key="trainer_cleanup_select")
    [choice] = select.options
    select.set_value([choice]).run()
    trainer.button(key="trainer_cleanup").click().run()
    assert [record.id for record in store.list_runs()] == [failed.id], "nothing is deleted before the confirmation"
    trainer.button(key="trainer_cleanup_confirm").click().run()
    assert not trainer.exception
    assert store.list_runs() == []
    assert "broken" in choice


def _account_sidebar() -> None:
    """The sidebar's account block alone (AppTest drops the entry script's own widgets after a first run)."""
    import streamlit as st

    from ui.sidebar import show_account

    show_account()
    st.text(", ".join(sorted(str(key) for key in st.session_state.keys() if not str(key).startswith("$$"))))


def test_sign_out_forgets_the_session(server: Path) -> None:
    at = as_signed_in(AppTest.from_function(_account_sidebar, default_timeout=60), ALICE)
    at.session_state["dataset_path"] = str(server / "users" / "alice" / "datasets")
    at.run()
    assert "dataset_path" in at.text[0].value
    at.sidebar.button(key="signout").click().run()
    assert not at.exception
    assert "Sign in first." in [error.value for error in at.error]
    assert "dataset_path" not in at.session_state and "signed_in_user" not in at.session_state


def test_personal_mode_needs_no_sign_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRANSFERLAB_MODE", raising=False)
    monkeypatch.delenv("TRANSFERLAB_CONFIG", raising=False)
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert titles(at) == ["Data"]
    assert not any(button.key == "signout" for button in at.sidebar.button)
    with pytest.raises(ValueError, match="No page registered"):
        open_page(at, "trainer")


def test_a_bad_setting_is_explained_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TRANSFERLAB_MODE", "classroom")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("classroom" in error.value for error in at.error)
    assert not at.title


def test_trainer_sees_everyones_queue_and_can_drop_a_queued_job(server: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pages.trainer
    import ui.state
    from tests.job_helpers import FakeRun
    from tests.job_helpers import tiny_config as _config
    from tests.job_helpers import wait_until as _until
    from tl_core.jobs.manager import JobManager
    from tl_core.server.workspaces import Workspaces

    spaces = Workspaces(server)
    run = FakeRun(blocking=True)
    manager = JobManager(RunStore(server), run=run, max_concurrent=1)
    try:
        jobs = {
            user.name: ui.state.UserJobs(manager, spaces.workspace_for(user).store(), user, spaces)
            for user in (ALICE, BOB)
        }
        running = jobs["alice"].submit(_config(spaces.server_datasets))
        queued = jobs["bob"].submit(_config(spaces.server_datasets))
        advice = jobs["bob"].submit_advisory("advice", _config(spaces.server_datasets), key="k", options={})
        _until(lambda: manager.status(running).state == "running")
        monkeypatch.setattr(
            pages.trainer, "get_manager", lambda: jobs["alice"]
        )  # the page reads `.manager`: the server's queue

        trainer = signed_in_app(TRAINER)
        open_page(trainer, "trainer").run()
        assert not trainer.exception
        table = trainer.dataframe[0].value
        assert list(zip(table["user"], table["id"], table["kind"], table["state"])) == [
            ("alice", running, "training run", "running"),
            ("bob", queued, "training run", "queued"),
            ("bob", advice, "mode advice", "queued"),  # the advisor's measurement holds a device slot too
        ]
        trainer.multiselect(key="trainer_queue_select").set_value([queued]).run()
        trainer.button(key="trainer_queue_stop").click().run()
        trainer.button(key="trainer_queue_stop_confirm").click().run()
        assert not trainer.exception
        assert manager.status(queued).state == "finished"
        assert spaces.workspace_for(BOB).store().get(queued).status == "stopped"
        assert manager.status(running).state == "running"
    finally:
        run.release.set()
        manager.shutdown(stop_jobs=True)
