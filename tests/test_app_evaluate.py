"""Evaluate page: metrics, per-class table, confusion heatmap, images of one cell, highest-loss images."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.layout import EVALUATION_FILE
from tl_core.results.evaluate import Evaluation  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.runner import run_experiment

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real run, 1 epoch from random weights: weak enough to make mistakes worth inspecting."""
    root = tmp_path_factory.mktemp("evaluate")
    data = make_shapes_dataset(root / "shapes", num_classes=3, images_per_class=14, image_size=32)
    config = RunConfig(
        data=DataConfig(source=str(data), val_fraction=0.25, test_fraction=0.25),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(epochs=1, batch_size=16),
        name="weak <b>run</b>",
    )
    outcome = run_experiment(config, store=RunStore(root / "workspace"))
    assert outcome.status == "completed"
    return root / "workspace", outcome.run_id


@pytest.fixture()
def app(trained: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(trained[0]))
    at = AppTest.from_file(APP, default_timeout=60).run()
    open_page(at, "evaluate").run()
    assert not at.exception
    return at


def chart_data(chart: object) -> dict[str, pd.DataFrame]:
    """The data frames Streamlit sends beside a chart's spec, by dataset name."""
    return {named.name: pa.ipc.open_stream(named.data.data).read_all().to_pandas() for named in chart.proto.datasets}


def evaluation_of(trained: tuple[Path, str]) -> Evaluation:
    workspace, run_id = trained
    return Evaluation.load(RunStore(workspace).run_dir(run_id) / EVALUATION_FILE)


def test_metrics_and_per_class_table(app: AppTest, trained: tuple[Path, str]) -> None:
    evaluation = evaluation_of(trained)
    assert app.selectbox(key="eval_run").value == trained[1]
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Accuracy"] == f"{100 * evaluation.accuracy:.1f}%"
    table = app.dataframe[0].value
    assert list(table.columns) == ["class", "precision", "recall", "F1", "support"]
    assert table["support"].sum() == evaluation.count


def test_confusion_heatmap_holds_every_count(app: AppTest, trained: tuple[Path, str]) -> None:
    evaluation = evaluation_of(trained)
    chart = app.get("vega_lite_chart")[0]
    spec = json.loads(chart.proto.spec)
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["rect", "text"]
    cells = next(iter(chart_data(chart).values()))
    assert len(cells) == len(evaluation.class_names) ** 2
    assert cells["count"].sum() == evaluation.count


def test_choosing_a_cell_shows_its_images_with_true_and_predicted(app: AppTest, trained: tuple[Path, str]) -> None:
    evaluation = evaluation_of(trained)
    assert evaluation.misclassified, "a 1-epoch random-weight run should make mistakes"
    mistake = evaluation.misclassified[0]
    app.selectbox(key="eval_true").set_value(mistake.true_label)
    app.selectbox(key="eval_pred").set_value(mistake.predicted_label).run()
    assert not app.exception
    expected = evaluation.examples_in_cell(mistake.true_label, mistake.predicted_label)
    cell_images = app.get("image")[0]
    assert len(cell_images.value) == min(len(expected), 24)
    assert all(f"{mistake.predicted_label}" in caption.replace("\\", "") for caption in cell_images.captions)


def test_a_diagonal_cell_shows_the_least_confident_correct_images(app: AppTest, trained: tuple[Path, str]) -> None:
    evaluation = evaluation_of(trained)
    label = next(name for name in evaluation.class_names if evaluation.examples_in_cell(name, name))
    app.selectbox(key="eval_true").set_value(label)
    app.selectbox(key="eval_pred").set_value(label).run()
    assert any("predicted correctly" in caption.value for caption in app.caption)
    cell_images = app.get("image")[0]
    assert len(cell_images.value) == len(evaluation.examples_in_cell(label, label))


def test_highest_loss_examples_are_shown(app: AppTest, trained: tuple[Path, str]) -> None:
    evaluation = evaluation_of(trained)
    highest = app.get("image")[-1]
    assert len(highest.value) == min(12, len(evaluation.highest_loss))


def test_no_runs_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "empty"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    open_page(at, "evaluate").run()
    assert not at.exception
    assert "No evaluated run yet" in at.info[0].value


def fake_evaluated_run(store: RunStore, name: str, true: list[int], predicted: list[int]) -> str:
    """A finished run with a saved evaluation over three classes (no training needed for the page's logic)."""
    import numpy as np

    from tl_core.results.evaluate import evaluate_probabilities

    probabilities = np.eye(3)[predicted] * 0.7 + 0.1
    evaluation = evaluate_probabilities(probabilities, np.array(true), ("cat", "dog", "fox"), top_k=2)
    record = store.create_run(
        config={}, backbone="mobilenet_v2_035", weights="none", mode="feature-extraction", name=name
    )
    store.finish_run(record.id, "completed", metrics={"test_accuracy": evaluation.accuracy})
    evaluation.save(store.run_dir(record.id) / EVALUATION_FILE)
    return record.id


def test_cells_are_clickable_and_a_new_run_shows_its_own_worst_cell(tmp_path: Path, monkeypatch) -> None:
    store = RunStore(tmp_path / "workspace")
    first = fake_evaluated_run(store, "first", [0, 0, 1, 1, 2, 2], [1, 1, 1, 1, 2, 2])  # worst: cat -> dog
    second = fake_evaluated_run(store, "second", [0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 0, 0])  # worst: fox -> cat
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    open_page(at, "evaluate").run()
    at.selectbox(key="eval_run").set_value(first).run()
    assert (at.selectbox(key="eval_true").value, at.selectbox(key="eval_pred").value) == ("cat", "dog")
    assert "Top-2 accuracy" in {metric.label for metric in at.metric}  # k=2 of 3 classes: shown

    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    params = spec.get("params", []) + [param for layer in spec["layer"] for param in layer.get("params", [])]
    assert [(p["name"], p["select"]["type"], p["select"]["fields"]) for p in params] == [
        ("cell", "point", ["true_index", "predicted_index"])
    ]

    at.selectbox(key="eval_true").set_value("dog").run()  # look at another cell of the first run
    at.selectbox(key="eval_run").set_value(second).run()
    assert (at.selectbox(key="eval_true").value, at.selectbox(key="eval_pred").value) == ("fox", "cat")


def test_top_k_is_hidden_when_k_covers_every_class(app: AppTest, trained: tuple[Path, str]) -> None:
    evaluation = evaluation_of(trained)
    assert evaluation.top_k >= len(evaluation.class_names)
    assert not [metric for metric in app.metric if metric.label.startswith("Top-")]


def test_show_heatmaps_draws_overlays_of_the_cell_and_the_highest_losses(
    app: AppTest, trained: tuple[Path, str]
) -> None:
    evaluation = evaluation_of(trained)
    mistake = evaluation.misclassified[0]
    app.selectbox(key="eval_true").set_value(mistake.true_label)
    app.selectbox(key="eval_pred").set_value(mistake.predicted_label)
    plain = [image.value for image in app.run().get("image")]

    app.toggle(key="eval_show_heatmaps").set_value(True).run(timeout=180)

    assert not app.exception and not app.error, [e.value for e in app.exception] + [e.value for e in app.error]
    cell, highest = app.get("image")[0], app.get("image")[-1]
    expected = evaluation.examples_in_cell(mistake.true_label, mistake.predicted_label)
    assert len(cell.value) == min(len(expected), 24) and len(highest.value) == min(12, len(evaluation.highest_loss))
    assert all(mistake.predicted_label in caption.replace("\\", "") for caption in cell.captions)
    assert [image.value for image in app.get("image")] != plain, "overlays, not the plain thumbnails"
    faint = cell.value
    app.slider(key="eval_heatmap_opacity").set_value(1.0).run()
    assert not app.exception and app.get("image")[0].value != faint, "the opacity redraws the overlays"
