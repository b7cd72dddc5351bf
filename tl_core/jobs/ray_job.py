"""One run on a Ray node: the actor the Ray backend starts (tl_core/jobs/ray_backend.py), in a node's own folder.

No filesystem is shared with the server, except folders the server lists in `ray_shared_paths` (a dataset there
is read in place). Any other dataset arrives through Ray's object store and is unpacked once per node into
`<node temp>/transferlab-ray/datasets/<dataset key>/` (the next run of a sweep on that node finds it there); the run trains in a run store of its own under `<node temp>/transferlab-ray/jobs/`, never
in the server's workspace. Its training events are kept in order, so the server replays them into its own
run store (epochs, phases, log, status) while the run trains; its checkpoint is handed over as soon as a
new one is written, so a run whose node is lost can start again elsewhere; its files come back at the end.

The actor is detached and named: it outlives the server that started it, and a restarted server finds it by name
and collects its outcome (`outcome`). A server ends the actor once it has the outcome; an actor whose outcome
nobody collects within `UNCLAIMED_OUTCOME_S` of the run's end ends itself, so no actor holds its CPU or GPU for good.

TensorFlow is imported here only, inside the job, with GPU memory growth on; Ray sets `CUDA_VISIBLE_DEVICES`
to the GPUs it gave the actor, and TensorFlow sees only those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import os
import shutil
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tl_core.config import RunConfig
from tl_core.events import BatchProgress, EpochEnded, PreparationProgress, TrainingEvent
from tl_core.jobs.live_progress import ProgressTracker
from tl_core.layout import CHECKPOINT_FILE, LOG_FILE, PROGRESS_FILE, RESUME_WEIGHTS_FILE
from tl_core.runs.store import RunStore

NODE_ROOT_NAME = "transferlab-ray"
FOLDER_DATASET = "folder"  # a dataset folder, shipped as a tar of it
FILE_DATASET = "file"  # an archive or a text CSV, shipped as it is
SHARED_DATASET = "shared"  # on a folder every node mounts at the same path: read in place, nothing shipped
UNCLAIMED_OUTCOME_S = 3600.0  # a finished run waits this long for a (restarted) server to collect its outcome
_NOT_SHIPPED_BACK = {PROGRESS_FILE, LOG_FILE, RESUME_WEIGHTS_FILE}  # the server keeps its own log and progress


def node_root() -> Path:
    """This node's TransferLab folder (Ray's temp folder is per machine; nothing here is shared)."""
    root = Path(os.environ.get("TRANSFERLAB_RAY_NODE_DIR") or Path(tempfile.gettempdir()) / NODE_ROOT_NAME)
    root.mkdir(parents=True, exist_ok=True)
    return root


def dataset_on_node(key: str, name: str, kind: str, payload: list) -> tuple[Path, bool]:
    """The shipped dataset on this node, unpacked on first use; returns its path and whether it was fetched now.

    Args:
        key: the dataset's key (sha256 of the shipped bytes): the node's cache folder.
        name: the folder's or file's name, kept so the data scans as it does on the server.
        kind: `folder` (a tar of the folder) or `file` (the file's bytes).
        payload: `[ObjectRef]` of the bytes, wrapped in a list so Ray fetches it only when the cache lacks it.
    """
    import ray

    cache = node_root() / "datasets" / key
    target = cache / name
    if target.exists():
        return target, False
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two jobs of a sweep on one node: one fetches, the other waits
        if target.exists():
            return target, False
        data = ray.get(payload[0])
        partial = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=cache.parent))
        if kind == FOLDER_DATASET:
            with tarfile.open(fileobj=io.BytesIO(data)) as bundle:
                bundle.extractall(partial, filter="data")
        else:
            (partial / name).write_bytes(data)
        os.replace(partial, cache)
    return target, True


def node_name() -> str:
    """This Ray node as a run's `node` shows it: its address and the start of its id."""
    import ray

    return f"{ray.util.get_node_ip_address()} ({_node_id()[:8]})"


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class RunOnNode:
    """The actor that trains one run on its node (`ray.remote(RunOnNode)` on the server side).

    The server calls `run` once, and meanwhile `poll` (new events, progress, a new checkpoint) and
    `request_stop`; Ray runs these calls in the actor's threads (`max_concurrency`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[TrainingEvent] = []
        self._tracker: ProgressTracker | None = None
        self._run_dir: Path | None = None
        self._stop: Any = None
        self._stop_requested = False
        self._checkpoint: bytes | None = None
        self._checkpoint_version = 0
        self._node_id = _node_id()
        self._attempt = 0
        self._ended = threading.Event()
        self._outcome: dict | None = None
        self._error: BaseException | None = None

    def run(self, request: dict, payload: list) -> dict:
        """Train the run `request` describes on this node; returns its outcome, its events and its files.

        Args:
            request: `run_id`, `config` (the server's run config), `dataset` (`key`, `name`, `kind`, and `path`
                for a shared one), `initial_weights` (checkpoint bytes to start from, or None), `attempt`, and
                optionally `keep_outcome_s` (how long an uncollected outcome waits; default `UNCLAIMED_OUTCOME_S`).
            payload: `[ObjectRef]` of the dataset's bytes (see `dataset_on_node`); empty for a shared dataset.
        """
        self._attempt = request["attempt"]
        try:
            self._outcome = self._train(request, payload)
            return self._outcome
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ended.set()
            ender = threading.Timer(request.get("keep_outcome_s", UNCLAIMED_OUTCOME_S), _end_this_actor)
            ender.daemon = True
            ender.start()

    def outcome(self) -> dict:
        """`run`'s outcome once the run has ended (a restarted server asks this: `run`'s caller is gone)."""
        self._ended.wait()
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._outcome

    def _train(self, request: dict, payload: list) -> dict:
        _gpu_memory_growth()
        remove_job_folders()
        from tl_core.jobs.worker import execute_run
        from tl_core.stopping import StopToken

        node = node_name()
        dataset = request["dataset"]
        if dataset["kind"] == SHARED_DATASET:
            data_path, how = Path(dataset["path"]), f"read in place from the shared path {dataset['path']}"
            if not data_path.exists():
                raise FileNotFoundError(
                    f"{data_path} is not on Ray node {node}: mount the folders listed in ray_shared_paths at the "
                    "same path on every node, or remove the folder from ray_shared_paths."
                )
        else:
            data_path, fetched = dataset_on_node(dataset["key"], dataset["name"], dataset["kind"], payload)
            how = f"{dataset['key'][:12]} " + (
                "sent to this node" if fetched else "already on this node (cached by its key)"
            )
        config = RunConfig.from_dict(request["config"])
        config = config.replace(data=dataclasses.replace(config.data, source=str(data_path), readable_roots=()))
        store = RunStore(node_root() / "jobs" / f"{request['run_id']}-{request['attempt']}-{os.getpid()}")
        record = store.create_run(
            config=config.to_dict(),
            backbone=config.model.backbone,
            weights=config.model.weights,
            mode=config.train.mode,
            name=config.name,
            held_by_queue=True,
        )
        run_dir = store.run_dir(record.id)
        resume_from = None
        if request.get("initial_weights"):
            resume_from = str(run_dir / RESUME_WEIGHTS_FILE)
            Path(resume_from).write_bytes(request["initial_weights"])
        with self._lock:
            self._tracker = ProgressTracker(config, run_id=record.id)
            self._run_dir = run_dir
            self._stop = StopToken()
            if self._stop_requested:
                self._stop.request_stop()
        notes = [f"Ray node {node}, attempt {request['attempt']}: dataset {how}."]
        status = execute_run(store, record.id, listener=self, stop=self._stop, resume_from=resume_from, node=node)
        stored = store.get(record.id)
        with self._lock:
            events = list(self._events)
        return {
            "status": status,
            "error": stored.error,
            "metrics": stored.metrics,
            "dataset_fingerprint": stored.dataset_fingerprint,
            "dataset_stats": stored.dataset_stats,
            "events": events,
            "notes": notes,
            "node": node,
            "files": _run_files(run_dir),
        }

    def on_event(self, event: TrainingEvent) -> None:
        """The run's listener: progress for every event, and the events the server records kept in order.

        At an epoch's end the checkpoint is read here, in the training thread: no callback writes it meanwhile,
        so the copy handed to the server is always whole.
        """
        checkpoint = None
        if isinstance(event, EpochEnded) and self._run_dir is not None:
            checkpoint = _changed_file(self._run_dir / CHECKPOINT_FILE, self._checkpoint_version)
        with self._lock:
            if self._tracker is not None:
                self._tracker.on_event(event)
            if not isinstance(event, (BatchProgress, PreparationProgress)):
                self._events.append(event)
            if checkpoint is not None:
                self._checkpoint, self._checkpoint_version = checkpoint

    def poll(self, events_seen: int, checkpoint_version: int) -> dict:
        """What is new since the server's last poll: events after `events_seen`, progress, a newer checkpoint."""
        with self._lock:
            events = self._events[events_seen:]
            progress = self._tracker.progress.to_dict() if self._tracker else None
            newer = self._checkpoint_version > checkpoint_version
            checkpoint = self._checkpoint if newer else None
            version = self._checkpoint_version if newer else checkpoint_version
        return {
            "events": events,
            "progress": progress,
            "checkpoint": checkpoint,
            "checkpoint_version": version,
            "node_id": self._node_id,
            "attempt": self._attempt,
        }

    def request_stop(self) -> None:
        """Stop after the current batch, keeping the best weights (the Stop button)."""
        with self._lock:
            self._stop_requested = True
            if self._stop is not None:
                self._stop.request_stop()


def _end_this_actor() -> None:
    """End this (detached) actor: its outcome was never collected, and it would hold its CPU or GPU for good."""
    import ray

    ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def _changed_file(path: Path, known_version: int) -> tuple[bytes, int] | None:
    """The file's bytes and mtime when it changed since `known_version` (an mtime); None when not (or none yet)."""
    with contextlib.suppress(OSError):
        version = path.stat().st_mtime_ns
        if version > known_version:
            return path.read_bytes(), version
    return None


def _run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file the run wrote (model, checkpoint, evaluation, summary, split, TensorBoard ...), by relative path."""
    files = {}
    for path in sorted(run_dir.rglob("*")):
        relative = path.relative_to(run_dir).as_posix()
        if path.is_file() and relative not in _NOT_SHIPPED_BACK:
            files[relative] = path.read_bytes()
    return files


def _gpu_memory_growth() -> None:
    """TensorFlow takes GPU memory as it needs it, so jobs sharing a GPU (`gpus_per_job` < 1) both fit."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # already initialised in this worker: growth is set for it
            tf.config.experimental.set_memory_growth(gpu, True)


def remove_job_folders(older_than_s: float = 7 * 24 * 3600) -> None:
    """Delete this node's job folders older than a week (their files went back to the server)."""
    jobs = node_root() / "jobs"
    for folder in jobs.glob("*") if jobs.is_dir() else []:
        with contextlib.suppress(OSError):
            if time.time() - folder.stat().st_mtime > older_than_s:
                shutil.rmtree(folder)
