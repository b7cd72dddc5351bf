"""Run names holding U+202E (and HTML, links, line breaks) are shown neutralised on the Runs page: in the runs
table, the selectboxes, the overlay chart, the comparison table and the leaderboard (AppTest), and in the page text
Chromium shows on a real workshop server.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
REVERSED = "invoice\u202egpj.exe"  # reads "invoiceexe.jpg" where the control acts
OTHER = "two\nlines\u2066 <b>bold</b> [x](javascript:alert(1))"


def finished_run(store: RunStore, name: str, *, parent: str | None = None) -> str:
    """A completed run recorded straight into the store, with two epochs of curves (no training needed)."""
    record = store.create_run(
        config={"name": name, "data": {"source": f"/srv/data/{name}"}},
        backbone="mobilenet_v2_035",
        weights="none",
        mode="feature-extraction",
        name=name,
        parent_run_id=parent,
        dataset_stats={"source": f"/srv/data/{name}"},
    )
    for epoch in (1, 2):
        store.record_epoch(
            record.id,
            phase="head",
            epoch=epoch,
            phase_epoch=epoch,
            metrics={"val_accuracy": 0.4 * epoch, "val_loss": 1.0 / epoch},
            learning_rate=1e-3,
            seconds=1.0,
            is_best=epoch == 2,
        )
    store.finish_run(
        record.id, "completed", metrics={"epochs_run": 2, "val_accuracy": 0.8, "test_accuracy": 0.7, "elapsed_s": 3.0}
    )
    return record.id


def chart_values(chart: object) -> list[str]:
    frames = [pa.ipc.open_stream(named.data.data).read_all().to_pandas() for named in chart.proto.datasets]
    return [str(value) for frame in frames for column in frame.columns for value in frame[column]]


def test_runs_page_shows_run_names_neutralised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path / "workspace")
    first = finished_run(store, REVERSED)
    finished_run(store, OTHER, parent=first)
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    for variable in ("TRANSFERLAB_MODE", "TRANSFERLAB_CONFIG", "TRANSFERLAB_DATASETS_DIR"):
        monkeypatch.delenv(variable, raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    open_page(at, "runs").run()
    assert not at.exception

    table = at.dataframe[0].value
    assert set(table["name"]) == {
        "invoice⟨U+202E⟩gpj.exe",
        "two⟨U+000A⟩lines⟨U+2066⟩ <b>bold</b> [x](javascript:alert(1))",
    }
    assert "invoice⟨U+202E⟩gpj.exe" in set(table["from run"])
    options = [
        option
        for widget in (
            at.selectbox(key="runs_detail"),
            at.multiselect(key="runs_overlay"),
            at.multiselect(key="runs_delete_select"),
        )
        for option in widget.options
    ]
    assert any(option.startswith("invoice⟨U+202E⟩gpj.exe (") for option in options)
    cells = [str(value) for frame in at.dataframe for value in pd.DataFrame(frame.value).astype(str).to_numpy().ravel()]
    charts = [value for chart in at.get("vega_lite_chart") for value in chart_values(chart)]
    assert "invoice⟨U+202E⟩gpj.exe" in charts, "the overlay chart's legend"
    plain = cells + options + charts
    assert not [text for text in plain if "\u202e" in text or "\u2066" in text or "\n" in text], (
        "no raw control or line break is drawn"
    )
    assert not [element.value for element in at.markdown if "\u202e" in element.value or "\u2066" in element.value]
    assert len(at.dataframe) >= 3, "the runs table, the comparison of the overlaid runs and the leaderboard"


@pytest.mark.slow
def test_a_reversed_run_name_is_neutralised_in_chromium_on_a_workshop_server(workshop_server) -> None:  # noqa: ANN001
    from playwright.sync_api import expect, sync_playwright

    from tests.workshop_server import launch_chromium, sign_in, wait_idle

    store = RunStore(workshop_server.user_root("alice"))
    finished_run(store, REVERSED)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        sign_in(page, workshop_server.url, "alice")
        page.get_by_test_id("stSidebarNav").get_by_text("Runs", exact=True).click()
        expect(page.get_by_role("heading", name="Run details", exact=True)).to_be_visible(timeout=60_000)
        wait_idle(page)
        text = page.locator("body").inner_text()
        browser.close()
    assert "\u202e" not in text
    assert "invoice⟨U+202E⟩gpj.exe" in text, "the name is shown, with the control visible and inert"
    assert "/srv/data" not in text
