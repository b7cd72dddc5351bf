"""The job backend protocol: what the manager asks of wherever jobs run (worker processes, threads, other machines).

It sits apart from the manager and from every backend, so backends import it and the manager imports
backends without a cycle. A backend only knows jobs (start, poll, progress, stop, kill).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tl_core.jobs.live_progress import LiveProgress
from tl_core.processes import process_is_alive, process_start_token

# Written into a run's folder when the manager stops it at the run-time limit; holds the message the run ends with.
RUN_TIME_LIMIT_FILE = "run_time_limit.txt"


@dataclass(frozen=True)
class Job:
    """One job as a backend sees it: which run, in which workspace, on which device.

    `worker` is the backend's own reference to what runs the job (set once started), stored in the
    queue so a restarted server can find the job again.
    """

    run_id: str
    workspace: str
    device: str
    resume_from: str | None = None
    worker: str | None = None


@dataclass(frozen=True)
class JobExit:
    """How a job's worker ended: `signal` (e.g. SIGKILL) when it was killed, else its exit code."""

    description: str  # "was killed by SIGKILL (...)", completes "The worker process ..."
    exit_code: int | None = None
    signal: str | None = None


class JobBackend(Protocol):
    """Where jobs run. Every method takes the `Job` (with `worker` once started) and returns quickly."""

    def prepare(self, devices: Sequence[str]) -> None:
        """Get ready for jobs on these idle devices (e.g. start a worker that waits for the next job); may do nothing."""

    def start(self, job: Job) -> str:
        """Start the job; returns the worker reference the queue keeps (a pid, a remote job id ...)."""

    def poll(self, job: Job) -> JobExit | None:
        """None while the job runs; how it ended once it has."""

    def progress(self, job: Job) -> LiveProgress | None:
        """The job's live progress, when known."""

    def stop(self, job: Job) -> None:
        """Ask the job to stop after its current batch, keeping the best weights."""

    def kill(self, job: Job) -> None:
        """End the job now (it loses its current epoch)."""

    def close(self) -> None:
        """Release what the backend keeps between jobs (waiting workers); running jobs are not touched."""


def run_time_limit_message(run_dir: Path) -> str | None:
    """The message of a run the manager stopped at the run-time limit; None for any other run."""
    try:
        return (run_dir / RUN_TIME_LIMIT_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def this_process_reference(kind: str) -> str:
    """`kind:host:pid:start` for this process: tells a later server whether it still runs."""
    pid = os.getpid()
    return f"{kind}:{socket.gethostname()}:{pid}:{process_start_token(pid) or ''}"


def reference_is_alive(reference: str) -> bool | None:
    """Whether the process in a `kind:host:pid:start` reference runs; None when it is on another host."""
    _, host, pid, start = reference.split(":", 3)
    if host != socket.gethostname():
        return None
    return process_is_alive(int(pid), start or None)
