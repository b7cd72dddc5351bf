"""Workshop security, issue 24 item 10: one file that cannot be read spoils nothing else in a Predict batch.

An image with more pixels than TransferLab decodes (the decompression-bomb guard), a damaged file or one
that is not an image used to fail the whole batch with a message that named a server path and a setting
(`max_pixels`) students cannot change. Now the other files are predicted and the bad one is named (its
name only) with what its owner can do, in the engine, the CLI, the page and a real browser.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.cli.main import main  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.images import DEFAULT_MAX_PIXELS  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.errors import DataError  # noqa: E402
from tl_core.results.predict import load_run_classifier, predict_each_file, predict_files  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.runner import run_experiment  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SERVER_SETTINGS = ("max_pixels", "TRANSFERLAB_", "settings")


def oversized_png(path: Path) -> Path:
    """A PNG of 9000x8000 = 72 megapixels (over the 64-megapixel limit) that is a few KB on disk: one bit per pixel, all black."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("1", (9000, 8000)).save(path)
    assert 9000 * 8000 > DEFAULT_MAX_PIXELS
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    root = tmp_path_factory.mktemp("predict-batch")
    data = make_shapes_dataset(root / "shapes", num_classes=3, images_per_class=10, image_size=32)
    config = RunConfig(
        data=DataConfig(source=str(data)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(epochs=1, batch_size=16),
        name="batch predictor",
    )
    outcome = run_experiment(config, store=RunStore(root / "workspace"))
    assert outcome.status == "completed"
    return root / "workspace", outcome.run_id, data


@pytest.fixture()
def batch(trained: tuple[Path, str, Path], tmp_path: Path) -> dict[str, Path]:
    """Two good images, one with too many pixels, one that is not an image, one cut off halfway."""
    good = sorted(trained[2].rglob("*.png"))[:2]
    bad = tmp_path / "uploads"
    not_an_image = bad / "notes.png"
    oversized_png(bad / "huge.png")
    not_an_image.write_bytes(b"these are my notes, not a picture")
    truncated = bad / "cut.png"
    truncated.write_bytes(good[0].read_bytes()[:200])
    return {"good-1": good[0], "huge": bad / "huge.png", "good-2": good[1], "notes": not_an_image, "cut": truncated}


def test_a_batch_with_an_oversized_image_predicts_the_others(
    trained: tuple[Path, str, Path], batch: dict[str, Path]
) -> None:
    classifier = load_run_classifier(RunStore(trained[0]), trained[1])
    paths = list(batch.values())

    results = predict_each_file(classifier, paths, top_k=2)

    assert [result.path for result in results] == paths, "one result per file, in order"
    by_name = dict(zip(batch, results))
    alone = predict_files(classifier, [batch["good-1"], batch["good-2"]], top_k=2)
    assert [by_name["good-1"].predictions, by_name["good-2"].predictions] == alone, (
        "the good files are predicted as if alone"
    )
    assert all(by_name[name].problem is None and len(by_name[name].predictions) == 2 for name in ("good-1", "good-2"))
    for name in ("huge", "notes", "cut"):
        assert by_name[name].predictions == [] and by_name[name].problem, name
        assert str(batch[name].parent) not in by_name[name].problem, "the advice never names a path"
        assert not any(word in by_name[name].problem for word in SERVER_SETTINGS), by_name[name].problem
    assert "more than 64 megapixels" in by_name["huge"].problem and "smaller" in by_name["huge"].problem
    assert "not an image" in by_name["notes"].problem
    assert "ends early" in by_name["cut"].problem


def test_the_pixel_limit_can_be_lowered_and_is_named_in_the_advice(
    trained: tuple[Path, str, Path], batch: dict[str, Path]
) -> None:
    classifier = load_run_classifier(RunStore(trained[0]), trained[1])
    small_limit = predict_each_file(classifier, [batch["good-1"]], max_pixels=32 * 32 - 1)
    assert small_limit[0].predictions == [] and "more than 1,023 pixels" in small_limit[0].problem


def test_predict_files_stays_all_or_nothing_and_names_the_file(
    trained: tuple[Path, str, Path], batch: dict[str, Path]
) -> None:
    classifier = load_run_classifier(RunStore(trained[0]), trained[1])
    with pytest.raises(DataError, match="huge.png: it has more than 64 megapixels"):
        predict_files(classifier, [batch["good-1"], batch["huge"]])


def test_the_cli_prints_the_others_and_a_line_per_bad_file(
    trained: tuple[Path, str, Path], batch: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    workspace, run_id, _ = trained
    files = [batch["good-1"], batch["huge"], batch["good-2"]]

    code = main(["predict", run_id, *map(str, files), "--top", "2", "--workspace", str(workspace), "--json"])

    captured = capsys.readouterr()
    rows = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 2, "a refused file still makes the exit status 2, as before"
    assert len(rows) == 3 and rows[1] == [], "the bad file keeps its place, with no labels"
    assert all(len(row) == 2 and set(row[0]) == {"label", "probability"} for row in (rows[0], rows[2]))
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: {batch['huge']}: it has more than 64 megapixels")


def test_the_predict_page_shows_the_others_and_names_the_bad_file(
    trained: tuple[Path, str, Path], batch: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(trained[0]))
    at = AppTest.from_file(APP, default_timeout=120).run()
    open_page(at, "predict").run()
    files = [batch["good-1"], batch["huge"], batch["good-2"], batch["notes"]]

    at.file_uploader(key="predict_files").set_value(
        [(path.name, path.read_bytes(), "image/png") for path in files]
    ).run()

    assert not at.exception
    assert len(at.get("vega_lite_chart")) == 2, "bars for both good images"
    messages = [error.value.replace("\\", "") for error in at.error]  # without the Markdown escapes
    assert len(messages) == 2, messages
    assert messages[0].startswith("huge.png: it has more than 64 megapixels") and "JPEG or PNG" in messages[0]
    assert messages[1].startswith("notes.png: it is not an image")
    assert not any(str(trained[0]) in message or word in message for message in messages for word in SERVER_SETTINGS)


@pytest.mark.slow
def test_alice_predicts_a_batch_with_an_oversized_image_in_the_browser(workshop_server, tmp_path: Path) -> None:  # noqa: ANN001
    """In Chromium on a real workshop server: two good images and one over the pixel limit, on alice's own run."""
    from playwright.sync_api import expect, sync_playwright

    from tests.workshop_server import ARTIFACTS, launch_chromium, sign_in, wait_idle

    data = make_shapes_dataset(tmp_path / "shapes", num_classes=3, images_per_class=8, image_size=32)
    trained = workshop_server.train_tiny_run("alice", data)
    assert trained.returncode == 0, trained.stderr[-2000:]
    uploads = [*sorted(data.rglob("*.png"))[:2], oversized_png(tmp_path / "upload" / "huge.png")]

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1440, "height": 1400})
        page.set_default_timeout(120_000)
        sign_in(page, workshop_server.url, "alice")
        page.get_by_test_id("stSidebarNav").get_by_text("Predict & export", exact=True).click()
        wait_idle(page)
        page.locator("input[type=file]").first.set_input_files([str(path) for path in uploads])
        main_block = page.locator("[data-testid=stMain]")
        expect(main_block.locator(".vega-embed")).to_have_count(2, timeout=120_000)
        wait_idle(page)
        alert = main_block.get_by_test_id("stAlertContentError")
        expect(alert).to_have_count(1)
        expect(alert).to_contain_text("huge.png: it has more than 64 megapixels")
        page.screenshot(path=str(ARTIFACTS / "security-predict-oversized.png"), full_page=True)
        text = main_block.inner_text()
        assert str(workshop_server.workspace) not in text and "max_pixels" not in text
        assert page.locator("[data-testid=stException]").count() == 0
        browser.close()
