"""Runs page: the table, overlaid curves, the leaderboard, comparing backbones and deleting with confirmation."""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.runner import run_experiment  # noqa: E402
from tl_core.runs import FINISHED_STATUSES, RunStore  # noqa: E402
from tl_core.synthetic import make_shapes_dataset  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def tiny(source: Path, name: str, epochs: int = 1) -> RunConfig:
    return RunConfig(data=DataConfig(source=str(source)), model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
                     train=TrainConfig(epochs=epochs, batch_size=16), name=name)


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Two real finished runs on one small dataset."""
    data = make_shapes_dataset(tmp_path / "shapes", num_classes=3, images_per_class=10, image_size=32)
    store = RunStore(tmp_path / "workspace")
    for name, epochs in (("first", 1), ("second", 2)):
        assert run_experiment(tiny(data, name, epochs), store=store).status == "completed"
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    return tmp_path / "workspace", data


def chart_data(chart: object) -> dict[str, pd.DataFrame]:
    """The data frames Streamlit sends beside a chart's spec, by dataset name."""
    return {named.name: pa.ipc.open_stream(named.data.data).read_all().to_pandas() for named in chart.proto.datasets}


def open_runs(dataset: Path | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if dataset is not None:
        at.session_state["dataset_path"] = str(dataset)
    at.run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception
    return at


def test_table_overlay_and_leaderboard(workspace: tuple[Path, Path]) -> None:
    store = RunStore(workspace[0])
    at = open_runs()
    table = at.dataframe[0].value
    assert list(table["name"]) == ["second", "first"]  # newest first
    assert {"backbone", "mode", "data", "epochs", "val accuracy", "test accuracy", "time (s)", "status"} <= set(table.columns)
    assert list(table["data"]) == ["shapes", "shapes"] and list(table["epochs"]) == [2, 1]

    assert len(at.multiselect(key="runs_overlay").value) == 2
    at.selectbox(key="runs_metric").set_value("val_loss").run()
    rows = next(iter(chart_data(at.get("vega_lite_chart")[0]).values()))
    assert set(rows["run_name"]) == {"first", "second"} and set(rows["metric"]) == {"val_loss"}

    board = at.dataframe[1].value
    expected = sorted(store.list_runs(), key=lambda r: (-r.metrics["test_accuracy"], r.metrics["elapsed_s"]))
    assert list(board["id"]) == [record.id for record in expected]
    assert list(board["rank"]) == [1, 2]


def test_compare_backbones_queues_one_run_per_backbone(workspace: tuple[Path, Path]) -> None:
    workspace_dir, data = workspace
    at = open_runs(data)
    at.session_state["model_config"] = ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32)
    at.session_state["train_config"] = TrainConfig(epochs=1, batch_size=16)
    at.multiselect(key="compare_backbones").set_value(["mobilenet_v2_035", "mobilenet_v3_small"]).run()
    at.button(key="compare_submit").click().run()
    assert not at.exception
    assert any("Queued 2 run(s)" in success.value for success in at.success)
    store = RunStore(workspace_dir)
    queued = [record for record in store.list_runs() if record.name.startswith("compare")]
    assert sorted(record.backbone for record in queued) == ["mobilenet_v2_035", "mobilenet_v3_small"]
    assert {record.mode for record in queued} == {"feature-extraction"}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(store.get(r.id).status not in FINISHED_STATUSES for r in queued):
        time.sleep(0.5)
    assert [store.get(r.id).status for r in queued] == ["completed", "completed"]


def test_delete_asks_for_confirmation(workspace: tuple[Path, Path]) -> None:
    store = RunStore(workspace[0])
    first = next(record for record in store.list_runs() if record.name == "first")
    at = open_runs()
    at.multiselect(key="runs_delete_select").set_value([first.id]).run()
    at.button(key="runs_delete").click().run()
    assert len(store.list_runs()) == 2, "nothing is deleted before the confirmation"
    assert "cannot be undone" in at.warning[0].value
    at.button(key="runs_delete_cancel").click().run()
    assert len(store.list_runs()) == 2 and not at.warning

    assert at.multiselect(key="runs_delete_select").value == [first.id]
    at.button(key="runs_delete").click().run()
    at.button(key="runs_delete_confirm").click().run()
    assert not at.exception
    assert [record.name for record in store.list_runs()] == ["second"]
    assert not store.run_dir(first.id).exists()
    assert list(at.dataframe[0].value["name"]) == ["second"]
