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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

RunStatus = Literal["queued", "running", "completed", "stopped", "failed", "interrupted"]
# The one set of status names: every module and page asks here.
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
ACTIVE_STATUSES: tuple[str, ...] = ("queued", "running")
FINISHED_STATUSES: tuple[str, ...] = tuple(status for status in RUN_STATUSES if status not in ACTIVE_STATUSES)


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


PREPARATION_STEP_NAMES = {
    "decode": "decoding images",
    "features": "computing backbone features",
}  # `PreparationProgress.step`, in words


@dataclass(frozen=True)
class StageStarted(TrainingEvent):
    """A step of a job that has no epochs (the advisor: building the model, measuring features, timing steps), in words."""

    description: str


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
    """Fans one event out to several listeners; a failing listener never stops training.

    Each failure is kept in `listener_errors` and handed to `on_error` (the runner writes it into the run's
    log, outside the listeners, and counts them in the run's summary), so a failing store write is never silent.
    """

    def __init__(self, *listeners: TrainingListener, on_error: Callable[[str], None] | None = None) -> None:
        self.listeners = [listener for listener in listeners if listener is not None]
        self.listener_errors: list[str] = []
        self._on_error = on_error

    def on_event(self, event: TrainingEvent) -> None:
        for listener in self.listeners:
            try:
                listener.on_event(event)
            except Exception as exc:  # noqa: BLE001 - a broken UI must not kill a training run
                message = f"{type(listener).__name__} failed on {type(event).__name__}: {type(exc).__name__}: {exc}"
                self.listener_errors.append(message)
                if self._on_error is not None:
                    try:
                        self._on_error(message)
                    except Exception:  # noqa: BLE001, S110 - the log itself may be what fails (a full disk); the count stays
                        pass


class ProgressThrottle:
    """The one rule for frequent progress reports (preparation, batches, a worker's progress file, the decoding
    helper): when a report is due: the first one, the last one, and at most one per `interval_s` between.

    Args:
        interval_s: the shortest time between two reports before the last.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._reported_at: float | None = None

    def due(self, done: int = 0, total: int | None = None) -> bool:
        """Whether to report now (the first report, the last one when `done >= total`, or `interval_s` since the
        previous); a due answer counts as a report. Without `total` there is no last one."""
        now = self.clock()
        if (
            (total is not None and done >= total)
            or self._reported_at is None
            or now - self._reported_at >= self.interval_s
        ):
            self._reported_at = now
            return True
        return False

    def reported(self) -> None:
        """Count a report made now for another reason: the next is due `interval_s` later."""
        self._reported_at = self.clock()
