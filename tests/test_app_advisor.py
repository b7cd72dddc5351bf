"""The Model page's advisor panels: a button queues an advisory job (never measuring in the script thread), the panel
follows it (queue, steps, Stop), shows the result, and a reload shows the last result again."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.jobs.advisory import AdvisoryStore  # noqa: E402
from tl_core.jobs.backend import ADVICE_JOB, CUT_PROBE_JOB  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def plain(markdown: str) -> str:
    """What the user reads: messages are Markdown-escaped before display."""
    return re.sub(r"\\(.)", r"\1", markdown)


def model_page(dataset: Path) -> AppTest:
    """The Model page on `dataset` with the tiny MobileNetV2 (random weights) at 32 px: quick to measure."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["dataset_path"] = str(dataset)
    at.run()
    open_page(at, "model").run()
    at.selectbox(key="model_backbone").set_value("mobilenet_v2_035")
    at.radio(key="model_weights").set_value("none").run()
    at.number_input(key="model_image_size").set_value(32).run()
    assert not at.exception and not at.error
    return at


def run_until(at: AppTest, shown: Callable[[AppTest], bool], what: str, timeout_s: float = 300) -> None:
    """Rerun the page (as the panel's one-second fragment does in a browser) until `shown` holds."""
    deadline = time.monotonic() + timeout_s
    while not shown(at):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
        at.run()
        assert not at.exception


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The app's workspace; the advisor and the probe fail if anything calls them in this (the web server's) process."""
    import tl_core.advisor.advisory_job as advisory_job
    import tl_core.advisor.mode_advice as mode_advice
    import tl_core.advisor.probe as probe

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("The advisor ran in the web server's process: it must run as a job in a worker.")

    for module, name in (
        (mode_advice, "advise"),
        (probe, "probe_cut_depths"),
        (advisory_job, "advise"),
        (advisory_job, "probe_cut_depths"),
        (advisory_job, "execute_advisory_job"),
    ):
        monkeypatch.setattr(module, name, not_here)
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    return tmp_path / "workspace"


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    return make_shapes_dataset(tmp_path / "shapes", num_classes=3, images_per_class=12, image_size=32)


def test_the_advisor_button_queues_a_job_the_panel_follows_and_stop_ends(workspace: Path, dataset: Path) -> None:
    at = model_page(dataset)
    at.toggle(key="model_advise_timing").set_value(False).run()
    at.button(key="advisor_run").click().run()
    assert not at.exception and not at.error
    [record] = AdvisoryStore(workspace).records(ADVICE_JOB)
    assert (
        record.request["options"] == {"measure_throughput": False}
        and record.request["config"]["model"]["image_size"] == 32
    )
    assert RunStore(workspace).list_runs() == []  # a job, not a run
    assert at.button(key="advisor_run").disabled  # one measurement of these settings at a time
    assert any(plain(info.value).startswith("Advisor: ") for info in at.info)  # queued, or the step it is at
    at.button(key="advisor_stop").click().run()
    run_until(at, lambda page: any("stopped before it finished" in info.value for info in page.info), "the stopped job")
    assert AdvisoryStore(workspace).get(record.id).status == "stopped"
    assert not at.button(key="advisor_run").disabled


def test_the_recommendation_arrives_from_the_worker_and_a_reload_shows_it_again(workspace: Path, dataset: Path) -> None:
    at = model_page(dataset)
    at.radio(key="model_mode").set_value("full").run()
    at.toggle(key="model_advise_timing").set_value(False).run()
    at.button(key="advisor_run").click().run()
    run_until(at, lambda page: any("Recommended" in success.value for success in page.success), "the recommendation")
    assert not at.error
    recommendation = next(success.value for success in at.success if "Recommended" in success.value)
    assert "Feature extraction" in recommendation  # 3 classes of a few images: a small set
    reasons = plain("\n".join(markdown.value for markdown in at.markdown))
    assert "training images" in reasons and "Linear probe on frozen features reaches" in reasons
    assert AdvisoryStore(workspace).records(ADVICE_JOB)[0].status == "completed"

    at.button(key="advisor_use_mode").click().run()
    assert at.radio(key="model_mode").value == "feature-extraction"
    assert at.session_state["run_config"].train.mode == "feature-extraction"

    reloaded = model_page(dataset)  # a new session: nothing in session state, the result comes from the workspace
    reloaded.radio(key="model_mode").set_value("full").run()  # the mode is no setting the advice depends on
    reloaded.toggle(key="model_advise_timing").set_value(False).run()
    assert any("Recommended" in success.value for success in reloaded.success)
    reloaded.toggle(key="model_advise_timing").set_value(True).run()  # measured without timing: not this result
    assert not any("Recommended" in success.value for success in reloaded.success)


def test_cut_depths_are_measured_in_a_job_and_the_best_depth_reaches_the_run_config(
    workspace: Path, dataset: Path
) -> None:
    at = model_page(dataset)
    # The model process lists a backbone's blocks in the background; meanwhile the page says so and stays usable.
    if not [box for box in at.selectbox if box.key == "model_cut_layer"]:
        assert any("blocks are being listed" in caption.value for caption in at.caption)
        assert at.session_state["run_config"].model.cut_layer is None, "the last layer until a depth can be chosen"
    run_until(at, lambda page: any(box.key == "model_cut_layer" for box in page.selectbox), "the listed cut depths")
    options = [
        None if option.startswith("last layer") else option for option in at.selectbox(key="model_cut_layer").options
    ]
    assert options[0] is None and "block_2_add" in options
    at.button(key="advisor_cut_depths_run").click().run()
    assert not at.exception and not at.error
    assert [record.kind for record in AdvisoryStore(workspace).records()] == [CUT_PROBE_JOB]
    run_until(
        at, lambda page: any("probe accuracy" in frame.value.columns for frame in page.dataframe), "the probe table"
    )
    table = next(frame.value for frame in at.dataframe if "probe accuracy" in frame.value.columns)
    assert len(table) >= 3 and table["depth"].iloc[-1] == "last layer (no cut)"
    assert list(table["best"]).count("✓") >= 1
    assert any(json.loads(chart.proto.spec)["layer"][0]["mark"]["type"] == "bar" for chart in at.get("vega_lite_chart"))

    best = table[table["best"] == "✓"].iloc[-1]  # on a tie the deepest
    expected = None if best["depth"] == "last layer (no cut)" else best["layer"]
    elsewhere = next(option for option in options[1:] if option != expected)
    at.selectbox(key="model_cut_layer").set_value(elsewhere).run()
    assert at.session_state["run_config"].model.cut_layer == elsewhere
    at.button(key="advisor_use_cut").click().run()
    assert at.session_state["run_config"].model.cut_layer == expected
    assert at.button(key="advisor_use_cut").disabled
    assert (
        "probe accuracy" in at.dataframe[-1].value.columns
    )  # the cut layer is no setting the probe depends on: it stays


@pytest.mark.slow  # times three training graphs of EfficientNet-Lite0 in a worker (~30-60 s on 2 shared cores)
def test_the_advisor_times_each_mode_of_the_default_pretrained_backbone(workspace: Path, dataset: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["dataset_path"] = str(dataset)
    at.run()
    open_page(at, "model").run()
    at.number_input(key="model_image_size").set_value(32).run()
    assert at.radio(key="model_weights").value == "imagenet" and at.toggle(key="model_advise_timing").value
    at.button(key="advisor_run").click().run()
    run_until(
        at, lambda page: any("estimated time" in frame.value.columns for frame in page.dataframe), "the time estimates"
    )
    assert not at.error
    table = next(frame.value for frame in at.dataframe if "estimated time" in frame.value.columns)
    assert list(table["mode"]) == ["feature-extraction", "fine-tune", "full"]
    assert list(table["recommended"]).count("✓") == 1 and (table["images/s"] > 0).all()
