"""The job manager: queue, dispatch, progress, stop, per-user cap, restart recovery and resume.

Most tests swap the experiment for a fake (no TensorFlow) on a `ThreadBackend`; two run real tiny
trainings in threads; real worker processes are tested in test_worker.py.
"""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tests.job_helpers import FakeOutcome, FakeRun  # noqa: E402
from tests.job_helpers import tiny_config as _config
from tests.job_helpers import wait_until as _until
from tl_core.errors import TransferLabError  # noqa: E402
from tl_core.jobs.backend import JobExit  # noqa: E402
from tl_core.jobs.live_progress import LiveProgress  # noqa: E402
from tl_core.jobs.manager import JobManager
from tl_core.jobs.queue import QueueFullError  # noqa: E402
from tl_core.jobs.thread_backend import ThreadBackend  # noqa: E402
from tl_core.layout import CHECKPOINT_FILE
from tl_core.runs.store import RunStore  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_second_job_queues_then_both_complete(shapes_dataset, workspace, managers):
    store = RunStore(workspace)
    manager = managers(store, backend=ThreadBackend())
    first = manager.submit(_config(shapes_dataset))
    second = manager.submit(_config(shapes_dataset))
    queued = manager.status(second)
    assert queued.state == "queued" and queued.queue_position == 1
    assert manager.active_run_ids() == [first, second]
    assert manager.wait(first).progress.status == "completed"
    final = manager.wait(second)
    assert final.state == "finished" and final.progress.fraction_done == 1.0
    assert store.get(first).status == store.get(second).status == "completed"
    assert [phase for phase, _ in final.progress.phase_starts] == ["head"]


def test_stop_a_running_job_and_drop_a_queued_one(shapes_dataset, workspace, managers):
    store = RunStore(workspace)
    manager = managers(store, backend=ThreadBackend())
    running = manager.submit(_config(shapes_dataset, epochs=200, early_stopping_patience=None, use_feature_cache=False))
    queued = manager.submit(_config(shapes_dataset))
    assert manager.stop(queued)
    assert store.get(queued).status == "stopped" and manager.status(queued).state == "finished"
    deadline = time.monotonic() + 300
    while manager.status(running).progress.epoch < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert manager.stop(running)
    assert manager.wait(running).progress.status == "stopped"
    record = store.get(running)
    assert record.status == "stopped" and 1 <= int(record.metrics["epochs_run"]) < 200
    assert (store.run_dir(running) / "model.keras").is_file()  # the best weights so far are kept


def test_bad_data_fails_the_queued_run_with_the_reason(tmp_path, workspace, managers):
    store = RunStore(workspace)
    manager = managers(store, backend=ThreadBackend())
    run_id = manager.submit(_config(tmp_path / "missing"))
    manager.wait(run_id)
    record = store.get(run_id)
    assert record.status == "failed" and "missing" in record.error


def test_k_jobs_run_at_once_per_device(tmp_path, workspace, managers):
    store = RunStore(workspace)
    fake = FakeRun(blocking=True)
    manager = managers(store, slots={"cpu": 2}, run=fake)
    run_ids = [manager.submit(_config(tmp_path), owner=owner) for owner in ("alice", "bob", "alice")]
    states = [manager.status(run_id) for run_id in run_ids]
    assert [s.state for s in states] == ["running", "running", "queued"] and states[2].queue_position == 1
    assert states[0].owner == "alice" and states[0].device == "cpu"
    _until(lambda: len(fake.calls) == 2)
    fake.release.set()
    for run_id in run_ids:
        assert manager.wait(run_id, timeout_s=30).progress.status == "completed"
    assert [call[0] for call in fake.calls] == run_ids  # FIFO
    _until(lambda: manager.active_run_ids() == [])  # slots free once the workers have ended


def test_per_user_cap_refuses_before_creating_a_run(tmp_path, workspace, managers):
    store = RunStore(workspace)
    manager = managers(store, per_user_cap=2, run=FakeRun(blocking=True))
    manager.submit(_config(tmp_path), owner="alice")
    manager.submit(_config(tmp_path), owner="alice")
    with pytest.raises(QueueFullError, match=r"alice already has 2 runs queued or training.*\(2\)"):
        manager.submit(_config(tmp_path), owner="alice")
    assert len(store.list_runs(owner="alice")) == 2
    manager.submit(_config(tmp_path), owner="bob")


def test_queued_status_estimates_the_start_from_recent_runs(tmp_path, workspace, managers):
    store = RunStore(workspace)
    earlier = store.create_run(config={}, backbone="b", weights="none", mode="feature-extraction", status="running")
    store.finish_run(earlier.id, "completed", metrics={"elapsed_s": 20.0, "epochs_run": 4})  # 5 s per epoch
    manager = managers(store, run=FakeRun(blocking=True))
    manager.submit(_config(tmp_path, epochs=2))
    waiting = manager.submit(_config(tmp_path, epochs=3))
    status = manager.status(waiting)
    assert status.state == "queued" and status.estimated_start is not None
    assert time.time() + 5 <= status.estimated_start <= time.time() + 10.5  # the running one needs ~2 x 5 s
    assert status.progress.total_epochs == 3


def test_restart_keeps_queued_jobs_and_interrupts_the_dead_one(tmp_path, workspace, managers):
    # A "server" process queues three runs, starts the first, then dies without any cleanup.
    script = textwrap.dedent(f"""
        import os, time
        from tl_core.config import DataConfig, RunConfig, TrainConfig
        from tl_core.jobs.manager import JobManager
        from tl_core.runs.store import RunStore

        def never_ends(config, *, store, stop, run_id, **rest):
            while True:
                time.sleep(1)

        store = RunStore({str(workspace)!r})
        manager = JobManager(store, run=never_ends)
        config = RunConfig(data=DataConfig(source={str(tmp_path)!r}), train=TrainConfig(epochs=1))
        ids = [manager.submit(config) for _ in range(3)]
        while store.get(ids[0]).status != "running":
            time.sleep(0.02)
        print(" ".join(ids), flush=True)
        os._exit(0)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first, second, third = result.stdout.split()
    store = RunStore(workspace)  # opening the store already finds the dead run
    assert store.get(first).status == "interrupted"
    assert store.get(second).status == store.get(third).status == "queued"
    fake = FakeRun()
    manager = managers(store, run=fake)
    assert manager.status(first).state == "finished" and manager.status(first).progress.status == "interrupted"
    for run_id in (second, third):
        assert manager.wait(run_id, timeout_s=30).progress.status == "completed"
    assert [call[0] for call in fake.calls] == [second, third]
    assert "stopped unexpectedly" in store.get(first).error and "interrupted" in store.read_log(first)


class VanishingBackend:
    """A backend whose workers die at once, like a worker killed by the out-of-memory killer."""

    def start(self, job):
        return "vanishing:1"

    def poll(self, job):
        return JobExit("was killed by SIGKILL (out of memory?)", signal="SIGKILL")

    def progress(self, job):
        return None

    def stop(self, job):
        pass

    def kill(self, job):
        pass

    def close(self):
        pass

    def prepare(self, devices):
        pass


def test_a_killed_worker_marks_its_run_interrupted_and_the_next_job_starts(tmp_path, workspace, managers):
    store = RunStore(workspace)
    manager = managers(store, backend=VanishingBackend())
    lost = manager.submit(_config(tmp_path))
    assert manager.wait(lost, timeout_s=30).progress.status == "interrupted"
    record = store.get(lost)
    assert record.status == "interrupted" and "The worker process was killed by SIGKILL" in record.error
    assert "Its log is kept" in record.error and "SIGKILL" in store.read_log(lost)  # no checkpoint was written
    manager.backend = ThreadBackend(FakeRun())
    assert manager.wait(manager.submit(_config(tmp_path)), timeout_s=30).progress.status == "completed"


def test_resume_queues_a_new_run_from_a_copy_of_the_checkpoint(tmp_path, workspace, managers):
    store = RunStore(workspace)
    old = store.create_run(
        config=_config(tmp_path).to_dict(),
        backbone="mobilenet_v2_035",
        weights="none",
        mode="feature-extraction",
        name="flowers",
        owner="alice",
        status="running",
    )
    store.finish_run(old.id, "interrupted", error="killed")
    with pytest.raises(TransferLabError, match="no checkpoint"):
        JobManager.resume(managers(store, run=FakeRun()), old.id)
    (store.run_dir(old.id) / CHECKPOINT_FILE).write_bytes(b"weights")

    def resumable(config, *, store, listener, stop, run_id, initial_weights):
        received.append(initial_weights.read_bytes())
        store.finish_run(run_id, "completed")
        return FakeOutcome("completed")

    received: list[bytes] = []
    manager = managers(store, run=resumable)
    new_id = manager.resume(old.id)
    assert manager.wait(new_id, timeout_s=30).progress.status == "completed" and received == [b"weights"]
    record = store.get(new_id)
    assert record.parent_run_id == old.id and record.owner == "alice" and record.name == "flowers (resumed)"

    not_resumable = managers(store, run=FakeRun())  # a runner without `initial_weights`: fails, saying so
    failed = not_resumable.resume(old.id)
    not_resumable.wait(failed, timeout_s=30)
    assert store.get(failed).status == "failed" and "initial_weights" in store.get(failed).error


def test_live_progress_round_trips_through_a_dict():
    progress = LiveProgress(
        phase="fine-tune",
        epoch=3,
        total_epochs=8,
        phase_starts=[("head", 1), ("fine-tune", 3)],
        last_metrics={"loss": 0.5},
        status="running",
    )
    again = LiveProgress.from_dict({**progress.to_dict(), "from_a_newer_worker": 1})
    assert again == progress and again.phase_starts[1] == ("fine-tune", 3)


def test_progress_ignores_the_scratch_baseline_trained_in_the_same_job() -> None:
    from tl_core.events import EpochEnded, PhaseStarted
    from tl_core.jobs.live_progress import ProgressTracker

    tracker = ProgressTracker(_config("data", epochs=3), run_id="pretrained")
    tracker.on_event(
        PhaseStarted("pretrained", phase="head", epochs=3, learning_rate=1e-3, trainable_weights=10, description="")
    )
    tracker.on_event(
        EpochEnded(
            "pretrained",
            phase="head",
            epoch=1,
            phase_epoch=1,
            metrics={"loss": 0.5},
            learning_rate=1e-3,
            seconds=1.0,
            is_best=True,
        )
    )
    tracker.on_event(
        PhaseStarted("scratch", phase="full", epochs=9, learning_rate=1e-3, trainable_weights=99, description="")
    )
    tracker.on_event(
        EpochEnded(
            "scratch",
            phase="full",
            epoch=5,
            phase_epoch=5,
            metrics={"loss": 2.0},
            learning_rate=1e-3,
            seconds=1.0,
            is_best=False,
        )
    )
    progress = tracker.progress
    assert (progress.phase, progress.epoch, progress.total_epochs) == ("head", 1, 3)
    assert progress.last_metrics == {"loss": 0.5}


class PreparingBackend(ThreadBackend):
    """A thread backend that notes what the manager asks it to prepare and whether it was closed."""

    def __init__(self, run=None) -> None:
        super().__init__(run)
        self.prepared: list[list[str]] = []
        self.closed = False

    def prepare(self, devices):
        self.prepared.append(list(devices))

    def close(self):
        self.closed = True


def test_the_manager_prepares_its_idle_devices_at_start_and_closes_the_backend_at_shutdown(workspace):
    store = RunStore(workspace)
    backend = PreparingBackend()
    manager = JobManager(store, slots={"cpu": 1, "gpu:0": 2}, backend=backend)
    assert backend.prepared == [["cpu", "gpu:0"]] and not backend.closed
    manager.shutdown()
    assert backend.closed
