"""The job manager queues, runs in the background, reports progress and stops cooperatively."""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.jobs import JobManager  # noqa: E402
from tl_core.runs import RunStore  # noqa: E402


def _config(source, epochs=2, **train):
    return RunConfig(data=DataConfig(source=str(source)), model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
                     train=TrainConfig(epochs=epochs, batch_size=16, **train))


def test_second_job_queues_then_both_complete(shapes_dataset, workspace):
    store = RunStore(workspace)
    manager = JobManager(store)
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


def test_stop_a_running_job_and_drop_a_queued_one(shapes_dataset, workspace):
    store = RunStore(workspace)
    manager = JobManager(store)
    running = manager.submit(_config(shapes_dataset, epochs=200, early_stopping_patience=None, use_feature_cache=False))
    queued = manager.submit(_config(shapes_dataset))
    assert manager.stop(queued)
    assert store.get(queued).status == "stopped"
    deadline = time.monotonic() + 300
    while manager.status(running).progress.epoch < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert manager.stop(running)
    assert manager.wait(running).progress.status == "stopped"
    record = store.get(running)
    assert record.status == "stopped" and 1 <= int(record.metrics["epochs_run"]) < 200
    assert (store.run_dir(running) / "model.keras").is_file()  # the best weights so far are kept


def test_bad_data_fails_the_queued_run_with_the_reason(tmp_path, workspace):
    store = RunStore(workspace)
    manager = JobManager(store)
    run_id = manager.submit(_config(tmp_path / "missing"))
    manager.wait(run_id)
    record = store.get(run_id)
    assert record.status == "failed" and "missing" in record.error
