"""Model page: the backbone table, the defaults, a RunConfig in session state, clear errors for bad input."""

from __future__ import annotations

import os
import re
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.config import RunConfig  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.models.registry import list_backbones  # noqa: E402
from ui.settings import has_offline_weights

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def plain(markdown: str) -> str:
    """What the user reads: messages are Markdown-escaped before display."""
    return re.sub(r"\\(.)", r"\1", markdown)


def open_model_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """A new session on the Model page, with a tiny dataset chosen and its own workspace."""
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["dataset_path"] = str(
        make_shapes_dataset(tmp_path / "shapes", num_classes=2, images_per_class=4, image_size=32)
    )
    at.run()
    open_page(at, "model").run()
    assert not at.exception
    return at


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    return open_model_page(tmp_path, monkeypatch)


def test_defaults_build_a_run_config_for_a_quick_first_curve(app: AppTest, tmp_path: Path) -> None:
    assert app.selectbox(key="model_backbone").value == "efficientnet_lite0"
    assert app.radio(key="model_weights").value == "imagenet"
    assert 64 <= app.number_input(key="model_image_size").value <= 128
    config = app.session_state["run_config"]
    assert isinstance(config, RunConfig)
    assert config.model.backbone == "efficientnet_lite0" and config.model.weights == "imagenet"
    assert config.data.source == str(tmp_path / "shapes")
    assert any("Ready" in success.value for success in app.success)
    headings = [subheader.value for subheader in app.subheader]
    assert len(headings) == len(set(headings)), f"each section once: {headings}"


def test_beginner_view_lists_recommended_and_expert_view_lists_all(app: AppTest) -> None:
    table = app.dataframe[0].value
    installed = [spec.name for spec in list_backbones(None) if has_offline_weights(spec)]
    assert {"efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2_dogs"} <= set(installed)  # offline, any tier
    assert list(table["backbone"][: len(installed)]) == installed, "what works here comes first"
    assert set(table["backbone"]) == set(installed) | {spec.name for spec in list_backbones("recommended")}
    assert {"parameters (M)", "input size", "feature size", "ImageNet weights", "provenance"} <= set(table.columns)
    assert "speed (2 CPU cores)" not in table.columns  # measured for the text backbones only
    app.toggle(key="model_expert").set_value(True).run()
    assert set(app.dataframe[0].value["backbone"]) == {spec.name for spec in list_backbones(None)}
    assert app.number_input(key="model_patience").value == 5  # advanced settings appear


def test_a_backbone_without_installed_weights_cannot_start_and_one_click_switches(app: AppTest) -> None:
    app.toggle(key="model_expert").set_value(True).run()
    app.selectbox(key="model_backbone").set_value("resnet50").run()
    assert app.radio(key="model_weights").value == "imagenet"
    assert "run_config" not in app.session_state, "nothing to Start"
    assert any("not installed on this server" in error.value and "--" not in error.value for error in app.error)
    app.button(key="model_use_offline").click().run()
    assert app.selectbox(key="model_backbone").value == "efficientnet_lite0"
    assert app.session_state["run_config"].model.backbone == "efficientnet_lite0" and not app.error


def test_every_setting_has_an_explanation(app: AppTest) -> None:
    for widget in [
        *app.selectbox,
        *app.radio,
        *app.number_input,
        *app.select_slider,
        *app.slider,
        *app.text_input,
        *app.toggle,
    ]:
        assert widget.help, f"{widget.label} has no help text"
    assert len(app.caption) >= 12


def test_settings_flow_into_the_config(app: AppTest) -> None:
    app.selectbox(key="model_backbone").set_value("mobilenet_v2_035")
    app.radio(key="model_weights").set_value("none")
    app.radio(key="model_mode").set_value("fine-tune").run()  # the fine-tune settings are enabled by the mode
    app.number_input(key="model_image_size").set_value(32)
    app.number_input(key="model_epochs").set_value(2)
    app.number_input(key="model_fine_tune_epochs").set_value(1)
    app.text_input(key="model_hidden_units").set_value("64, 32")
    app.slider(key="model_dropout").set_value(0.5)
    app.text_input(key="model_run_name").set_value("tiny")
    app.run()
    assert not app.exception and not app.error
    config = app.session_state["run_config"]
    assert (config.model.backbone, config.model.weights, config.model.image_size) == ("mobilenet_v2_035", "none", 32)
    assert config.model.head_hidden_units == (64, 32) and config.model.dropout == 0.5
    assert (config.train.mode, config.train.epochs, config.train.fine_tune_epochs) == ("fine-tune", 2, 1)
    assert config.name == "tiny"


def test_invalid_input_shows_the_message_not_a_traceback(app: AppTest) -> None:
    app.text_input(key="model_hidden_units").set_value("lots").run()
    assert not app.exception
    assert "Hidden units 'lots': write whole numbers" in plain(app.error[0].value)
    assert "run_config" not in app.session_state
    open_page(app, "train").run()
    assert not app.exception
    assert "settings are invalid" in app.error[0].value
    assert app.get("button") == [] or all(button.key != "train_start" for button in app.button)


def test_fine_tune_without_fine_tune_epochs_is_refused(app: AppTest) -> None:
    app.radio(key="model_mode").set_value("full").run()
    app.number_input(key="model_fine_tune_epochs").set_value(0)
    app.run()
    assert "set fine-tune epochs to 1 or more" in plain(app.error[0].value)


def test_image_size_outside_the_backbone_range_is_explained(app: AppTest) -> None:
    spec = next(spec for spec in list_backbones(None) if spec.name == "efficientnet_lite0")
    app.number_input(key="model_image_size").set_value(
        max(16, spec.min_size - 16) if spec.min_size > 16 else min(1024, spec.max_size + 16)
    )
    app.run()
    assert not app.exception
    assert app.error, "an out-of-range size must be refused with a message"


def test_settings_survive_a_visit_to_another_page(app: AppTest) -> None:
    app.number_input(key="model_epochs").set_value(3).run()
    open_page(app, "data").run()
    open_page(app, "model").run()
    assert app.number_input(key="model_epochs").value == 3
    assert app.session_state["run_config"].train.epochs == 3


def test_a_finished_runs_backbone_can_start_a_new_run_from_the_normal_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tl_core.config import DataConfig, ModelConfig, TrainConfig
    from tl_core.runs.store import RunStore
    from tl_core.training.runner import run_experiment

    data = make_shapes_dataset(tmp_path / "shapes", num_classes=2, images_per_class=6, image_size=32)
    store = RunStore(tmp_path / "workspace")
    parent = run_experiment(
        RunConfig(
            data=DataConfig(source=str(data)),
            model=ModelConfig(backbone="efficientnet_lite0", weights="none", image_size=48),
            train=TrainConfig(epochs=1, batch_size=16, mode="fine-tune", fine_tune_epochs=1),
            name="domain weights",
        ),
        store=store,
    )
    assert parent.status == "completed"
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["dataset_path"] = str(data)
    at.run()
    open_page(at, "model").run()
    weights = at.radio(key="model_weights")
    assert not at.toggle(key="model_expert").value
    assert f"run:{parent.run_id}" in weights.options or any(
        "domain weights" in plain(option) for option in weights.options
    )
    weights.set_value(f"run:{parent.run_id}").run()
    assert not at.exception and not at.error
    assert (
        at.selectbox(key="model_backbone").value == "efficientnet_lite0"
        and at.number_input(key="model_image_size").value == 48
    )
    config = at.session_state["run_config"]
    assert (config.model.weights, config.model.backbone, config.model.image_size) == (
        f"run:{parent.run_id}",
        "efficientnet_lite0",
        48,
    )
    assert any("domain weights" in plain(caption.value) for caption in at.caption)
    other = next(name for name in at.selectbox(key="model_backbone").options if name != "efficientnet_lite0")
    at.selectbox(key="model_backbone").set_value(other).run()  # another architecture: the run's
    assert not [option for option in at.radio(key="model_weights").options if option.startswith("run:")]
    assert at.radio(key="model_weights").value == "imagenet"  # backbone does not fit, and a choice is shown


def test_the_page_does_not_wait_for_the_model_process_to_list_a_backbones_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server's first list of cut depths starts the model process (~5 s). The page used to sit mid-run meanwhile,
    and what the user typed and clicked raced it; now it draws at once and offers the depths with the next change.
    (The listing is held back here by a gate in place of the model process, which other tests use for real.)"""
    import threading
    import time

    import ui.advisor as advisor

    gate = threading.Event()

    def listing_held_back(backbone: str) -> advisor.CutLayers:
        gate.wait(60)
        return advisor.CutLayers(("block_1_add", "block_2_add"), "top_activation")

    monkeypatch.setattr(advisor, "cut_layers", listing_held_back)
    monkeypatch.setattr(advisor, "_listings", {})
    at = open_model_page(tmp_path, monkeypatch)
    assert not [box for box in at.selectbox if box.key == "model_cut_layer"]
    assert any("blocks are being listed" in caption.value for caption in at.caption)
    assert at.session_state["run_config"].model.cut_layer is None, "the last layer meanwhile; Start works"

    gate.set()
    deadline = time.monotonic() + 30
    while advisor.cut_layers_if_listed("efficientnet_lite0") is None:
        assert time.monotonic() < deadline, "the listing never finished"
        time.sleep(0.05)
    at.number_input(key="model_epochs").set_value(4).run()  # the user's next change
    assert at.selectbox(key="model_cut_layer").options == ["last layer (no cut, default)", "block_2_add", "block_1_add"]
