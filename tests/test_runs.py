"""The run store: records, epochs, comparison, logs, concurrency, crash recovery and the event recorder."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas
import pytest

from tl_core import events
from tl_core.errors import RunNotFoundError, TransferLabError
from tl_core.processes import process_is_alive, process_start_token
from tl_core.runs.comparison import compare_runs, epochs_frame
from tl_core.runs.recorder import RunRecorder
from tl_core.runs.schema import MIGRATIONS, SCHEMA_VERSION
from tl_core.runs.store import RunStore

REPO_ROOT = Path(__file__).resolve().parents[1]


def _config(learning_rate: float = 1e-3, epochs: int = 5) -> dict:
    return {
        "data": {"source": "/data/flowers", "seed": 0},
        "model": {"backbone": "mobilenet_v2", "head_hidden_units": [128]},
        "train": {"learning_rate": learning_rate, "epochs": epochs, "batch_size": 32},
    }


def _create(store: RunStore, **overrides) -> str:
    arguments = {
        "config": _config(),
        "backbone": "mobilenet_v2",
        "weights": "imagenet",
        "mode": "feature-extraction",
        **overrides,
    }
    return store.create_run(**arguments).id


def test_create_get_list_and_prefix(workspace: Path) -> None:
    store = RunStore(workspace)
    first = store.create_run(
        config=_config(),
        backbone="mobilenet_v2",
        weights="imagenet",
        mode="feature-extraction",
        dataset_fingerprint="abc",
        dataset_stats={"class_counts": {"a": 3}},
    )
    time.sleep(0.01)
    second_id = _create(store, name="second", owner="alice", parent_run_id=first.id, status="running")

    assert first.status == "queued" and first.config == _config() and first.dataset_stats == {"class_counts": {"a": 3}}
    assert first.name.startswith("mobilenet_v2 · feature-extraction") and first.owner == "local" and first.metrics == {}
    assert first.elapsed_s == 0.0 and first.started_at is None
    assert len(first.id) == 22 and first.id[8] == "-" and first.id[15] == "-"
    assert store.run_dir(first.id) == store.workspace / "runs" / first.id and store.run_dir(first.id).is_dir()

    second = store.get(second_id)
    assert second.parent_run_id == first.id and second.owner == "alice" and second.started_at is not None
    assert [r.id for r in store.list_runs()] == [second_id, first.id]
    assert [r.id for r in store.list_runs(owner="alice")] == [second_id]
    assert [r.id for r in store.list_runs(status="queued")] == [first.id]

    unique_prefix = first.id[:-3] if first.id[:-3] != second_id[:-3] else first.id[:-1]
    assert store.get(unique_prefix).id == first.id
    with pytest.raises(RunNotFoundError, match="python -m tl_core runs"):
        store.get("nope")
    with pytest.raises(RunNotFoundError, match="several runs"):
        store.get(first.id[:4])  # both runs were created in the same year
    with pytest.raises(ValueError, match="status"):
        _create(store, status="exploded")


def test_workspace_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "from_env"))
    store = RunStore()
    assert store.workspace == (tmp_path / "from_env").resolve() and (store.workspace / "transferlab.db").is_file()
    with sqlite3.connect(store.workspace / "transferlab.db") as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_update_finish_and_delete(workspace: Path) -> None:
    store = RunStore(workspace)
    run_id = _create(store)
    store.mark_running(run_id)
    assert store.get(run_id).status == "running" and store.get(run_id).elapsed_s >= 0
    store.update_metrics(run_id, {"val_accuracy": 0.5, "val_loss": 1.0})
    store.update_metrics(run_id, {"val_accuracy": 0.75})
    store.update_dataset(run_id, "fp123", {"class_counts": {"cat": 4, "dog": 5}})
    with pytest.raises(TransferLabError, match="stop it first"):
        store.delete(run_id)
    store.finish_run(run_id, "completed", metrics={"test_accuracy": 0.7})

    record = store.get(run_id)
    assert record.status == "completed" and record.error is None
    assert record.metrics == {"val_accuracy": 0.75, "val_loss": 1.0, "test_accuracy": 0.7}
    assert record.dataset_fingerprint == "fp123" and record.dataset_stats["class_counts"]["dog"] == 5
    assert record.finished_at >= record.started_at and record.elapsed_s == record.finished_at - record.started_at
    with pytest.raises(ValueError):
        store.finish_run(run_id, "running")
    with pytest.raises(RunNotFoundError):
        store.update_metrics("20000101-000000-000000", {"a": 1})

    store.record_epoch(
        run_id,
        phase="head",
        epoch=1,
        phase_epoch=1,
        metrics={"loss": 1.0},
        learning_rate=1e-3,
        seconds=1.0,
        is_best=True,
    )
    (store.run_dir(run_id) / "model.keras").write_bytes(b"weights")
    store.delete(run_id)
    assert not store.run_dir(run_id).exists() and store.list_runs() == [] and store.epochs(run_id) == []
    with pytest.raises(RunNotFoundError):
        store.get(run_id)


def test_epochs_upsert_and_long_frame(workspace: Path) -> None:
    store = RunStore(workspace)
    first, second = _create(store, name="first"), _create(store, name="second")
    store.record_epoch(
        first,
        phase="head",
        epoch=1,
        phase_epoch=1,
        metrics={"loss": 0.9, "val_loss": 1.1},
        learning_rate=1e-3,
        seconds=2.0,
        is_best=True,
    )
    store.record_epoch(
        first,
        phase="head",
        epoch=1,
        phase_epoch=1,
        metrics={"loss": 0.8, "val_loss": 1.0},
        learning_rate=1e-3,
        seconds=2.5,
        is_best=True,
    )
    store.record_epoch(
        first,
        phase="fine-tune",
        epoch=2,
        phase_epoch=1,
        metrics={"loss": 0.5, "val_loss": 1.2},
        learning_rate=1e-5,
        seconds=4.0,
        is_best=False,
    )
    store.record_epoch(
        second,
        phase="head",
        epoch=1,
        phase_epoch=1,
        metrics={"loss": 0.7, "val_loss": 0.9},
        learning_rate=1e-2,
        seconds=1.0,
        is_best=True,
    )

    epochs = store.epochs(first)
    assert [(e.epoch, e.phase, e.phase_epoch, e.is_best) for e in epochs] == [
        (1, "head", 1, True),
        (2, "fine-tune", 1, False),
    ]
    assert epochs[0].metrics == {"loss": 0.8, "val_loss": 1.0} and epochs[0].seconds == 2.5
    with pytest.raises(RunNotFoundError):
        store.record_epoch(
            "20000101-000000-000000",
            phase="head",
            epoch=1,
            phase_epoch=1,
            metrics={},
            learning_rate=0.1,
            seconds=1,
            is_best=False,
        )

    frame = epochs_frame(store, [first, second])
    assert list(frame.columns) == ["run_id", "run_name", "phase", "epoch", "metric", "value"]
    assert len(frame) == 2 * 3 + 3  # (loss, val_loss, learning_rate) per epoch
    val_loss = frame[(frame.metric == "val_loss")].sort_values(["run_name", "epoch"])
    assert list(val_loss.value) == [1.0, 1.2, 0.9] and list(val_loss.run_name) == ["first", "first", "second"]
    assert epochs_frame(store, []).empty


def test_compare_shows_only_differing_config(workspace: Path) -> None:
    store = RunStore(workspace)
    slow = _create(store, name="slow", config=_config(learning_rate=1e-3))
    fast = _create(store, name="fast", config=_config(learning_rate=1e-2))
    store.finish_run(slow, "completed", metrics={"val_accuracy": 0.8, "test_accuracy": 0.7})
    store.finish_run(fast, "failed", metrics={"val_accuracy": 0.6}, error="boom")
    store.record_epoch(
        slow, phase="head", epoch=1, phase_epoch=1, metrics={"loss": 1.0}, learning_rate=1e-3, seconds=1, is_best=True
    )

    table = compare_runs(store, [slow, fast])
    assert list(table.id) == [slow, fast] and list(table.status) == ["completed", "failed"]
    assert "train.learning_rate" in table.columns and list(table["train.learning_rate"]) == [1e-3, 1e-2]
    assert "train.batch_size" not in table.columns and "data.source" not in table.columns
    assert (
        list(table.epochs) == [1, 0]
        and table.loc[0, "test_accuracy"] == 0.7
        and pandas.isna(table.loc[1, "test_accuracy"])
    )
    assert list(table.columns).index("val_accuracy") < list(table.columns).index("test_accuracy")

    single = compare_runs(store, [slow])
    assert {"train.batch_size", "data.source", "model.head_hidden_units", "train.learning_rate"} <= set(single.columns)
    assert single.loc[0, "model.head_hidden_units"] == "[128]"


def test_log_append_and_read(workspace: Path) -> None:
    store = RunStore(workspace)
    run_id = _create(store)
    assert store.read_log(run_id) == ""
    store.append_log(run_id, "first line")
    store.append_log(run_id, "traceback\n  frame 1\n  frame 2")
    lines = store.read_log(run_id).splitlines()
    assert len(lines) == 4 and lines[0].endswith("Z first line") and lines[0][:4].isdigit()
    assert lines[1].endswith("traceback") and lines[2] == "      frame 1"
    with pytest.raises(RunNotFoundError):
        store.run_dir("../../etc")


def test_threads_write_epochs_at_once(workspace: Path) -> None:
    store = RunStore(workspace)
    run_ids = [_create(store), _create(store)]
    failures: list[BaseException] = []

    def write(run_id: str) -> None:
        try:
            for epoch in range(1, 41):
                store.record_epoch(
                    run_id,
                    phase="head",
                    epoch=epoch,
                    phase_epoch=epoch,
                    metrics={"loss": 1 / epoch},
                    learning_rate=1e-3,
                    seconds=0.1,
                    is_best=True,
                )
                store.update_metrics(run_id, {f"m{epoch}": epoch})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for run_id in run_ids:
        assert len(store.epochs(run_id)) == 40 and len(store.get(run_id).metrics) == 40  # no lost metric merges


def test_second_process_writes_while_this_one_reads(workspace: Path) -> None:
    store = RunStore(workspace)
    run_id = _create(store)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
            import sys
            from tl_core.runs.store import RunStore
            store = RunStore(sys.argv[1])
            for epoch in range(1, 151):
                store.record_epoch(sys.argv[2], phase="head", epoch=epoch, phase_epoch=epoch, metrics={"loss": 1.0 / epoch},
                                   learning_rate=0.001, seconds=0.01, is_best=False)
                store.update_metrics(sys.argv[2], {"last_epoch": epoch})
        """),
            str(workspace),
            run_id,
        ],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    reads = 0
    while writer.poll() is None:
        store.epochs(run_id)
        store.list_runs()
        store.update_metrics(run_id, {"reader": reads})  # this process writes too
        reads += 1
    assert writer.returncode == 0, writer.stderr.read()
    assert "locked" not in writer.stderr.read()
    assert len(store.epochs(run_id)) == 150 and store.get(run_id).metrics["last_epoch"] == 150 and reads > 0


def test_crashed_worker_shows_as_interrupted(workspace: Path) -> None:
    store = RunStore(workspace)
    alive_id = _create(store)
    store.mark_running(alive_id)  # owned by this (live) test process

    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
            import sys, time
            from tl_core.runs.store import RunStore
            store = RunStore(sys.argv[1])
            record = store.create_run(config={}, backbone="mobilenet_v2", weights="none", mode="full")
            store.mark_running(record.id)
            store.append_log(record.id, "epoch 1 done")
            (store.run_dir(record.id) / "checkpoint.weights.h5").write_bytes(b"partial")
            print(record.id, flush=True)
            time.sleep(600)
        """),
            str(workspace),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    crashed_id = worker.stdout.readline().strip()
    assert store.get(crashed_id).status == "running"
    assert RunStore(workspace).get(crashed_id).status == "running"  # alive: left alone
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)

    reopened = RunStore(workspace)
    crashed = reopened.get(crashed_id)
    assert (
        crashed.status == "interrupted" and "stopped unexpectedly" in crashed.error and str(worker.pid) in crashed.error
    )
    assert crashed.finished_at is not None and crashed.elapsed_s >= 0
    assert (reopened.run_dir(crashed_id) / "checkpoint.weights.h5").is_file()
    log = reopened.read_log(crashed_id)
    assert "epoch 1 done" in log and "interrupted" in log
    assert reopened.get(alive_id).status == "running"
    assert reopened.recover_interrupted() == []  # already recovered: nothing new
    reopened.delete(crashed_id)  # a dead run can be deleted


def test_reused_pid_is_not_mistaken_for_the_original_process() -> None:
    token = process_start_token(os.getpid())
    if token is None:  # no /proc: only the signal check exists
        assert process_is_alive(os.getpid(), None)
        return
    assert process_is_alive(os.getpid(), token)
    assert not process_is_alive(os.getpid(), str(int(token) + 1))
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not process_is_alive(int(finished.stdout), None)


def test_recorder_turns_events_into_rows_and_log(workspace: Path) -> None:
    store = RunStore(workspace)
    run_id = _create(store)
    recorder = RunRecorder(store, run_id)
    sequence = [
        events.RunStarted(run_id, class_names=("cat", "dog"), split_sizes={"train": 8, "val": 2}, config={}),
        events.PhaseStarted(
            run_id, phase="head", epochs=2, learning_rate=1e-3, trainable_weights=2562, description="Backbone frozen."
        ),
        events.BatchProgress(run_id, phase="head", epoch=1, batch=1, batches_per_epoch=2, metrics={"loss": 1.0}),
        events.EpochEnded(
            run_id,
            phase="head",
            epoch=1,
            phase_epoch=1,
            metrics={"loss": 0.9, "val_loss": 0.8},
            learning_rate=1e-3,
            seconds=1.5,
            is_best=True,
        ),
        events.EpochEnded(
            run_id,
            phase="head",
            epoch=2,
            phase_epoch=2,
            metrics={"loss": 0.7, "val_loss": 0.85},
            learning_rate=1e-3,
            seconds=1.4,
            is_best=False,
        ),
        events.LogMessage(run_id, level="warning", text="2 files skipped"),
        events.EpochEnded(
            "someone-else",
            phase="head",
            epoch=3,
            phase_epoch=3,
            metrics={},
            learning_rate=1e-3,
            seconds=1,
            is_best=False,
        ),
        events.PhaseEnded(run_id, phase="head", epochs_run=2, best_val_loss=0.8, stopped_early=False),
        events.RunFinished(
            run_id, status="completed", epochs_run=2, final_metrics={"val_accuracy": 0.9}, elapsed_s=3.2
        ),
    ]
    for event in sequence[:4]:
        recorder.on_event(event)
    assert store.get(run_id).status == "running" and store.get(run_id).started_at is not None
    for event in sequence[4:]:
        recorder.on_event(event)

    record = store.get(run_id)
    assert record.status == "completed" and record.metrics == {"val_accuracy": 0.9} and record.error is None
    assert [(e.epoch, e.is_best, e.metrics["val_loss"]) for e in store.epochs(run_id)] == [
        (1, True, 0.8),
        (2, False, 0.85),
    ]
    log = store.read_log(run_id)
    assert (
        "run started: 2 classes (cat, dog)" in log and "phase head started" in log and "warning: 2 files skipped" in log
    )
    assert "val_loss=0.8 " in log and "run completed after 2 epochs" in log and "loss=1 " not in log  # no batch lines
    assert len(log.splitlines()) == 7


def test_recorder_keeps_the_error_of_a_failed_run(workspace: Path) -> None:
    store = RunStore(workspace)
    run_id = _create(store)
    recorder = RunRecorder(store, run_id)
    recorder.on_event(events.RunStarted(run_id, class_names=("a",), split_sizes={"train": 1}, config={}))
    recorder.on_event(
        events.RunFinished(
            run_id, status="failed", epochs_run=0, final_metrics={}, elapsed_s=0.1, error="disk full\ntrace"
        )
    )
    record = store.get(run_id)
    assert record.status == "failed" and record.error == "disk full\ntrace"
    assert store.read_log(run_id).splitlines()[-1].endswith("run failed after 0 epochs in 0.1s: disk full")


def test_recorder_stores_phases_with_their_first_epoch_and_open_blocks(workspace: Path) -> None:
    store = RunStore(workspace)
    run_id = _create(store, mode="progressive")
    recorder = RunRecorder(store, run_id)

    def epoch(number: int, phase: str) -> events.EpochEnded:
        return events.EpochEnded(
            run_id,
            phase=phase,
            epoch=number,
            phase_epoch=1,
            metrics={"val_loss": 1.0 / number},
            learning_rate=1e-4,
            seconds=1.0,
            is_best=True,
        )

    recorder.on_event(events.RunStarted(run_id, class_names=("a", "b"), split_sizes={"train": 4}, config={}))
    recorder.on_event(
        events.PhaseStarted(
            run_id, phase="head", epochs=2, learning_rate=1e-3, trainable_weights=10, description="frozen"
        )
    )
    recorder.on_event(epoch(1, "head"))
    recorder.on_event(epoch(2, "head"))
    recorder.on_event(
        events.PhaseStarted(
            run_id,
            phase="stage-1",
            epochs=1,
            learning_rate=1e-4,
            trainable_weights=99,
            description="unfroze the top 1 of 7 blocks",
            open_blocks=("block7",),
        )
    )
    recorder.on_event(epoch(3, "stage-1"))
    recorder.on_event(
        events.PhaseStarted(
            run_id,
            phase="stage-2",
            epochs=1,
            learning_rate=1e-4,
            trainable_weights=199,
            description="unfroze the top 2 of 7 blocks",
            open_blocks=("block6", "block7"),
        )
    )

    phases = store.phases(run_id)
    assert [(p.phase, p.first_epoch, p.epochs, p.open_blocks) for p in phases] == [
        ("head", 1, 2, ()),
        ("stage-1", 3, 1, ("block7",)),
        ("stage-2", 4, 1, ("block6", "block7")),
    ]
    assert phases[1].learning_rate == pytest.approx(1e-4) and phases[1].description.startswith("unfroze the top 1")
    assert store.phases("20000101-000000-000000") == []
    recorder.on_event(events.RunFinished(run_id, status="completed", epochs_run=3, final_metrics={}, elapsed_s=3.0))
    store.delete(run_id)
    with sqlite3.connect(store.database_path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM phases").fetchone()[0] == 0


def test_a_database_without_the_phases_table_is_migrated_in_place(workspace: Path) -> None:
    workspace.mkdir(parents=True)
    with sqlite3.connect(workspace / "transferlab.db") as connection:  # a workspace written before phases were stored
        for statement in MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute("PRAGMA user_version = 1")
        connection.execute(
            "INSERT INTO runs (id, name, status, created_at, updated_at, config_json, dataset_stats_json, backbone, weights, mode,"
            " metrics_json) VALUES ('20250101-000000-abcdef', 'old run', 'completed', 1, 1, '{}', '{}', 'mobilenet_v2', 'imagenet',"
            " 'fine-tune', '{\"test_accuracy\": 0.5}')"
        )
    assert SCHEMA_VERSION >= 2
    store = RunStore(workspace)
    with sqlite3.connect(store.database_path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    old = store.get("20250101-000000-abcdef")
    assert old.name == "old run" and old.metrics == {"test_accuracy": 0.5}
    assert store.phases(old.id) == []
    store.record_phase(old.id, phase="head", first_epoch=1, epochs=3, learning_rate=1e-3)
    assert [(p.phase, p.open_blocks, p.description) for p in store.phases(old.id)] == [("head", (), "")]


def test_a_queued_run_held_by_the_job_queue_survives_its_creator(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    creator = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
            import sys
            from tl_core.runs.store import RunStore
            store = RunStore(sys.argv[1])
            held = store.create_run(config={}, backbone="b", weights="none", mode="full", held_by_queue=True)
            plain = store.create_run(config={}, backbone="b", weights="none", mode="full")
            print(held.id, plain.id)
        """),
            str(workspace),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    held_id, plain_id = creator.stdout.split()
    store = RunStore(workspace)
    assert store.get(held_id).status == "queued"  # the queue, not the dead creator, keeps it
    assert store.get(plain_id).status == "interrupted"


def test_a_database_from_a_newer_transferlab_is_refused_and_left_as_it_is(workspace: Path) -> None:
    workspace.mkdir(parents=True)
    with sqlite3.connect(workspace / "transferlab.db") as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(
        TransferLabError,
        match=r"schema version \d+, newer than this TransferLab .*update TransferLab, or pass another workspace",
    ):
        RunStore(workspace)
    with sqlite3.connect(workspace / "transferlab.db") as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] == 0


def test_runs_started_in_the_same_minute_get_different_default_names(tmp_path) -> None:
    from tl_core.runs.store import RunStore

    store = RunStore(tmp_path)
    names = [
        store.create_run(config={}, backbone="efficientnet_lite0", weights="imagenet", mode="fine-tune").name
        for _ in range(3)
    ]
    assert len(set(names)) == 3 and names[1] == f"{names[0]} #2" and names[2] == f"{names[0]} #3"
