"""A run's TensorBoard event files, in the layout Keras' `TensorBoard` callback writes.

    <run folder>/tensorboard/train/        epoch_loss, epoch_accuracy, ..., epoch_learning_rate; `phase` text
    <run folder>/tensorboard/validation/   epoch_loss, epoch_accuracy, ... (the `val_` metrics, prefix dropped)

so `tensorboard --logdir workspace/runs` shows every run side by side. The step is the run's epoch number
(1-based, counting on across phases, as the Train page shows it); each phase writes a `phase` text at its first
epoch, saying what trains and at which learning rate.

Why a listener and not Keras' `TensorBoard` callback: the fast feature-extraction path trains heads outside
`model.fit` (`tl_core/fastpath/head_fit.py`), where no Keras callback runs, and the epoch numbers continue across
phases only in the engine's events. Listening to `EpochEnded` covers every path the same way.

Example:
    >>> writer = TensorBoardWriter(run_id, run_dir / TENSORBOARD_FOLDER)
    >>> ListenerGroup(RunRecorder(store, run_id), writer)  # then train: the events write the files
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf

from tl_core.events import EpochEnded, PhaseStarted, RunFinished, RunStarted, TrainingEvent

TRAIN_FOLDER = "train"
VALIDATION_FOLDER = "validation"
VALIDATION_PREFIX = "val_"  # Keras' name for a metric measured on the validation split
PHASE_TAG = "phase"
CONFIG_TAG = "run_config"


class TensorBoardWriter:
    """Writes one run's epochs into TensorBoard event files (a `TrainingListener`).

    The files open at the run's first event and close when it finishes; each epoch is flushed at once, so a
    running TensorBoard shows a run while it trains. Events of other runs are ignored.

    Args:
        run_id: the run to listen to.
        log_dir: the run's `tensorboard/` folder (created when the run starts).
    """

    def __init__(self, run_id: str, log_dir: Path) -> None:
        self.run_id = run_id
        self.log_dir = log_dir
        self._writers: dict[str, tf.summary.SummaryWriter] = {}  # by folder name
        self._epochs_done = 0  # the next phase's first epoch comes after these

    def on_event(self, event: TrainingEvent) -> None:
        if event.run_id != self.run_id:
            return
        if isinstance(event, RunStarted):
            text = f"```\n{json.dumps(event.config, indent=1, default=str)}\n```"  # Markdown: keep the indentation
            self._write(TRAIN_FOLDER, lambda: tf.summary.text(CONFIG_TAG, text, step=0))
        elif isinstance(event, PhaseStarted):
            first_epoch = self._epochs_done + 1
            text = (
                f"**{event.phase}** from epoch {first_epoch}: {event.epochs} epochs at learning rate "
                f"{event.learning_rate:g}, {event.trainable_weights:,} trainable weights. {event.description}"
            )
            self._write(TRAIN_FOLDER, lambda: tf.summary.text(PHASE_TAG, text, step=first_epoch))
        elif isinstance(event, EpochEnded):
            self._epochs_done = max(self._epochs_done, event.epoch)
            self._write_epoch(event)
        elif isinstance(event, RunFinished):
            self.close()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _write_epoch(self, event: EpochEnded) -> None:
        by_folder: dict[str, dict[str, float]] = {TRAIN_FOLDER: {}, VALIDATION_FOLDER: {}}
        for name, value in event.metrics.items():
            if name.startswith(VALIDATION_PREFIX):
                by_folder[VALIDATION_FOLDER][name.removeprefix(VALIDATION_PREFIX)] = value
            else:
                by_folder[TRAIN_FOLDER][name] = value
        by_folder[TRAIN_FOLDER]["learning_rate"] = event.learning_rate
        for folder, scalars in by_folder.items():
            if scalars:
                self._write(folder, lambda scalars=scalars: _scalars(scalars, event.epoch))

    def _write(self, folder: str, write: Callable[[], object]) -> None:
        writer = self._writers.get(folder)
        if writer is None:
            writer = self._writers[folder] = tf.summary.create_file_writer(str(self.log_dir / folder))
        with writer.as_default():
            write()
        writer.flush()


def _scalars(scalars: dict[str, float], step: int) -> None:
    for name, value in scalars.items():
        tf.summary.scalar(f"epoch_{name}", value, step=step)
