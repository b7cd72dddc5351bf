"""Hostile class and run names: a line break is refused at the scan, label files round-trip every other name,
Predict, the export and the model card agree with Evaluate, and the card shows names as inert text with no server path.

One real run on tiny data, laid out as on a workshop server (`<workspace>/users/alice/...`), with classes
`a\\nred` (refused), U+202E + `blue`, `<script>` and `[x](javascript:alert(1))`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402
from markdown_it import MarkdownIt  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.image_dataset import scan_dataset  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.data.text_dataset import scan_text_dataset  # noqa: E402
from tl_core.errors import DataError  # noqa: E402
from tl_core.layout import EVALUATION_FILE, LABELS_FILE, LABELS_JSON_FILE
from tl_core.results.bundle import export_run  # noqa: E402
from tl_core.results.evaluate import Evaluation  # noqa: E402
from tl_core.results.export import read_labels, write_labels
from tl_core.results.predict import load_run_classifier  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.runner import run_experiment

APP = str(Path(__file__).resolve().parents[1] / "app.py")
BROKEN = "a\nred"
HOSTILE = ("\u202eblue", "<script>", "[x](javascript:alert(1))")
RUN_NAME = "\u202eevil <script>alert(1)</script> [x](javascript:alert(1))"
RAW = ("\u202e", "<script>", "[x](javascript:alert(1))", "javascript:alert(1)", "</script>")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(alice's workspace, the dataset, the run id): one real run, 1 epoch, on the classes that may train."""
    server = tmp_path_factory.mktemp("names") / "workspace"
    alice = server / "users" / "alice"
    data = make_shapes_dataset(alice / "datasets" / "shapes", num_classes=4, images_per_class=10, image_size=32)
    for folder, name in zip(sorted(data.iterdir()), (BROKEN, *HOSTILE), strict=True):
        folder.rename(data / name)
    config = RunConfig(
        data=DataConfig(source=str(data), val_fraction=0.2, test_fraction=0.2),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(epochs=1, batch_size=16),
        name=RUN_NAME,
    )
    outcome = run_experiment(config, store=RunStore(alice))
    assert outcome.status == "completed", outcome.error
    return alice, data, outcome.run_id


def evaluation_of(workspace: Path, run_id: str) -> Evaluation:
    return Evaluation.load(RunStore(workspace).run_dir(run_id) / EVALUATION_FILE)


def test_a_class_name_with_a_line_break_is_refused_and_the_others_train(trained: tuple[Path, Path, str]) -> None:
    workspace, data, run_id = trained
    report = scan_dataset(data)
    assert BROKEN in report.excluded_classes and report.class_names == sorted(HOSTILE)
    [problem] = [p for p in report.errors if p.kind == "class-name"]
    assert "a⟨U+000A⟩red/" in problem.message, "names the folder, with the line break made visible"
    assert "line feed" in problem.message and "Rename the class folder" in problem.message
    assert "\n" not in problem.message
    run_folder = RunStore(workspace).run_dir(run_id)
    assert read_labels(run_folder / LABELS_FILE) == sorted(HOSTILE)
    assert (run_folder / LABELS_FILE).read_text(encoding="utf-8").splitlines() == sorted(HOSTILE), "one line per class"
    assert evaluation_of(workspace, run_id).class_names == sorted(HOSTILE)


def test_a_table_label_with_a_line_break_is_refused_naming_its_row(tmp_path: Path) -> None:
    table = tmp_path / "topics.csv"
    rows = [("sport match goal team", "sport"), ("election vote party", "politics")] * 3 + [
        ("oven recipe flour", BROKEN)
    ] * 3
    table.write_text(
        "text,label\n" + "".join(f'"{text} {i}","{label}"\n' for i, (text, label) in enumerate(rows)), encoding="utf-8"
    )
    report = scan_text_dataset(table)
    assert report.class_names == ["politics", "sport"] and BROKEN in report.excluded_classes
    [problem] = [p for p in report.errors if p.kind == "class-name"]
    assert "topics.csv:row " in problem.message and "a⟨U+000A⟩red" in problem.message


def test_label_files_round_trip_every_name_a_class_may_have(tmp_path: Path) -> None:
    names = [*HOSTILE, "Zoë 🌸", 'quote " and \\ backslash', "  spaced  ", "#1 | pipe", "\u200bzero-width", "猫"]
    path = write_labels(names, tmp_path / LABELS_FILE)
    assert read_labels(path) == names
    assert json.loads((tmp_path / LABELS_JSON_FILE).read_text(encoding="utf-8")) == names
    assert path.read_text(encoding="utf-8").splitlines() == names
    for broken in (BROKEN, "tab\there", "line\u2028separator", "cr\r", ""):
        with pytest.raises(DataError, match="class|Class"):
            write_labels(["ok", broken], tmp_path / "refused" / LABELS_FILE)
    older = tmp_path / "older"
    older.mkdir()
    (older / LABELS_FILE).write_text("cat\ndog\n", encoding="utf-8")
    assert read_labels(older / LABELS_FILE) == ["cat", "dog"], "runs from before labels.json still load"


def test_predict_the_export_and_the_model_card_agree_with_evaluate(
    trained: tuple[Path, Path, str], tmp_path: Path
) -> None:
    workspace, _, run_id = trained
    store = RunStore(workspace)
    classes = evaluation_of(workspace, run_id).class_names
    classifier = load_run_classifier(store, run_id)
    assert classifier.class_names == classes and classifier.model.output_shape[-1] == len(classes)
    bundle = export_run(store, run_id, tmp_path / "bundle", formats=("keras",))
    assert read_labels(bundle.labels_path) == classes and bundle.labels_json_path in bundle.files()
    card = bundle.model_card_path.read_text(encoding="utf-8")
    assert f"softmax over {len(classes)} classes" in card
    table = card.split("|---|---|\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(table) == len(classes)


def card_config(card: str) -> dict:
    return json.loads(card.split("```json\n", 1)[1].split("\n```", 1)[0])


def test_the_model_card_shows_names_as_inert_text_and_no_server_path(
    trained: tuple[Path, Path, str], tmp_path: Path
) -> None:
    workspace, data, run_id = trained
    card = export_run(RunStore(workspace), run_id, tmp_path / "bundle", formats=("keras",)).model_card_path.read_text(
        encoding="utf-8"
    )
    for raw in RAW:
        assert raw not in card, raw
    html = MarkdownIt("commonmark").enable(["table"]).render(card)
    for tag in ("<script", "<a ", "href=", "<img"):
        assert tag not in html, tag
    assert "⟨U+202E⟩" in html and "&lt;script&gt;" in html, "the names are still there to read"
    config = card_config(card)
    assert config["name"] == RUN_NAME and config["data"]["source"] == "shapes", (
        "the JSON holds the same values, the dataset by name"
    )
    server_root = str(workspace.parents[1])
    assert server_root not in card and not re.search(r"(?<![\w.:/])/(tmp|home|srv|root|var)/", card)


@pytest.fixture()
def personal_app(trained: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(trained[0]))
    for variable in ("TRANSFERLAB_MODE", "TRANSFERLAB_CONFIG", "TRANSFERLAB_DATASETS_DIR"):
        monkeypatch.delenv(variable, raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["dataset_path"] = str(trained[1])
    return at.run()


def chart_values(chart: object) -> list[str]:
    frames = [pa.ipc.open_stream(named.data.data).read_all().to_pandas() for named in chart.proto.datasets]
    return [str(value) for frame in frames for column in frame.columns for value in frame[column]]


def shown_strings(at: AppTest) -> list[str]:
    """Every table cell, selectbox option, chart value and text element the page drew."""
    values = [
        str(value) for table in at.dataframe for value in pd.DataFrame(table.value).astype(str).to_numpy().ravel()
    ]
    values += [
        str(value)
        for table in at.table  # problems are shown in full (st.table), indexed by file
        for frame in (pd.DataFrame(table.value).reset_index(),)
        for value in frame.astype(str).to_numpy().ravel()
    ]
    values += [option for box in at.selectbox for option in box.options]
    values += [value for chart in at.get("vega_lite_chart") for value in chart_values(chart)]
    return values + [element.value for element in at.text]


def test_the_data_and_evaluate_pages_show_hostile_names_neutralised(
    personal_app: AppTest, trained: tuple[Path, Path, str]
) -> None:
    at = personal_app
    assert not at.exception
    data_page = shown_strings(at)
    assert not [value for value in data_page if "\u202e" in value or "\n" in value.strip()]
    assert any("⟨U+202E⟩blue" in value for value in data_page) and any("a⟨U+000A⟩red" in value for value in data_page)

    open_page(at, "evaluate").run()
    assert not at.exception
    evaluate_page = shown_strings(at)
    assert not [value for value in evaluate_page if "\u202e" in value]
    assert list(at.dataframe[0].value["class"]) == ["<script>", "[x](javascript:alert(1))", "⟨U+202E⟩blue"]
    assert "⟨U+202E⟩evil" in at.selectbox(key="eval_run").options[0]
    assert "⟨U+202E⟩blue" in at.selectbox(key="eval_true").options
