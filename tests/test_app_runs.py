"""Runs page: the table, overlaid curves and what differs between those runs, the leaderboard, a backbone sweep
started and followed live, and deleting with confirmation."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.events import FINISHED_STATUSES
from tl_core.layout import SPLIT_FILE, SWEEP_RECORD_FILE, SWEEPS_FOLDER
from tl_core.runs.store import RunStore
from tl_core.server.limits import RunLimits
from tl_core.training.runner import run_experiment  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def tiny(source: Path, name: str, epochs: int = 1, **train: object) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(epochs=epochs, batch_size=16, **train),
        name=name,
    )


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Two real finished runs on one small dataset."""
    data = make_shapes_dataset(tmp_path / "shapes", num_classes=3, images_per_class=10, image_size=32)
    store = RunStore(tmp_path / "workspace")
    for name, epochs in (("first", 1), ("second", 2)):
        assert run_experiment(tiny(data, name, epochs), store=store).status == "completed"
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    return tmp_path / "workspace", data


def chart_data(chart: object) -> dict[str, pd.DataFrame]:
    """The data frames Streamlit sends beside a chart's spec, by dataset name."""
    return {named.name: pa.ipc.open_stream(named.data.data).read_all().to_pandas() for named in chart.proto.datasets}


def leaderboard(at: AppTest) -> pd.DataFrame:
    return next(frame.value for frame in at.dataframe if "95% interval" in frame.value.columns)


def open_runs(dataset: Path | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if dataset is not None:
        at.session_state["dataset_path"] = str(dataset)
    at.run()
    open_page(at, "runs").run()
    assert not at.exception
    return at


def test_table_overlay_and_leaderboard(workspace: tuple[Path, Path]) -> None:
    store = RunStore(workspace[0])
    at = open_runs()
    table = at.dataframe[0].value
    assert list(table["name"]) == ["second", "first"]  # newest first
    assert {"backbone", "mode", "data", "epochs", "val accuracy", "test accuracy", "time (s)", "status"} <= set(
        table.columns
    )
    assert list(table["data"]) == ["shapes", "shapes"] and list(table["epochs"]) == [2, 1]
    assert list(table["transfer"]) == ["", ""] and list(table["from run"]) == ["", ""]

    assert len(at.multiselect(key="runs_overlay").value) == 2
    at.selectbox(key="runs_metric").set_value("val_loss").run()
    overlay = next(
        chart for chart in at.get("vega_lite_chart") if json.loads(chart.proto.spec).get("title") == "val_loss"
    )
    rows = next(iter(chart_data(overlay).values()))
    assert set(rows["run_name"]) == {"first", "second"} and set(rows["metric"]) == {"val_loss"}

    differs = at.dataframe[1].value.set_index("setting")  # what differs: settings down the side, a column per run
    labels = dict(zip(at.multiselect(key="runs_overlay").options, at.multiselect(key="runs_overlay").options))
    by_name = {label.split(" (")[0]: label for label in labels}
    assert list(differs.columns) == [by_name["second"], by_name["first"]]
    assert list(differs.loc["train.epochs"]) == ["2", "1"]
    assert "train.batch_size" not in differs.index and "mode" not in differs.index and "name" not in differs.index
    for run_name in ("second", "first"):
        record = next(r for r in store.list_runs() if r.name == run_name)
        assert differs.loc["test accuracy", by_name[run_name]] == f"{100 * record.metrics['test_accuracy']:.1f}%"
    assert "None" not in differs.to_numpy().ravel()

    board = at.dataframe[2].value
    expected = sorted(store.list_runs(), key=lambda r: (-r.metrics["test_accuracy"], r.metrics["elapsed_s"]))
    assert list(board["id"]) == [record.id for record in expected]
    assert list(board["rank"]) == [1, 2]
    evaluation = json.loads((store.run_dir(expected[0].id) / "evaluation.json").read_text())
    assert list(board["test examples"]) == [evaluation["count"]] * 2
    low, high = board["95% interval"][0].rstrip("%").split("-")
    assert float(low) <= board["test accuracy"][0] <= float(high)
    verdicts = [element.value for element in (*at.info, *at.success)]
    assert any(v.startswith(("No real difference", "The difference is real")) for v in verdicts), verdicts


def test_comparisons_stay_within_one_dataset(workspace: tuple[Path, Path], tmp_path: Path) -> None:
    workspace_dir, data = workspace
    other = make_shapes_dataset(tmp_path / "textures", num_classes=2, images_per_class=10, image_size=32, seed=3)
    store = RunStore(workspace_dir)
    assert run_experiment(tiny(other, "on textures"), store=store).status == "completed"
    at = open_runs()
    board = leaderboard(at)  # the dataset of the run in view (the newest): textures only
    assert list(board["name"]) == ["on textures"] and list(board["data"]) == ["textures"]
    assert set(at.multiselect(key="runs_overlay").value) == {store.list_runs()[0].id}

    shapes = next(record.dataset_fingerprint for record in store.list_runs() if record.name == "first")
    at.selectbox(key="runs_dataset").set_value(shapes).run()
    board = leaderboard(at)
    assert sorted(board["name"]) == ["first", "second"] and list(board["rank"]) == [1, 2]
    assert {store.get(run_id).name for run_id in at.multiselect(key="runs_overlay").value} == {"first", "second"}

    at.selectbox(key="runs_dataset").set_value("*").run()  # all datasets: ranked within each one
    board = leaderboard(at)
    assert sorted(zip(board["data"], board["rank"])) == [("shapes", 1), ("shapes", 2), ("textures", 1)]
    assert not [element for element in (*at.info, *at.success) if "difference" in element.value]


def sweep_board(at: AppTest) -> pd.DataFrame:
    return next(frame.value for frame in at.dataframe if "node" in frame.value.columns)


def sweep_settings(at: AppTest, weights: str = "none") -> None:
    """What the Model page would have set: tiny, fast runs."""
    at.session_state["model_config"] = ModelConfig(backbone="mobilenet_v2_035", weights=weights, image_size=32)
    at.session_state["train_config"] = TrainConfig(epochs=1, batch_size=16)


def test_compare_backbones_starts_a_sweep_and_follows_it_live(workspace: tuple[Path, Path]) -> None:
    workspace_dir, data = workspace
    at = open_runs(data)
    sweep_settings(at)
    at.multiselect(key="compare_backbones").set_value(["mobilenet_v2_035", "mobilenet_v3_small"]).run()
    assert at.multiselect(key="compare_modes").value == ["feature-extraction"]
    assert at.button(key="compare_submit").label == "Start sweep of 2 runs"
    at.button(key="compare_submit").click().run()
    assert not at.exception
    assert any("Started a sweep of 2 runs" in success.value for success in at.success)
    sweep_id = at.session_state["sweep_id"]
    folder = workspace_dir / SWEEPS_FOLDER / sweep_id
    started = json.loads((folder / SWEEP_RECORD_FILE).read_text())
    run_ids = started["runs"]
    assert len(run_ids) == 2 and started["split"]["test"], "the split is recorded once, before the runs train"
    board = sweep_board(at)
    assert set(board["id"]) == set(run_ids) and set(board["status"]) <= {"queued", "running", "completed"}

    store = RunStore(workspace_dir)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(store.get(run_id).status not in FINISHED_STATUSES for run_id in run_ids):
        time.sleep(0.5)
    assert [store.get(run_id).status for run_id in run_ids] == ["completed", "completed"]
    at.run()  # what the page's timer does every 2 seconds
    assert not at.exception
    board = sweep_board(at)
    assert sorted(board["backbone"]) == ["mobilenet_v2_035", "mobilenet_v3_small"]
    assert list(board["status"]) == ["completed", "completed"] and list(board["rank"]) == [1, 2]
    assert list(board["epochs"]) == [1, 1]
    for _, row in board.iterrows():
        low, high = (float(bound) for bound in row["95% interval"].rstrip("%").split("-"))
        assert low <= row["test accuracy"] <= high
        assert row["node"] and row["time (s)"] > 0
    assert list(board["test accuracy"]) == sorted(board["test accuracy"], reverse=True)
    verdicts = [element.value for element in (*at.info, *at.success)]
    assert any(v.startswith(("No real difference", "The difference is real")) for v in verdicts), verdicts

    # One split for both runs, the one the sweep recorded; the view wrote the final result when they had ended.
    finished = json.loads((folder / SWEEP_RECORD_FILE).read_text())
    assert finished["best_run_id"] == board["id"][0] and finished["problems"] == []
    records = [store.get(run_id) for run_id in run_ids]
    assert {record.dataset_fingerprint for record in records} == {finished["dataset_fingerprint"]}
    for record in records:
        split = json.loads((store.run_dir(record.id) / SPLIT_FILE).read_text())
        assert {name: sorted(paths) for name, paths in split.items()} == finished["split"]
        assert record.config["model"]["weights"] == "none" and record.config["model"]["image_size"] == 32
    table = at.dataframe[0].value  # the runs table groups the sweep's runs
    assert set(table.loc[table["sweep"] == sweep_id, "id"]) == set(run_ids)
    assert set(table.loc[table["sweep"] == "", "name"]) == {"first", "second"}

    # A later sweep (here: a copy of its record) does not take the place of the one this user is following.
    later = workspace_dir / SWEEPS_FOLDER / "29991231-000000-beef"
    later.mkdir()
    (later / SWEEP_RECORD_FILE).write_text(json.dumps({**finished, "sweep_id": later.name}))
    reloaded = open_runs()
    assert reloaded.selectbox(key="runs_sweep").value == sweep_id
    assert reloaded.selectbox(key="runs_sweep").options[0].endswith("(beef)"), "newest first"


def test_a_sweep_with_bad_entries_is_refused_naming_each(workspace: tuple[Path, Path]) -> None:
    workspace_dir, data = workspace
    at = open_runs(data)
    sweep_settings(at, weights="imagenet")
    picked = ["efficientnet_lite0", "mobilenet_v2_035", "mobilenet_v3_small"]  # the last two: no offline weights
    at.multiselect(key="compare_backbones").set_value(picked).run()
    at.multiselect(key="compare_modes").set_value(["feature-extraction", "fine-tune"]).run()
    assert at.button(key="compare_submit").label == "Start sweep of 6 runs"
    at.button(key="compare_submit").click().run()
    assert not at.exception
    refusal = plain(at.error[0].value)
    assert refusal.startswith("Nothing was started")
    assert "MobileNetV2 (alpha 0.35): its pretrained weights are not installed" in refusal
    assert "MobileNetV3Small: its pretrained weights are not installed" in refusal
    assert "EfficientNet-Lite0" not in refusal and "--" not in refusal
    assert len(RunStore(workspace_dir).list_runs()) == 2 and not (workspace_dir / SWEEPS_FOLDER).exists()


def test_plan_problems_are_said_in_the_apps_words() -> None:
    from tl_core.jobs.sweep import SweepPlan
    from ui.sweep_start import plan_problems

    plan = SweepPlan("data", backbones=("glove_6b_50d", "mobilenet_v9", "mobilenet_v2_035"), modes=("sideways",))
    assert plan_problems(plan, "image", {"mobilenet_v2_035": False}) == [
        "GloVe 6B (50-d word vectors): cannot train image (it is a backbone for text)",
        "mobilenet_v9: unknown backbone",
        "sideways: unknown training mode",
        "MobileNetV2 (alpha 0.35): its pretrained weights are not installed on this server (pick another "
        "backbone, or random weights on the Model page)",
    ]
    assert plan_problems(SweepPlan("data", ("mobilenet_v2_035",), weights="none"), "image", {}) == []


@pytest.mark.parametrize(
    ("queue", "refusal"),
    [
        ({"per_user_cap": 1}, ["do not fit your share of the queue: you have 0 queued or training and may have 1"]),
        (
            {"limits": RunLimits(max_image_size=24)},
            ["mobilenet_v2_035 (feature-extraction): Image size 32", "mobilenet_v3_small (feature-extraction): Image"],
        ),
    ],
)
def test_a_sweep_over_the_users_queue_share_or_the_limits_queues_nothing(
    workspace: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, managers, queue: dict, refusal: list[str]
) -> None:
    import pages.runs
    import ui.state
    from tests.job_helpers import FakeRun
    from tl_core.server.workspaces import LOCAL_USER, Workspaces

    workspace_dir, data = workspace
    store = RunStore(workspace_dir)
    manager = managers(store, run=FakeRun(), **queue)
    jobs = ui.state.UserJobs(manager, store, LOCAL_USER, Workspaces(workspace_dir, single_user=True))
    monkeypatch.setattr(pages.runs, "get_manager", lambda: jobs)
    at = open_runs(data)
    sweep_settings(at)
    at.multiselect(key="compare_backbones").set_value(["mobilenet_v2_035", "mobilenet_v3_small"]).run()
    at.button(key="compare_submit").click().run()
    assert not at.exception
    shown = plain(at.error[0].value)
    assert all(part in shown for part in refusal), shown
    assert len(store.list_runs()) == 2 and not manager.active_run_ids()
    assert not (workspace_dir / SWEEPS_FOLDER).exists()


def test_delete_asks_for_confirmation(workspace: tuple[Path, Path]) -> None:
    store = RunStore(workspace[0])
    first = next(record for record in store.list_runs() if record.name == "first")
    at = open_runs()
    at.multiselect(key="runs_delete_select").set_value([first.id]).run()
    at.button(key="runs_delete").click().run()
    assert len(store.list_runs()) == 2, "nothing is deleted before the confirmation"
    assert "cannot be undone" in at.warning[0].value
    at.button(key="runs_delete_cancel").click().run()
    assert len(store.list_runs()) == 2 and not at.warning

    assert at.multiselect(key="runs_delete_select").value == [first.id]
    at.button(key="runs_delete").click().run()
    at.button(key="runs_delete_confirm").click().run()
    assert not at.exception
    assert [record.name for record in store.list_runs()] == ["second"]
    assert not store.run_dir(first.id).exists()
    assert list(at.dataframe[0].value["name"]) == ["second"]


def plain(markdown: str) -> str:
    """What the user reads: messages are Markdown-escaped before display."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("**", "")


def test_negative_transfer_is_flagged_with_its_margin_and_advice(workspace: tuple[Path, Path]) -> None:
    store = RunStore(workspace[0])
    first, second = (next(r for r in store.list_runs() if r.name == name) for name in ("first", "second"))
    # What `--compare-scratch` writes: "first" plays the from-scratch baseline of "second".
    pretrained = second.metrics["evaluation_accuracy"]
    store.update_metrics(
        second.id,
        {
            "scratch_run_id": first.id,
            "scratch_test_accuracy": first.metrics["test_accuracy"],
            "negative_transfer": True,
            "negative_transfer_margin": 0.125,
        },
    )
    at = open_runs()
    table = at.dataframe[0].value
    assert table.loc[table["name"] == "second", "transfer"].item() == "⚠ negative (-12.5 pts)"
    assert table.loc[table["name"] == "first", "transfer"].item() == ""

    at.selectbox(key="runs_detail").set_value(second.id).run()
    assert not at.exception
    flag = plain(at.error[0].value)
    assert "Negative transfer" in flag and "12.5 percentage points" in flag
    assert (
        f"pretrained {100 * pretrained:.1f}%" in flag
        and f"from scratch {100 * first.metrics['evaluation_accuracy']:.1f}%" in flag
    )
    assert first.id in flag and "first" in flag
    assert "another backbone" in flag and "earlier cut layer" in flag and "fine-tuning deeper" in flag

    store.update_metrics(second.id, {"negative_transfer": False, "negative_transfer_margin": -0.2})
    at.run()
    assert not at.error
    assert any("Pretraining helps" in plain(s.value) and "20.0 percentage points" in plain(s.value) for s in at.success)
    assert at.dataframe[0].value.loc[lambda t: t["name"] == "second", "transfer"].item() == "✓ helps (+20.0 pts)"


def test_lineage_is_shown_both_ways_and_a_backbone_starts_a_new_run(workspace: tuple[Path, Path]) -> None:
    workspace_dir, data = workspace
    store = RunStore(workspace_dir)
    frozen = next(r for r in store.list_runs() if r.name == "first")  # feature extraction: its backbone is unchanged
    tuned = run_experiment(tiny(data, "first tuned", mode="fine-tune", fine_tune_epochs=1), store=store)
    first = store.get(tuned.run_id)
    config = tiny(data, "child")
    child = run_experiment(
        config.replace(model=config.model.__class__(backbone="mobilenet_v2_035", weights=f"run:{first.id}")),
        store=store,
    )
    assert child.status == "completed" and store.get(child.run_id).parent_run_id == first.id

    at = open_runs(data)
    at.selectbox(key="runs_detail").set_value(frozen.id).run()
    assert not [button for button in at.button if button.key == "runs_start_from"], "nothing trained its backbone"
    table = at.dataframe[0].value
    assert table.loc[table["name"] == "child", "from run"].item() == "first tuned"
    at.selectbox(key="runs_detail").set_value(child.run_id).run()
    assert any(f"Backbone from run first tuned ({first.id})" in plain(m.value) for m in at.markdown)
    at.selectbox(key="runs_detail").set_value(first.id).run()
    assert any(
        "Runs started from this backbone" in plain(m.value) and f"child ({child.run_id})" in plain(m.value)
        for m in at.markdown
    )

    at.button(key="runs_start_from").click().run()
    assert not at.exception
    assert at.radio(key="model_weights").value == f"run:{first.id}"
    assert (
        at.selectbox(key="model_backbone").value == "mobilenet_v2_035"
        and at.number_input(key="model_image_size").value == 32
    )
    assert at.session_state["run_config"].model.weights == f"run:{first.id}"


def test_an_interrupted_run_with_a_checkpoint_offers_to_resume(
    workspace: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pages.runs
    import pages.train
    import ui.state
    from tests.job_helpers import FakeOutcome
    from tl_core.jobs.manager import JobManager
    from tl_core.layout import CHECKPOINT_FILE
    from tl_core.server.workspaces import LOCAL_USER, Workspaces

    store = RunStore(workspace[0])
    old = next(record for record in store.list_runs() if record.name == "first")
    store.finish_run(old.id, "interrupted", error="The worker was killed.")
    assert (store.run_dir(old.id) / CHECKPOINT_FILE).is_file()
    started_from: list[bytes] = []

    def resumable(config, *, store, listener, stop, run_id, initial_weights):
        started_from.append(initial_weights.read_bytes())
        store.finish_run(run_id, "completed")
        return FakeOutcome("completed")

    manager = JobManager(store, run=resumable)
    try:
        jobs = ui.state.UserJobs(manager, store, LOCAL_USER, Workspaces(workspace[0], single_user=True))
        for page in (pages.runs, pages.train):  # the Runs page resumes, then opens the Train page
            monkeypatch.setattr(page, "get_manager", lambda: jobs)
        at = open_runs()
        at.selectbox(key="runs_detail").set_value(old.id).run()
        at.button(key="runs_resume").click().run()
        assert not at.exception
        resumed = next(record for record in store.list_runs() if record.parent_run_id == old.id)
        assert manager.wait(resumed.id, timeout_s=60).progress.status == "completed"
        assert started_from == [(store.run_dir(old.id) / CHECKPOINT_FILE).read_bytes()]
    finally:
        manager.shutdown(stop_jobs=True)


def test_coming_back_to_the_runs_page_draws_it_again(workspace: tuple[Path, Path]) -> None:
    """Streamlit drops the overlay picker's state while another page is shown; the page must not rely on it
    (a workshop load test saw a KeyError when a student came back to Runs)."""
    at = open_runs()
    assert len(at.multiselect(key="runs_overlay").value) == 2
    open_page(at, "data").run()
    assert not at.exception
    open_page(at, "runs").run()
    assert not at.exception, [error.value for error in at.exception]
    assert len(at.multiselect(key="runs_overlay").value) == 2, "the dataset's newest runs again"


def test_one_click_stops_every_unfinished_run_of_a_sweep(workspace: tuple[Path, Path]) -> None:
    workspace_dir, data = workspace
    at = open_runs(data)
    sweep_settings(at)
    at.session_state["train_config"] = TrainConfig(epochs=200, batch_size=16, early_stopping_patience=None)
    at.multiselect(key="compare_backbones").set_value(["mobilenet_v2_035", "mobilenet_v3_small"]).run()
    at.button(key="compare_submit").click().run()
    sweep_id = at.session_state["sweep_id"]
    [stop] = [button for button in at.button if button.key == f"sweep_stop_{sweep_id}"]
    assert stop.label == "Stop the sweep's 2 unfinished run(s)"
    stop.click().run()
    assert not at.exception
    store = RunStore(workspace_dir)
    run_ids = json.loads((workspace_dir / SWEEPS_FOLDER / sweep_id / SWEEP_RECORD_FILE).read_text())["runs"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(store.get(run_id).status not in FINISHED_STATUSES for run_id in run_ids):
        time.sleep(0.5)
    assert {store.get(run_id).status for run_id in run_ids} == {"stopped"}
    at.run()
    assert list(sweep_board(at)["status"]) == ["stopped", "stopped"]
    assert not [button for button in at.button if button.key == f"sweep_stop_{sweep_id}"]
