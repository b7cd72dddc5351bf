"""One backend for training runs, another for advisory jobs: on a Ray server, runs go to the cluster while the
mode advisor, the cut-depth probe and the label review (small probes over the server's cached features) run in
worker processes on the server machine.

Both kinds still share the manager's queue, its slots, the per-user caps and Stop: an advisory job takes one of
the queue's slots while it runs. Each method sends the job to the backend of its kind, so a restarted server
asks the right backend about a job an earlier server started.

Example:
    >>> backend = SplitBackend(runs=RayBackend.connect(address), advisory=ProcessBackend(warm_workers=False))
    >>> manager = JobManager(store, slots=backend.runs.slots(), backend=backend)
"""

from __future__ import annotations

from collections.abc import Sequence

from tl_core.jobs.backend import RUN_JOB, Job, JobBackend, JobExit
from tl_core.jobs.live_progress import LiveProgress


class SplitBackend:
    """Sends training runs to `runs` and every advisory job to `advisory`.

    Args:
        runs: where `run` jobs go (e.g. `RayBackend`).
        advisory: where advisory jobs go (e.g. `ProcessBackend` on this machine).
    """

    def __init__(self, *, runs: JobBackend, advisory: JobBackend) -> None:
        self.runs = runs
        self.advisory = advisory

    def backend_of(self, job: Job) -> JobBackend:
        return self.runs if job.kind == RUN_JOB else self.advisory

    def prepare(self, devices: Sequence[str]) -> None:
        self.runs.prepare(devices)
        self.advisory.prepare(devices)

    def start(self, job: Job) -> str:
        return self.backend_of(job).start(job)

    def poll(self, job: Job) -> JobExit | None:
        return self.backend_of(job).poll(job)

    def progress(self, job: Job) -> LiveProgress | None:
        return self.backend_of(job).progress(job)

    def stop(self, job: Job) -> None:
        self.backend_of(job).stop(job)

    def kill(self, job: Job) -> None:
        self.backend_of(job).kill(job)

    def close(self) -> None:
        try:
            self.advisory.close()
        finally:
            self.runs.close()
