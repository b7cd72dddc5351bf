"""Which job backend a server or a sweep uses, built from the settings: the local worker processes or Ray.

The local backend is the default and starts no Ray process (Ray is not even imported). `job_backend = "ray"`
(or `TRANSFERLAB_JOB_BACKEND=ray`) connects to `ray_address` at start; a bad address or an unreachable
cluster ends the start with one message naming the setting (`RayConnectionError`). On Ray, training runs go to
the cluster and advisory jobs (mode advisor, cut-depth probe, label review) run in worker processes on this
machine (`SplitBackend`): they are small probes over the server's cached features.

Example:
    >>> backend, slots = backend_for(load_server_settings())
    >>> manager = JobManager(store, slots=slots, backend=backend)
"""

from __future__ import annotations

from tl_core.jobs.backend import JobBackend
from tl_core.jobs.queue import default_slots
from tl_core.server.settings import ServerSettings

LOCAL_BACKEND = "local"
RAY_BACKEND = "ray"
BACKEND_NAMES = (LOCAL_BACKEND, RAY_BACKEND)


def backend_for(
    settings: ServerSettings, *, name: str | None = None, ray_address: str | None = None
) -> tuple[JobBackend, dict[str, int]]:
    """The backend `name` (default: the settings' `job_backend`) and the queue's device slots for it.

    Args:
        settings: the server's settings (jobs per device, warm workers, the Ray settings).
        name: `local` or `ray`, overriding the settings (the sweep's `--backend`).
        ray_address: overrides the settings' `ray_address` (the sweep's `--ray-address`).

    Raises:
        RayConnectionError: the Ray cluster cannot be reached; the message names the setting.
    """
    from tl_core.jobs.worker import ProcessBackend

    name = name or settings.job_backend
    if name == RAY_BACKEND:
        from tl_core.jobs.ray_backend import RayBackend  # imports Ray: only when asked for
        from tl_core.jobs.split_backend import SplitBackend

        runs = RayBackend.connect(
            ray_address if ray_address is not None else settings.ray_address,
            gpus_per_job=settings.gpus_per_job,
            cpus_per_job=settings.cpus_per_job,
            max_retries=settings.max_retries,
            shared_paths=settings.ray_shared_paths,
        )
        # No waiting worker: advisory jobs are occasional on a Ray server, and one would hold ~0.7 GB here.
        return SplitBackend(runs=runs, advisory=ProcessBackend(warm_workers=False)), runs.slots()
    return ProcessBackend(warm_workers=settings.warm_workers), default_slots(settings.jobs_per_device)
