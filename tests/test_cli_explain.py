"""`python -m tl_core explain RUN_ID FILE... [--class NAME] --out DIR [--workspace DIR] [--json]`: the contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from tl_core.cli.main import main  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.runner import run_experiment  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"path", "predicted", "probability", "class_explained", "heatmap", "peak"}


@pytest.fixture(scope="module")
def trained(shapes_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[str]]:
    workspace = tmp_path_factory.mktemp("cli-explain") / "workspace"
    config = RunConfig(
        data=DataConfig(source=str(shapes_dataset)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=64),
        train=TrainConfig(epochs=1, batch_size=16),
    )
    outcome = run_experiment(config, store=RunStore(workspace))
    assert outcome.status == "completed"
    return workspace, outcome.run_id, sorted(p.name for p in shapes_dataset.iterdir())


@pytest.fixture()
def images(shapes_dataset: Path) -> list[Path]:
    return [
        sorted((shapes_dataset / name).glob("*.png"))[0] for name in sorted(p.name for p in shapes_dataset.iterdir())
    ]


def explain(*args: object) -> int:
    return main(["explain", *map(str, args)])


def test_json_last_line_names_each_png_and_its_peak(
    trained: tuple[Path, str, list[str]], images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace, run_id, classes = trained
    out = tmp_path / "overlays"

    code = explain(run_id, *images, "--out", out, "--workspace", workspace, "--json")

    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = json.loads(captured.out.strip().splitlines()[-1])["results"]
    assert [row["path"] for row in results] == [str(p) for p in images]
    for row in results:
        assert set(row) == RESULT_KEYS
        assert row["predicted"] in classes and row["class_explained"] == row["predicted"]
        assert 0.0 <= row["probability"] <= 1.0
        assert Path(row["heatmap"]).parent == out and Path(row["heatmap"]).is_file()
        with Image.open(row["heatmap"]) as png:
            assert png.format == "PNG"
        y, x = row["peak"]
        assert 0.0 < y < 1.0 and 0.0 < x < 1.0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.gradcam.png" for p in images)
    assert "only 2x2 cells at 64 px" in captured.err, "a coarse map is said to be coarse"


def test_class_flag_explains_that_class(
    trained: tuple[Path, str, list[str]], images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace, run_id, classes = trained

    code = explain(run_id, *images, "--class", classes[2], "--out", tmp_path, "--workspace", workspace, "--json")

    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert code == 0 and [row["class_explained"] for row in results] == [classes[2]] * len(images)


def test_an_unknown_class_lists_the_classes(
    trained: tuple[Path, str, list[str]], images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace, run_id, classes = trained

    code = explain(run_id, images[0], "--class", "zebra", "--out", tmp_path / "out", "--workspace", workspace)

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == f"error: This run has no class 'zebra': choose one of {', '.join(classes)}."
    assert not (tmp_path / "out").exists(), "nothing is written for a bad request"


def test_an_unreadable_file_gets_its_own_message_and_the_others_are_explained(
    trained: tuple[Path, str, list[str]], images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace, run_id, _ = trained
    notes = tmp_path / "notes.png"
    notes.write_bytes(b"these are my notes, not a picture")

    code = explain(run_id, images[0], notes, images[1], "--out", tmp_path / "out", "--workspace", workspace, "--json")

    captured = capsys.readouterr()
    results = json.loads(captured.out.strip().splitlines()[-1])["results"]
    assert code == 2, "as `predict`: a refused file makes the exit status 2"
    assert [row["path"] for row in results] == [str(images[0]), str(notes), str(images[1])]
    assert results[1]["heatmap"] is None and results[1]["peak"] is None and "not an image" in results[1]["problem"]
    assert all(Path(row["heatmap"]).is_file() for row in (results[0], results[2]))
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {notes}: {results[1]['problem']}"]


def test_plain_output_and_help_from_the_command_line(
    trained: tuple[Path, str, list[str]], images: list[Path], tmp_path: Path
) -> None:
    workspace, run_id, _ = trained
    command = [sys.executable, "-m", "tl_core", "explain"]

    done = subprocess.run(
        [*command, run_id, images[0], "--out", tmp_path, "--workspace", workspace, "--alpha", "0.7"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    helped = subprocess.run([*command, "--help"], capture_output=True, text=True, cwd=REPO, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"{images[0]}: ") and f"-> {tmp_path / images[0].stem}.gradcam.png" in done.stdout
    assert helped.returncode == 0
    assert all(flag in helped.stdout for flag in ("--class NAME", "--out DIR", "--alpha", "Grad-CAM", "RUN_ID", "FILE"))
