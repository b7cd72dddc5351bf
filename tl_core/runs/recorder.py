"""A training run's typed events, written into the run store (epochs, phases, status) and the run's log."""

from __future__ import annotations

from tl_core import events
from tl_core.runs.store import RunStore


class RunRecorder:
    """Writes one run's training events into the store and its log (a `TrainingListener`).

    Events of other runs are ignored, so one recorder can sit in a shared listener group.

    Args:
        store: the run store to write into.
        run_id: the run whose events it records.
        epochs_done: epochs already recorded by an earlier recorder (a restarted server following a run).
        held_by_queue: the run trains elsewhere (a Ray node) and the job queue watches it: this process's
            pid is not recorded as the run's (`RunStore.mark_running`).
    """

    def __init__(self, store: RunStore, run_id: str, *, epochs_done: int = 0, held_by_queue: bool = False) -> None:
        self.store = store
        self.run_id = run_id
        self.held_by_queue = held_by_queue
        self._epochs_done = epochs_done  # global epochs finished so far: the next phase starts after them

    def on_event(self, event: events.TrainingEvent) -> None:
        if event.run_id != self.run_id or isinstance(event, (events.BatchProgress, events.PreparationProgress)):
            return  # too frequent for a database and a log (the runner logs a line per split prepared)
        log = self._log
        if isinstance(event, events.RunStarted):
            self.store.mark_running(self.run_id, held_by_queue=self.held_by_queue)
            sizes = ", ".join(f"{split} {count}" for split, count in event.split_sizes.items())
            log(f"run started: {len(event.class_names)} classes ({', '.join(event.class_names)}); images: {sizes}")
        elif isinstance(event, events.PhaseStarted):
            self.store.record_phase(
                self.run_id,
                phase=event.phase,
                first_epoch=self._epochs_done + 1,
                epochs=event.epochs,
                learning_rate=event.learning_rate,
                description=event.description,
                open_blocks=event.open_blocks,
            )
            log(
                f"phase {event.phase} started: {event.epochs} epochs at learning rate {event.learning_rate:g}, "
                f"{event.trainable_weights:,} trainable weights. {event.description}"
            )
        elif isinstance(event, events.EpochEnded):
            self._epochs_done = max(self._epochs_done, event.epoch)
            self.store.record_epoch(
                self.run_id,
                phase=event.phase,
                epoch=event.epoch,
                phase_epoch=event.phase_epoch,
                metrics=dict(event.metrics),
                learning_rate=event.learning_rate,
                seconds=event.seconds,
                is_best=event.is_best,
            )
            metrics = " ".join(f"{name}={value:.4g}" for name, value in event.metrics.items())
            log(
                f"epoch {event.epoch} ({event.phase} {event.phase_epoch}): {metrics} lr={event.learning_rate:g} "
                f"{event.seconds:.1f}s{' best' if event.is_best else ''}"
            )
        elif isinstance(event, events.LogMessage):
            log(f"{event.level}: {event.text}")
        elif isinstance(event, events.PhaseEnded):
            best = "n/a" if event.best_val_loss is None else f"{event.best_val_loss:.4g}"
            log(
                f"phase {event.phase} ended after {event.epochs_run} epochs, best val_loss {best}"
                f"{' (stopped early)' if event.stopped_early else ''}"
            )
        elif isinstance(event, events.RunFinished):
            self.store.finish_run(self.run_id, event.status, metrics=dict(event.final_metrics), error=event.error)
            log(
                f"run {event.status} after {event.epochs_run} epochs in {event.elapsed_s:.1f}s"
                + (f": {event.error.splitlines()[0]}" if event.error else "")
            )

    def _log(self, text: str) -> None:
        self.store.append_log(self.run_id, text)
