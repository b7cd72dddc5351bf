"""The `sweep` command on the local backend: one split for every run, runs in parallel, the JSON contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tl_core.cli.main import main
from tl_core.jobs.sweep import SweepPlan, SweepRun, check_plan, format_leaderboard, leaderboard
from tl_core.layout import SPLIT_FILE, SWEEP_RECORD_FILE, SWEEPS_FOLDER
from tl_core.runs.store import RunStore

RUN_KEYS = ["run_id", "backbone", "mode", "status", "test_accuracy", "val_accuracy", "elapsed_s", "node"]


def test_local_sweep_two_backbones_share_one_split_and_print_the_contract(
    shapes_dataset: Path, workspace: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFERLAB_JOBS_PER_DEVICE", "2")  # both runs at once on this machine
    code = main(
        [
            "sweep",
            str(shapes_dataset),
            "--backbones",
            "mobilenet_v2_035,efficientnet_lite0",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--weights",
            "none",
            "--workspace",
            str(workspace),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert list(result) == ["sweep_id", "backend", "runs", "best_run_id", "elapsed_s"]
    assert result["backend"] == "local"
    assert [list(run) for run in result["runs"]] == [RUN_KEYS, RUN_KEYS]
    assert sorted(run["backbone"] for run in result["runs"]) == ["efficientnet_lite0", "mobilenet_v2_035"]
    assert {run["status"] for run in result["runs"]} == {"completed"}
    assert all(0.0 <= run["test_accuracy"] <= 1.0 and run["node"] for run in result["runs"])
    assert result["best_run_id"] == result["runs"][0]["run_id"]  # the list is the leaderboard, best first
    # The leaderboard was printed as each run ended (on stderr: stdout's last line is the JSON).
    assert "[1/2]" in captured.err and "[2/2]" in captured.err and "test acc" in captured.err
    # Each completed run's accuracy with its 95% interval, and whether the best really beats the runner-up.
    last_board = captured.err.split("[2/2]")[1]
    assert "95% interval" in last_board and re.search(r"\b[01]\.\d{3}-[01]\.\d{3}\b", last_board)
    assert re.search(r"best against the runner-up: (No real difference|The difference is real)", captured.err)

    store = RunStore(workspace)
    records = [store.get(run["run_id"]) for run in result["runs"]]
    assert all(r.status == "completed" for r in records)  # ordinary runs in the store
    assert len({r.dataset_fingerprint for r in records}) == 1 and records[0].dataset_fingerprint
    sweep = json.loads((workspace / SWEEPS_FOLDER / result["sweep_id"] / SWEEP_RECORD_FILE).read_text())
    assert sweep["dataset_fingerprint"] == records[0].dataset_fingerprint
    for record in records:
        split = json.loads((store.run_dir(record.id) / SPLIT_FILE).read_text())
        assert {name: sorted(paths) for name, paths in split.items()} == sweep["split"]
    assert sweep["problems"] == []


def test_bad_backbones_and_modes_are_refused_before_anything_runs(
    shapes_dataset: Path, workspace: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(
        [
            "sweep",
            str(shapes_dataset),
            "--backbones",
            "mobilenet_v2_035,mobilenet_v9,glove_6b_50d",
            "--modes",
            "feature-extraction,sideways",
            "--workspace",
            str(workspace),
        ]
    )
    error = capsys.readouterr().err
    assert code == 2
    assert error.count("\n") == 1  # one line, no traceback
    for flagged in ("--backbones mobilenet_v9", "--backbones glove_6b_50d", "--modes sideways"):
        assert flagged in error
    assert "--backbones mobilenet_v2_035" not in error
    assert not RunStore(workspace).list_runs()


def test_check_plan_accepts_a_good_plan_and_the_leaderboard_ranks_completed_runs_first() -> None:
    plan = SweepPlan("data", backbones=("mobilenet_v2_035",), modes=("fine-tune",))
    assert check_plan(plan, "image", "efficientnet_lite0") == []
    runs = [
        SweepRun("a", "x", "feature-extraction", "failed"),
        SweepRun("b", "y", "feature-extraction", "completed", 0.5, 0.6),
        SweepRun("c", "z", "fine-tune", "completed", 0.9, 0.4),
    ]
    assert [run.run_id for run in leaderboard(runs)] == ["c", "b", "a"]
    table = format_leaderboard(runs, {"c": (0.75, 0.97)}).splitlines()
    assert table[1].split()[:2] == ["1", "z"] and len(table) == 4
    assert "0.750-0.970" in table[1] and "0.750" not in table[2]
