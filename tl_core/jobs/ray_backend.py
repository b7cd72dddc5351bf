"""Jobs on a Ray cluster: the `JobBackend` the server (`job_backend = "ray"`) and `sweep --backend ray` use.

The server stays the only Ray client: each run is one `RunOnNode` actor (tl_core/jobs/ray_job.py) asking for
`gpus_per_job` GPUs where the cluster has GPUs, else `cpus_per_job` CPUs; Ray places it on a node. Our queue
still decides what starts (fair order, per-user caps); the queue's slots are the cluster's capacity in jobs.

Nothing is shared but Ray: the TransferLab package goes to the nodes as a Ray `py_modules` runtime env (the
nodes need the same Python packages installed, requirements.txt); the dataset is put once into Ray's object
store per dataset key and each node unpacks it once, unless it lies on a folder every node mounts at the same path
(`ray_shared_paths`: read in place, tl_core/jobs/ray_datasets.py); events, progress and each
new checkpoint stream back while the run trains (the server replays the events into its run store, so the
Train page's curves move as for a local run); the run's files come back into the server's run folder at the end.

A node lost mid-run: the run starts again on another node from the last checkpoint that reached the server,
up to `max_retries` times, under the same run id; its log says so. Each actor is detached and named after its
run (`actor_name`, namespace `transferlab`), so it outlives the server: a restarted server's first `poll` of a run
it did not start finds the actor by name and follows it (events from where the server left off, progress,
checkpoints, files at the end), and ends it once the run has ended. A run whose actor is gone is `interrupted`,
resumable from the checkpoint in the server's run folder.

Example:
    >>> backend = RayBackend.connect("10.0.0.5:6379")
    >>> manager = JobManager(store, slots=backend.slots(), backend=backend)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tl_core
from tl_core.errors import TransferLabError
from tl_core.events import RunFinished
from tl_core.jobs.backend import RUN_JOB, Job, JobExit
from tl_core.jobs.live_progress import LiveProgress
from tl_core.jobs.ray_datasets import DatasetShipper
from tl_core.jobs.ray_job import RunOnNode
from tl_core.layout import CHECKPOINT_FILE, RAY_EVENTS_FILE, SUMMARY_FILE
from tl_core.runs.recorder import RunRecorder
from tl_core.runs.store import RunStore

RAY_DEVICE = "ray"  # the queue's one device: the cluster
ADDRESS_SETTING = "TRANSFERLAB_RAY_ADDRESS / `ray_address` in transferlab.toml"
POLL_INTERVAL_S = 0.5
CONNECT_TIMEOUT_S = 5.0
RAY_NAMESPACE = "transferlab"  # the run actors' names live here, whatever namespace the server's connection has


class RayConnectionError(TransferLabError):
    """The Ray cluster cannot be reached; the message names the setting and what to do."""


@dataclass
class _RunningJob:
    """The server's side of one run on the cluster."""

    job: Job
    request: dict | None  # None for a run followed after a restart, until a lost node needs it started again
    payload: list
    recorder: RunRecorder
    attempt: int = 1
    actor: Any = None
    result: Any = None
    pending_poll: Any = None
    polled_at: float = 0.0
    events_seen: int = 0
    checkpoint_version: int = 0
    last_epoch: int = 0
    killed: bool = False
    node_id: str | None = None
    progress: LiveProgress = field(default_factory=lambda: LiveProgress(status="running"))


class RayBackend:
    """Runs each job as a Ray actor on the cluster this process is connected to (build it with `connect`).

    Args:
        gpus_per_job: GPUs per job where the cluster has GPUs (fractions share one).
        cpus_per_job: CPUs per job.
        max_retries: restarts of a run whose node was lost, each from its last checkpoint.
        owns_cluster: this backend started the Ray cluster (no address given) and ends it on `close`.
        shared_paths: folders every node mounts at the same path; datasets there are not shipped (`datasets.shipped`).
    """

    def __init__(
        self,
        *,
        gpus_per_job: float = 1.0,
        cpus_per_job: float = 1.0,
        max_retries: int = 2,
        owns_cluster: bool = False,
        shared_paths: tuple[Path, ...] = (),
    ) -> None:
        import ray

        self.max_retries = max_retries
        self.owns_cluster = owns_cluster
        resources = ray.cluster_resources()
        self.uses_gpus = resources.get("GPU", 0) > 0
        self.resources = {"num_cpus": cpus_per_job, "num_gpus": gpus_per_job if self.uses_gpus else 0}
        per_job = gpus_per_job if self.uses_gpus else cpus_per_job
        self.capacity = max(1, math.floor(resources.get("GPU" if self.uses_gpus else "CPU", 0) / per_job))
        self._actor_class = ray.remote(max_concurrency=6, max_restarts=0)(RunOnNode)
        self._jobs: dict[str, _RunningJob] = {}
        self.datasets = DatasetShipper(shared_paths)
        self._lock = threading.RLock()

    @classmethod
    def connect(cls, address: str | None, **options: Any) -> RayBackend:
        """Connect to the cluster at `address` (HOST:PORT or `auto`); None starts one on this machine.

        A process already connected keeps its connection (a test's cluster, started with `job_runtime_env()`).

        Raises:
            RayConnectionError: nothing answers at the address, or Ray refuses the connection.
        """
        import ray

        if ray.is_initialized():
            return cls(**options)
        if address is not None and address != "auto":
            check_reachable(address)
        try:
            ray.init(
                address=address,
                namespace=RAY_NAMESPACE,
                include_dashboard=False,
                logging_level="ERROR",
                runtime_env=job_runtime_env(),
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayConnectionError(
                f"Could not connect to the Ray cluster at {address} ({ADDRESS_SETTING}): {exc}. "
                "Start the head node with `ray start --head` and use the address it prints, or on a cluster node 'auto'."
            ) from exc
        return cls(owns_cluster=address is None, **options)

    def slots(self) -> dict[str, int]:
        """The queue's slots: as many jobs at once as the cluster has GPUs (or CPUs) for."""
        return {RAY_DEVICE: self.capacity}

    def prepare(self, devices: list[str]) -> None:
        """Nothing waits between jobs: Ray keeps its own worker processes."""

    def start(self, job: Job) -> str:
        if job.kind != RUN_JOB:
            raise TransferLabError(
                "Advisory jobs run on the server machine, not on Ray nodes: build the server's backend with "
                "`backend_for(settings)`, which sends them to local worker processes (tl_core/jobs/split_backend.py)."
            )
        request, payload = self._request(job)
        running = _RunningJob(
            job, request, payload, RunRecorder(RunStore(job.workspace), job.run_id, held_by_queue=True)
        )
        with self._lock:
            self._jobs[job.run_id] = running
            self._launch(running, attempt=1)
        return f"ray:{socket.gethostname()}:{os.getpid()}:{job.run_id}"

    def poll(self, job: Job) -> JobExit | None:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        # Both end `interrupted` (a signal-like cause, not the job's failure): resumable from the checkpoint
        # that reached the server's run folder.
        if not ray.is_initialized():  # never let a call start a new local cluster (Ray's auto-init)
            return JobExit("lost its connection to the Ray cluster", signal="DISCONNECTED")
        with self._lock:
            running = self._jobs.get(job.run_id) or self._follow(job)
            if running is None:
                return JobExit("ended with the server that started it (its Ray actor is gone)", signal="SERVER_GONE")
            self._sync(running)
            ready, _ = ray.wait([running.result], timeout=0)
            if not ready:
                return None
            try:
                outcome = ray.get(running.result)
            except RayTaskError as exc:  # an error in our code on the node, outside the run's own handling
                ray.kill(running.actor, no_restart=True)
                running.recorder.store.append_log(job.run_id, f"error: the job failed on its Ray node: {exc}")
                return JobExit(f"failed on its Ray node ({str(exc).splitlines()[0]})", exit_code=1)
            except RayActorError as exc:
                if running.killed:
                    return JobExit("was killed (its Ray actor was ended)", signal="SIGKILL")
                return self._node_lost(running, exc)
            ray.kill(running.actor, no_restart=True)  # an idle actor would keep holding its CPU or GPU
            self._finish(running, outcome)
            return JobExit("ended", exit_code=0)

    def progress(self, job: Job) -> LiveProgress | None:
        with self._lock:
            running = self._jobs.get(job.run_id)
            return dataclasses.replace(running.progress) if running else None

    def node_of(self, run_id: str) -> str | None:
        """The Ray node id (hex) running `run_id`, once its actor has answered a poll."""
        with self._lock:
            running = self._jobs.get(run_id)
            return running.node_id if running else None

    def stop(self, job: Job) -> None:
        import ray

        with self._lock:
            running = self._jobs.get(job.run_id)
        if running is not None and ray.is_initialized():
            running.actor.request_stop.remote()

    def kill(self, job: Job) -> None:
        import ray

        with self._lock:
            running = self._jobs.get(job.run_id)
        if running is not None and ray.is_initialized():
            running.killed = True
            ray.kill(running.actor, no_restart=True)

    def close(self) -> None:
        """Let the cluster go when this backend started it (`sweep --backend ray` with no address)."""
        import ray

        if self.owns_cluster and ray.is_initialized():
            ray.shutdown()

    # -- the job's life --------------------------------------------------------------------------
    def _request(self, job: Job) -> tuple[dict, list]:
        """What the node needs to train `job`: its config, its dataset's description and `[ObjectRef]`, weights."""
        record = RunStore(job.workspace).get(job.run_id)
        dataset, payload = self.datasets.ship(record.config["data"])
        weights = Path(job.resume_from).read_bytes() if job.resume_from else None
        return {"run_id": job.run_id, "config": record.config, "dataset": dataset, "initial_weights": weights}, payload

    def _launch(self, running: _RunningJob, attempt: int) -> None:
        assert running.request is not None
        running.request["attempt"] = running.attempt = attempt
        running.events_seen = 0
        running.checkpoint_version = 0
        running.pending_poll = None
        running.actor = self._actor_class.options(
            **self.resources,
            name=actor_name(running.job.workspace, running.job.run_id, attempt),
            namespace=RAY_NAMESPACE,
            lifetime="detached",  # a restarted server follows it; we end it ourselves once its outcome is here
        ).remote()
        running.result = running.actor.run.remote(running.request, running.payload)
        running.recorder = RunRecorder(running.recorder.store, running.job.run_id, held_by_queue=True)
        self._save_events_seen(running)

    def _follow(self, job: Job) -> _RunningJob | None:
        """A run an earlier server started whose actor still runs, taken up again; None when its actor is gone."""
        import ray

        if job.kind != RUN_JOB:
            return None
        for attempt in range(self.max_retries + 1, 0, -1):
            try:
                actor = ray.get_actor(actor_name(job.workspace, job.run_id, attempt), namespace=RAY_NAMESPACE)
                break
            except ValueError:  # no live actor of that name
                continue
        else:
            return None
        store = RunStore(job.workspace)
        epochs_done = max((epoch.epoch for epoch in store.epochs(job.run_id)), default=0)
        running = _RunningJob(
            job, None, [], RunRecorder(store, job.run_id, epochs_done=epochs_done, held_by_queue=True), attempt, actor
        )
        running.events_seen = _events_recorded(store.run_dir(job.run_id), attempt)
        running.last_epoch = epochs_done
        running.result = actor.outcome.remote()  # `run`'s result went to the server that is gone
        self._jobs[job.run_id] = running
        store.append_log(
            job.run_id,
            f"warning: the server restarted while this run trained on the Ray cluster; its Ray actor (attempt {attempt}) "
            f"still runs, so this server follows it: same run id, {epochs_done} epochs recorded so far.",
        )
        return running

    def _save_events_seen(self, running: _RunningJob) -> None:
        """How many of the actor's events the run store holds: a restarted server goes on from there."""
        record = json.dumps({"attempt": running.attempt, "events": running.events_seen}).encode()
        _write_atomically(running.recorder.store.run_dir(running.job.run_id) / RAY_EVENTS_FILE, record)

    def _sync(self, running: _RunningJob, *, final: bool = False) -> None:
        """Fetch what the node has new (events, progress, checkpoint) without waiting for it."""
        import ray
        from ray.exceptions import RayError

        if running.pending_poll is None and time.monotonic() - running.polled_at >= POLL_INTERVAL_S:
            running.pending_poll = running.actor.poll.remote(running.events_seen, running.checkpoint_version)
            running.polled_at = time.monotonic()
        if running.pending_poll is None or not ray.wait([running.pending_poll], timeout=0)[0]:
            return
        try:
            news = ray.get(running.pending_poll)
        except RayError:  # the node is gone: `poll` learns it from the run's result
            return
        finally:
            running.pending_poll = None
        self._replay(running, news["events"])
        running.node_id = news["node_id"]
        if news["progress"]:
            running.progress = LiveProgress.from_dict(news["progress"])
        if news["checkpoint"]:
            _write_atomically(running.recorder.store.run_dir(running.job.run_id) / CHECKPOINT_FILE, news["checkpoint"])
            running.checkpoint_version = news["checkpoint_version"]

    def _replay(self, running: _RunningJob, events: list, *, final: bool = False) -> None:
        """Record the node's events in the server's store under the server's run id (epochs, phases, log).

        The run's end (`RunFinished`) waits for `final`: the run shows as ended only once its files are back.
        """
        for event in events:
            if isinstance(event, RunFinished) and not final:
                return
            running.recorder.on_event(dataclasses.replace(event, run_id=running.job.run_id))
            running.last_epoch = max(running.last_epoch, getattr(event, "epoch", 0) or 0)
            running.events_seen += 1
        if events:
            self._save_events_seen(running)

    def _finish(self, running: _RunningJob, outcome: dict) -> None:
        """Bring the run's files and records back into the server's run store."""
        store, run_id = running.recorder.store, running.job.run_id
        run_dir = store.run_dir(run_id)
        for relative, data in outcome["files"].items():
            if relative == SUMMARY_FILE:  # it names the node's own record: give it the server's run id
                summary = json.loads(data)
                data = json.dumps({**summary, "run_id": run_id}, indent=1).encode()
            _write_atomically(run_dir / relative, data)
        if outcome["dataset_fingerprint"]:
            store.update_dataset(run_id, outcome["dataset_fingerprint"], outcome["dataset_stats"])
        store.update_metrics(run_id, outcome["metrics"])
        for note in outcome["notes"]:
            store.append_log(run_id, note)
        self._replay(running, outcome["events"][running.events_seen :], final=True)
        if store.get(run_id).status in ("queued", "running"):  # ended before the runner's own record (bad data ...)
            store.finish_run(run_id, outcome["status"], error=outcome["error"])
            store.append_log(run_id, f"{outcome['status']}: {outcome['error'] or ''}".strip())
        (run_dir / RAY_EVENTS_FILE).unlink(missing_ok=True)

    def _node_lost(self, running: _RunningJob, error: Exception) -> JobExit | None:
        """Start the run again elsewhere from its last checkpoint, or end it when the retries are spent."""
        store, run_id = running.recorder.store, running.job.run_id
        attempt = running.attempt
        if attempt > self.max_retries:
            return JobExit(
                f"was lost with its Ray node {attempt} times (max_retries={self.max_retries}): {str(error).splitlines()[0]}",
                signal="NODE_LOST",
            )
        if running.request is None:  # followed after a restart: its dataset goes out again from this server
            running.request, running.payload = self._request(running.job)
        checkpoint = store.run_dir(run_id) / CHECKPOINT_FILE
        if checkpoint.is_file():
            running.request["initial_weights"] = checkpoint.read_bytes()
            start = (
                f"from the last checkpoint that reached the server (training had reached epoch {running.last_epoch})"
            )
        else:
            start = "from the start (no checkpoint had come back yet)"
        store.append_log(
            run_id,
            f"warning: the Ray node running this run was lost; retry {attempt} of {self.max_retries} "
            f"on another node, {start}. Same run id.",
        )
        self._launch(running, attempt + 1)
        return None


def job_runtime_env(env_vars: dict[str, str] | None = None) -> dict:
    """What every job's Ray worker gets: this TransferLab package (uploaded to the cluster, no shared filesystem).

    Ray uploads a local package only for the whole connection, so pass this to `ray.init(runtime_env=...)`.
    """
    return {
        "py_modules": [str(Path(tl_core.__file__).resolve().parent)],
        "env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2", **(env_vars or {})},
    }


def check_reachable(address: str) -> None:
    """Refuse at once an address nothing answers at (Ray itself retries for minutes), naming the setting."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            return
    except (OSError, ValueError) as exc:
        raise RayConnectionError(
            f"No Ray cluster answers at {address} ({ADDRESS_SETTING}): {exc}. Start the head node with "
            "`ray start --head` there (port 6379 by default) and open the ports README lists, or fix the address."
        ) from exc


def actor_name(workspace: str | Path, run_id: str, attempt: int) -> str:
    """The Ray actor's name for one attempt at a run: unique per workspace, found again by a restarted server."""
    digest = hashlib.sha256(str(Path(workspace).resolve()).encode()).hexdigest()[:12]
    return f"run-{run_id}-{digest}-{attempt}"


def _events_recorded(run_dir: Path, attempt: int) -> int:
    """How many events of the actor's `attempt` the server recorded before it went (0 when unknown)."""
    try:
        record = json.loads((run_dir / RAY_EVENTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    return int(record.get("events", 0)) if record.get("attempt") == attempt else 0


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
