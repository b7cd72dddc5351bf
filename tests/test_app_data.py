"""Data page: every way of choosing a dataset, the validation report, and safe saving of uploads."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from ui.uploads import common_top_folder, safe_name, safe_relative_path  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.delenv("TRANSFERLAB_DATASETS_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    return at


def _texts(at: AppTest, kind: str) -> list[str]:
    return [element.value for element in getattr(at, kind)]


def _upload_tuples(root: Path, top: str) -> list[tuple[str, bytes, str]]:
    """What a browser sends for a directory upload: each name is the path below the picked folder's parent."""
    return [
        (f"{top}/{path.relative_to(root).as_posix()}", path.read_bytes(), "image/png")
        for path in sorted(root.rglob("*.png"))
    ]


def test_first_visit_explains_what_to_do(app: AppTest) -> None:
    assert app.title[0].value == "Data"
    assert any("No dataset chosen yet" in text for text in _texts(app, "info"))
    assert not app.get("vega_lite_chart")


def test_demo_dataset_shows_report_chart_thumbnails_and_split(app: AppTest, tmp_path: Path) -> None:
    app.selectbox(key="data_demo_choice").set_value("shapes").run()
    app.slider(key="data_demo_count").set_value(20)
    app.button(key="data_demo_write").click().run()
    assert not app.exception
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Classes"] == "5" and metrics["Images"] == "100" and metrics["Errors"] == "0"
    assert any("ready to train" in text and "warning" not in text for text in _texts(app, "success"))
    chart = app.get("vega_lite_chart")[0].proto.spec
    assert '"bar"' in chart
    assert len(app.get("image")) == 5  # one row of thumbnails per class
    split = app.dataframe[-1].value
    assert list(split.columns) == ["class", "train", "val", "test", "total"]
    assert split.iloc[-1]["total"] == 100 and split.iloc[-1]["train"] > split.iloc[-1]["test"] > 0
    assert (tmp_path / "workspace" / "datasets" / "demo-shapes-20" / "red_circle").is_dir()


def test_sidebar_names_the_current_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    at = AppTest.from_file(APP, default_timeout=60)
    # AppTest keeps the entry script's own elements (the sidebar) only on a session's first run.
    at.session_state["dataset_path"] = str(
        make_shapes_dataset(tmp_path / "team_data*", num_classes=2, images_per_class=4, image_size=32)
    )
    at.run()
    assert not at.exception
    assert [m.value for m in at.sidebar.markdown][:2] == ["**team\\_data\\***", "_none yet_"]


def test_directory_upload_keeps_class_folders_and_refuses_unsafe_names(app: AppTest, tmp_path: Path) -> None:
    source = make_shapes_dataset(tmp_path / "source", num_classes=3, images_per_class=6, image_size=32)
    files = _upload_tuples(source, "my shapes")
    files += [("../escape.png", files[0][1], "image/png"), ("/etc/evil.png", files[0][1], "image/png")]
    app.file_uploader(key="data_folder_files").set_value(files).run()
    app.button(key="data_folder_save").click().run()
    assert not app.exception
    saved = tmp_path / "workspace" / "datasets" / "my shapes"
    assert sorted(p.name for p in saved.iterdir()) == ["blue_triangle", "green_square", "red_circle"]
    assert len(list(saved.rglob("*.png"))) == 18
    assert (
        not (tmp_path / "workspace" / "escape.png").exists()
        and not (tmp_path / "workspace" / "datasets" / "escape.png").exists()
    )
    assert sum("refused for safety" in text for text in _texts(app, "warning")) == 2
    assert {metric.label: metric.value for metric in app.metric}["Classes"] == "3"


def test_archive_upload_is_scanned(app: AppTest, tmp_path: Path) -> None:
    source = make_shapes_dataset(tmp_path / "source", num_classes=2, images_per_class=8, image_size=32)
    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in source.rglob("*.png"):
            bundle.write(path, f"shapes/{path.relative_to(source).as_posix()}")
    app.file_uploader(key="data_archive_file").set_value(("shapes.zip", archive.read_bytes(), "application/zip")).run()
    app.button(key="data_archive_save").click().run()
    assert not app.exception
    assert (tmp_path / "workspace" / "datasets" / "shapes.zip").is_file()
    assert {metric.label: metric.value for metric in app.metric}["Classes"] == "2"


def test_server_folder_from_datasets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TRANSFERLAB_DATASETS_DIR", str(tmp_path / "shared"))
    make_shapes_dataset(tmp_path / "shared" / "team-shapes", num_classes=3, images_per_class=5, image_size=32)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.selectbox(key="data_server_choice").options == ["team-shapes"]
    at.button(key="data_server_use").click().run()
    assert not at.exception
    assert {metric.label: metric.value for metric in at.metric}["Images"] == "15"


def test_problems_are_listed_errors_first_with_file_names(app: AppTest, tmp_path: Path) -> None:
    source = make_shapes_dataset(
        tmp_path / "workspace" / "datasets" / "messy", num_classes=2, images_per_class=8, image_size=32
    )
    (source / "red_circle" / "broken.png").write_bytes(b"not an image at all")
    (source / "green_square" / "empty.jpg").write_bytes(b"")
    shutil.copy(next((source / "red_circle").glob("*.png")), source / "red_circle" / "copy.png")
    app.run()  # the dataset appeared after the first run
    app.button(key="data_server_use").click().run()  # the only server dataset is preselected
    assert not app.exception
    titles = [expander.label for expander in app.expander]
    assert titles, "problems should be listed"
    severities = [title.split(":")[0] for title in titles]
    order = {"error": 0, "warning": 1, "info": 2}
    assert severities == sorted(severities, key=order.get)
    tables = [table.value for table in app.table]  # shown in full: the advice wraps instead of being cut off
    listed = "\n".join(str(table.index.tolist()) for table in tables)
    assert "broken.png" in listed and "empty.jpg" in listed
    advice = [text for table in tables for text in table["what to do"]]
    assert any("broken.png" in text and len(text) > 60 for text in advice)


def test_missing_dataset_shows_a_message_not_a_traceback(app: AppTest, tmp_path: Path) -> None:
    app.session_state["dataset_path"] = str(tmp_path / "gone")
    app.run()
    assert not app.exception
    assert any("does not exist" in text for text in _texts(app, "error"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("roses/1.jpg", "roses/1.jpg"),
        ("a\\b\\c.png", "a/b/c.png"),
        ("./x//y.png", "x/y.png"),
        ("../x.png", None),
        ("a/../../x.png", None),
        ("/etc/passwd", None),
        ("C:/x.png", None),
        ("", None),
    ],
)
def test_safe_relative_path(name: str, expected: str | None) -> None:
    result = safe_relative_path(name)
    assert (str(result) if result is not None else None) == expected


def test_common_top_folder_and_safe_name() -> None:
    paths = [PurePosixPath("flowers/roses/1.jpg"), PurePosixPath("flowers/tulips/2.jpg")]
    assert common_top_folder(paths) == "flowers"
    assert common_top_folder([PurePosixPath("roses/1.jpg")]) is None
    assert safe_name("../../My Data!") == "My Data_"
    assert safe_name("...") == "dataset"


def test_a_class_missing_from_a_split_is_not_called_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TRANSFERLAB_DATASETS_DIR", str(tmp_path / "shared"))
    make_shapes_dataset(tmp_path / "shared" / "lopsided", num_classes=2, images_per_class=[3, 20], image_size=32)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.button(key="data_server_use").click().run()
    assert not at.exception
    assert not any("ready to train" in text for text in _texts(at, "success"))
    [warning] = [text for text in _texts(at, "warning") if "not every class is in every split" in text]
    assert "validation split has no images of" in warning and "at least 3 images" in warning
    split = at.dataframe[-1].value.set_index("class")
    small = split[split["total"] == 3].iloc[0]
    assert (small["train"], small["val"], small["test"]) == (2, 0, 1)


def test_the_page_counts_what_the_next_run_trains_on_after_label_decisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tl_core.data.label_overrides import OVERRIDES_PROBLEM_KIND, LabelDecision, save_decision

    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TRANSFERLAB_DATASETS_DIR", str(tmp_path / "shared"))
    source = make_shapes_dataset(tmp_path / "shared" / "shapes", num_classes=3, images_per_class=8, image_size=32)
    first, second = sorted(path.relative_to(source).as_posix() for path in (source / "red_circle").glob("*.png"))[:2]
    save_decision(tmp_path / "workspace", str(source), first, LabelDecision("exclude"))
    save_decision(tmp_path / "workspace", str(source), second, LabelDecision("relabel", "green_square"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.button(key="data_server_use").click().run()
    assert not at.exception
    assert {metric.label: metric.value for metric in at.metric}["Images"] == "23"  # 24 less the excluded one
    totals = at.dataframe[-1].value.set_index("class")["total"]
    assert (totals["red_circle"], totals["green_square"], totals["all classes"]) == (6, 9, 23)
    # the Problems list says the decisions were applied, as the run's log will
    assert any(OVERRIDES_PROBLEM_KIND in expander.label for expander in at.expander)
