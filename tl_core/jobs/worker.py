"""One job in its own process, and the backend that starts such processes.

`python -m tl_core.jobs.worker --workspace W --run-id ID` runs one queued run with `run_experiment`;
with `--kind advice` or `--kind cut-probe`, one advisory job (tl_core/advisor/advisory_job.py) instead
(`execute_job` picks the engine function by the job's kind). The
worker records its pid in the run store first, so a worker that dies (SIGKILL, out of memory) is
found by the server. Stop requests arrive as SIGTERM or as a `stop.request` file in the run folder
(which also works for a workspace shared between machines). Live progress goes to `progress.json`
in the run folder (written atomically, at most twice a second), from which the server builds
`LiveProgress` without sharing memory with the worker. A full disk ends the run `failed` with a
message saying what to free.

`ProcessBackend` is the server's side: it starts one worker per job (in its own session, so a
Ctrl-C in the server's terminal does not reach it and a restarted server finds it still running), and
keeps a worker that has already imported the engine waiting for the next job (`--standby`,
tl_core/jobs/warm_workers.py).

Example:
    >>> manager = JobManager(store, backend=ProcessBackend())
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import tl_core
from tl_core.config import RunConfig
from tl_core.errors import TransferLabError
from tl_core.events import BatchProgress, PreparationProgress, TrainingEvent, TrainingListener
from tl_core.jobs.backend import (
    JOB_KINDS,
    LABEL_REVIEW_JOB,
    RUN_JOB,
    Job,
    JobExit,
    job_folder,
    reference_is_alive,
    run_time_limit_message,
)
from tl_core.jobs.live_progress import LiveProgress, ProgressTracker
from tl_core.jobs.records import records_for
from tl_core.jobs.warm_workers import WarmWorkers, send_output_to, wait_for_job
from tl_core.layout import LOG_FILE, NODE_FILE, PROGRESS_FILE, STOP_FILE, WORKER_LOG_FILE
from tl_core.processes import process_start_token
from tl_core.runs.store import RunStore

PROGRESS_INTERVAL_S = 0.5
DISK_FULL_EXIT = 28  # the worker's exit code when the disk is full and the store could not say so
# run_experiment learns to start from saved weights through this keyword (see JobManager.resume).
RESUME_KEYWORD = "initial_weights"
_DISK_FULL_TEXTS = (f"[Errno {errno.ENOSPC}]", os.strerror(errno.ENOSPC), "database or disk is full")


def write_progress(path: Path, progress: LiveProgress) -> None:
    """Write `progress` as JSON atomically (temp file, then rename): a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(progress.to_dict()), encoding="utf-8")
    os.replace(partial, path)


def read_progress(path: Path) -> LiveProgress | None:
    """The progress a worker published, or None when there is none (yet) or it cannot be read."""
    try:
        return LiveProgress.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


class ProgressPublisher:
    """A training listener that keeps `progress.json` current and honours the stop file.

    Args:
        run_dir: the job's folder.
        config: the run's config (for the planned number of epochs); None for an advisory job.
        stop: the job's stop token; set when `stop.request` appears.
    """

    def __init__(self, run_dir: Path, config: RunConfig | None, stop: object) -> None:
        self.path = run_dir / PROGRESS_FILE
        self.stop_file = run_dir / STOP_FILE
        self.stop = stop
        self.tracker = ProgressTracker(config, LiveProgress(status="running"), run_id=run_dir.name)
        self._written_at = 0.0

    def on_event(self, event: TrainingEvent) -> None:
        self.tracker.on_event(event)
        if self.stop_file.exists():
            self.stop.request_stop()
        now = time.monotonic()
        # Frequent events are written at most every PROGRESS_INTERVAL_S; a split's last row always is (its bar ends).
        split_done = isinstance(event, PreparationProgress) and event.done >= event.total
        frequent = isinstance(event, (BatchProgress, PreparationProgress)) and not split_done
        if not frequent or now - self._written_at >= PROGRESS_INTERVAL_S:
            self.publish()
            self._written_at = now

    def publish(self) -> None:
        try:
            write_progress(self.path, self.tracker.progress)
        except OSError:  # a full disk must not end training; progress shows again once space is back
            pass


def is_disk_full(error: BaseException | str | None) -> bool:
    """Whether an exception (or the runner's recorded error text) means the disk is full."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error or "")
    return any(marker in text for marker in _DISK_FULL_TEXTS)


def record_disk_full(store: RunStore, run_id: str, detail: str) -> bool:
    """End the run `failed` with what to free; False when even that could not be written."""
    message = (
        f"Disk full: free space in {store.workspace} (delete old runs on the Runs page, or the caches in "
        f"{store.workspace / 'cache'}), then resume or start the run again. ({detail.strip().splitlines()[0] if detail.strip() else 'no space left'})"
    )
    try:
        store.finish_run(run_id, "failed", error=message)
    except (OSError, sqlite3.Error):
        return False
    try:
        store.append_log(run_id, f"error: {message}")
    except OSError:
        pass  # the status says it; the log line is a nicety
    return True


def execute_run(
    store: RunStore,
    run_id: str,
    *,
    listener: TrainingListener | None = None,
    stop: object | None = None,
    resume_from: str | None = None,
    run: Callable[..., object] | None = None,
    node: str | None = None,
) -> str:
    """Run one queued run to its end in this process and return its final status.

    Any failure is recorded in the run (status, error, log), never raised: bad data found before
    training (`TransferLabError`), a full disk, or anything unexpected.

    Args:
        store: the run store holding the queued run.
        run_id: the run to execute; its stored config says what to train.
        listener: receives training events (progress).
        stop: the run's `StopToken`.
        resume_from: a weights file to start from (needs runner support, see RESUME_KEYWORD).
        run: the experiment function (default `tl_core.training.runner.run_experiment`).
        node: the machine running it, as the run's `node.txt` names it (default: this host's name).
    """
    try:
        config = RunConfig.from_dict(store.get(run_id).config)
        store.mark_running(run_id)  # this process's pid: a crash is detected from the first second
        (store.run_dir(run_id) / NODE_FILE).write_text(node or socket.gethostname(), encoding="utf-8")
        if run is None:
            from tl_core.training.runner import run_experiment as run
        extra = {}
        if resume_from is not None:
            import inspect

            if RESUME_KEYWORD not in inspect.signature(run).parameters:
                raise TransferLabError(
                    f"This TransferLab cannot start a run from saved weights yet (run_experiment has no `{RESUME_KEYWORD}`): "
                    "start a new run instead."
                )
            extra[RESUME_KEYWORD] = Path(resume_from)
        outcome = run(config, store=store, listener=listener, stop=stop, run_id=run_id, **extra)
        if outcome.status == "stopped" and (over_time := run_time_limit_message(store.run_dir(run_id))):
            return _record_failure(store, run_id, over_time)  # the manager stopped it at the server's run-time limit
        if (
            outcome.status == "failed"
            and is_disk_full(outcome.error)
            and not record_disk_full(store, run_id, outcome.error or "")
        ):
            raise OSError(errno.ENOSPC, f"No space left to record the end of run {run_id}")
        return outcome.status
    except OSError as exc:
        if not is_disk_full(exc):
            return _record_failure(store, run_id, f"{type(exc).__name__}: {exc}")
        if not record_disk_full(store, run_id, str(exc)):
            raise  # not even the store can be written: the worker's exit code says it
        return "failed"
    except TransferLabError as exc:  # bad data found before training: the queued run says why
        return _record_failure(store, run_id, str(exc))
    except Exception as exc:  # noqa: BLE001 - a job must never end without saying why
        return _record_failure(store, run_id, f"{type(exc).__name__}: {exc}")


def execute_job(
    job: Job,
    *,
    listener: TrainingListener | None = None,
    stop: object | None = None,
    run: Callable[..., object] | None = None,
) -> str:
    """Run one queued job of any kind to its end in this process with the engine function for its kind; returns its final status.

    A run goes to `execute_run` (`run` swaps the experiment function); a label review to
    `tl_core.insight.review_job.execute_review_job`; another advisory job to
    `tl_core.advisor.advisory_job.execute_advisory_job`. Neither raises for a failure of the job itself.
    """
    if job.kind == RUN_JOB:
        return execute_run(
            RunStore(job.workspace), job.run_id, listener=listener, stop=stop, resume_from=job.resume_from, run=run
        )
    if job.kind == LABEL_REVIEW_JOB:
        from tl_core.insight.review_job import execute_review_job  # the engine: TensorFlow, in the worker only

        return execute_review_job(job.workspace, job.run_id, listener=listener, stop=stop)
    from tl_core.advisor.advisory_job import execute_advisory_job  # the engine: TensorFlow, loaded in the worker only

    return execute_advisory_job(job.workspace, job.run_id, listener=listener, stop=stop)


def _record_failure(store: RunStore, run_id: str, error: str) -> str:
    store.finish_run(run_id, "failed", error=error)
    store.append_log(run_id, f"error: {error}")
    return "failed"


def main(argv: Sequence[str] | None = None) -> int:
    """The worker process: run one queued job; exit 0 once its outcome is recorded."""
    parser = argparse.ArgumentParser(
        prog="python -m tl_core.jobs.worker", description="Run one queued TransferLab job."
    )
    parser.add_argument("--workspace", help="the run store's folder")
    parser.add_argument("--run-id", help="the queued run (or advisory job) to execute")
    parser.add_argument(
        "--kind",
        default=RUN_JOB,
        choices=JOB_KINDS,
        help="what the job is: a training run (default) or an advisory job",
    )
    parser.add_argument("--resume-from", default=None, help="a weights file to start from")
    parser.add_argument(
        "--standby",
        action="store_true",
        help="import the engine first, then read the job on standard input as one JSON line (tl_core/jobs/warm_workers.py)",
    )
    args = parser.parse_args(argv)
    if not args.standby and not (args.workspace and args.run_id):
        parser.error("--workspace and --run-id are required (or --standby)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    stop_requested = threading.Event()
    token_holder: list = []

    def on_sigterm(signum: int, frame: object) -> None:
        stop_requested.set()
        for token in token_holder:
            token.request_stop()

    signal.signal(signal.SIGTERM, on_sigterm)  # before the slow TensorFlow import: a stop then is not lost
    if args.standby:
        job = wait_for_job()
        if job is None:  # let go before any job: nothing to record
            return 0
        args.workspace, args.run_id, args.resume_from = job["workspace"], job["run_id"], job.get("resume_from")
        args.kind = job.get("kind", RUN_JOB)
        try:
            send_output_to(job_folder(args.workspace, args.kind, args.run_id) / WORKER_LOG_FILE)
        except OSError:
            pass  # a full disk: the run records that itself, and TensorFlow's messages are a nicety
    store = RunStore(args.workspace)
    records = records_for(args.kind, store)
    try:
        records.mark_running(args.run_id)
        from tl_core.stopping import StopToken

        token = StopToken()
        token_holder.append(token)
        folder = records.folder(args.run_id)
        if stop_requested.is_set() or (folder / STOP_FILE).exists():
            records.finish(args.run_id, "stopped", error="Stopped before training started.")
            return 0
        config = RunConfig.from_dict(store.get(args.run_id).config) if args.kind == RUN_JOB else None
        publisher = ProgressPublisher(folder, config, token)
        publisher.publish()
        execute_job(
            Job(args.run_id, args.workspace, "", args.resume_from, kind=args.kind), listener=publisher, stop=token
        )
        publisher.publish()
    except (OSError, sqlite3.Error) as exc:
        if is_disk_full(exc):
            return DISK_FULL_EXIT  # the store could not be written either: the server records it
        raise
    return 0


class ProcessBackend:
    """Runs each job in its own worker process (`python -m tl_core.jobs.worker`) on this machine.

    With `warm_workers`, each idle device has a worker waiting that has already imported the engine
    (tl_core/jobs/warm_workers.py): started by `prepare` and whenever a device's last job ends. A job then
    starts in it without the 4-5 s import. Each waiting worker holds ~0.7 GB; `close` lets them go.

    Args:
        python: the interpreter for workers (default: this one).
        extra_env: environment variables added for every worker.
        warm_workers: keep a started worker waiting on each idle device.
    """

    def __init__(
        self, python: str = sys.executable, extra_env: dict[str, str] | None = None, *, warm_workers: bool = True
    ) -> None:
        self.python = python
        self.extra_env = dict(extra_env or {})
        self._children: dict[str, tuple[subprocess.Popen, str]] = {}  # run id -> (worker, device)
        self.warm = WarmWorkers() if warm_workers else None
        self._package_root = str(Path(tl_core.__file__).resolve().parent.parent)

    def prepare(self, devices: Sequence[str]) -> None:
        """Start a waiting worker for each of these idle devices."""
        for device in devices:
            self._start_waiting(device)

    def start(self, job: Job) -> str:
        run_dir = job.folder
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / STOP_FILE).unlink(missing_ok=True)
        child = self.warm.take(job.device) if self.warm else None
        handed = {"workspace": job.workspace, "run_id": job.run_id, "resume_from": job.resume_from, "kind": job.kind}
        if child is None or not self.warm.hand_over(child, handed):
            child = self._start_worker(job, run_dir)
        self._children[job.run_id] = (child, job.device)
        return f"process:{socket.gethostname()}:{child.pid}:{process_start_token(child.pid) or ''}"

    def close(self) -> None:
        """Let the waiting workers go (running jobs are not touched)."""
        if self.warm:
            self.warm.close()

    def _start_waiting(self, device: str) -> None:
        """A worker for `device`'s next job, started now that the device is idle (its import competes with no job there)."""
        if self.warm is None or any(other == device for _, other in self._children.values()):
            return
        try:
            self.warm.start(device, self._worker_command(), env=self._environment(device), cwd=self._package_root)
        except OSError:  # out of processes or memory: the next job starts the usual way
            pass

    def _worker_command(self) -> list[str]:
        return [self.python, "-m", "tl_core.jobs.worker"]

    def _environment(self, device: str) -> dict[str, str]:
        env = {**os.environ, **self.extra_env, **_device_environment(device)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [self._package_root, env.get("PYTHONPATH")]))
        return env

    def _start_worker(self, job: Job, run_dir: Path) -> subprocess.Popen:
        command = [*self._worker_command(), "--workspace", job.workspace, "--run-id", job.run_id, "--kind", job.kind]
        if job.resume_from:
            command += ["--resume-from", job.resume_from]
        try:
            output = open(run_dir / WORKER_LOG_FILE, "ab")  # TensorFlow's own messages, and any crash trace
        except OSError:
            output = subprocess.DEVNULL
        try:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self._environment(job.device),
                cwd=self._package_root,
                start_new_session=True,
            )
        finally:
            if output is not subprocess.DEVNULL:
                output.close()

    def poll(self, job: Job) -> JobExit | None:
        known = self._children.get(job.run_id)
        if known is not None:
            code = known[0].poll()
            if code is None:
                return None
            del self._children[job.run_id]
            self._start_waiting(known[1])
            return _exit_from_code(code, job.folder)
        alive = reference_is_alive(job.worker) if job.worker else False
        if alive is not False:  # still running (started by an earlier server), or on another host
            return None
        return JobExit("ended while no server was watching it", exit_code=None)

    def progress(self, job: Job) -> LiveProgress | None:
        return read_progress(job.folder / PROGRESS_FILE)

    def stop(self, job: Job) -> None:
        try:
            (job.folder / STOP_FILE).touch()
        except OSError:
            pass  # the signal below is enough on this machine
        self._signal(job, signal.SIGTERM)

    def kill(self, job: Job) -> None:
        self._signal(job, signal.SIGKILL)

    def _signal(self, job: Job, signum: signal.Signals) -> None:
        if not job.worker or not reference_is_alive(job.worker):
            return
        try:
            os.kill(int(job.worker.split(":")[2]), signum)
        except ProcessLookupError:
            pass


def _device_environment(device: str) -> dict[str, str]:
    """Show a worker only its device: one GPU by CUDA index, or none for `cpu`."""
    if device.startswith("gpu:"):
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": device.split(":", 1)[1]}
    if device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": "-1"}
    return {}


def _exit_from_code(code: int, run_dir: Path) -> JobExit:
    if code < 0:
        name = signal.Signals(-code).name
        cause = " (the system may have run out of memory, or it was killed by hand)" if -code == signal.SIGKILL else ""
        return JobExit(f"was killed by {name}{cause}", signal=name)
    if code == DISK_FULL_EXIT:
        return JobExit("stopped because the disk is full: free space in the workspace", exit_code=code)
    if code == 0:
        return JobExit("ended", exit_code=0)
    return JobExit(
        f"exited with code {code} (see {run_dir / WORKER_LOG_FILE} and {run_dir / LOG_FILE})", exit_code=code
    )


if __name__ == "__main__":
    sys.exit(main())
