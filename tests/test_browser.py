"""End to end in a real headless browser: upload a folder, train, watch the live curve, evaluate.

Starts `streamlit run app.py` on a free port with a temporary workspace and drives Debian's
chromium through Playwright. Screenshots of every page go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tl_core.data.synthetic import make_shapes_dataset

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHART = ".vega-embed canvas, .vega-embed svg"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    """A Streamlit server on a free port with its own workspace; its log is kept with the artifacts."""
    port = free_port()
    env = {
        **os.environ,
        "TRANSFERLAB_WORKSPACE": str(tmp_path / "workspace"),
        "TRANSFERLAB_DATASETS_DIR": str(tmp_path / "server-datasets"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "streamlit-server.log", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            assert process.poll() is None, (ARTIFACTS / "streamlit-server.log").read_text()
            assert time.monotonic() < deadline, "the Streamlit server did not start"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_upload_train_watch_and_evaluate(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    dataset = make_shapes_dataset(tmp_path / "upload" / "shapes", num_classes=3, images_per_class=14, image_size=48)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)  # the first visit to a page may import TensorFlow

        def shot(name: str) -> None:
            """The whole page: Streamlit scrolls inside its main block, so the window grows to fit it."""
            page.mouse.move(5, 995)  # no tooltip over the content
            page.wait_for_timeout(800)  # let charts finish their first paint
            height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
            page.set_viewport_size({"width": 1440, "height": min(max(height, 1000), 6000)})
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            page.set_viewport_size({"width": 1440, "height": 1000})

        def go(title: str) -> None:
            page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
            expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible()

        page.goto(server)
        expect(page.get_by_role("heading", name="Data", exact=True)).to_be_visible(timeout=90_000)
        shot("01-data-empty")

        # Data: upload the folder (the browser sends each file with its path below the picked folder).
        page.locator("input[type=file][webkitdirectory]").set_input_files(str(dataset))
        use_folder = page.get_by_role("button", name="Use this folder")
        expect(use_folder).to_be_enabled()
        use_folder.click()
        expect(page.get_by_text("The dataset is ready to train on")).to_be_visible()
        expect(page.locator(CHART).first).to_be_visible()
        shot("02-data-report")

        # Model: the defaults (EfficientNet-Lite0, offline ImageNet weights, small images), 2 epochs.
        go("Model")
        epochs = page.get_by_role("spinbutton", name="Epochs (head)")
        epochs.fill("2")
        epochs.press("Enter")
        expect(page.get_by_text("Ready:")).to_be_visible()
        shot("03-model")

        # Train: the click returns at once; the curve draws while the run is live.
        go("Train")
        started = time.monotonic()
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_test_id("stProgress").first).to_be_visible()
        expect(page.locator(f"[data-testid=stMain] {CHART}").first).to_be_visible(timeout=240_000)
        first_curve_s = time.monotonic() - started
        shot("04-train-live")
        expect(page.get_by_text("Completed in")).to_be_visible(timeout=240_000)
        (ARTIFACTS / "timings.txt").write_text(
            f"start to first curve: {first_curve_s:.1f} s\nstart to completed: {time.monotonic() - started:.1f} s\n"
        )
        # About a minute on an idle laptop CPU; generous here because CI machines are shared.
        assert first_curve_s < 180, f"the first curve took {first_curve_s:.0f} s"
        shot("05-train-done")

        # A reload (a new session) shows the same run.
        page.reload()
        go("Train")
        expect(page.get_by_text("Completed in")).to_be_visible()

        go("Evaluate")
        expect(page.get_by_text("Confusion matrix")).to_be_visible()
        expect(page.locator(CHART).first).to_be_visible()
        shot("06-evaluate")

        go("Runs")
        expect(page.get_by_text("Leaderboard")).to_be_visible()
        shot("07-runs")

        go("Predict & export")
        page.locator("input[type=file]").first.set_input_files(sorted(str(p) for p in dataset.rglob("*.png"))[:2])
        expect(page.locator(f"[data-testid=stMain] {CHART}").first).to_be_visible(timeout=120_000)
        shot("08-predict")
        errors = page.locator("[data-testid=stException]")
        assert errors.count() == 0, errors.first.inner_text()
        browser.close()
