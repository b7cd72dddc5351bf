"""Jobs in threads of this process: the backend for tests and scripts, where a worker process per job is overkill.

A crash in a job takes the whole process down, and a job cannot be killed (`kill` asks it to stop), so
servers use `tl_core.jobs.worker.ProcessBackend`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tl_core.config import RunConfig
from tl_core.jobs.backend import RUN_JOB, Job, JobExit, reference_is_alive, this_process_reference
from tl_core.jobs.live_progress import LiveProgress, ProgressTracker
from tl_core.jobs.worker import execute_job
from tl_core.runs.store import RunStore


@dataclass
class _ThreadJob:
    thread: threading.Thread
    stop: object
    progress: LiveProgress


class ThreadBackend:
    """Runs each job in a daemon thread of this process (tests and scripts; a crash takes the process down).

    Args:
        run: the function that runs one experiment (the real `run_experiment` unless a test swaps it);
            advisory jobs always run the real advisor.
    """

    def __init__(self, run: Callable[..., object] | None = None) -> None:
        self._run = run
        self._jobs: dict[str, _ThreadJob] = {}

    def start(self, job: Job) -> str:
        from tl_core.stopping import StopToken

        config = RunConfig.from_dict(RunStore(job.workspace).get(job.run_id).config) if job.kind == RUN_JOB else None
        tracker = ProgressTracker(config, run_id=job.run_id)
        stop = StopToken()
        thread = threading.Thread(
            target=execute_job,
            args=(job,),
            kwargs={"listener": tracker, "stop": stop, "run": self._run},
            name=f"transferlab-{job.run_id}",
            daemon=True,
        )
        self._jobs[job.run_id] = _ThreadJob(thread, stop, tracker.progress)
        thread.start()
        return this_process_reference("thread")

    def poll(self, job: Job) -> JobExit | None:
        known = self._jobs.get(job.run_id)
        if known is not None:
            return None if known.thread.is_alive() else JobExit("finished", exit_code=0)
        # Started by another server process: it runs as long as that process does.
        if job.worker and job.worker.split(":")[2] != str(os.getpid()) and reference_is_alive(job.worker) is not False:
            return None
        return JobExit("stopped: the server process running it ended", exit_code=None)

    def progress(self, job: Job) -> LiveProgress | None:
        known = self._jobs.get(job.run_id)
        return known.progress if known else None

    def stop(self, job: Job) -> None:
        known = self._jobs.get(job.run_id)
        if known is not None:
            known.stop.request_stop()

    def prepare(self, devices: Sequence[str]) -> None:
        """Nothing to prepare: a thread starts at once."""

    def kill(self, job: Job) -> None:
        self.stop(job)  # a thread cannot be killed: the closest is a stop after the current batch

    def close(self) -> None:
        """Nothing waits between jobs here."""
