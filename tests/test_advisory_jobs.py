"""Advisory jobs: the mode advisor and the cut-depth probe queued through the job manager like runs (device slots,
FIFO, the per-user cap, progress, Stop, the run-time limit), their results written to the workspace, never listed as runs."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tl_core.advisor.results import Advice, CutDepths  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.jobs.advisory import KEEP_FINISHED, RECORD_FILE, AdvisoryStore  # noqa: E402
from tl_core.jobs.backend import ADVICE_JOB, CUT_PROBE_JOB  # noqa: E402
from tl_core.jobs.manager import JobManager  # noqa: E402
from tl_core.jobs.queue import QueueFullError  # noqa: E402
from tl_core.jobs.thread_backend import ThreadBackend  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.server.limits import RunLimits  # noqa: E402


def _config(source: Path, **train: object) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(**{"epochs": 2, "batch_size": 16, **train}),
    )


def _until(condition, what: str, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class _Outcome:
    status: str
    error: str | None = None


class BlockingRun:
    """Stands in for run_experiment: holds its device slot until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, config, *, store, listener, stop, run_id, **extra):
        self.release.wait(120)
        store.finish_run(run_id, "completed", metrics={"epochs_run": 1, "elapsed_s": 0.1})
        return _Outcome("completed")


def test_an_advice_job_runs_in_the_queue_reports_its_steps_and_writes_its_result(
    shapes_dataset: Path, workspace: Path, managers
) -> None:
    store = RunStore(workspace)
    manager = managers(store, slots={"cpu": 1}, backend=ThreadBackend())
    job_id = manager.submit_advisory(
        ADVICE_JOB, _config(shapes_dataset), key="settings-1", options={"measure_throughput": False}, owner="alice"
    )
    final = manager.wait(job_id, timeout_s=240)

    assert final.state == "finished" and final.kind == ADVICE_JOB and final.owner == "alice"
    assert final.progress.status == "completed"
    assert final.progress.stage.startswith("extracting frozen features of")  # its last step, in words
    assert (
        final.progress.preparing == "features" and final.progress.preparing_done == final.progress.preparing_total > 0
    )
    records = AdvisoryStore(workspace)
    record = records.get(job_id)
    assert record.status == "completed" and record.error is None and record.owner == "alice"
    saved = json.loads((workspace / "advice" / job_id / RECORD_FILE).read_text())
    advice = Advice.from_dict(saved["result"])
    assert (
        advice.recommended_mode == "feature-extraction" and advice.probe_accuracy is not None and advice.estimates == {}
    )
    assert advice.train_images > 0 and any("Linear probe" in reason for reason in advice.reasons)
    assert (
        records.latest(ADVICE_JOB, "settings-1").id == job_id and records.latest(ADVICE_JOB, "other settings") is None
    )
    assert "completed" in records.read_log(job_id)
    assert store.list_runs() == [] and manager.active_run_ids() == []  # an advisory job is no run


def test_a_probe_job_waits_for_the_slot_counts_against_the_cap_and_measures_the_asked_layers(
    shapes_dataset: Path, workspace: Path, managers
) -> None:
    store = RunStore(workspace)
    training = BlockingRun()
    manager = managers(store, slots={"cpu": 1}, per_user_cap=2, backend=ThreadBackend(training))
    try:
        run_id = manager.submit(_config(shapes_dataset), owner="alice")
        probe_id = manager.submit_advisory(
            CUT_PROBE_JOB,
            _config(shapes_dataset),
            key="k",
            options={"layers": ["block_2_add", "out_relu"]},
            owner="alice",
        )
        waiting = manager.status(probe_id)
        assert (waiting.state, waiting.queue_position, waiting.kind) == ("queued", 1, CUT_PROBE_JOB)
        assert manager.active_run_ids() == [run_id] and manager.active_job_ids() == [run_id, probe_id]
        with pytest.raises(QueueFullError, match="alice already has 2"):
            manager.submit_advisory(ADVICE_JOB, _config(shapes_dataset), key="k", owner="alice")
        assert len(AdvisoryStore(workspace).records()) == 1  # a refused job leaves no record
    finally:
        training.release.set()
    assert manager.wait(probe_id, timeout_s=240).progress.status == "completed"
    measured = CutDepths.from_dict(AdvisoryStore(workspace).get(probe_id).result).measured
    assert [layer for layer, _ in measured] == ["block_2_add", "out_relu"] and all(
        0.0 <= accuracy <= 1.0 for _, accuracy in measured
    )
    assert [record.id for record in store.list_runs()] == [run_id]


def test_stopping_an_advisory_job_while_it_waits_and_while_it_runs(
    shapes_dataset: Path, workspace: Path, managers
) -> None:
    store = RunStore(workspace)
    manager = managers(store, slots={"cpu": 1}, backend=ThreadBackend())
    running = manager.submit_advisory(
        ADVICE_JOB, _config(shapes_dataset), key="timed", options={"measure_throughput": True}
    )
    waiting = manager.submit_advisory(CUT_PROBE_JOB, _config(shapes_dataset), key="probe")
    assert manager.stop(waiting)
    records = AdvisoryStore(workspace)
    assert records.get(waiting).status == "stopped" and "Removed from the queue" in records.get(waiting).error
    _until(lambda: manager.status(running).progress.stage != "", "the advice job's first step")
    assert manager.stop(running)
    assert manager.wait(running, timeout_s=240).progress.status == "stopped"
    record = records.get(running)
    assert record.status == "stopped" and record.result is None and record.error.startswith("Stopped by request")


def test_an_advisory_job_past_the_run_time_limit_fails_saying_so(
    shapes_dataset: Path, workspace: Path, managers
) -> None:
    store = RunStore(workspace)
    manager = managers(
        store, slots={"cpu": 1}, backend=ThreadBackend(), limits=RunLimits(max_run_minutes=0.1 / 60, max_epochs=1)
    )
    # The epoch limit is a run's: the advisor trains no epochs, so a config planning 2 is not refused.
    job_id = manager.submit_advisory(ADVICE_JOB, _config(shapes_dataset), key="k", options={"measure_throughput": True})
    assert manager.wait(job_id, timeout_s=240).progress.status == "failed"
    record = AdvisoryStore(workspace).get(job_id)
    assert record.status == "failed" and record.error.startswith("Ended at this server's run-time limit of 0.1 s")


def test_an_advisory_job_on_bad_data_or_text_fails_with_the_reason(tmp_path: Path, workspace: Path, managers) -> None:
    manager = managers(RunStore(workspace), slots={"cpu": 1}, backend=ThreadBackend())
    missing = manager.submit_advisory(ADVICE_JOB, _config(tmp_path / "missing"), key="k")
    config = _config(tmp_path)
    text = manager.submit_advisory(
        CUT_PROBE_JOB, config.replace(data=DataConfig(source=str(tmp_path), modality="text")), key="k"
    )
    records = AdvisoryStore(workspace)
    for job_id, reason in ((missing, "does not exist"), (text, "image backbones only")):
        assert manager.wait(job_id, timeout_s=120).progress.status == "failed"
        assert (
            records.get(job_id).status == "failed"
            and reason in records.get(job_id).error
            and records.get(job_id).result is None
        )


def test_a_restarted_manager_runs_a_queued_advisory_job_and_drops_one_ended_meanwhile(
    shapes_dataset: Path, workspace: Path, managers
) -> None:
    store = RunStore(workspace)
    training = BlockingRun()
    first = managers(store, slots={"cpu": 1}, backend=ThreadBackend(training))
    first.submit(_config(shapes_dataset))
    kept = first.submit_advisory(CUT_PROBE_JOB, _config(shapes_dataset), key="k", options={"layers": ["out_relu"]})
    ended = first.submit_advisory(ADVICE_JOB, _config(shapes_dataset), key="k")
    first.shutdown()  # the server goes; the training thread is left to end on its own
    training.release.set()
    records = AdvisoryStore(workspace)
    records.finish(ended, "stopped", "ended by hand while no server ran")
    second = managers(store, slots={"cpu": 1}, backend=ThreadBackend())
    assert second.status(ended).state == "finished"
    assert second.wait(kept, timeout_s=240).progress.status == "completed" and records.get(kept).result is not None


def test_the_store_keeps_the_newest_finished_jobs_and_refuses_foreign_names(workspace: Path) -> None:
    records = AdvisoryStore(workspace)
    made = [
        records.create(CUT_PROBE_JOB, owner="alice", request={}, key=str(index)) for index in range(KEEP_FINISHED + 2)
    ]
    for record in made[:-1]:
        records.finish(record.id, "completed", result={"depths": []})
    records.create(CUT_PROBE_JOB, owner="alice", request={}, key="new")  # prunes the oldest finished ones
    left = {record.id for record in records.records(CUT_PROBE_JOB)}
    assert made[0].id not in left and made[-1].id in left and len(left) == KEEP_FINISHED + 2  # the active one is kept
    assert records.get("../runs/x") is None
    with pytest.raises(ValueError, match="not an advisory job"):
        records.create("run", owner="alice", request={}, key="k")


def test_advisory_jobs_in_worker_processes_report_progress_write_results_and_stop(
    shapes_dataset: Path, workspace: Path
) -> None:
    from tl_core.jobs.worker import ProcessBackend
    from tl_core.layout import WORKER_LOG_FILE

    store = RunStore(workspace)
    manager = JobManager(
        store, slots={"cpu": 1}, backend=ProcessBackend()
    )  # the first job goes to the worker waiting at start
    try:
        probe = manager.submit_advisory(
            CUT_PROBE_JOB, _config(shapes_dataset), key="k", options={"layers": ["block_2_add", "out_relu"]}
        )
        advice = manager.submit_advisory(
            ADVICE_JOB, _config(shapes_dataset), key="k", options={"measure_throughput": True}
        )
        assert manager.status(advice).queue_position == 1
        assert manager.wait(probe, timeout_s=300).progress.status == "completed"
        records = AdvisoryStore(workspace)
        assert [layer for layer, _ in CutDepths.from_dict(records.get(probe).result).measured] == [
            "block_2_add",
            "out_relu",
        ]
        _until(lambda: manager.status(advice).progress.stage != "", "the advice job's first step", 300)
        live = manager.status(advice)  # read from the worker's progress file in advice/<id>/
        assert (
            live.state == "running"
            and live.kind == ADVICE_JOB
            and int(manager.queue.get(advice).worker.split(":")[2]) != os.getpid()
        )
        assert manager.stop(advice)
        assert manager.wait(advice, timeout_s=300).progress.status == "stopped"
        assert records.get(advice).status == "stopped" and (workspace / "advice" / advice / WORKER_LOG_FILE).is_file()
        assert store.list_runs() == []
    finally:
        manager.shutdown(stop_jobs=True)


def test_a_student_queues_advisory_jobs_only_on_data_they_may_read_and_into_their_own_workspace(
    shapes_dataset: Path, tmp_path: Path, managers
) -> None:
    import shutil

    from tl_core.server.accounts import User
    from tl_core.server.workspaces import UnsafePathError, Workspaces
    from ui.state import UserJobs

    spaces = Workspaces(tmp_path / "root")
    alice, bob = User("alice", "student", "Alice"), User("bob", "student", "Bob")
    shared = shutil.copytree(shapes_dataset, spaces.server_datasets / "shapes")
    bobs_data = shutil.copytree(shapes_dataset, spaces.workspace_for(bob).datasets / "mine")
    manager = managers(
        spaces.workspace_for(User("tara", "trainer", "Tara")).store(), slots={"cpu": 1}, backend=ThreadBackend()
    )
    jobs = UserJobs(manager, spaces.workspace_for(alice).store(), alice, spaces)
    with pytest.raises(UnsafePathError):
        jobs.submit_advisory(CUT_PROBE_JOB, _config(bobs_data), key="k", options={})
    job_id = jobs.submit_advisory(CUT_PROBE_JOB, _config(shared), key="k", options={"layers": ["out_relu"]})
    assert manager.wait(job_id, timeout_s=240).owner == "alice"
    record = AdvisoryStore(jobs.store.workspace).get(job_id)
    assert (
        record.status == "completed" and record.request["config"]["data"]["readable_roots"]
    )  # the worker checks files against them
    assert AdvisoryStore(spaces.workspace_for(bob).root).records() == [] and jobs.store.list_runs() == []
