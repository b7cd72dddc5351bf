"""Warm workers: a worker that imported the engine while it waited runs the next job, a stop right after the
hand-over reaches that job, and a waiting worker goes when the server lets it go or sends it SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.jobs.backend import Job  # noqa: E402
from tl_core.jobs.warm_workers import WarmWorkers  # noqa: E402
from tl_core.jobs.worker import ProcessBackend
from tl_core.layout import WORKER_LOG_FILE
from tl_core.runs.store import RunStore  # noqa: E402

PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


def _queued_run(store: RunStore, source: Path, name: str) -> str:
    config = RunConfig(
        data=DataConfig(source=str(source)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(batch_size=16, epochs=1),
        name=name,
    )
    return store.create_run(
        config=config.to_dict(),
        backbone=config.model.backbone,
        weights=config.model.weights,
        mode=config.train.mode,
        name=name,
        status="queued",
    ).id


def _pid(reference: str) -> int:
    return int(reference.split(":")[2])


def _ended(backend: ProcessBackend, job: Job, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while backend.poll(job) is None:
        assert time.monotonic() < deadline, f"timed out waiting for run {job.run_id}"
        time.sleep(0.2)


def _wait_until_sigterm_is_held_back(pid: int, timeout_s: float = 60) -> None:
    """Until the waiting worker blocks SIGTERM (before that, the interpreter is starting and SIGTERM ends it at once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = Path(f"/proc/{pid}/status").read_text()
        blocked = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16)
        if blocked & (1 << (signal.SIGTERM - 1)):
            return
        assert time.monotonic() < deadline, "the waiting worker never held SIGTERM back"
        time.sleep(0.05)


@pytest.mark.slow
def test_the_next_job_runs_in_the_worker_that_waited_and_a_stop_right_after_the_hand_over_reaches_it(
    shapes_dataset, workspace
) -> None:
    store = RunStore(workspace)
    backend = ProcessBackend()
    try:
        first = Job(_queued_run(store, shapes_dataset, "cold"), str(workspace), "cpu")
        backend.start(first)  # nobody waits yet: a fresh worker
        assert backend.warm.waiting() == {}  # and none starts beside a running job: its import would compete with it
        _ended(backend, first)
        assert store.get(first.run_id).status == "completed"
        waiting = backend.warm.waiting()  # the device is idle again: a worker for its next job
        assert set(waiting) == {"cpu"}

        second = Job(_queued_run(store, shapes_dataset, "warm"), str(workspace), "cpu")
        assert _pid(backend.start(second)) == waiting["cpu"]  # handed over
        assert backend.warm.waiting() == {}
        _ended(backend, second)
        record = store.get(second.run_id)
        assert record.status == "completed" and record.metrics["epochs_run"] == 1
        assert (store.run_dir(second.run_id) / WORKER_LOG_FILE).is_file()  # its output went to the run's folder

        third = Job(_queued_run(store, shapes_dataset, "stopped at once"), str(workspace), "cpu")
        waiting = backend.warm.waiting()
        assert _pid(backend.start(third)) == waiting["cpu"]
        backend.stop(third)  # the stop file and SIGTERM, while the worker may still be importing or reading its job
        _ended(backend, third)
        assert store.get(third.run_id).status == "stopped"
        assert store.get(third.run_id).error == "Stopped before training started."

        last = backend.warm._waiting["cpu"]
    finally:
        backend.close()
    assert last.wait(timeout=120) == 0  # let go: it exits once its import is done and it sees the closed pipe


def test_prepare_starts_a_waiting_worker_per_idle_device_only(tmp_path: Path) -> None:
    backend = ProcessBackend(python="/bin/true")  # the worker's command is never run far: only who waits is checked
    backend._children["busy-run"] = (subprocess.Popen(["sleep", "30"]), "gpu:1")
    try:
        backend.prepare(["cpu", "gpu:1"])
        assert set(backend.warm._waiting) == {"cpu"}  # gpu:1 is running a job
    finally:
        backend._children["busy-run"][0].kill()
        backend.close()
    backend.prepare(["cpu"])
    assert backend.warm.waiting() == {}  # closed: none starts any more


def test_a_waiting_worker_sent_sigterm_exits_without_a_job_and_one_that_died_is_not_handed_anything(
    tmp_path: Path,
) -> None:
    warm = WarmWorkers()
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    warm.start("cpu", [sys.executable, "-m", "tl_core.jobs.worker"], env=env, cwd=PACKAGE_ROOT)
    child = warm._waiting["cpu"]
    _wait_until_sigterm_is_held_back(child.pid)
    child.send_signal(signal.SIGTERM)  # held back during the import, then noticed: no job, so it goes
    assert child.wait(timeout=120) == 0
    assert warm.take("cpu") is None  # it died: the server starts the job the usual way

    warm.start("gpu:0", [sys.executable, "-c", "import sys; sys.stdin.close()"], env=env, cwd=PACKAGE_ROOT)
    gone = warm._waiting["gpu:0"]
    gone.wait(timeout=30)
    assert warm.take("gpu:0") is None
    assert not WarmWorkers.hand_over(
        gone, {"workspace": str(tmp_path), "run_id": "x"}
    )  # a closed pipe: False, not an exception


def test_the_backend_without_warm_workers_starts_each_job_fresh(shapes_dataset, workspace) -> None:
    store = RunStore(workspace)
    backend = ProcessBackend(warm_workers=False)
    job = Job(_queued_run(store, shapes_dataset, "fresh"), str(workspace), "cpu")
    backend.start(job)
    backend.stop(job)  # ends before training: this test needs only the start
    assert backend.warm is None
    _ended(backend, job, timeout_s=120)
    assert store.get(job.run_id).status == "stopped"
    backend.close()
    usage = subprocess.run(
        [sys.executable, "-m", "tl_core.jobs.worker"], capture_output=True, text=True, cwd=PACKAGE_ROOT
    )
    assert usage.returncode == 2 and "--workspace and --run-id are required (or --standby)" in usage.stderr


def test_a_worker_left_waiting_goes_after_the_idle_period() -> None:
    """Issue 23, item 11: an idle server does not keep a waiting worker's ~0.7 GB for ever."""
    warm = WarmWorkers()
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, "TRANSFERLAB_WARM_IDLE_S": "2"}
    warm.start("cpu", [sys.executable, "-m", "tl_core.jobs.worker"], env=env, cwd=PACKAGE_ROOT)
    child = warm._waiting["cpu"]
    assert warm.waiting() == {"cpu": child.pid}
    assert child.wait(timeout=120) == 0  # the import (4-5 s), then 2 s with no job
    assert warm.waiting() == {} and warm.take("cpu") is None  # the next job starts a fresh worker
