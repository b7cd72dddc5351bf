"""What runs alongside each epoch: the best-weights tracker with its checkpoints, and the bridge from Keras callbacks to our events."""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np

from tl_core.events import BatchProgress, EpochEnded, ProgressThrottle, TrainingListener
from tl_core.models import keras_files
from tl_core.stopping import StopToken

BATCH_EVENT_INTERVAL_S = 0.25
# A checkpoint write costs 0.25-0.6 s (measured: 16% of a small fine-tune epoch when written every epoch).
# Mid-phase writes are spaced so they cost at most CHECKPOINT_OVERHEAD of training time (measured per
# write), and at least once a minute: a killed worker loses at most its current epoch or the last
# ~10 s of improvements. Every phase end and every stop writes the best weights anyway.
CHECKPOINT_INTERVAL_S = 60.0
CHECKPOINT_OVERHEAD = 0.025
# Before a write has been timed, the first one waits for this much training: a shorter phase (a head on cached
# features: 0.3-0.4 s for 600 images) is checkpointed at its end anyway, and a write at its first epoch cost 40-50 ms.
FIRST_CHECKPOINT_AFTER_S = 1.0


class BestWeights:
    """Keeps the best weights seen in any phase (lowest monitored loss) and checkpoints the whole model.

    Only the part that trains is snapshotted: `track(head)` while the head trains on cached features
    (the frozen backbone cannot change: a full snapshot there cost 0.5 s per 10 epochs, 247 arrays),
    `track(model)` when backbone layers train.
    """

    def __init__(self, model: keras.Model, checkpoint_path: Path | None) -> None:
        self.model = model
        self.scope = model
        self.checkpoint_path = checkpoint_path
        self.best_value = math.inf
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}
        self._weights: list[np.ndarray] | None = None
        self._saved = True
        self._last_write = time.monotonic()
        self._write_seconds: float | None = None  # measured on the first write

    def track(self, scope: keras.Model) -> None:
        """Snapshot `scope` (the model or a part of it) from now on.

        Called at a phase start: the snapshot so far is restored first, so the model holds the best
        weights, and re-taken over the new scope, so restoring later is right across phases.
        """
        if scope is self.scope:
            return
        if self._weights is not None:
            self.restore()
            self._weights = scope.get_weights()
        self.scope = scope

    def update(self, value: float, epoch: int, metrics: dict[str, float]) -> bool:
        if not (value < self.best_value):  # NaN never counts as an improvement
            return False
        self.best_value, self.best_epoch, self.best_metrics = value, epoch, dict(metrics)
        self._weights = self.scope.get_weights()
        self._saved = False
        if time.monotonic() - self._last_write >= self.checkpoint_spacing_s():
            self.save_checkpoint()
        return True

    def checkpoint_spacing_s(self) -> float:
        """Seconds between mid-phase checkpoint writes: `FIRST_CHECKPOINT_AFTER_S` until a write was timed, then cost / overhead, at most a minute."""
        if self._write_seconds is None:
            return FIRST_CHECKPOINT_AFTER_S
        return min(CHECKPOINT_INTERVAL_S, self._write_seconds / CHECKPOINT_OVERHEAD)

    def restore(self) -> None:
        if self._weights is not None:
            self.scope.set_weights(self._weights)

    def save_checkpoint(self) -> None:
        """Write the best weights to disk (temp file, then rename, so a crash never leaves half a file)."""
        if self.checkpoint_path is None or self._weights is None or self._saved:
            return
        started = time.monotonic()
        current = self.scope.get_weights()
        self.scope.set_weights(self._weights)
        partial = self.checkpoint_path.with_name("partial." + self.checkpoint_path.name)
        keras_files.save_weights(self.model, partial)
        partial.replace(self.checkpoint_path)
        self.scope.set_weights(current)
        self._saved = True
        self._last_write = time.monotonic()
        self._write_seconds = self._last_write - started


class EventBridge(keras.callbacks.Callback):
    """Turns Keras callbacks into our typed events, tracks the best weights and honours stop requests."""

    def __init__(
        self,
        *,
        run_id: str,
        phase: str,
        epoch_offset: int,
        monitor: str,
        listener: TrainingListener,
        stop: StopToken,
        best: BestWeights,
        batches_per_epoch: int | None,
        history: list[EpochEnded],
    ) -> None:
        super().__init__()
        self.run_id, self.phase, self.epoch_offset, self.monitor = run_id, phase, epoch_offset, monitor
        self.listener, self.stop, self.best, self.history = listener, stop, best, history
        self.batches_per_epoch = batches_per_epoch
        self.epochs_run = 0
        self.stopped_by_user = False
        self._batch_events = ProgressThrottle(BATCH_EVENT_INTERVAL_S, time.perf_counter)
        self._epoch_started = time.perf_counter()

    def _learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.stop.should_stop():
            self.stopped_by_user = True
            self.model.stop_training = True
        if self._batch_events.due():
            metrics = {key: float(value) for key, value in (logs or {}).items()}
            self.listener.on_event(
                BatchProgress(
                    self.run_id,
                    phase=self.phase,
                    epoch=self.epoch_offset + self.epochs_run + 1,
                    batch=batch + 1,
                    batches_per_epoch=self.batches_per_epoch,
                    metrics=metrics,
                )
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs_run += 1
        seconds = time.perf_counter() - self._epoch_started
        metrics = {key: float(value) for key, value in (logs or {}).items() if key != "learning_rate"}
        global_epoch = self.epoch_offset + epoch + 1
        is_best = self.best.update(metrics.get(self.monitor, math.inf), global_epoch, metrics)
        event = EpochEnded(
            self.run_id,
            phase=self.phase,
            epoch=global_epoch,
            phase_epoch=epoch + 1,
            metrics=metrics,
            learning_rate=self._learning_rate(),
            seconds=seconds,
            is_best=is_best,
        )
        self.history.append(event)
        self.listener.on_event(event)
        if self.stop.should_stop():
            self.stopped_by_user = True
            self.model.stop_training = True
