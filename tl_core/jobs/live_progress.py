"""A job's live progress as pages show it: `LiveProgress`, kept current from training events by `ProgressTracker`.

A worker process tracks its job's events and publishes the progress (`tl_core.jobs.worker` writes it as JSON);
the server reads it back into a `LiveProgress` for the Train page, the advisor panels and the queue table.
A training run reports epochs and batches; an advisory job (no epochs) reports its stages in words
(`StageStarted`). Both report decoding and feature extraction (`PreparationProgress`). Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from tl_core.config import RunConfig
from tl_core.events import (
    PREPARATION_STEP_NAMES,
    BatchProgress,
    EpochEnded,
    PhaseStarted,
    PreparationProgress,
    RunFinished,
    RunStarted,
    StageStarted,
    TrainingEvent,
)

TUNE_COST_FACTOR = 5.0  # a fine-tuning epoch against a head epoch, until measured (4-8x on our benchmarks)


def phase_kind(phase: str) -> str:
    """`head` for the head on a frozen backbone, `tune` for any phase that trains backbone layers."""
    return "head" if phase in ("", "head") else "tune"


@dataclass
class LiveProgress:
    """What a page needs to draw a progress bar with an ETA; kept current from training events."""

    phase: str = ""
    phase_epochs: int = 0
    epoch: int = 0
    phase_epoch: int = 0
    total_epochs: int = 0
    batch: int = 0
    batches_per_epoch: int | None = None
    started_at: float = field(default_factory=time.time)
    phase_starts: list[tuple[str, int]] = field(default_factory=list)  # (phase, first global epoch)
    last_metrics: dict[str, float] = field(default_factory=dict)
    status: str = "queued"
    # Decoding or feature extraction in progress (`PreparationProgress`): step, split, rows done of total.
    preparing: str = ""
    preparing_split: str = ""
    preparing_done: int = 0
    preparing_total: int = 0
    preparing_started_at: float | None = None  # when the split's first report arrived, and its rows then
    preparing_first_done: int = 0
    stage: str = ""  # an advisory job's current step, in words (`StageStarted`)
    phase_started_at: float | None = None  # when the current phase began (its first epoch's clock)
    # Measured seconds per epoch by kind of phase ("head": the backbone frozen; "tune": backbone layers training).
    epoch_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def is_preparing(self) -> bool:
        return bool(self.preparing) and self.preparing_done < self.preparing_total

    @property
    def preparing_eta_s(self) -> float | None:
        """Seconds left in the current split's decoding or features, from its rate since its first report
        (the first report comes after the first batch, which also traced the graph: not a rate)."""
        rows = self.preparing_done - self.preparing_first_done
        if not self.is_preparing or self.preparing_started_at is None or rows <= 0:
            return None
        elapsed = time.time() - self.preparing_started_at
        return elapsed * (self.preparing_total - self.preparing_done) / rows

    @property
    def activity(self) -> str:
        """What the job is doing, in a few words, for a table of many jobs ("" before anything is known)."""
        if self.is_preparing:
            what = PREPARATION_STEP_NAMES.get(self.preparing, self.preparing)
            return f"{what} ({self.preparing_split}) {self.preparing_done / self.preparing_total:.0%}"
        if self.total_epochs:
            return f"epoch {min(self.epoch + 1, self.total_epochs)} of {self.total_epochs} ({self.phase})"
        return self.stage

    @property
    def fraction_done(self) -> float:
        if not self.total_epochs:
            return 0.0
        within = self.batch / self.batches_per_epoch if self.batches_per_epoch else 0.0
        return min(1.0, (self.epoch + min(within, 1.0)) / self.total_epochs)

    @property
    def eta_s(self) -> float | None:
        """Seconds left: the current phase at its own measured pace, later phases at theirs once measured.

        A fine-tuning epoch costs several times a head epoch (the backbone's backward pass; measured 4-8x), so
        a later fine-tuning phase not yet measured is estimated at `TUNE_COST_FACTOR` times the head's pace,
        and every estimate is refined as epochs end. None until the current phase has a pace.
        """
        if not self.total_epochs or self.phase_started_at is None:
            return None
        kind = phase_kind(self.phase)
        within = min(self.batch / self.batches_per_epoch, 1.0) if self.batches_per_epoch else 0.0
        done_in_phase = self.phase_epoch + within
        pace = self.epoch_seconds.get(kind)
        if done_in_phase >= 0.05:  # the current epoch's batches refine the pace of finished epochs
            pace = (time.time() - self.phase_started_at) / done_in_phase
        if pace is None:
            head = self.epoch_seconds.get("head")
            pace = head * TUNE_COST_FACTOR if head is not None and kind == "tune" else None
        if pace is None:
            return None
        later_epochs = max(0, self.total_epochs - self.epoch - (self.phase_epochs - self.phase_epoch))
        later_pace = self.epoch_seconds.get("tune") or (pace * TUNE_COST_FACTOR if kind == "head" else pace)
        return max(0.0, (self.phase_epochs - done_in_phase) * pace) + later_epochs * later_pace

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping) -> LiveProgress:
        """Rebuild from `to_dict()` output (e.g. a worker's progress file); unknown keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in raw.items() if key in known}
        values["phase_starts"] = [(str(phase), int(epoch)) for phase, epoch in values.get("phase_starts", [])]
        values["epoch_seconds"] = {str(k): float(v) for k, v in dict(values.get("epoch_seconds") or {}).items()}
        return cls(**values)


class ProgressTracker:
    """Keeps a `LiveProgress` current from training events (cheap: no I/O).

    With `run_id`, events of other runs (the from-scratch baseline trained in the same job) are ignored.
    `config` plans the epochs of later phases; None for an advisory job (no epochs).
    """

    def __init__(
        self, config: RunConfig | None, progress: LiveProgress | None = None, *, run_id: str | None = None
    ) -> None:
        self.config = config
        self.progress = progress or LiveProgress()
        self.run_id = run_id

    def on_event(self, event: TrainingEvent) -> None:
        if self.run_id is not None and event.run_id != self.run_id:
            return
        progress = self.progress
        if isinstance(event, RunStarted):
            progress.status = "running"
            progress.started_at = event.timestamp
        elif isinstance(event, PhaseStarted):
            progress.phase_started_at = event.timestamp
            progress.phase, progress.phase_epochs, progress.phase_epoch, progress.batch = (
                event.phase,
                event.epochs,
                0,
                0,
            )
            progress.phase_starts.append((event.phase, progress.epoch + 1))
            progress.total_epochs = progress.epoch + event.epochs + self._later_phase_epochs(event.phase)
        elif isinstance(event, BatchProgress):
            progress.batch, progress.batches_per_epoch = event.batch, event.batches_per_epoch
        elif isinstance(event, PreparationProgress):
            if (event.step, event.split) != (progress.preparing, progress.preparing_split):
                progress.preparing, progress.preparing_split, progress.preparing_started_at = (
                    event.step,
                    event.split,
                    event.timestamp,
                )
                progress.preparing_first_done = event.done
            progress.preparing_done, progress.preparing_total = event.done, event.total
        elif isinstance(event, StageStarted):
            progress.stage = event.description
        elif isinstance(event, EpochEnded):
            progress.epoch, progress.phase_epoch, progress.batch = event.epoch, event.phase_epoch, 0
            if progress.phase_started_at is not None and event.phase_epoch > 0:
                progress.epoch_seconds[phase_kind(progress.phase)] = (
                    event.timestamp - progress.phase_started_at
                ) / event.phase_epoch
            progress.last_metrics = dict(event.metrics)
        elif isinstance(event, RunFinished):
            progress.status = event.status

    def _later_phase_epochs(self, phase: str) -> int:
        if self.config is None:
            return 0
        train = self.config.train
        if phase != "head" or train.mode == "feature-extraction":
            return 0
        if train.mode == "progressive":  # an upper bound: progressive may stop at a plateau sooner
            return train.stage_epochs * (train.max_stages or 4)
        return train.fine_tune_epochs
