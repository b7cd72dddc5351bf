"""Runs logged where analysts already look: TensorBoard event files in every run, MLflow when asked (issue 22)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.tracking.mlflow_log import MLFLOW_URI_VARIABLE  # noqa: E402
from tl_core.training import runner  # noqa: E402
from tl_core.training.loop import head_learning_rate  # noqa: E402

TINY_MODEL = ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32)
RUN_FILES = {"evaluation.json", "confusion_matrix.png", "model.keras", "summary.json", "labels.txt", "log.txt"}


def _config(source: Path, **train: object) -> RunConfig:
    return RunConfig(data=DataConfig(source=str(source)), model=TINY_MODEL, train=TrainConfig(batch_size=16, **train))


def _event_tensors(folder: Path, tag: str) -> dict[int, object]:
    """A tag's values by step, read back as TensorBoard reads them (TF2 summaries are stored as tensors)."""
    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags()["tensors"]:
        return {}
    return {event.step: tensor_util.make_ndarray(event.tensor_proto) for event in accumulator.Tensors(tag)}


def _scalars(folder: Path, tag: str) -> dict[int, float]:
    return {step: float(value) for step, value in _event_tensors(folder, tag).items()}


@dataclass
class TrackedRun:
    store: RunStore
    run_id: str
    summary: dict
    mlflow_uri: str


@pytest.fixture(scope="module")
def fine_tune_run(shapes_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> TrackedRun:
    """One fine-tune run (a head phase, then a fine-tune phase) logged to a fresh SQLite MLflow store."""
    root = tmp_path_factory.mktemp("tracked")
    mlflow_uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MLFLOW_URI_VARIABLE, mlflow_uri)
        patch.chdir(root)  # MLflow keeps a new experiment's artefacts under ./mlruns
        store = RunStore(root / "workspace")
        outcome = runner.run_experiment(
            _config(shapes_dataset, mode="fine-tune", epochs=1, fine_tune_epochs=1, fine_tune_layers=3), store=store
        )
    assert outcome.status == "completed", outcome.error
    return TrackedRun(store, outcome.run_id, outcome.summary, mlflow_uri)


def test_tensorboard_files_hold_every_epoch_in_keras_layout_with_each_phase_marked(fine_tune_run: TrackedRun) -> None:
    store, run_id = fine_tune_run.store, fine_tune_run.run_id
    board = store.run_dir(run_id) / "tensorboard"
    train, validation = board / "train", board / "validation"
    for folder in (train, validation):
        assert list(folder.glob("events.out.tfevents.*")), folder
    epochs = store.epochs(run_id)
    assert [(e.epoch, e.phase) for e in epochs] == [(1, "head"), (2, "fine-tune")]
    expected = {
        (train, "epoch_loss"): {e.epoch: e.metrics["loss"] for e in epochs},
        (train, "epoch_accuracy"): {e.epoch: e.metrics["accuracy"] for e in epochs},
        (train, "epoch_learning_rate"): {e.epoch: e.learning_rate for e in epochs},
        (validation, "epoch_loss"): {e.epoch: e.metrics["val_loss"] for e in epochs},
        (validation, "epoch_accuracy"): {e.epoch: e.metrics["val_accuracy"] for e in epochs},
    }
    for (folder, tag), values in expected.items():
        assert _scalars(folder, tag) == pytest.approx(values), (folder.name, tag)
    assert _scalars(validation, "epoch_learning_rate") == {}
    # The fine-tune phase trains at a tenth of the set rate, the head above it (scaled to its features): the curve
    # shows the step down at epoch 2.
    configured = TrainConfig().learning_rate
    assert epochs[0].learning_rate == pytest.approx(head_learning_rate(configured, 1280))  # MobileNetV2's features
    assert epochs[1].learning_rate == pytest.approx(configured / 10)

    phases = {step: value.item().decode() for step, value in _event_tensors(train, "phase").items()}
    assert [(p.first_epoch, p.phase) for p in store.phases(run_id)] == [(1, "head"), (2, "fine-tune")]
    assert sorted(phases) == [1, 2]
    assert phases[1].startswith("**head** from epoch 1:") and phases[2].startswith("**fine-tune** from epoch 2:")
    settings = json.loads(_event_tensors(train, "run_config")[0].item().decode().strip("`\n"))
    assert settings["train"]["mode"] == "fine-tune"


def test_mlflow_holds_the_settings_each_epoch_and_the_files(fine_tune_run: TrackedRun) -> None:
    from mlflow.tracking import MlflowClient

    store, run_id = fine_tune_run.store, fine_tune_run.run_id
    client = MlflowClient(tracking_uri=fine_tune_run.mlflow_uri)
    experiment = client.get_experiment_by_name("TransferLab")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.data.tags["transferlab.run_id"] == run_id
    assert logged.info.status == "FINISHED"
    params = logged.data.params
    assert params["train.mode"] == "fine-tune" and params["model.backbone"] == "mobilenet_v2_035"
    assert params["train.fine_tune_epochs"] == "1" and params["model.image_size"] == "32"
    assert params["phase.head.epochs"] == "1" and "phase.fine-tune.learning_rate" in params

    epochs = store.epochs(run_id)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        history = [(m.step, m.value) for m in client.get_metric_history(logged.info.run_id, key)]
        assert history == [(e.epoch, pytest.approx(e.metrics[key])) for e in epochs], key
    learning_rates = client.get_metric_history(logged.info.run_id, "learning_rate")
    assert [(m.step, m.value) for m in learning_rates] == [(e.epoch, pytest.approx(e.learning_rate)) for e in epochs]
    assert logged.data.metrics["test_accuracy"] == pytest.approx(fine_tune_run.summary["test_accuracy"])
    assert logged.data.metrics["final_val_loss"] == pytest.approx(fine_tune_run.summary["val_loss"])

    artefacts = {artefact.path for artefact in client.list_artifacts(logged.info.run_id)}
    assert artefacts == RUN_FILES
    image = Path(client.download_artifacts(logged.info.run_id, "confusion_matrix.png"))
    assert image.read_bytes().startswith(b"\x89PNG")
    assert "MlflowLogger failed" not in store.read_log(run_id)
    assert fine_tune_run.summary["listener_errors"] == 0


@pytest.mark.parametrize("fastpath", ["1", "0"])
def test_both_training_paths_write_their_epochs(
    fastpath: str, shapes_dataset: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feature extraction trains its head outside `model.fit` on the fast path and with `fit` without it."""
    monkeypatch.setenv("TRANSFERLAB_FASTPATH", fastpath)
    monkeypatch.delenv(MLFLOW_URI_VARIABLE, raising=False)
    store = RunStore(workspace)
    outcome = runner.run_experiment(_config(shapes_dataset, epochs=2), store=store)
    assert outcome.status == "completed", outcome.error
    board = store.run_dir(outcome.run_id) / "tensorboard"
    epochs = store.epochs(outcome.run_id)
    assert _scalars(board / "train", "epoch_loss") == pytest.approx({e.epoch: e.metrics["loss"] for e in epochs})
    assert _scalars(board / "validation", "epoch_accuracy") == pytest.approx(
        {e.epoch: e.metrics["val_accuracy"] for e in epochs}
    )
    assert sorted(_scalars(board / "train", "epoch_learning_rate")) == [1, 2]
    assert outcome.summary["listener_errors"] == 0


def test_an_unusable_mlflow_store_is_one_warning_and_the_run_completes(
    shapes_dataset: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    monkeypatch.setenv(MLFLOW_URI_VARIABLE, f"sqlite:///{blocked / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    store = RunStore(workspace)
    outcome = runner.run_experiment(_config(shapes_dataset, epochs=1), store=store)
    assert outcome.status == "completed", outcome.error
    log = store.read_log(outcome.run_id)
    assert log.count("MlflowLogger failed") == 1 and "MlflowLogger failed on RunStarted" in log
    assert outcome.summary["listener_errors"] == 1
    assert (store.run_dir(outcome.run_id) / "tensorboard" / "train").is_dir()


WITHOUT_MLFLOW_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.runs.store import RunStore
    from tl_core.training import runner
    config = RunConfig(data=DataConfig(source=sys.argv[1]), model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
                       train=TrainConfig(epochs=1, batch_size=16))
    outcome = runner.run_experiment(config, store=RunStore(sys.argv[2]))
    print(json.dumps({"status": outcome.status, "error": outcome.error,
                      "mlflow_loaded": sorted(name for name in sys.modules if name.split(".")[0] == "mlflow")}))
    """
)


def test_without_the_variable_mlflow_is_never_imported(shapes_dataset: Path, workspace: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if key != MLFLOW_URI_VARIABLE}
    finished = subprocess.run(
        [sys.executable, "-c", WITHOUT_MLFLOW_SCRIPT, str(shapes_dataset), str(workspace)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=240,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    assert report == {"status": "completed", "error": None, "mlflow_loaded": []}
