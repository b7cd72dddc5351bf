"""The durable job queue: FIFO across users, per-user cap, K per device, restarts, job kinds and older queue files,
start-time estimates."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from tl_core.jobs.queue import JobQueue, QueueFullError, planned_epochs
from tl_core.jobs.start_estimates import RunningJob, WaitingJob, estimate_start_times


def _config(epochs: int = 3, **train) -> dict:
    return {"data": {"source": "/data"}, "train": {"epochs": epochs, **train}}


def test_fifo_across_users_and_one_job_per_device(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "queue.sqlite", slots={"cpu": 1})
    for run_id, owner in (("a1", "alice"), ("b1", "bob"), ("a2", "alice")):
        queue.enqueue(run_id, owner, _config())
    assert [queue.position(run_id) for run_id in ("a1", "b1", "a2")] == [1, 2, 3]
    first = queue.claim_next()
    assert first.run_id == "a1" and first.state == "running" and first.assigned_device == "cpu"
    assert queue.claim_next() is None  # the only slot is taken
    assert queue.position("a1") is None and queue.position("b1") == 1
    queue.mark_done("a1", "completed")
    assert queue.claim_next().run_id == "b1"
    queue.mark_done("b1", "completed")
    assert queue.claim_next().run_id == "a2"
    assert queue.get("a1").outcome == "completed" and queue.entries("queued") == []


def test_k_jobs_per_device_spread_over_devices(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "queue.sqlite", slots={"gpu:0": 2, "gpu:1": 1})
    for index in range(5):
        queue.enqueue(f"r{index}", "alice", _config())
    claimed = [queue.claim_next() for _ in range(4)]
    assert [entry.run_id for entry in claimed[:3]] == ["r0", "r1", "r2"] and claimed[3] is None
    devices = [entry.assigned_device for entry in claimed[:3]]
    assert devices.count("gpu:0") == 2 and devices.count("gpu:1") == 1
    queue.mark_done("r1", "completed")
    assert queue.claim_next().run_id == "r3"


def test_a_job_for_a_full_device_does_not_hold_back_one_for_a_free_device(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "queue.sqlite", slots={"gpu:0": 1, "gpu:1": 1})
    queue.enqueue("busy", "alice", _config(), device="gpu:0")
    queue.enqueue("waits", "alice", _config(), device="gpu:0")
    queue.enqueue("any", "bob", _config())
    assert queue.claim_next().run_id == "busy"
    after = queue.claim_next()
    assert after.run_id == "any" and after.assigned_device == "gpu:1"
    with pytest.raises(ValueError, match="gpu:7"):
        queue.enqueue("nowhere", "bob", _config(), device="gpu:7")


def test_per_user_cap_names_the_cap_and_the_count(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "queue.sqlite", slots={"cpu": 1}, per_user_cap=2)
    queue.enqueue("a1", "alice", _config())
    queue.enqueue("a2", "alice", _config())
    with pytest.raises(QueueFullError, match=r"alice already has 2 runs.*\(2\)"):
        queue.enqueue("a3", "alice", _config())
    queue.enqueue("b1", "bob", _config())  # the cap is per user
    assert queue.remove("a2") and not queue.remove("a2")
    queue.enqueue("a3", "alice", _config())  # a cancelled job frees its place
    assert queue.active_count("alice") == 2


def test_queue_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ws" / "queue.sqlite"
    queue = JobQueue(path, slots={"cpu": 1})
    queue.enqueue("r1", "alice", _config(), resume_from="/ckpt.weights.h5")
    queue.enqueue("r2", "bob", _config(epochs=4, mode="fine-tune", fine_tune_epochs=6))
    queue.claim_next()
    queue.set_worker("r1", "process:host:1:2")
    reopened = JobQueue(path, slots={"cpu": 1})
    running, waiting = reopened.entries("running"), reopened.entries("queued")
    assert [e.run_id for e in running] == ["r1"] and running[0].worker == "process:host:1:2"
    assert running[0].resume_from == "/ckpt.weights.h5" and running[0].workspace == str((tmp_path / "ws").resolve())
    assert [(e.run_id, e.planned_epochs) for e in waiting] == [("r2", 10)]
    reopened.release("r1")  # claimed but never started: back in its place, ahead of r2
    assert [e.run_id for e in reopened.entries("queued")] == ["r1", "r2"]


def test_concurrent_claims_never_start_a_job_twice(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "queue.sqlite", slots={"cpu": 3})
    for index in range(3):
        queue.enqueue(f"r{index}", "alice", _config())
    claimed: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        entry = JobQueue(tmp_path / "queue.sqlite", slots={"cpu": 3}).claim_next()
        if entry is not None:
            with lock:
                claimed.append(entry.run_id)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == ["r0", "r1", "r2"]


def test_planned_epochs_per_mode() -> None:
    assert planned_epochs(_config(epochs=5)) == 5
    assert planned_epochs(_config(epochs=5, mode="full", fine_tune_epochs=3)) == 8
    assert planned_epochs(_config(epochs=2, mode="progressive", stage_epochs=3, max_stages=2)) == 8


def test_estimated_start_times_replay_the_queue_over_the_slots() -> None:
    now = 1000.0
    running = [RunningJob("cpu", remaining_s=60.0)]
    waiting = [
        WaitingJob("a", "auto", 100.0),
        WaitingJob("b", "auto", 50.0),
        WaitingJob("c", "auto", None),
        WaitingJob("d", "auto", 10.0),
    ]
    estimates = estimate_start_times(now, running, waiting, {"cpu": 1})
    assert estimates == {"a": 1060.0, "b": 1160.0, "c": 1210.0, "d": None}  # after an unknown duration: unknown
    two_slots = estimate_start_times(now, running, waiting[:2], {"cpu": 2})
    assert two_slots == {"a": 1000.0, "b": 1060.0}
    assert estimate_start_times(now, [RunningJob("cpu", None)], waiting[:1], {"cpu": 1}) == {"a": None}


# The queue's table as TransferLab wrote it before jobs had a kind (every job a training run).
QUEUE_SCHEMA_WITHOUT_KINDS = """CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL,
    workspace TEXT NOT NULL, device TEXT NOT NULL, assigned_device TEXT, state TEXT NOT NULL, planned_epochs INTEGER NOT NULL,
    config_json TEXT NOT NULL, enqueued_at REAL NOT NULL, started_at REAL, finished_at REAL,
    worker TEXT, resume_from TEXT, outcome TEXT)"""


def test_a_queue_file_from_before_job_kinds_keeps_its_jobs_as_runs_and_takes_advisory_jobs(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute(QUEUE_SCHEMA_WITHOUT_KINDS)
        for run_id, state in (("done-run", "done"), ("waiting-run", "queued")):
            connection.execute(
                "INSERT INTO jobs (run_id, owner, workspace, device, state, planned_epochs, config_json, enqueued_at) VALUES (?, 'alice', ?, 'auto', ?, 3, ?, 1.0)",
                (run_id, str(tmp_path), state, json.dumps(_config())),
            )
    errors: list[BaseException] = []

    def open_queue() -> None:  # several server processes may open the old file at once: one of them adds the column
        try:
            JobQueue(path, slots={"cpu": 1})
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    openers = [threading.Thread(target=open_queue) for _ in range(4)]
    for opener in openers:
        opener.start()
    for opener in openers:
        opener.join()
    assert errors == []
    queue = JobQueue(path, slots={"cpu": 1}, per_user_cap=2)
    assert [(e.run_id, e.kind, e.planned_epochs) for e in queue.entries()] == [
        ("done-run", "run", 3),
        ("waiting-run", "run", 3),
    ]
    queue.enqueue("advice-1", "alice", {"config": _config(epochs=50), "options": {}}, kind="advice")
    assert queue.get("advice-1").kind == "advice" and queue.get("advice-1").planned_epochs == 0  # no epochs to plan
    with pytest.raises(QueueFullError):  # the cap counts advisory jobs too
        queue.enqueue("advice-2", "alice", {}, kind="cut-probe")
    assert queue.claim_next().run_id == "waiting-run"  # first in, first out, whatever the kind
    queue.mark_done("waiting-run", "completed")
    assert queue.claim_next().kind == "advice"
