"""The job backend protocol: what the manager asks of wherever jobs run (worker processes, threads, other machines).

It sits apart from the manager and from every backend, so backends import it and the manager imports
backends without a cycle. A backend only knows jobs (start, poll, progress, stop, kill).

A job has a kind: a training `run` (a record in the user's run store, files in `runs/<id>/`), or an
advisory job, the mode advisor (`advice`), the cut-depth probe (`cut-probe`) or the label review's check
(`label-review`), whose record and result
live in `advice/<id>/` (tl_core/jobs/advisory.py). All kinds share the queue, the device slots and Stop.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from tl_core.jobs.live_progress import LiveProgress
from tl_core.layout import ADVISORY_FOLDER, RUN_TIME_LIMIT_FILE, RUNS_FOLDER
from tl_core.processes import process_is_alive, process_start_token

JobKind = Literal["run", "advice", "cut-probe", "label-review"]
RUN_JOB: JobKind = "run"
ADVICE_JOB: JobKind = "advice"
CUT_PROBE_JOB: JobKind = "cut-probe"
LABEL_REVIEW_JOB: JobKind = "label-review"  # likely label errors and near-duplicates (tl_core/insight/review_job.py)
ADVISORY_KINDS: tuple[JobKind, ...] = (ADVICE_JOB, CUT_PROBE_JOB, LABEL_REVIEW_JOB)
JOB_KINDS: tuple[JobKind, ...] = (RUN_JOB, *ADVISORY_KINDS)


def job_folder(workspace: str | Path, kind: str, job_id: str) -> Path:
    """Where a job's files are (progress, stop request, worker log): `runs/<id>` for a run, `advice/<id>` for an advisory job."""
    return Path(workspace) / (RUNS_FOLDER if kind == RUN_JOB else ADVISORY_FOLDER) / job_id


@dataclass(frozen=True)
class Job:
    """One job as a backend sees it: which run (or advisory job), in which workspace, on which device.

    `worker` is the backend's own reference to what runs the job (set once started), stored in the
    queue so a restarted server can find the job again.
    """

    run_id: str  # the run's id, or the advisory job's
    workspace: str
    device: str
    resume_from: str | None = None
    worker: str | None = None
    kind: JobKind = RUN_JOB

    @property
    def folder(self) -> Path:
        return job_folder(self.workspace, self.kind, self.run_id)


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
