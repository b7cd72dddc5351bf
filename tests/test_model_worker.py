"""Issue 23, item 11: the web server stays light; predict, export and cut-layer lists run in the model worker.

The server grew to 2.97 GB after a session of predict, export and the advisor because it loaded TensorFlow
and models itself. Now no page imports TensorFlow, and that work goes to one worker process that hides
the GPUs, survives a crash of its process with a clear message, and exits when idle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.jobs.model_worker import ModelWorker, ModelWorkerError  # noqa: E402
from tl_core.results import model_tasks  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "sklearn")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, str, Path]:
    """A workspace with one finished image run (a tiny MobileNetV2, random weights, 32 px) and its dataset."""
    from tl_core.training.runner import run_experiment

    root = tmp_path_factory.mktemp("model-worker")
    data = make_shapes_dataset(
        root / "workspace" / "datasets" / "shapes", num_classes=3, images_per_class=8, image_size=32
    )
    config = RunConfig(
        data=DataConfig(source=str(data)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(epochs=1, batch_size=16),
        name="worker predictor",
    )
    store = RunStore(root / "workspace")
    outcome = run_experiment(config, store=store)
    assert outcome.status == "completed"
    return store, outcome.run_id, data


PAGE_WALK = """
import sys
from streamlit.testing.v1 import AppTest
from tests.conftest import open_page

at = AppTest.from_file({app!r}, default_timeout=300)
at.run()
for page in ("model", "train", "runs", "evaluate", "predict", "data"):
    open_page(at, page)
    at.run()
    assert not at.exception, (page, [e.value for e in at.exception])
print(sorted(m for m in {heavy!r} if m in sys.modules))
"""


def test_a_walk_through_every_page_leaves_tensorflow_unloaded(trained: tuple[RunStore, str, Path]) -> None:
    """Every page, drawn as the server draws it with a finished run in view, without TensorFlow in the process.

    The Model page lists the backbone's cut depths (built by the model worker); Runs, Evaluate and Predict show the run.
    """
    store, _, data = trained
    environment = {
        **os.environ,
        "TRANSFERLAB_WORKSPACE": str(store.workspace),
        "TRANSFERLAB_DATASETS_DIR": str(data.parent),
        "TRANSFERLAB_WARM_WORKERS": "0",
    }
    for variable in ("TRANSFERLAB_MODE", "TRANSFERLAB_CONFIG", "TRANSFERLAB_USERS_FILE"):
        environment.pop(variable, None)
    script = PAGE_WALK.format(app=str(ROOT / "app.py"), heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr[-3000:]


def test_a_call_runs_in_another_process_that_sees_no_gpu() -> None:
    worker = ModelWorker(idle_s=0)
    try:
        assert not worker.is_running, "nothing starts before the first call"
        pid = worker.call(os.getpid)
        assert pid != os.getpid()
        assert worker.call(os.getenv, "CUDA_VISIBLE_DEVICES") == "-1", "the training jobs own the GPUs"
        assert worker.call(os.getpid) == pid, "one process serves call after call (its loaded models stay)"
        assert worker.is_running
    finally:
        worker.close()
    assert not worker.is_running
    with pytest.raises(ModelWorkerError, match="closed"):
        worker.call(os.getpid)


def test_a_worker_that_dies_is_reported_plainly_and_replaced() -> None:
    worker = ModelWorker(idle_s=0)
    try:
        first = worker.call(os.getpid)
        with pytest.raises(ModelWorkerError, match="ended unexpectedly .* try again"):
            worker.call(os._exit, 3)  # what an out-of-memory kill looks like from here
        second = worker.call(os.getpid)
        assert second != first, "the next call starts a fresh process"
    finally:
        worker.close()


def test_an_exception_in_the_worker_reaches_the_caller_as_itself() -> None:
    worker = ModelWorker(idle_s=0)
    try:
        with pytest.raises(FileNotFoundError):
            worker.call(os.stat, "/no/such/file/anywhere")
        with pytest.raises(RuntimeError, match="JSONDecodeError"):  # a library's own error class stays there
            worker.call(json.loads, "{")
        assert worker.call(os.getpid), "the process is still there after an ordinary exception"
    finally:
        worker.close()


def test_an_idle_worker_exits_and_the_next_call_starts_another() -> None:
    worker = ModelWorker(idle_s=1.0)
    try:
        first = worker.call(os.getpid)
        assert worker.is_running
        deadline = time.monotonic() + 20
        while worker.is_running and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not worker.is_running, "an idle worker gives its memory back"
        assert worker.call(os.getpid) != first
    finally:
        worker.close()


def test_predictions_and_an_export_through_the_worker_match_the_engine(
    trained: tuple[RunStore, str, Path], tmp_path: Path
) -> None:
    """The Predict page's path: a trained run's predictions and export zip, computed in the worker process."""
    from tl_core.results.predict import load_run_classifier, predict_each_file

    store, run_id, data = trained
    images = sorted(data.rglob("*.png"))[:3]
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"not a picture")
    paths = [*images, not_an_image]

    worker = ModelWorker(idle_s=0)
    try:
        remote = worker.call(model_tasks.predict_run_files, str(store.workspace), run_id, list(map(str, paths)), 2)
        zipped, tflite_note = worker.call(
            model_tasks.export_run_zip, str(store.workspace), run_id, str(tmp_path / "out"), ("keras",)
        )
    finally:
        worker.close()

    local = predict_each_file(load_run_classifier(store, run_id), paths, top_k=2)
    assert [r.problem for r in remote] == [r.problem for r in local] and remote[-1].problem
    for mine, theirs in zip(remote[:3], local[:3]):
        assert [p.label for p in mine.predictions] == [p.label for p in theirs.predictions]
        assert [p.probability for p in mine.predictions] == pytest.approx(
            [p.probability for p in theirs.predictions], abs=1e-5
        )
    assert Path(zipped).suffix == ".zip" and Path(zipped).stat().st_size > 10_000 and tflite_note is None
