"""The command-line contract other tools rely on."""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tl_core.cli.main import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {"run_id", "status", "backbone", "mode", "epochs_run", "val_accuracy", "test_accuracy", "elapsed_s"}


def run_cli(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "tl_core", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.fixture(scope="module")
def trained(shapes_dataset, tmp_path_factory):
    workspace = tmp_path_factory.mktemp("cli") / "ws"
    completed = run_cli(
        "train",
        shapes_dataset,
        "--backbone",
        "mobilenet_v2_035",
        "--weights",
        "none",
        "--mode",
        "feature-extraction",
        "--epochs",
        2,
        "--image-size",
        48,
        "--batch-size",
        16,
        "--workspace",
        workspace,
        "--json",
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    return workspace, summary, completed


def test_train_json_summary_is_the_last_line(trained):
    _, summary, completed = trained
    assert SUMMARY_KEYS <= set(summary)
    assert summary["status"] == "completed" and summary["epochs_run"] == 2
    assert summary["backbone"] == "mobilenet_v2_035" and summary["mode"] == "feature-extraction"
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert "epoch 2" in completed.stderr  # progress goes to stderr


def test_runs_evaluate_predict_export(trained, shapes_dataset, tmp_path, capsys):
    workspace, summary, _ = trained
    run_id = summary["run_id"]
    assert main(["runs", "--workspace", str(workspace), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert runs[0]["run_id"] == run_id and runs[0]["status"] == "completed"

    assert main(["evaluate", run_id, "--workspace", str(workspace), "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluation["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert len(evaluation["confusion"]) == 3

    images = sorted((shapes_dataset / "red_circle").iterdir())[:2]
    assert main(["predict", run_id[:12], *map(str, images), "--top", "2", "--workspace", str(workspace), "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(predictions) == 2 and len(predictions[0]) == 2
    assert set(predictions[0][0]) == {"label", "probability"}

    assert main(["export", run_id, "--out", str(tmp_path / "bundle"), "--workspace", str(workspace)]) == 0
    for name in ("model.keras", "saved_model", "model.tflite", "labels.txt", "MODEL_CARD.md"):
        assert (tmp_path / "bundle" / name).exists(), name


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["scan", "/no/such/folder"], "/no/such/folder"),
        (["train", "/no/such/folder", "--epochs", "1"], "/no/such/folder"),
        (["train", "DATA", "--backbone", "mobilenet_v9", "--epochs", "1"], "mobilenet_v2"),
        (["train", "DATA", "--epochs", "0"], "epochs=0"),
        (["evaluate", "nosuchrun"], "not found"),
        (["predict", "nosuchrun", "missing.png"], "missing.png"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(args, fragment, shapes_dataset, tmp_path, capsys):
    args = [str(shapes_dataset) if a == "DATA" else a for a in args]
    code = main([*args, "--workspace", str(tmp_path / "ws")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert fragment in err


def test_scan_prints_a_report_and_json(shapes_dataset, capsys):
    assert main(["scan", str(shapes_dataset), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["class_counts"] == {"blue_triangle": 24, "green_square": 24, "red_circle": 24}
    completed = run_cli("scan", "/no/such/folder")
    assert completed.returncode == 2 and "Traceback" not in completed.stderr


def test_scan_extracts_archives_into_the_environment_workspace(shapes_dataset, tmp_path, monkeypatch, capsys):
    import shutil

    archive = shutil.make_archive(str(tmp_path / "shapes"), "zip", root_dir=shapes_dataset)
    workspace = tmp_path / "env-ws"
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(workspace))
    monkeypatch.chdir(tmp_path)
    assert main(["scan", archive, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(report["root"]).is_relative_to(workspace / "cache" / "extracted")
    assert not (tmp_path / "workspace").exists()


def test_text_folder_trains_with_text_defaults_and_predicts_typed_text(tmp_path, capsys):
    from tl_core.data.text_demo import make_topics_dataset

    topics = make_topics_dataset(tmp_path / "topics", num_classes=3, docs_per_class=12, seed=1)
    workspace = str(tmp_path / "ws")
    assert main(["scan", str(topics), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sum(report["class_counts"].values()) == 36
    assert (
        main(["train", str(topics), "--epochs", "3", "--sequence-length", "32", "--workspace", workspace, "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["backbone"], summary["weights"], summary["status"]) == ("glove_6b_50d", "glove", "completed")
    assert main(["predict", summary["run_id"], "--text", "a text to classify", "--workspace", workspace, "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(predictions) == 1 and {p["label"] for p in predictions[0]} <= set(summary["class_names"])
    assert main(["backbones", "--modality", "text", "--json"]) == 0
    assert "glove_6b_50d" in {row["name"] for row in json.loads(capsys.readouterr().out.strip().splitlines()[-1])}


def test_advise_on_text_recommends_a_backbone_with_each_recipes_time(tmp_path: Path, capsys) -> None:
    from tl_core.data.text_demo import make_topics_dataset

    topics = make_topics_dataset(tmp_path / "topics", num_classes=3, docs_per_class=12, seed=1)
    workspace = ["--workspace", str(tmp_path / "ws")]
    assert main(["advise", str(topics), "--no-timing", "--sequence-length", "32", "--json", *workspace]) == 0
    advice = json.loads(capsys.readouterr().out)
    assert advice["modality"] == "text" and advice["documents"] == 36 and advice["sequence_length"] == 32
    assert advice["recommended"]["label"] == "MiniLM frozen"
    assert [recipe["label"] for recipe in advice["recipes"]] == ["GloVe frozen", "MiniLM frozen", "MiniLM fine-tuned"]
    assert main(["advise", str(topics), "--no-timing", *workspace]) == 0
    printed = capsys.readouterr().out
    assert (
        "Recommended: MiniLM frozen (--modality text --backbone all_minilm_l6_v2 --mode feature-extraction)" in printed
    )
    assert "GloVe frozen is the fastest" in printed and "documents/s" in printed
