"""Progress and stopping for the work before the epochs: decoding images and computing backbone features.

Both run for minutes on a 20,000-image folder at 224 px and have no training batch to stop after, so
their per-batch callbacks report `PreparationProgress` events (throttled) and honour a stop request by
raising `PreparationStopped`, which the runner records as a stopped run. Nothing half-done is cached:
the image and feature caches are written atomically, per split, only once complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tl_core.events import PREPARATION_STEP_NAMES, PreparationProgress, ProgressThrottle, TrainingListener
from tl_core.stopping import StopToken

# Often enough for a live bar, rare enough to cost nothing: a worker writes its progress file at most this often anyway.
REPORT_INTERVAL_S = 0.5

ProgressCallback = Callable[[int, int], None]


class PreparationStopped(Exception):
    """A stop request arrived while a split was being prepared (a stop, not a failure)."""

    def __init__(self, step: str, split: str, done: int, total: int) -> None:
        self.step, self.split, self.done, self.total = step, split, done, total
        super().__init__(f"Stopped while {PREPARATION_STEP_NAMES.get(step, step)} ({split}: {done:,} of {total:,})")


class PreparationReporter:
    """Makes the progress callbacks `build_image_cache` and `extract_features` call after each batch.

    Args:
        listener: receives the `PreparationProgress` events.
        run_id: the run they belong to.
        stop: checked on every call, reported or not.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self, listener: TrainingListener, run_id: str, stop: StopToken, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.listener = listener
        self.run_id = run_id
        self.stop = stop
        self.clock = clock

    def callback(self, step: str, split: str, *, stoppable: bool = True) -> ProgressCallback:
        """The callback for one split's decoding or features.

        `stoppable=False` for work after training (the test split's features): the trained model is
        evaluated and saved whatever arrives, as after the last batch of an epoch.
        """
        throttle = ProgressThrottle(REPORT_INTERVAL_S, self.clock)

        def report(done: int, total: int) -> None:
            if throttle.due(done, total):
                # First the event: a worker's listener is where a stop request from the page is noticed.
                self.listener.on_event(PreparationProgress(self.run_id, step=step, split=split, done=done, total=total))  # type: ignore[arg-type]
            if stoppable and done < total and self.stop.should_stop():
                raise PreparationStopped(step, split, done, total)

        return report
