"""The app as a product, in Chromium (issue 23): a reload and a new tab keep the settings, the Runs page compares
one dataset at a time with intervals and a verdict, a backbone sweep's runs show on Train with a Stop for each job,
and a click on a confusion-matrix cell opens its examples. The server is what `make run` starts (personal mode,
loopback); screenshots go to test-artifacts/product-*.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workshop_server import ARTIFACTS, launch_chromium, personal_server, wait_idle
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.synthetic import make_shapes_dataset
from tl_core.runs.store import RunStore
from tl_core.training.runner import run_experiment

pytestmark = pytest.mark.slow
CHART = "[data-testid=stVegaLiteChart]"


def train(store: RunStore, source: Path, name: str, learning_rate: float) -> str:
    config = RunConfig(
        data=DataConfig(source=str(source), val_fraction=0.25, test_fraction=0.25),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(epochs=1, batch_size=16, learning_rate=learning_rate),
        name=name,
    )
    outcome = run_experiment(config, store=store)
    assert outcome.status == "completed"
    return outcome.run_id


def test_a_students_and_an_analysts_day(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    workspace = tmp_path / "workspace"
    datasets = workspace / "datasets"
    textures = make_shapes_dataset(datasets / "textures", num_classes=3, images_per_class=12, image_size=32, seed=4)
    faces = make_shapes_dataset(datasets / "faces", num_classes=3, images_per_class=14, image_size=32)
    store = RunStore(workspace)
    train(store, textures, "textures run", 1e-3)
    train(store, faces, "faces lite", 1e-3)
    train(store, faces, "faces fast", 5e-3)  # the newest run: the Runs page opens on its dataset

    with personal_server(workspace, "product") as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1440, "height": 1100})
        page = context.new_page()
        page.set_default_timeout(90_000)
        expect.set_options(timeout=90_000)

        def shot(name: str) -> None:
            page.mouse.move(5, 1095)
            page.wait_for_timeout(600)
            page.screenshot(path=str(ARTIFACTS / f"product-{name}.png"), full_page=True)

        def go(title: str, on=None) -> None:  # noqa: ANN001
            where = on or page
            where.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
            expect(where.get_by_role("heading", name=title, exact=True).first).to_be_visible()
            wait_idle(where)

        page.goto(url)
        expect(page.get_by_role("heading", name="Data", exact=True)).to_be_visible()

        # A student picks fine-tuning (3 head epochs, 60 fine-tune epochs: long enough to queue behind each other),
        # reloads, and opens a new tab: the choices stay.
        go("Model")
        page.get_by_text("Fine-tune the top layers", exact=False).click()
        wait_idle(page)
        for label, value in (("Epochs (head)", "3"), ("Fine-tune epochs", "60")):
            box = page.get_by_role("spinbutton", name=label)
            box.fill(value)
            box.press("Enter")
            wait_idle(page)
        expect(page.get_by_text("Ready:")).to_contain_text("head 3 + fine-tune 60 epochs")
        wait_idle(page)
        page.reload()
        expect(page.get_by_role("spinbutton", name="Epochs (head)")).to_have_value("3")
        expect(page.get_by_role("spinbutton", name="Fine-tune epochs")).to_have_value("60")
        shot("01-model-after-reload")
        tab = context.new_page()
        tab.goto(url + "/train")
        expect(tab.get_by_text("Dataset textures").first).to_be_visible()
        expect(tab.get_by_text("3 epochs + 60 fine-tune").first).to_be_visible()
        tab.close()

        # The analyst: the Runs page opens on the newest run's dataset, with intervals and a verdict.
        go("Runs")
        expect(page.get_by_role("combobox", name="Dataset")).to_match_aria_snapshot(
            '- combobox "Dataset": faces · 2 run(s)'
        )
        expect(page.get_by_text("95% confidence").first).to_be_visible()
        verdict = page.get_by_text("No real difference").or_(page.get_by_text("The difference is real"))
        expect(verdict.first).to_be_visible()
        shot("02-runs-one-dataset")

        # Start a sweep of two backbones, fine-tuned, on the chosen dataset (textures), then follow it on Train.
        picker = page.get_by_role("combobox", name="Backbones")
        for backbone in ("efficientnet_lite0", "efficientnet_lite1"):
            picker.click()
            picker.press_sequentially(backbone)
            page.get_by_role("option", name=backbone, exact=True).click()
        page.keyboard.press("Escape")  # the choice reaches the app when the list closes
        wait_idle(page)
        modes = page.get_by_role("combobox", name="Modes")
        modes.click()
        modes.press("Backspace")  # not feature extraction (the default)
        modes.press_sequentially("fine-tune")
        page.get_by_role("option", name="fine-tune the top layers", exact=True).click()
        page.keyboard.press("Escape")
        wait_idle(page)
        page.get_by_role("button", name="Start sweep of 2 runs").click()
        expect(page.get_by_text("Started a sweep of 2 runs")).to_be_visible()
        expect(page.get_by_role("heading", name="Sweep", exact=True)).to_be_visible()
        go("Train")
        expect(page.get_by_text("Also in your queue")).to_be_visible()
        expect(page.get_by_role("button", name="Queue training")).to_be_visible()
        shot("03-train-queue")
        queued_row = page.get_by_test_id("stHorizontalBlock").filter(has_text="queued, position 1")
        queued_row.get_by_role("button", name="Stop").click()  # the queued one's own Stop
        expect(page.get_by_text("Also in your queue")).to_be_hidden()
        running_stop = page.get_by_test_id("stMain").get_by_role("button", name="Stop")
        expect(running_stop).to_have_count(1)  # the running one keeps its Stop
        running_stop.click()
        expect(page.get_by_role("button", name="Start training")).to_be_visible(timeout=180_000)
        shot("04-train-stopped")

        # Evaluate: a click on an off-diagonal cell shows that cell's examples.
        go("Evaluate")
        matrix = page.locator(CHART).first
        expect(matrix).to_be_visible()
        matrix.scroll_into_view_if_needed()
        box = matrix.bounding_box()
        assert box is not None
        tooltip = page.locator("#vg-tooltip-element")
        target = None
        for y in range(int(box["y"]) + 6, int(box["y"] + box["height"]) - 6, 18):
            for x in range(int(box["x"]) + 6, int(box["x"] + box["width"]) - 6, 18):
                page.mouse.move(x, y)
                page.wait_for_timeout(60)
                if not tooltip.is_visible():
                    continue
                cells = {
                    row.locator("td.key").inner_text(): row.locator("td.value").inner_text()
                    for row in tooltip.locator("tr").all()
                }
                if cells.get("true") and cells.get("predicted") and cells["true"] != cells["predicted"]:
                    target = (x, y, cells["true"], cells["predicted"])
                    break
            if target:
                break
        assert target, "no off-diagonal cell found under the mouse"
        x, y, true_label, predicted_label = target
        page.mouse.click(x, y)
        wait_idle(page)
        caption = page.get_by_text(f"of {true_label} predicted as {predicted_label}")
        expect(caption.first).to_be_visible()
        shot("05-evaluate-cell")
        errors = page.locator("[data-testid=stException]")
        assert errors.count() == 0, errors.first.inner_text()
        browser.close()
