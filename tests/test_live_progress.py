"""ETAs that hold when fine-tuning starts (issue 23, item 8): each phase at its own measured pace."""

from __future__ import annotations

import pytest

from tl_core.config import DataConfig, RunConfig, TrainConfig
from tl_core.events import EpochEnded, PhaseStarted, RunStarted
from tl_core.jobs import live_progress
from tl_core.jobs.live_progress import TUNE_COST_FACTOR, ProgressTracker

HEAD_EPOCH_S, TUNE_EPOCH_S = 1.0, 6.0  # a fine-tuning epoch costs several head epochs
HEAD_EPOCHS, TUNE_EPOCHS = 10, 5


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(live_progress.time, "time", clock)
    return clock


def epoch(tracker: ProgressTracker, clock: Clock, phase: str, global_epoch: int, phase_epoch: int, seconds: float):
    clock.now += seconds
    tracker.on_event(EpochEnded("run", phase, global_epoch, phase_epoch, {}, 1e-3, seconds, False, timestamp=clock.now))


def test_the_eta_counts_fine_tuning_at_its_own_pace(clock: Clock) -> None:
    config = RunConfig(
        data=DataConfig(source="x"),
        train=TrainConfig(mode="fine-tune", epochs=HEAD_EPOCHS, fine_tune_epochs=TUNE_EPOCHS),
    )
    tracker = ProgressTracker(config, run_id="run")
    progress = tracker.progress
    tracker.on_event(RunStarted("run", ("a", "b"), {"train": 10}, {}, timestamp=clock.now))
    tracker.on_event(PhaseStarted("run", "head", HEAD_EPOCHS, 1e-3, 2, "the head", timestamp=clock.now))
    assert progress.eta_s is None, "no pace before the first epoch"
    for n in (1, 2):
        epoch(tracker, clock, "head", n, n, HEAD_EPOCH_S)
    truth = (HEAD_EPOCHS - 2) * HEAD_EPOCH_S + TUNE_EPOCHS * TUNE_EPOCH_S  # 38 s
    assert progress.eta_s == pytest.approx((HEAD_EPOCHS - 2) * HEAD_EPOCH_S + TUNE_EPOCHS * TUNE_COST_FACTOR)
    assert abs(progress.eta_s - truth) / truth < 0.2  # a single-pace estimate said 13 s

    for n in range(3, HEAD_EPOCHS + 1):
        epoch(tracker, clock, "head", n, n, HEAD_EPOCH_S)
    tracker.on_event(PhaseStarted("run", "fine-tune", TUNE_EPOCHS, 1e-4, 20, "top 20 layers", timestamp=clock.now))
    assert progress.eta_s == pytest.approx(TUNE_EPOCHS * HEAD_EPOCH_S * TUNE_COST_FACTOR)  # the head's pace x5
    epoch(tracker, clock, "fine-tune", HEAD_EPOCHS + 1, 1, TUNE_EPOCH_S)
    assert progress.eta_s == pytest.approx((TUNE_EPOCHS - 1) * TUNE_EPOCH_S)  # refined: its own measured pace
    clock.now += TUNE_EPOCH_S / 2
    progress.batch, progress.batches_per_epoch = 5, 10
    assert progress.eta_s == pytest.approx((TUNE_EPOCHS - 1.5) * TUNE_EPOCH_S)


def test_progress_from_an_older_worker_has_no_eta_instead_of_a_wrong_one() -> None:
    old = live_progress.LiveProgress.from_dict({"phase": "head", "epoch": 3, "total_epochs": 10, "status": "running"})
    assert old.eta_s is None and old.epoch_seconds == {}
    round_trip = live_progress.LiveProgress.from_dict(
        live_progress.LiveProgress(epoch_seconds={"head": 1.5}, phase_started_at=5.0).to_dict()
    )
    assert round_trip.epoch_seconds == {"head": 1.5} and round_trip.phase_started_at == 5.0


def test_start_estimates_use_the_pace_of_runs_in_the_same_mode(tmp_path) -> None:
    from tl_core.jobs.start_estimates import StartEstimator
    from tl_core.runs.store import RunStore

    store = RunStore(tmp_path)
    for mode, elapsed in (("feature-extraction", 10.0), ("fine-tune", 60.0)):
        record = store.create_run(config={}, backbone="b", weights="imagenet", mode=mode)
        store.finish_run(record.id, "completed", metrics={"epochs_run": 10, "elapsed_s": elapsed})
    estimator = StartEstimator(store, {"cpu": 1})
    assert estimator.seconds_per_epoch("feature-extraction") == pytest.approx(1.0)
    assert estimator.seconds_per_epoch("fine-tune") == pytest.approx(6.0)
    assert estimator.seconds_per_epoch("progressive") == pytest.approx(3.5)  # no such run yet: every mode's median


def test_a_start_estimate_the_jobs_ahead_have_overrun_says_so_instead_of_in_about_0_s():
    import time

    from ui.text import starts_in

    assert starts_in(time.time() + 125) == "in about 2 min 05 s"
    # The running job took longer than runs before it (its features are computed first): not "in about 0 s".
    assert starts_in(time.time() - 30) == starts_in(time.time() + 1) == "as soon as the job ahead ends"
