"""Typed training events and the listener protocol.

Training reports progress only through these events. With no listener attached the engine runs
silently (the null object), so the CLI, tests and the app's worker attach what they need.

Example:
    >>> class Printer:
    ...     def on_event(self, event: TrainingEvent) -> None:
    ...         if isinstance(event, EpochEnded):
    ...             print(event.epoch, event.metrics["val_loss"])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

RunStatus = Literal["queued", "running", "completed", "stopped", "failed", "interrupted"]


@dataclass(frozen=True)
class TrainingEvent:
    run_id: str
    timestamp: float = field(default_factory=time.time, kw_only=True)


@dataclass(frozen=True)
class RunStarted(TrainingEvent):
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]
    config: dict[str, Any]


@dataclass(frozen=True)
class PhaseStarted(TrainingEvent):
    """A training phase: `head` (frozen backbone), `fine-tune`, `full`, or progressive `stage-K`.

    `open_blocks` names the backbone blocks that train in a progressive stage (top block last).
    """

    phase: str
    epochs: int
    learning_rate: float
    trainable_weights: int
    description: str
    open_blocks: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchProgress(TrainingEvent):
    """Throttled: at most a few per second, so listeners never slow training down."""

    phase: str
    epoch: int
    batch: int
    batches_per_epoch: int | None
    metrics: dict[str, float]


@dataclass(frozen=True)
class PreparationProgress(TrainingEvent):
    """Work outside the epochs that takes minutes on a large folder: decoding a split's images into the
    cache (`step="decode"`) or computing its backbone features once (`step="features"`). Throttled like
    `BatchProgress`; `done == total` is always reported."""

    step: Literal["decode", "features"]
    split: str
    done: int
    total: int


PREPARATION_STEP_NAMES = {"decode": "decoding images", "features": "backbone features"}  # `PreparationProgress.step`, in words


@dataclass(frozen=True)
class EpochEnded(TrainingEvent):
    """`epoch` counts across phases (1-based); `phase_epoch` restarts in each phase."""

    phase: str
    epoch: int
    phase_epoch: int
    metrics: dict[str, float]
    learning_rate: float
    seconds: float
    is_best: bool


@dataclass(frozen=True)
class PhaseEnded(TrainingEvent):
    phase: str
    epochs_run: int
    best_val_loss: float | None
    stopped_early: bool


@dataclass(frozen=True)
class LogMessage(TrainingEvent):
    level: Literal["info", "warning", "error"]
    text: str


@dataclass(frozen=True)
class RunFinished(TrainingEvent):
    status: RunStatus
    epochs_run: int
    final_metrics: dict[str, float]
    elapsed_s: float
    error: str | None = None


class TrainingListener(Protocol):
    def on_event(self, event: TrainingEvent) -> None: ...


class NullListener:
    """Listens to nothing: the default, so the engine never checks for None."""

    def on_event(self, event: TrainingEvent) -> None:
        return None


class ListenerGroup:
    """Fans one event out to several listeners; a failing listener never stops training."""

    def __init__(self, *listeners: TrainingListener) -> None:
        self.listeners = [listener for listener in listeners if listener is not None]
        self.listener_errors: list[str] = []

    def on_event(self, event: TrainingEvent) -> None:
        for listener in self.listeners:
            try:
                listener.on_event(event)
            except Exception as exc:  # noqa: BLE001 - a broken UI must not kill a training run
                self.listener_errors.append(f"{type(listener).__name__}: {exc}")
