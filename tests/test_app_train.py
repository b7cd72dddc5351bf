"""Train page: background training with live curves, queueing, stopping, and finding the run again."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.events import FINISHED_STATUSES
from tl_core.runs.store import RunStore

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TRANSFERLAB_DATASETS_DIR", str(tmp_path / "datasets"))
    make_shapes_dataset(tmp_path / "datasets" / "shapes", num_classes=3, images_per_class=12, image_size=32)
    return tmp_path / "workspace"


def tiny_config(source: Path, **train: object) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(**{"epochs": 1, "batch_size": 16, **train}),
        name="tiny run",
    )


def session(config: RunConfig | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if config is not None:
        at.session_state["dataset_path"] = config.data.source
        at.session_state["run_config"] = config
    at.run()
    open_page(at, "train").run()
    assert not at.exception
    return at


def run_until(at: AppTest, done: Callable[[], bool], timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            at.run()
            assert not at.exception
            return
        time.sleep(0.3)
    raise AssertionError("timed out")


def finished(store: RunStore, run_id: str) -> Callable[[], bool]:
    return lambda: store.get(run_id).status in FINISHED_STATUSES


def chart_data(chart: object) -> dict[str, pd.DataFrame]:
    """The data frames Streamlit sends beside a chart's spec, by dataset name."""
    return {named.name: pa.ipc.open_stream(named.data.data).read_all().to_pandas() for named in chart.proto.datasets}


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def test_full_flow_data_model_train_draws_curves(workspace: Path, tmp_path: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.button(key="data_server_use").click().run()
    open_page(at, "model").run()
    at.selectbox(key="model_backbone").set_value("mobilenet_v2_035")
    at.radio(key="model_weights").set_value("none")
    at.number_input(key="model_image_size").set_value(32)
    at.number_input(key="model_epochs").set_value(2)
    at.run()
    open_page(at, "train").run()
    started = time.monotonic()
    at.button(key="train_start").click().run()
    assert time.monotonic() - started < 30, "the click must return at once: training runs in the background"
    assert not at.exception
    run_id = at.session_state["run_id"]
    store = RunStore(workspace)
    run_until(at, finished(store, run_id))
    assert store.get(run_id).status == "completed"
    assert any("Completed" in success.value for success in at.success)
    titles = [spec["title"] for spec in chart_specs(at)]
    assert titles == ["loss", "accuracy"]
    loss = next(iter(chart_data(at.get("vega_lite_chart")[0]).values()))
    assert set(loss["split"]) == {"training", "validation"} and loss["epoch"].max() == 2
    assert "epoch 2" in at.code[0].value  # the log


@pytest.mark.slow  # the first fully-unfrozen step builds a large graph (17-32 s on 2 CPU cores)
def test_fine_tune_phase_is_marked_on_the_chart(workspace: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "datasets" / "shapes", mode="full", epochs=1, fine_tune_epochs=1)
    at = session(config)
    at.button(key="train_start").click().run()
    store = RunStore(workspace)
    run_until(at, finished(store, at.session_state["run_id"]))
    accuracy = chart_specs(at)[1]
    rules = [layer for layer in accuracy["layer"] if layer["mark"]["type"] in ("rule", "text")]
    assert len(rules) == 2
    rule_data = chart_data(at.get("vega_lite_chart")[1])[rules[0]["data"]["name"]]
    assert rule_data.to_dict("records") == [{"epoch": 2, "label": "full fine-tune", "row": 4}]


@pytest.mark.slow  # each progressive stage compiles a new training graph
def test_progressive_stages_are_labelled_with_their_open_blocks(workspace: Path, tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path / "datasets" / "shapes",
        mode="progressive",
        epochs=1,
        stage_epochs=1,
        max_stages=2,
        plateau_tolerance=None,
        early_stopping_patience=None,
    )
    at = session(config)
    at.button(key="train_start").click().run()
    store = RunStore(workspace)
    run_id = at.session_state["run_id"]
    run_until(at, finished(store, run_id))
    phases = store.phases(run_id)
    assert [(p.phase, p.first_epoch) for p in phases] == [("head", 1), ("stage-1", 2), ("stage-2", 3)]
    assert (
        len(phases[1].open_blocks) == 1
        and len(phases[2].open_blocks) == 2
        and phases[2].open_blocks[-1] == phases[1].open_blocks[0]
    )
    accuracy = chart_specs(at)[1]
    texts = [layer for layer in accuracy["layer"] if layer["mark"]["type"] == "text"]
    data = chart_data(at.get("vega_lite_chart")[1])
    labels = sorted(
        {label for layer in texts for label in data[layer["data"]["name"]]["label"]}
    )  # each text layer filters one height
    assert labels == [f"stage-1: {phases[1].open_blocks[0]}", f"stage-2: {', '.join(phases[2].open_blocks)}"]
    best_phase = json.loads((store.run_dir(run_id) / "summary.json").read_text())["best_phase"]
    sentences = [info.value for info in at.info if "Best model found at" in info.value]
    if best_phase == "head":
        assert sentences == []
    else:
        assert len(sentences) == 1
        shown = sentences[0].replace("\\", "")  # the sentence is Markdown with its punctuation escaped (stage\-2)
        assert best_phase in shown and "open" in shown


def test_second_request_queues_and_a_new_tab_finds_the_live_run(workspace: Path, tmp_path: Path) -> None:
    source = tmp_path / "datasets" / "shapes"
    long_run = tiny_config(
        source, epochs=300, early_stopping_patience=None, reduce_lr_patience=None, use_feature_cache=False
    )
    first = session(long_run)
    first.button(key="train_start").click().run()
    first_id = first.session_state["run_id"]
    store = RunStore(workspace)
    try:
        # A new tab (a new session, nothing in its state) shows the server's active run.
        other_tab = session()
        assert other_tab.session_state["run_id"] == first_id
        assert any("tiny run" in markdown.value for markdown in other_tab.markdown)

        second = session(tiny_config(source))
        assert second.button(key="train_start").label == "Queue training"
        second.button(key="train_start").click().run()
        second_id = second.session_state["run_id"]
        assert second_id != first_id
        assert any("Queued, position 1" in info.value for info in second.info)

        second.button(key="train_stop").click().run()  # drop the queued one
        assert store.get(second_id).status == "stopped"
        run_until(first, lambda: len(store.epochs(first_id)) >= 1)
        assert first.get("vega_lite_chart"), "the live curves draw while training"
        assert "Epoch" in first.get("progress")[0].proto.text
    finally:
        first.run()
        first.button(key="train_stop").click().run()
    run_until(first, finished(store, first_id))
    assert store.get(first_id).status == "stopped"
    assert any("Stopped after" in warning.value for warning in first.warning)


def test_a_dataset_with_nothing_trainable_is_refused_before_queueing(workspace: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "only_class").mkdir(parents=True)
    (broken / "only_class" / "a.png").write_bytes(b"not an image")
    at = session(tiny_config(broken))
    at.button(key="train_start").click().run()
    assert not at.exception
    assert at.error, "the reason must be shown"
    assert RunStore(workspace).list_runs() == []


def _progress_view() -> None:
    import streamlit as st

    from tl_core.jobs.live_progress import LiveProgress
    from tl_core.jobs.manager import JobStatus
    from ui.training import show_progress

    show_progress(
        None, JobStatus("run", "running", None, LiveProgress(status="running", **st.session_state["progress"]))
    )  # type: ignore[arg-type]


def test_the_progress_bar_follows_decoding_and_feature_extraction_before_the_epochs() -> None:
    started = time.time() - 60  # 3,000 rows since the first report: 50 rows/s, 15,000 left
    at = AppTest.from_function(_progress_view, default_timeout=30)
    at.session_state["progress"] = {
        "preparing": "features",
        "preparing_split": "train",
        "preparing_done": 5000,
        "preparing_total": 20000,
        "preparing_started_at": started,
        "preparing_first_done": 2000,
    }
    at.run()
    assert not at.exception
    bar = at.get("progress")[0]
    assert bar.value == 25
    assert (
        "Computing backbone features" in bar.proto.text
        and "train: 5,000 of 20,000" in bar.proto.text
        and "ETA 5 min" in bar.proto.text
    )

    at.session_state["progress"] = {
        "preparing": "features",
        "preparing_split": "val",
        "preparing_done": 900,
        "preparing_total": 900,
        "phase": "head",
        "phase_epochs": 10,
        "total_epochs": 10,
        "epoch": 3,
    }
    at.run()
    bar = at.get("progress")[0]
    assert "Epoch 4 of 10" in bar.proto.text  # a finished split gives the bar back to the epochs


def test_the_train_page_follows_runs_queued_elsewhere_and_stops_each(workspace: Path, tmp_path: Path) -> None:
    source = tmp_path / "datasets" / "shapes"
    store = RunStore(workspace)
    old = store.create_run(
        config={}, backbone="mobilenet_v2_035", weights="none", mode="feature-extraction", name="old"
    )
    store.finish_run(old.id, "failed", error="an old failure")
    watcher = session(tiny_config(source))
    watcher.session_state["run_id"] = old.id  # this tab was looking at an old failed run
    watcher.run()
    assert watcher.button(key="train_start").label == "Start training"

    long_run = tiny_config(
        source, epochs=300, early_stopping_patience=None, reduce_lr_patience=None, use_feature_cache=False
    )
    elsewhere = session(long_run)  # another tab queues two runs, as "Compare backbones" does
    elsewhere.button(key="train_start").click().run()
    running_id = elsewhere.session_state["run_id"]
    elsewhere.button(key="train_start").click().run()
    queued_id = elsewhere.session_state["run_id"]
    try:
        watcher.run()
        assert not watcher.exception
        assert watcher.session_state["run_id"] == running_id, "the page follows the work, not the old failed run"
        assert watcher.button(key="train_start").label == "Queue training"
        assert any("1 run training and 1 queued" in caption.value for caption in watcher.caption)
        assert not [error for error in watcher.error if "old failure" in error.value]
        assert any("queued, position 1" in markdown.value for markdown in watcher.markdown)

        watcher.button(key=f"queue_stop_{queued_id}").click().run()  # stop the queued one from its own row
        assert store.get(queued_id).status == "stopped"
        assert watcher.session_state["run_id"] == running_id and watcher.button(key="train_stop")
        assert not [markdown for markdown in watcher.markdown if "queued, position" in markdown.value]
    finally:
        watcher.run()
        watcher.button(key="train_stop").click().run()
    run_until(watcher, finished(store, running_id))
    deadline = time.monotonic() + 30  # the queue notices the worker's exit within a moment of the store
    while watcher.run().button(key="train_start").label != "Start training":
        assert time.monotonic() < deadline, "the Start button still says the queue is busy"
        time.sleep(0.3)
    assert not [caption for caption in watcher.caption if "queued" in caption.value or "training and" in caption.value]
