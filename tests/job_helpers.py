"""Job-manager test helpers shared by several test files: a fake experiment, a tiny config, a wait loop."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig


def tiny_config(source, epochs=2, **train):
    return RunConfig(
        data=DataConfig(source=str(source)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(epochs=epochs, batch_size=16, **train),
    )


@dataclass
class FakeOutcome:
    status: str
    error: str | None = None


class FakeRun:
    """Stands in for run_experiment: runs until released or stopped, then records its status."""

    def __init__(self, *, blocking: bool = False) -> None:
        self.release = threading.Event()
        if not blocking:
            self.release.set()
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, config, *, store, listener, stop, run_id, **extra):
        self.calls.append((run_id, extra))
        while not self.release.is_set() and not stop.should_stop():
            time.sleep(0.01)
        status = "stopped" if stop.should_stop() else "completed"
        store.finish_run(run_id, status, metrics={"epochs_run": config.train.epochs, "elapsed_s": 0.2})
        return FakeOutcome(status)


def wait_until(condition, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
