"""Predict & export page: top-k bars for uploaded images, ImageNet as-is, and the export download."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.errors import BackboneError  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.runner import run_experiment  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    root = tmp_path_factory.mktemp("predict")
    data = make_shapes_dataset(root / "shapes", num_classes=3, images_per_class=10, image_size=32)
    config = RunConfig(
        data=DataConfig(source=str(data)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(epochs=1, batch_size=16),
        name="predictor",
    )
    outcome = run_experiment(config, store=RunStore(root / "workspace"))
    assert outcome.status == "completed"
    return root / "workspace", outcome.run_id, data


@pytest.fixture()
def app(trained: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(trained[0]))
    at = AppTest.from_file(APP, default_timeout=120).run()
    open_page(at, "predict").run()
    assert not at.exception
    return at


def chart_data(chart: object) -> dict[str, pd.DataFrame]:
    """The data frames Streamlit sends beside a chart's spec, by dataset name."""
    return {named.name: pa.ipc.open_stream(named.data.data).read_all().to_pandas() for named in chart.proto.datasets}


def upload(at: AppTest, data: Path, count: int) -> list[Path]:
    paths = sorted(data.rglob("*.png"))[:count]
    at.file_uploader(key="predict_files").set_value([(path.name, path.read_bytes(), "image/png") for path in paths])
    return paths


def test_uploaded_images_get_top_k_bars(app: AppTest, trained: tuple[Path, str, Path]) -> None:
    upload(app, trained[2], 2)
    app.slider(key="predict_top_k").set_value(2).run()
    assert not app.exception
    assert app.selectbox(key="predict_run").value == trained[1]
    charts = app.get("vega_lite_chart")
    assert len(charts) == 2
    bars = next(iter(chart_data(charts[0]).values()))
    assert len(bars) == 2 and bars["probability"].between(0, 1).all()
    assert bars["probability"].is_monotonic_decreasing
    assert len(app.get("image")) == 4  # each image and its heatmap


def test_a_file_that_is_not_an_image_gets_a_message(app: AppTest) -> None:
    app.file_uploader(key="predict_files").set_value([("fake.png", b"definitely not a png", "image/png")]).run()
    assert not app.exception
    assert "fake" in app.error[0].value or "image" in app.error[0].value


def test_export_bundle_downloads_as_a_zip(app: AppTest, trained: tuple[Path, str, Path]) -> None:
    app.multiselect(key="export_formats").set_value(["keras"])
    app.button(key="export_prepare").click().run()
    assert not app.exception
    download = app.get("download_button")[0]
    assert download.proto.label.startswith("Download")
    zips = list((trained[0] / "cache" / "exports").rglob("*.zip"))
    assert len(zips) == 1
    names = zipfile.ZipFile(io.BytesIO(zips[0].read_bytes())).namelist()
    assert {"model.keras", "labels.txt", "MODEL_CARD.md"} <= set(names)


def test_imagenet_as_is(app: AppTest, trained: tuple[Path, str, Path]) -> None:
    upload(app, trained[2], 1)
    app.run()
    app.selectbox(key="predict_pretrained_backbone").set_value("efficientnet_lite0")
    app.button(key="predict_pretrained_run").click().run(timeout=300)
    assert not app.exception
    charts = app.get("vega_lite_chart")
    assert len(charts) == 2  # the trained run's bars and the ImageNet bars for the one image
    assert len(next(iter(chart_data(charts[1]).values()))) == 3


def test_each_image_gets_a_heatmap_with_an_opacity_and_a_class_to_explain(
    app: AppTest, trained: tuple[Path, str, Path]
) -> None:
    upload(app, trained[2], 2)
    app.run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    overlays = [image for image in app.get("image") if image.proto.imgs[0].caption == "Heatmap"]
    assert len(overlays) == 2
    assert app.slider(key="predict_heatmap_opacity").value == pytest.approx(0.45)
    classes = app.selectbox(key="predict_heatmap_class").options
    assert classes[0] == "The predicted class" and len(classes) == 4

    first = overlays[0].proto.imgs[0].url
    app.selectbox(key="predict_heatmap_class").set_value(app.selectbox(key="predict_heatmap_class").options[1])
    app.slider(key="predict_heatmap_opacity").set_value(1.0).run()
    assert not app.exception and not app.error
    redrawn = [image for image in app.get("image") if image.proto.imgs[0].caption == "Heatmap"]
    assert len(redrawn) == 2 and redrawn[0].proto.imgs[0].url != first

    app.toggle(key="predict_show_heatmaps").set_value(False).run()
    assert not any(image.proto.imgs[0].caption == "Heatmap" for image in app.get("image"))


def test_a_run_without_a_spatial_map_says_so_in_an_info_line(
    app: AppTest, trained: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ui.explanations

    def no_spatial_map(*args: object) -> None:
        raise BackboneError(f"Grad-CAM needs a spatial feature map {args[1]!r}")

    monkeypatch.setattr(ui.explanations, "explain_files", no_spatial_map)
    upload(app, trained[2], 1)
    app.run()
    assert not app.exception and not app.error
    assert any("spatial feature map" in info.value for info in app.info)
    assert len(app.get("vega_lite_chart")) == 1, "the prediction itself is still shown"
