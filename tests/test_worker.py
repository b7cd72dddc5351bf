"""Worker processes: progress files, stop requests, a full disk, SIGKILL mid-training, and the manager after it."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.events import BatchProgress, EpochEnded, PhaseStarted, RunStarted  # noqa: E402
from tl_core.jobs import manager as jobs  # noqa: E402
from tl_core.jobs import worker
from tl_core.jobs.manager import JobManager  # noqa: E402
from tl_core.jobs.queue import default_slots, detect_devices  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402


def _config(source, **train) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(batch_size=16, **train),
    )


def _queued_run(store: RunStore, config: RunConfig) -> str:
    return store.create_run(
        config=config.to_dict(),
        backbone=config.model.backbone,
        weights=config.model.weights,
        mode=config.train.mode,
        status="queued",
    ).id


class FakeToken:
    def __init__(self) -> None:
        self.stopped = False

    def request_stop(self) -> None:
        self.stopped = True


def test_progress_file_is_written_atomically_throttled_and_read_back(tmp_path: Path) -> None:
    tmp_path = tmp_path / "r"  # the run's folder is named by its id: events of other runs are ignored
    tmp_path.mkdir()
    token = FakeToken()
    publisher = worker.ProgressPublisher(
        tmp_path, _config(tmp_path, mode="fine-tune", epochs=2, fine_tune_epochs=3), token
    )
    publisher.on_event(RunStarted("r", class_names=("a", "b"), split_sizes={"train": 4}, config={}))
    publisher.on_event(
        PhaseStarted("r", phase="head", epochs=2, learning_rate=1e-3, trainable_weights=10, description="")
    )
    published = worker.read_progress(tmp_path / worker.PROGRESS_FILE)
    assert published.status == "running" and published.total_epochs == 5 and published.phase_starts == [("head", 1)]
    publisher.on_event(BatchProgress("r", phase="head", epoch=1, batch=3, batches_per_epoch=6, metrics={}))
    assert worker.read_progress(tmp_path / worker.PROGRESS_FILE).batch == 0  # batch events are throttled
    publisher.on_event(
        EpochEnded(
            "r",
            phase="head",
            epoch=1,
            phase_epoch=1,
            metrics={"loss": 0.7},
            learning_rate=1e-3,
            seconds=1.0,
            is_best=True,
        )
    )
    assert worker.read_progress(tmp_path / worker.PROGRESS_FILE).last_metrics == {"loss": 0.7}
    assert [p.name for p in tmp_path.iterdir()] == [worker.PROGRESS_FILE]  # no temp file left behind
    assert not token.stopped
    (tmp_path / worker.STOP_FILE).touch()
    publisher.on_event(BatchProgress("r", phase="head", epoch=2, batch=1, batches_per_epoch=6, metrics={}))
    assert token.stopped
    (tmp_path / worker.PROGRESS_FILE).write_text("{half a fi")
    assert worker.read_progress(tmp_path / worker.PROGRESS_FILE) is None


def test_disk_full_in_the_runner_fails_the_run_with_what_to_free(shapes_dataset, workspace, monkeypatch) -> None:
    from tl_core.training import runner

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "labels.txt")

    monkeypatch.setattr(runner, "write_labels", full_disk)  # after training, while saving the run's files
    store = RunStore(workspace)
    run_id = _queued_run(store, _config(shapes_dataset, epochs=1))
    assert worker.execute_run(store, run_id) == "failed"
    record = store.get(run_id)
    assert record.status == "failed" and record.error.startswith(f"Disk full: free space in {store.workspace}")
    assert len(store.epochs(run_id)) == 1 and "Disk full" in store.read_log(run_id)  # the store stays consistent


def test_disk_full_escaping_the_runner_and_a_store_that_cannot_write(
    tmp_path: Path, workspace: Path, monkeypatch
) -> None:
    store = RunStore(workspace)
    run_id = _queued_run(store, _config(tmp_path, epochs=1))

    def writes_then_fills_the_disk(config, *, store, run_id, **rest):
        store.record_epoch(
            run_id,
            phase="head",
            epoch=1,
            phase_epoch=1,
            metrics={"loss": 1.0},
            learning_rate=1e-3,
            seconds=1,
            is_best=True,
        )
        raise OSError(errno.ENOSPC, "No space left on device", "summary.json")

    assert worker.execute_run(store, run_id, run=writes_then_fills_the_disk) == "failed"
    assert store.get(run_id).error.startswith("Disk full") and len(store.epochs(run_id)) == 1

    second = _queued_run(store, _config(tmp_path, epochs=1))

    def no_write(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "finish_run", no_write)
    with pytest.raises(OSError):  # the worker turns this into its disk-full exit code
        worker.execute_run(store, second, run=writes_then_fills_the_disk)
    assert (
        RunStore(workspace).get(second).status == "running"
    )  # untouched: the server records it after the worker exits
    assert "disk is full" in worker._exit_from_code(worker.DISK_FULL_EXIT, Path(".")).description


def test_worker_main_stops_before_training_when_asked(tmp_path: Path, workspace: Path) -> None:
    store = RunStore(workspace)
    run_id = _queued_run(store, _config(tmp_path, epochs=1))
    (store.run_dir(run_id) / worker.STOP_FILE).touch()
    assert worker.main(["--workspace", str(workspace), "--run-id", run_id]) == 0
    assert store.get(run_id).status == "stopped"


def test_devices_and_the_checkpoint_name(monkeypatch) -> None:
    from tl_core.layout import CHECKPOINT_FILE

    assert jobs.CHECKPOINT_FILE == CHECKPOINT_FILE
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert detect_devices() == ["gpu:2", "gpu:3"] and default_slots(2) == {"gpu:2": 2, "gpu:3": 2}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert detect_devices() == ["cpu"]
    assert worker._device_environment("gpu:3")["CUDA_VISIBLE_DEVICES"] == "3"
    assert worker._device_environment("cpu") == {"CUDA_VISIBLE_DEVICES": "-1"}


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_sigkill_mid_training_keeps_log_and_checkpoint_then_the_next_job_runs_and_stops(
    shapes_dataset, workspace
) -> None:
    store = RunStore(workspace)
    manager = JobManager(store, slots={"cpu": 1})  # the default backend: one worker process per job
    assert isinstance(manager.backend, worker.ProcessBackend)
    endless = dict(early_stopping_patience=None, reduce_lr_patience=None, use_feature_cache=False)
    try:
        killed = manager.submit(
            _config(shapes_dataset, mode="fine-tune", epochs=1, fine_tune_epochs=500, **endless), owner="alice"
        )
        following = manager.submit(_config(shapes_dataset, epochs=500, **endless), owner="bob")
        assert manager.status(following).queue_position == 1
        checkpoint = store.run_dir(killed) / jobs.CHECKPOINT_FILE
        _wait_for(lambda: len(store.epochs(killed)) >= 2 and checkpoint.is_file(), 240, "two epochs and a checkpoint")
        live = manager.status(killed)  # built from the worker's progress file
        assert live.state == "running" and live.progress.phase == "fine-tune" and live.progress.total_epochs == 501
        assert live.progress.epoch >= 1 and ("fine-tune", 2) in live.progress.phase_starts
        pid = int(manager.queue.get(killed).worker.split(":")[2])
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)

        final = manager.wait(killed, timeout_s=60)
        record = store.get(killed)
        assert final.progress.status == record.status == "interrupted"
        assert "killed by SIGKILL" in record.error and "last checkpoint" in record.error
        assert checkpoint.is_file() and "epoch 2" in store.read_log(killed) and len(store.epochs(killed)) >= 2

        _wait_for(lambda: len(store.epochs(following)) >= 1, 240, "the next job's first epoch")
        assert manager.stop(following)
        assert manager.wait(following, timeout_s=120).progress.status == "stopped"
        assert store.get(following).status == "stopped" and (store.run_dir(following) / "model.keras").is_file()
    finally:
        manager.shutdown(stop_jobs=True)
        for run_id in manager.active_run_ids():
            manager.kill(run_id)
