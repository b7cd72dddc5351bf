"""Text datasets in the app: the Data page reads documents, the Model page offers text backbones, a text run
trains through the job manager, and the Evaluate and Predict pages show and classify documents."""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
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
from tl_core.data.text_demo import make_topics_dataset  # noqa: E402
from tl_core.events import FINISHED_STATUSES
from tl_core.layout import EVALUATION_FILE
from tl_core.models.registry import list_backbones  # noqa: E402
from tl_core.results.evaluate import Evaluation  # noqa: E402
from tl_core.runs.store import RunStore
from tl_core.training.runner import run_experiment

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def plain(markdown: str) -> str:
    """What the user reads: messages are Markdown-escaped before display."""
    return re.sub(r"\\(.)", r"\1", markdown)


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TRANSFERLAB_DATASETS_DIR", str(tmp_path / "datasets"))
    make_topics_dataset(tmp_path / "datasets" / "topics", num_classes=3, docs_per_class=12, seed=0)
    return tmp_path / "workspace"


def use_server_dataset(at: AppTest, name: str) -> None:
    at.selectbox(key="data_server_choice").set_value(name)
    at.button(key="data_server_use").click().run()
    assert not at.exception


def text_model_settings(at: AppTest) -> None:
    """A tiny text run: random word vectors, 32 words per document, 3 epochs."""
    open_page(at, "model").run()
    at.radio(key="model_weights").set_value("none")
    at.number_input(key="model_sequence_length").set_value(32)
    at.number_input(key="model_epochs").set_value(3)
    at.run()
    assert not at.exception and not at.error


def run_until(at: AppTest, done: Callable[[], bool], timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            at.run()
            assert not at.exception
            return
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_data_page_detects_text_and_shows_document_beginnings(workspace: Path, tmp_path: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    use_server_dataset(at, "topics")
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Classes"] == "3" and metrics["Documents"] == "36" and "Images" not in metrics
    assert at.session_state["dataset_modalities"][str(tmp_path / "datasets" / "topics")] == "text"
    samples = next(table.value for table in at.dataframe if "beginning" in table.value.columns)
    assert sorted(set(samples["class"])) == ["business", "politics", "sports"]
    assert (samples.groupby("class").size() == 3).all()
    first = sorted((tmp_path / "datasets" / "topics" / "business").glob("*.txt"))[0]
    assert samples.iloc[0]["beginning"].rstrip("…") == " ".join(first.read_text().split())[:200]
    assert not at.get("image"), "documents, not thumbnails"
    assert any("ready to train" in success.value for success in at.success)


def test_a_csv_upload_is_a_text_dataset_and_markup_in_documents_stays_text(workspace: Path, tmp_path: Path) -> None:
    rows = (
        ["text,label"]
        + [f'"<b>great</b> product number {i}, **loved** it",good' for i in range(4)]
        + [f'"awful [click](http://x) item {i}, broke",bad' for i in range(4)]
    )
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.file_uploader(key="data_archive_file").set_value(("reviews.csv", "\n".join(rows).encode(), "text/csv")).run()
    at.button(key="data_archive_save").click().run()
    assert not at.exception
    assert (workspace / "datasets" / "reviews.csv").is_file()
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Documents"] == "8" and metrics["Classes"] == "2"
    samples = next(table.value for table in at.dataframe if "beginning" in table.value.columns)
    assert "<b>great</b> product number 0, **loved** it" in list(samples["beginning"])  # a table cell: shown as typed
    assert not any("<b>" in element.value for element in [*at.markdown, *at.caption, *at.success])


def test_model_page_lists_text_backbones_and_words_per_document(workspace: Path, tmp_path: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    use_server_dataset(at, "topics")
    open_page(at, "model").run()
    assert not at.exception
    assert set(at.dataframe[0].value["backbone"]) == {
        spec.name for spec in list_backbones("recommended", modality="text")
    }
    assert "glove_6b_50d" in set(at.dataframe[0].value["backbone"])
    assert at.selectbox(key="model_backbone").value == "glove_6b_50d"
    assert at.radio(key="model_weights").value == "glove"
    assert at.number_input(key="model_sequence_length").value == 256
    keys = {widget.key for widget in [*at.number_input, *at.toggle, *at.selectbox]}
    assert not {"model_image_size", "model_augment", "model_cut_layer"} & keys, "image-only settings are hidden"
    assert not [button for button in at.button if button.key in ("advisor_run", "advisor_cut_depths_run")]
    assert at.button(key="text_advisor_run")  # the text advisor instead of the image mode advisor
    speeds = dict(zip(at.dataframe[0].value["backbone"], at.dataframe[0].value["speed (2 CPU cores)"], strict=True))
    assert "documents/s" in speeds["all_minilm_l6_v2"] and "documents/s" in speeds["glove_6b_50d"]
    at.number_input(key="model_sequence_length").set_value(64).run()
    config = at.session_state["run_config"]
    assert isinstance(config, RunConfig)
    assert config.data.modality == "text" and config.data.source == str(tmp_path / "datasets" / "topics")
    assert (config.model.backbone, config.model.weights, config.model.sequence_length) == ("glove_6b_50d", "glove", 64)
    assert not config.model.augment and config.model.cut_layer is None
    assert any("64 words per document" in success.value for success in at.success)
    at.toggle(key="model_expert").set_value(True).run()
    assert set(at.dataframe[0].value["backbone"]) == {spec.name for spec in list_backbones(None, modality="text")}


def test_switching_between_image_and_text_data_resets_the_backbone(workspace: Path, tmp_path: Path) -> None:
    make_shapes_dataset(tmp_path / "datasets" / "shapes", num_classes=2, images_per_class=4, image_size=32)
    at = AppTest.from_file(APP, default_timeout=60).run()
    use_server_dataset(at, "shapes")
    open_page(at, "model").run()
    at.selectbox(key="model_backbone").set_value("efficientnet_lite1").run()
    assert at.session_state["run_config"].data.modality == "image"
    open_page(at, "data").run()
    use_server_dataset(at, "topics")
    open_page(at, "model").run()
    assert not at.exception
    assert (at.selectbox(key="model_backbone").value, at.radio(key="model_weights").value) == ("glove_6b_50d", "glove")
    assert at.session_state["run_config"].data.modality == "text"
    open_page(at, "data").run()
    use_server_dataset(at, "shapes")
    open_page(at, "model").run()
    assert (at.selectbox(key="model_backbone").value, at.radio(key="model_weights").value) == (
        "efficientnet_lite0",
        "imagenet",
    )
    assert at.number_input(key="model_image_size").value == 96


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """One real text run in this process: random word vectors, 32 words per document, 3 epochs."""
    root = tmp_path_factory.mktemp("text_run")
    data = make_topics_dataset(root / "topics", num_classes=3, docs_per_class=12, seed=0)
    config = RunConfig(
        data=DataConfig(source=str(data), modality="text"),
        model=ModelConfig(backbone="glove_6b_50d", weights="none", sequence_length=32),
        train=TrainConfig(epochs=3, batch_size=16),
        name="text <b>run</b>",
    )
    outcome = run_experiment(config, store=RunStore(root / "workspace"))
    assert outcome.status == "completed"
    return root / "workspace", outcome.run_id, data


def open_trained_page(trained: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch, page: str) -> AppTest:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(trained[0]))
    monkeypatch.delenv("TRANSFERLAB_DATASETS_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=120).run()
    open_page(at, page).run()
    assert not at.exception
    return at


def bar_data(chart: object) -> pd.DataFrame:
    return pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pandas()


def test_evaluate_shows_documents_with_true_predicted_and_confidence(
    trained: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_trained_page(trained, monkeypatch, "evaluate")
    evaluation = Evaluation.load(RunStore(trained[0]).run_dir(trained[1]) / EVALUATION_FILE)
    assert not at.get("image"), "text runs show documents, not thumbnails"
    assert any("documents the model never trained on" in caption.value for caption in at.caption)
    highest = at.dataframe[-1].value
    assert list(highest.columns) == ["true", "predicted", "confidence", "document"]
    assert len(highest) == min(12, len(evaluation.highest_loss))
    worst = evaluation.highest_loss[0]
    assert (highest.iloc[0]["true"], highest.iloc[0]["predicted"]) == (worst.true_label, worst.predicted_label)
    assert highest.iloc[0]["document"].rstrip("…") == " ".join(Path(worst.item).read_text().split())[:300]
    label = evaluation.class_names[0]
    at.selectbox(key="eval_true").set_value(label)
    at.selectbox(key="eval_pred").set_value(label).run()
    assert not at.exception
    expected = evaluation.examples_in_cell(label, label)
    cell = at.dataframe[1].value if expected else None
    assert cell is None or (len(cell) == min(24, len(expected)) and set(cell["predicted"]) == {label})


def test_predict_classifies_typed_text_and_text_files_and_exports(
    trained: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace, run_id, data = trained
    at = open_trained_page(trained, monkeypatch, "predict")
    assert at.selectbox(key="predict_run").value == run_id
    at.text_area(key="predict_text").set_value("the team won the match and the players scored a goal in the final")
    at.slider(key="predict_top_k").set_value(2).run()
    assert not at.exception and not at.error
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1
    bars = bar_data(charts[0])
    assert len(bars) == 2 and bars["probability"].between(0, 1).all() and bars["probability"].is_monotonic_decreasing
    assert set(bars["label"]) <= {"business", "politics", "sports"}

    document = sorted((data / "politics").glob("*.txt"))[0]
    at.file_uploader(key="predict_text_files").set_value(
        [(document.name, document.read_bytes(), "text/plain"), ("photo.txt", b"\x89PNG\x00\x00binary", "text/plain")]
    ).run()
    assert not at.exception
    assert len(at.get("vega_lite_chart")) == 2
    assert any("photo.txt is not a plain-text file" in plain(error.value) for error in at.error)

    at.multiselect(key="export_formats").set_value(["keras"])
    at.button(key="export_prepare").click().run(timeout=180)
    assert not at.exception
    assert at.get("download_button")[0].proto.label.startswith("Download")
    bundle = next((workspace / "cache" / "exports").rglob("*.zip"))
    with zipfile.ZipFile(io.BytesIO(bundle.read_bytes())) as archive:
        assert {"model.keras", "labels.txt", "MODEL_CARD.md"} <= set(archive.namelist())
        assert "string" in archive.read("MODEL_CARD.md").decode().lower()


@pytest.mark.slow  # a worker process imports TensorFlow and trains (about a minute on 2 cores)
def test_a_text_run_trains_from_the_app_and_draws_its_curves(workspace: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    use_server_dataset(at, "topics")
    text_model_settings(at)
    open_page(at, "train").run()
    at.button(key="train_start").click().run()
    assert not at.exception
    run_id = at.session_state["run_id"]
    store = RunStore(workspace)
    run_until(at, lambda: store.get(run_id).status in FINISHED_STATUSES)
    record = store.get(run_id)
    assert record.status == "completed", record
    assert record.config["data"]["modality"] == "text" and record.config["model"]["sequence_length"] == 32
    assert len(store.epochs(run_id)) == 3
    assert [json.loads(chart.proto.spec)["title"] for chart in at.get("vega_lite_chart")] == ["loss", "accuracy"]
    open_page(at, "evaluate").run()
    assert not at.exception and not at.get("image")
    assert at.dataframe[-1].value.columns[-1] == "document"


def test_the_text_advisor_recommends_a_backbone_from_a_job_and_one_click_takes_it(workspace: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=120).run()
    use_server_dataset(at, "topics")
    open_page(at, "model").run()
    at.number_input(key="model_sequence_length").set_value(32).run()
    at.button(key="text_advisor_run").click().run()
    assert not at.exception and not at.error
    run_until(at, lambda: any("Recommended" in s.value for s in at.run().success), timeout_s=300)
    recommendation = next(success.value for success in at.success if "Recommended" in success.value)
    assert "MiniLM frozen" in plain(recommendation)  # 36 short documents: MiniLM fits the time budget
    reasons = plain("\n".join(markdown.value for markdown in at.markdown))
    assert "GloVe frozen is the fastest" in reasons and "Rates timed on" in reasons
    table = at.dataframe[-1].value
    assert list(table["recipe"]) == ["GloVe frozen", "MiniLM frozen", "MiniLM fine-tuned"]
    assert list(table["recommended"]) == ["", "✓", ""]
    at.button(key="text_advisor_use").click().run()
    assert not at.exception and not at.error
    assert at.selectbox(key="model_backbone").value == "all_minilm_l6_v2"
    config = at.session_state["run_config"]
    assert (config.model.backbone, config.model.weights, config.train.mode) == (
        "all_minilm_l6_v2",
        "pretrained",
        "feature-extraction",
    )
    assert at.button(key="text_advisor_use").disabled  # already taken
