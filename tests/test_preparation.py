"""Progress and stopping for decoding and feature extraction (the work before the epochs)."""

from __future__ import annotations

import pytest

from tl_core.config import DataConfig, RunConfig
from tl_core.events import PreparationProgress
from tl_core.jobs.live_progress import LiveProgress, ProgressTracker
from tl_core.stopping import StopToken
from tl_core.training.preparation import REPORT_INTERVAL_S, PreparationReporter, PreparationStopped


class Recorder:
    def __init__(self, stop: StopToken | None = None, stop_after: int | None = None) -> None:
        self.events: list[PreparationProgress] = []
        self.stop, self.stop_after = stop, stop_after

    def on_event(self, event: PreparationProgress) -> None:
        self.events.append(event)
        if self.stop is not None and len(self.events) == self.stop_after:
            self.stop.request_stop()  # as a worker's listener does when the page's stop file appears


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reports_are_throttled_but_the_first_and_the_last_always_arrive() -> None:
    clock, listener = FakeClock(), Recorder()
    report = PreparationReporter(listener, "run", StopToken(), clock=clock).callback("features", "train")
    assert REPORT_INTERVAL_S == 0.5
    for done in range(1, 11):  # ten batches, 0.25 s apart
        report(done * 32, 320)
        clock.now += 0.25
    assert [event.done for event in listener.events] == [32, 96, 160, 224, 288, 320]  # first, every 0.5 s, last
    assert all(
        e.step == "features" and e.split == "train" and e.total == 320 and e.run_id == "run" for e in listener.events
    )


def test_a_stop_request_raises_with_what_was_being_done_and_the_request_seen_by_the_listener_counts() -> None:
    stop = StopToken()
    listener = Recorder(stop, stop_after=2)
    clock = FakeClock()
    report = PreparationReporter(listener, "run", stop, clock=clock).callback("decode", "val")
    report(1, 50)
    clock.now += 1.0
    with pytest.raises(PreparationStopped, match=r"Stopped while decoding images \(val: 2 of 50\)") as raised:
        report(2, 50)  # the listener requests the stop on this very event
    assert (raised.value.step, raised.value.split, raised.value.done, raised.value.total) == ("decode", "val", 2, 50)


def test_finished_splits_and_work_after_training_are_not_stopped() -> None:
    stop = StopToken()
    stop.request_stop()
    reporter = PreparationReporter(Recorder(), "run", stop)
    reporter.callback("features", "train")(64, 64)  # complete: its features are kept for the next run
    reporter.callback("features", "test", stoppable=False)(
        32, 64
    )  # after training: the trained head is still evaluated
    with pytest.raises(PreparationStopped):
        reporter.callback("features", "val")(32, 64)


def test_live_progress_follows_each_split_with_its_own_rate() -> None:
    tracker = ProgressTracker(RunConfig(data=DataConfig(source="x")), LiveProgress(status="running"), run_id="run")
    tracker.on_event(PreparationProgress("run", step="features", split="train", done=100, total=1000, timestamp=10.0))
    progress = tracker.progress
    assert progress.is_preparing and (progress.preparing, progress.preparing_split) == ("features", "train")
    assert progress.preparing_started_at == 10.0 and progress.preparing_eta_s is None  # one report: no rate yet
    tracker.on_event(PreparationProgress("run", step="features", split="train", done=500, total=1000, timestamp=12.0))
    assert progress.preparing_started_at == 10.0 and progress.preparing_done == 500
    assert progress.preparing_eta_s is not None and progress.preparing_eta_s > 0
    tracker.on_event(PreparationProgress("run", step="features", split="val", done=10, total=100, timestamp=20.0))
    assert progress.preparing_started_at == 20.0  # a new split, a new rate
    tracker.on_event(PreparationProgress("run", step="features", split="val", done=100, total=100, timestamp=21.0))
    assert not progress.is_preparing and progress.preparing_eta_s is None
    tracker.on_event(PreparationProgress("other-run", step="decode", split="train", done=1, total=9, timestamp=22.0))
    assert not progress.is_preparing
    assert LiveProgress.from_dict(progress.to_dict()) == progress  # survives the worker's progress file


def test_a_jobs_activity_names_the_preparation_step_then_the_epoch() -> None:
    assert LiveProgress().activity == ""
    preparing = LiveProgress(preparing="features", preparing_split="train", preparing_done=250, preparing_total=1000)
    assert preparing.activity == "computing backbone features (train) 25%"
    decoding = LiveProgress(preparing="decode", preparing_split="val", preparing_done=1, preparing_total=4)
    assert decoding.activity == "decoding images (val) 25%"
    training = LiveProgress(
        phase="head",
        total_epochs=10,
        epoch=3,
        preparing="features",
        preparing_split="val",
        preparing_done=9,
        preparing_total=9,
    )
    assert training.activity == "epoch 4 of 10 (head)"
