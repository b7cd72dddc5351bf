"""When will a waiting job start? The queue replayed over the device slots, with durations from recent runs.

A run is expected to take the median seconds per epoch of the last completed runs times its planned
epochs; a running job, what its live progress says is left. Advisory jobs plan no epochs: they count as short.
"""

from __future__ import annotations

import heapq
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tl_core.jobs.live_progress import LiveProgress
from tl_core.jobs.queue import ANY_DEVICE, QueueEntry
from tl_core.runs.store import RunStore

HISTORY_RUNS = 10  # recent completed runs that set the seconds-per-epoch estimate
_HISTORY_TTL_S = 30.0


class StartEstimator:
    """Estimated start times of the waiting jobs.

    Args:
        store: the run store whose recent completed runs set the seconds per epoch.
        slots: jobs at once per device.
    """

    def __init__(self, store: RunStore, slots: Mapping[str, int]) -> None:
        self.store = store
        self.slots = dict(slots)
        self._history: tuple[float, dict[str | None, float]] = (-_HISTORY_TTL_S * 2, {})  # (read at, per mode)

    def estimate(
        self, running: Sequence[tuple[QueueEntry, LiveProgress | None]], waiting: Sequence[QueueEntry]
    ) -> dict[str, float | None]:
        """run_id -> estimated unix start time of each waiting job (None: unknown).

        Args:
            running: the running jobs with their live progress, when known.
            waiting: the waiting jobs in queue order.
        """
        now = time.time()
        busy = []
        for entry, progress in running:
            remaining = progress.eta_s if progress is not None else None
            seconds_per_epoch = self.seconds_per_epoch(_mode(entry))
            if remaining is None and seconds_per_epoch is not None:
                remaining = seconds_per_epoch * entry.planned_epochs - (now - (entry.started_at or now))
            busy.append(RunningJob(entry.assigned_device or entry.device, remaining))
        queued = []
        for entry in waiting:
            seconds_per_epoch = self.seconds_per_epoch(_mode(entry))
            expected = seconds_per_epoch * entry.planned_epochs if seconds_per_epoch is not None else None
            queued.append(WaitingJob(entry.run_id, entry.device, expected))
        return estimate_start_times(now, busy, queued, self.slots)

    def seconds_per_epoch(self, mode: str | None = None) -> float | None:
        """Median wall time per epoch (start-up included) of the last completed runs in `mode`, else of any mode
        (a fine-tuning epoch costs several head epochs, so modes are not mixed when history allows); None before any."""
        read_at, by_mode = self._history
        if time.monotonic() - read_at > _HISTORY_TTL_S:
            rates: dict[str | None, list[float]] = {}
            for record in self.store.list_runs(status="completed")[:HISTORY_RUNS]:
                if record.metrics.get("epochs_run") and record.metrics.get("elapsed_s"):
                    rate = record.metrics["elapsed_s"] / record.metrics["epochs_run"]
                    rates.setdefault(record.mode, []).append(rate)
                    rates.setdefault(None, []).append(rate)
            by_mode = {key: statistics.median(values) for key, values in rates.items()}
            self._history = (time.monotonic(), by_mode)
        return by_mode.get(mode, by_mode.get(None))


def _mode(entry: QueueEntry) -> str | None:
    return (entry.config.get("train") or {}).get("mode")


@dataclass(frozen=True)
class RunningJob:
    device: str
    remaining_s: float | None  # None: unknown


@dataclass(frozen=True)
class WaitingJob:
    run_id: str
    device: str  # `auto` or a device name
    expected_s: float | None  # None: unknown


def estimate_start_times(
    now: float, running: Sequence[RunningJob], waiting: Sequence[WaitingJob], slots: Mapping[str, int]
) -> dict[str, float | None]:
    """When each waiting job should start, by replaying the queue over the device slots.

    Args:
        now: the current unix time.
        running: jobs holding slots now, with the seconds they still need.
        waiting: waiting jobs in queue order, with the seconds each is expected to take.
        slots: slots per device.

    Returns:
        run_id -> estimated unix start time; None once an unknown duration comes first.
    """
    # Each device is a heap of the times its slots free up; an unknown duration frees a slot at infinity.
    free_at: dict[str, list[float]] = {}
    for device, count in slots.items():
        busy = [
            now + max(job.remaining_s, 0.0) if job.remaining_s is not None else math.inf
            for job in running
            if job.device == device
        ]
        free_at[device] = busy + [now] * max(count - len(busy), 0)
        heapq.heapify(free_at[device])
    estimates: dict[str, float | None] = {}
    for job in waiting:
        devices = [d for d in free_at if job.device in (ANY_DEVICE, d) and free_at[d]]
        if not devices:
            estimates[job.run_id] = None
            continue
        device = min(devices, key=lambda d: free_at[d][0])
        start = heapq.heappop(free_at[device])
        estimates[job.run_id] = None if math.isinf(start) else start
        heapq.heappush(free_at[device], start + job.expected_s if job.expected_s is not None else math.inf)
    return estimates
