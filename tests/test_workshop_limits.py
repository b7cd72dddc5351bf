"""Workshop security, issue 24 item 11: the limits a trainer sets on what one run may ask for.

Fifty hidden layers of 8,192 units, 1,024 px images and 500 epochs were accepted as "Ready". Each limit
(model parameters, image size, epochs) is now named with its value on the Model page, a run over them is
never queued, and a run still going at `max_run_minutes` is stopped and ends `failed` with the limit and
what to change, its log and best weights kept.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.jobs import endings  # noqa: E402
from tl_core.jobs import manager as jobs  # noqa: E402
from tl_core.jobs.backend import JobExit, this_process_reference  # noqa: E402
from tl_core.jobs.manager import JobManager
from tl_core.jobs.thread_backend import ThreadBackend  # noqa: E402
from tl_core.layout import CHECKPOINT_FILE
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.server.limits import RunLimitError, RunLimits, check_run_limits, model_parameters, require_within_limits  # noqa: E402
from tl_core.server.settings import ENV_VARIABLES, WORKSHOP_RUN_LIMITS  # noqa: E402
from ui.settings import default_model_config, default_train_config  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
WORKSHOP = RunLimits(**WORKSHOP_RUN_LIMITS)
HUGE_HEAD = (8192,) * 50


def attack(**model: object) -> tuple[ModelConfig, TrainConfig]:
    """What the hostile student asked for: 1,024 px images, 500 epochs, fifty hidden layers of 8,192 units."""
    return ModelConfig(**{"image_size": 1024, "head_hidden_units": HUGE_HEAD, **model}), TrainConfig(epochs=500)


def tiny_config(source: Path | str, **train: object) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(**{"epochs": 2, "batch_size": 16, **train}),
    )


def plain(markdown: str) -> str:
    """What the user reads: messages are Markdown-escaped before display."""
    return markdown.replace("\\", "")


# -- the check -------------------------------------------------------------------------------------


def test_the_reported_attack_is_refused_naming_each_limit_its_value_and_the_fix() -> None:
    model, train = attack()
    image, epochs, parameters = check_run_limits(model, train, WORKSHOP)
    assert "Image size 1024 px" in image and "limit of 320 px" in image and "choose 320 px or less" in image
    assert "500 epochs planned" in epochs and "limit of 100" in epochs
    assert (
        "3.3 billion parameters" in parameters
        and "limit of 100 million" in parameters
        and "fewer and smaller hidden layers" in parameters
    )

    with pytest.raises(RunLimitError) as refused:
        require_within_limits(RunConfig(data=DataConfig(source="data"), model=model, train=train), WORKSHOP)
    assert refused.value.problems == (image, epochs, parameters)
    assert all(problem in str(refused.value) for problem in (image, epochs, parameters))


@pytest.mark.parametrize(
    ("model", "train", "named"),
    [
        (ModelConfig(image_size=1024), TrainConfig(), "Image size 1024 px"),
        (ModelConfig(image_size=96), TrainConfig(epochs=500), "500 epochs planned"),
        (ModelConfig(image_size=96, head_hidden_units=HUGE_HEAD), TrainConfig(), "billion parameters"),
    ],
)
def test_each_limit_is_checked_on_its_own(model: ModelConfig, train: TrainConfig, named: str) -> None:
    problems = check_run_limits(model, train, WORKSHOP)
    assert len(problems) == 1 and named in problems[0]


def test_the_app_defaults_fit_and_personal_mode_has_no_limits() -> None:
    assert check_run_limits(default_model_config(), default_train_config(), WORKSHOP) == []
    assert check_run_limits(*attack(), RunLimits()) == []
    assert RunLimits().describe() == "" and RunLimits().max_run_s is None
    assert (
        WORKSHOP.describe()
        == "images up to 320 px, 100 epochs per run, models up to 100 million parameters, 30 min per run"
    )


@pytest.mark.parametrize(
    ("train", "weights", "refused_as"),
    [
        (TrainConfig(epochs=100), "imagenet", None),
        (
            TrainConfig(mode="fine-tune", epochs=60, fine_tune_epochs=50),
            "imagenet",
            "110 epochs planned (head 60 + fine-tune 50)",
        ),
        (TrainConfig(mode="full", epochs=50, fine_tune_epochs=50), "imagenet", None),
        (TrainConfig(mode="progressive", epochs=10, stage_epochs=20), "imagenet", None),  # 4 blocks assumed: 90
        (TrainConfig(mode="progressive", epochs=10, stage_epochs=20, max_stages=5), "imagenet", "110 epochs planned"),
        (
            TrainConfig(epochs=60, compare_scratch=True),
            "imagenet",
            "120 epochs planned ((head 60) x 2 with the from-scratch baseline)",
        ),
        (TrainConfig(epochs=60, compare_scratch=True), "none", None),  # random weights train no baseline
    ],
)
def test_epochs_count_every_phase_of_a_run(train: TrainConfig, weights: str, refused_as: str | None) -> None:
    problems = check_run_limits(ModelConfig(weights=weights, image_size=96), train, RunLimits(max_epochs=100))
    assert problems == [] if refused_as is None else (len(problems) == 1 and refused_as in problems[0])


def test_the_parameter_count_is_the_built_models_without_building_it() -> None:
    from tl_core.models.transfer_model import build_transfer_model

    config = ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32, head_hidden_units=(64, 32))
    built = build_transfer_model(config, 3)
    backbone, head = model_parameters(config, num_classes=3)
    assert (backbone, head) == (built.backbone.count_params(), built.head.count_params())
    assert backbone + head == built.model.count_params()
    assert check_run_limits(config, TrainConfig(), RunLimits(max_model_parameters=backbone + head - 1), num_classes=3)
    assert not check_run_limits(config, TrainConfig(), RunLimits(max_model_parameters=backbone + head), num_classes=3)


def test_no_image_size_means_the_backbones_default_which_counts_too() -> None:
    problems = check_run_limits(ModelConfig(backbone="efficientnet_b7", image_size=None), TrainConfig(), WORKSHOP)
    assert problems == [
        "Image size 600 px (the backbone's default) is over the limit of 320 px: choose 320 px or less "
        "(smaller images train faster; 96-224 px suits most backbones)."
    ]
    assert check_run_limits(ModelConfig(backbone="efficientnet_b7", image_size=320), TrainConfig(), WORKSHOP) == []


def test_text_runs_have_no_image_size_and_count_their_word_vectors() -> None:
    text = ModelConfig(backbone="glove_6b_50d", weights="glove", sequence_length=4096)
    assert check_run_limits(text, TrainConfig(), RunLimits(max_image_size=32)) == []
    backbone, head = model_parameters(text)
    assert backbone > 1_000_000 and head == (50 * 2 + 2) + (
        2 * 50 + 1
    )  # Dense weights and biases, then the normalisation


# -- the job manager: nothing over the limits is queued; a run past the time limit is ended -----------


@dataclass
class FakeOutcome:
    status: str
    error: str | None = None


class TrainsUntilStopped:
    """Stands in for run_experiment: logs an epoch, writes a checkpoint, then trains until stopped (or released)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, config, *, store, listener, stop, run_id, **extra):  # noqa: ANN001, ANN003, ANN204
        store.append_log(run_id, "epoch 1: loss 0.91, val_accuracy 0.5")
        (store.run_dir(run_id) / CHECKPOINT_FILE).write_bytes(b"best weights so far")
        while not stop.should_stop() and not self.release.wait(0.01):
            pass
        status = "stopped" if stop.should_stop() else "completed"
        store.finish_run(run_id, status, metrics={"epochs_run": 1})
        return FakeOutcome(status)


@pytest.fixture()
def managers():  # noqa: ANN201
    """Build managers through this, so their dispatchers and jobs stop when the test ends."""
    made: list[tuple[JobManager, TrainsUntilStopped | None]] = []

    def make(store: RunStore, run: TrainsUntilStopped | None = None, **options: object) -> JobManager:
        manager = JobManager(store, backend=options.pop("backend", None) or ThreadBackend(run), **options)
        made.append((manager, run))
        return manager

    yield make
    for manager, run in made:
        if run is not None:
            run.release.set()
        manager.shutdown(stop_jobs=True)


def test_a_run_over_the_limits_is_never_queued_nor_resumed(shapes_dataset: Path, workspace: Path, managers) -> None:  # noqa: ANN001
    store = RunStore(workspace)
    limited = managers(store, TrainsUntilStopped(), limits=WORKSHOP)
    config = tiny_config(shapes_dataset, epochs=500)
    with pytest.raises(RunLimitError, match="500 epochs planned"):
        limited.submit(config, owner="alice")
    assert store.list_runs() == [] and limited.queue.entries() == [] and limited.active_run_ids() == []
    limited.shutdown()

    # A run made before the trainer set the limits: it cannot come back through resume either.
    run = TrainsUntilStopped()
    run.release.set()
    unlimited = managers(store, run)
    earlier = unlimited.submit(config, owner="alice")
    assert unlimited.wait(earlier).progress.status == "completed"
    unlimited.shutdown()
    with pytest.raises(RunLimitError, match="500 epochs planned"):
        managers(store, TrainsUntilStopped(), limits=WORKSHOP).resume(earlier)
    assert [record.id for record in store.list_runs()] == [earlier]


def test_a_run_past_the_time_limit_ends_failed_saying_why_with_its_log_and_checkpoint_kept(
    shapes_dataset: Path,
    workspace: Path,
    managers,  # noqa: ANN001
) -> None:
    store = RunStore(workspace)
    manager = managers(store, TrainsUntilStopped(), limits=RunLimits(max_run_minutes=0.2 / 60))  # 0.2 s, for the test
    run_id = manager.submit(tiny_config(shapes_dataset), owner="alice")
    final = manager.wait(run_id, timeout_s=120)
    record = store.get(run_id)
    assert final.progress.status == record.status == "failed"
    assert record.error.startswith("Ended at this server's run-time limit of 0.2 s per run.")
    assert "plan fewer epochs, use smaller images, or choose feature extraction" in record.error
    log = store.read_log(run_id)
    assert "epoch 1: loss 0.91" in log and "Run-time limit of 0.2 s reached: stopping after the current batch" in log
    assert "error: Ended at this server's run-time limit" in log
    assert (store.run_dir(run_id) / CHECKPOINT_FILE).read_bytes() == b"best weights so far"


class IgnoresStop:
    """A backend whose job never stops when asked: only `kill` ends it."""

    def __init__(self) -> None:
        self.stops: list[str] = []
        self.kills: list[str] = []

    def prepare(self, devices: object) -> None:
        pass

    def start(self, job: jobs.Job) -> str:
        return this_process_reference("stub")

    def poll(self, job: jobs.Job) -> JobExit | None:
        return JobExit("was killed by SIGKILL", signal="SIGKILL") if job.run_id in self.kills else None

    def progress(self, job: jobs.Job) -> None:
        return None

    def stop(self, job: jobs.Job) -> None:
        self.stops.append(job.run_id)

    def kill(self, job: jobs.Job) -> None:
        self.kills.append(job.run_id)

    def close(self) -> None:
        pass


def test_a_run_that_ignores_the_stop_is_killed_after_the_grace_period(
    shapes_dataset: Path,
    workspace: Path,
    managers,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    monkeypatch.setattr(endings, "RUN_LIMIT_GRACE_S", 0.0)
    store = RunStore(workspace)
    backend = IgnoresStop()
    manager = managers(store, backend=backend, limits=RunLimits(max_run_minutes=0.1 / 60))
    run_id = manager.submit(tiny_config(shapes_dataset), owner="bob")
    assert manager.wait(run_id, timeout_s=120).progress.status == "failed"
    assert backend.stops == [run_id] and backend.kills[0] == run_id
    record = store.get(run_id)
    assert record.error.startswith("Ended at this server's run-time limit of 0.1 s per run.")
    assert "did not stop within 0 s of the request, so its worker was ended" in record.error


@pytest.mark.slow
def test_a_real_worker_past_the_time_limit_keeps_its_log_checkpoint_and_model(
    shapes_dataset: Path, workspace: Path
) -> None:
    from tl_core.jobs.worker import ProcessBackend

    store = RunStore(workspace)
    manager = JobManager(store, slots={"cpu": 1}, backend=ProcessBackend(warm_workers=False))
    endless = dict(
        mode="fine-tune",
        epochs=1,
        fine_tune_epochs=500,
        early_stopping_patience=None,
        reduce_lr_patience=None,
        use_feature_cache=False,
    )
    try:
        run_id = manager.submit(tiny_config(shapes_dataset, **endless), owner="alice")
        checkpoint = store.run_dir(run_id) / CHECKPOINT_FILE
        deadline = time.monotonic() + 300
        while not (len(store.epochs(run_id)) >= 2 and checkpoint.is_file()):
            assert time.monotonic() < deadline, "timed out waiting for two epochs and a checkpoint"
            time.sleep(0.2)
        manager.limits = RunLimits(
            max_run_minutes=0.001
        )  # the trainer's limit (0.06 s): the run is past it from now on
        final = manager.wait(run_id, timeout_s=120)
        record = store.get(run_id)
        assert final.progress.status == record.status == "failed"
        assert record.error.startswith("Ended at this server's run-time limit of 0.06 s per run.")
        assert "epoch 2" in store.read_log(run_id) and "Run-time limit of 0.06 s reached" in store.read_log(run_id)
        assert checkpoint.is_file() and (store.run_dir(run_id) / "model.keras").is_file()  # the best weights so far
    finally:
        manager.shutdown(stop_jobs=True)
        for active in manager.active_run_ids():
            manager.kill(active)


# -- the app ------------------------------------------------------------------------------------------


@pytest.fixture()
def limited_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A personal server whose owner set the workshop limits (they apply whenever they are set)."""
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    for name, value in WORKSHOP_RUN_LIMITS.items():
        monkeypatch.setenv(ENV_VARIABLES[name], str(value))
    return tmp_path / "workspace"


def test_model_page_names_each_limit_instead_of_ready_and_train_cannot_start(limited_env: Path, tmp_path: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["dataset_path"] = str(
        make_shapes_dataset(tmp_path / "shapes", num_classes=2, images_per_class=4, image_size=32)
    )
    at.run()
    open_page(at, "model").run()
    assert any("images up to 320 px, 100 epochs per run" in plain(info.value) for info in at.info)
    assert any("Ready" in success.value for success in at.success)

    at.number_input(key="model_image_size").set_value(1024)
    at.number_input(key="model_epochs").set_value(500)
    at.text_input(key="model_hidden_units").set_value(", ".join(["8192"] * 50))
    at.run()
    assert not at.exception
    shown = plain(at.error[0].value)
    assert "over this server's limits" in shown
    assert (
        "Image size 1024 px is over the limit of 320 px" in shown
        and "500 epochs planned" in shown
        and "billion parameters" in shown
    )
    assert not any("Ready" in success.value for success in at.success)
    assert "run_config" not in at.session_state

    open_page(at, "train").run()
    assert not at.exception
    assert "settings are invalid" in at.error[0].value
    assert all(button.key != "train_start" for button in at.button)
    assert RunStore(limited_env).list_runs() == []


def test_start_refuses_a_session_config_over_the_limits(limited_env: Path, tmp_path: Path) -> None:
    data = make_shapes_dataset(tmp_path / "shapes", num_classes=2, images_per_class=6, image_size=32)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["dataset_path"] = str(data)
    at.session_state["run_config"] = tiny_config(data, epochs=500)  # as if the Model page had been bypassed
    at.run()
    open_page(at, "train").run()
    at.button(key="train_start").click().run()
    assert not at.exception
    assert "500 epochs planned" in plain(at.error[0].value)
    assert RunStore(limited_env).list_runs() == []


@pytest.mark.slow
def test_in_chromium_alice_is_refused_over_the_limits_and_a_run_past_the_time_limit_ends_saying_why(
    tmp_path: Path,
) -> None:
    """A real workshop server (default limits, 3 s per run): nothing over the limits is queued; a run is ended at 3 s."""
    from playwright.sync_api import expect, sync_playwright

    from tests.workshop_server import ARTIFACTS, launch_chromium, sign_in, wait_idle, workshop_server

    with workshop_server(tmp_path, extra_env={"TRANSFERLAB_MAX_RUN_MINUTES": "0.05"}, name="run-limits") as server:
        make_shapes_dataset(
            server.workspace / "datasets" / "textures", num_classes=2, images_per_class=8, image_size=32
        )
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1440, "height": 1400})
            page.set_default_timeout(90_000)
            expect.set_options(timeout=90_000)  # the first visit to the Model page imports TensorFlow

            def go(title: str) -> None:
                page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
                expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible()
                wait_idle(page)

            def set_number(label: str, value: int) -> None:
                box = page.get_by_role("spinbutton", name=label)
                box.fill(str(value))
                box.press("Enter")
                wait_idle(page)

            sign_in(page, server.url, "alice")
            go("Model")
            expect(
                page.get_by_text(
                    "images up to 320 px, 100 epochs per run, models up to 100 million parameters, 3 s per run"
                )
            ).to_be_visible()
            set_number("Image size (px)", 1024)
            set_number("Epochs (head)", 500)
            expect(page.get_by_text("Image size 1024 px is over the limit of 320 px")).to_be_visible()
            expect(page.get_by_text("500 epochs planned (head 500) is over the limit of 100")).to_be_visible()
            assert page.get_by_text("Ready:").count() == 0
            page.screenshot(path=str(ARTIFACTS / "security-run-limits-model.png"), full_page=True)
            go("Train")
            expect(page.get_by_text("The model settings are invalid")).to_be_visible()
            assert page.get_by_role("button", name="Start training").count() == 0
            with sqlite3.connect(server.workspace / "queue.sqlite") as queue:
                assert queue.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)
            assert not list((server.user_root("alice") / "runs").glob("*"))

            # Within the limits it queues; the run is ended at the 3 s limit and the page says why.
            go("Model")
            set_number("Image size (px)", 64)
            set_number("Epochs (head)", 100)
            expect(page.get_by_text("Ready:")).to_be_visible()
            go("Train")
            page.get_by_role("button", name="Start training").click()
            # .first: while the live panel hands over to the finished page, both may show the outcome for a moment
            expect(
                page.get_by_text("Run failed: Ended at this server's run-time limit of 3 s per run").first
            ).to_be_visible(timeout=240_000)
            wait_idle(page)
            page.screenshot(path=str(ARTIFACTS / "security-run-limits-train.png"), full_page=True)
            browser.close()
        logs = list((server.user_root("alice") / "runs").glob("*/log.txt"))
        assert len(logs) == 1 and "Run-time limit of 3 s reached" in logs[0].read_text()
