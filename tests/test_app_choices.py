"""A reload or a new tab keeps the user's dataset, settings and run in view (issue 23, item 2): they are kept in
the user's workspace (`app_choices.json`), not only in the browser tab's session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import open_page
from tl_core.data.synthetic import make_shapes_dataset
from tl_core.layout import UI_CHOICES_FILE

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TRANSFERLAB_DATASETS_DIR", str(tmp_path / "datasets"))
    make_shapes_dataset(tmp_path / "datasets" / "textures", num_classes=2, images_per_class=4, image_size=32)
    return tmp_path / "workspace"


def new_tab() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    return at


def test_a_reload_keeps_the_dataset_settings_and_what_start_will_do(workspace: Path, tmp_path: Path) -> None:
    faces = make_shapes_dataset(tmp_path / "faces", num_classes=2, images_per_class=4, image_size=32)
    first = new_tab()
    assert first.session_state["dataset_path"].endswith("textures"), "the server's default dataset"
    first.session_state["dataset_path"] = str(faces)  # as the Data page's picker sets it
    first.run()
    open_page(first, "model").run()
    first.number_input(key="model_epochs").set_value(7).run()
    first.toggle(key="model_expert").set_value(True).run()
    first.number_input(key="model_patience").set_value(9).run()
    assert not first.exception
    saved = json.loads((workspace / UI_CHOICES_FILE).read_text())
    assert saved["dataset"] == str(faces) and saved["run_config"]["train"]["epochs"] == 7

    reloaded = new_tab()  # a reload is a new session: nothing in its state
    assert reloaded.session_state["dataset_path"] == str(faces)
    open_page(reloaded, "model").run()
    assert reloaded.number_input(key="model_epochs").value == 7
    assert reloaded.toggle(key="model_expert").value is True
    assert reloaded.number_input(key="model_patience").value == 9
    open_page(reloaded, "train").run()
    planned = next(caption.value for caption in reloaded.caption if caption.value.startswith("Dataset "))
    assert planned.startswith("Dataset faces") and "7 epochs" in planned


def test_an_unreadable_choices_file_is_ignored(workspace: Path) -> None:
    workspace.mkdir(parents=True)
    bad = {"dataset": 3, "model_config": {"backbone": "no such", "epochz": 1}, "run_config": {"x": 1}, "widgets": [1]}
    (workspace / UI_CHOICES_FILE).write_text(json.dumps(bad))
    assert new_tab().session_state["dataset_path"].endswith("textures")
    (workspace / UI_CHOICES_FILE).write_text('{"dataset": "half a file')
    at = new_tab()
    assert at.session_state["dataset_path"].endswith("textures")
    open_page(at, "model").run()
    assert not at.exception and at.selectbox(key="model_backbone").value == "efficientnet_lite0"


def test_a_typed_setting_counts_when_the_user_goes_straight_to_train(workspace: Path) -> None:
    """Type in a box, then click Train in the sidebar: the box commits as it loses focus, in the same rerun that
    opens the Train page, so the Model page never runs with the new value (seen in Chromium: Start would have
    trained the old number of epochs). Its on_change applies it anyway, and the next Model visit shows it."""
    at = new_tab()
    open_page(at, "model").run()
    at.number_input(key="model_epochs").set_value(4)
    at.text_input(key="model_run_name").set_value("typed then left")
    open_page(at, "train").run()  # the changed values arrive with the request for the Train page
    assert not at.exception
    planned = next(caption.value for caption in at.caption if caption.value.startswith("Dataset "))
    assert " · 4 epochs" in planned, planned
    assert at.session_state["run_config"].name == "typed then left"
    assert json.loads((workspace / UI_CHOICES_FILE).read_text())["run_config"]["train"]["epochs"] == 4

    open_page(at, "model").run()
    assert at.number_input(key="model_epochs").value == 4, "the Model page shows what will train"
    for key in ("model_config", "train_config", "run_config"):  # as if the Model page's run was stopped early
        del at.session_state[key]
    at.number_input(key="model_epochs").set_value(3)
    open_page(at, "train").run()
    assert at.session_state["train_config"].epochs == 3 and at.session_state["run_config"].train.epochs == 3
    assert at.session_state["run_config"].model == at.session_state["model_config"], "the defaults, with the value"

    open_page(at, "model").run()
    at.radio(key="model_mode").set_value("fine-tune").run()
    at.number_input(key="model_fine_tune_epochs").set_value(0)
    open_page(at, "train").run()
    errors = [error.value.replace("\\", "") for error in at.error]  # markdown-escaped on the page
    assert any("with 0 fine-tune epochs only trains the head" in error for error in errors), errors
    assert not [button for button in at.button if button.key == "train_start"]


def test_a_click_on_another_page_that_a_typed_boxs_commit_undid_is_followed(workspace: Path) -> None:
    """In Chromium the frontend asks for the clicked page first and sends the typed box's value just after, with the
    Model page's name: that second request stops the Train page's run and draws Model again (the click undone, the
    boxes at their minimums). The server sees a typed commit right after another page's unfinished run."""
    at = new_tab()
    open_page(at, "model").run()
    at.session_state["navigation_last_run"] = ("train", False)  # the Train page's run that the commit stopped
    at.number_input(key="model_epochs").set_value(6).run()
    assert not at.exception
    assert [title.value for title in at.title] == ["Train"], "the click is followed"
    assert any(caption.value.startswith("Dataset ") and " · 6 epochs" in caption.value for caption in at.caption)

    open_page(at, "model").run()
    at.number_input(key="model_epochs").set_value(7).run()  # the run before was this page's own, and finished
    assert [title.value for title in at.title] == ["Model"]
    at.session_state["navigation_last_run"] = ("train", True)  # another page's run that finished: a plain edit
    at.number_input(key="model_epochs").set_value(8).run()
    assert [title.value for title in at.title] == ["Model"]
