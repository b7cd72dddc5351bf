"""Warm workers: a worker process that has already imported the engine waits for the next job.

Starting a worker costs 4.3-5.3 s of CPU and ~0.7 GB before it trains anything, to import TensorFlow,
Keras and the engine. That is most of a second run on cached features (0.26 s from the run's start to a
trained head). So `ProcessBackend` keeps a started worker waiting on each idle device: at the server's
start, and whenever a device's last job ends. It runs `python -m tl_core.jobs.worker --standby`, which imports
the engine, then reads one line on its standard input: the job, as JSON (workspace, run id, weights to
resume from, the job's kind). A worker is started only for an idle device, so its import never competes with a job
training there; when the next job follows at once (a queue), it takes that worker mid-import and waits for
the rest, no later than a fresh worker would have been ready. (Importing at a lower CPU priority instead,
beside a running job, was measured and dropped: the threads the import starts keep that priority, and the
job trained slower in them on a shared machine.)

The server hands a job over by writing that line and closing the pipe. A waiting worker exits when the
pipe closes without a job (the server closed the backend or ended) or when it is sent SIGTERM. SIGTERM
is held back while it waits, so a stop sent right after a hand-over reaches the job (it stops before
training), not the waiting process.

Example (the server's side):
    >>> warm = WarmWorkers()
    >>> warm.start("cpu", command, env=env, cwd=cwd)  # the device is idle: a worker starts importing
    >>> child = warm.take("cpu")  # None when none is waiting: start a worker the usual way
    >>> if child is not None and warm.hand_over(child, {"workspace": "ws", "run_id": run_id, "resume_from": None}):
    ...     pass  # the job runs in `child`
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_POLL_S = 0.5
IDLE_ENV = "TRANSFERLAB_WARM_IDLE_S"
DEFAULT_IDLE_S = 900.0  # a worker waiting this long with no job goes, giving back its ~0.7 GB


def idle_seconds() -> float:
    """How long a waiting worker waits for a job before it exits (`TRANSFERLAB_WARM_IDLE_S`; 0: forever)."""
    try:
        return max(0.0, float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_S)))
    except ValueError:
        return DEFAULT_IDLE_S


def wait_for_job(stream: int = 0, idle_s: float | None = None) -> dict[str, Any] | None:
    """In the waiting worker: import the engine, then block until a job arrives; None when told to go instead.

    SIGTERM is held back meanwhile (threads the import starts inherit that). Once a job has been read, a
    held-back SIGTERM reaches the caller's handler: a stop for that job. With no job, a SIGTERM, a closed
    pipe or `idle_s` seconds without a job (default `idle_seconds()`) end the wait: an idle server holds no
    worker's memory for long, and the next job starts a fresh worker (4-5 s later).
    """
    idle_s = idle_seconds() if idle_s is None else idle_s
    deadline = time.monotonic() + idle_s if idle_s > 0 else None
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        with contextlib.suppress(
            Exception
        ):  # an import that fails is left to the job: it imports again and records the error
            import tl_core.training.runner  # noqa: F401 - the import is the point
        while True:
            readable, _, _ = select.select([stream], [], [], _POLL_S)
            if readable:
                line = _read_line(stream)
                return json.loads(line) if line.strip() else None
            if signal.SIGTERM in signal.sigpending() or (deadline is not None and time.monotonic() > deadline):
                return None
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _read_line(stream: int) -> str:
    """Everything up to the first newline or the end of the pipe (the server writes one line, then closes)."""
    chunks: list[bytes] = []
    while not chunks or not chunks[-1].endswith(b"\n"):
        chunk = os.read(stream, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")


def send_output_to(path: Path) -> None:
    """Point this process's stdout and stderr (TensorFlow's messages, a crash trace) at `path`, appending."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for stream in (1, 2):
            os.dup2(descriptor, stream)
    finally:
        os.close(descriptor)


class WarmWorkers:
    """The server's side: at most one waiting worker per device."""

    def __init__(self) -> None:
        self._waiting: dict[str, subprocess.Popen] = {}
        self._closed = False

    def start(self, device: str, command: Sequence[str], *, env: Mapping[str, str], cwd: str) -> None:
        """Start a waiting worker for the idle `device` (its environment shows it only that device), unless one waits already."""
        if self._closed or (device in self._waiting and self._waiting[device].poll() is None):
            return
        self._waiting[device] = subprocess.Popen(
            [*command, "--standby"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )

    def take(self, device: str) -> subprocess.Popen | None:
        """The worker waiting for `device`, now no longer waiting; None when there is none or it has died."""
        child = self._waiting.pop(device, None)
        if child is None or child.poll() is not None:
            return None
        return child

    @staticmethod
    def hand_over(child: subprocess.Popen, job: Mapping[str, Any]) -> bool:
        """Give `child` its job; False when it could not be told (it died meanwhile: start the job the usual way)."""
        try:
            assert child.stdin is not None
            child.stdin.write((json.dumps(dict(job)) + "\n").encode("utf-8"))
            child.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            child.kill()
            return False
        return True

    def close(self) -> None:
        """Let every waiting worker go, and start no more: each exits once it sees its pipe closed (after its import, if still importing)."""
        self._closed = True
        for child in self._waiting.values():
            try:
                if child.stdin is not None:
                    child.stdin.close()
            except OSError:
                pass
        self._waiting.clear()

    def waiting(self) -> dict[str, int]:
        """Device -> pid of the worker waiting for it (for status pages and tests)."""
        return {device: child.pid for device, child in self._waiting.items() if child.poll() is None}
