"""The model worker's explanation tasks (tl_core.results.model_tasks) and word attributions by occlusion
(tl_core.results.word_attributions): plain, picklable answers the web server can read without TensorFlow."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.text_demo import write_class_documents  # noqa: E402
from tl_core.errors import TransferLabError  # noqa: E402
from tl_core.results import model_tasks  # noqa: E402
from tl_core.results.heatmaps import FileHeatmap  # noqa: E402
from tl_core.results.predict import load_run_classifier  # noqa: E402
from tl_core.results.word_attributions import attribute_words  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.runner import run_experiment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRIGGER = "lottery"
FILLER = (
    "the meeting report team office project week plan budget review schedule client update notes "
    "morning lunch coffee garden river music letter window table chair paper phone city road"
).split()


def trigger_documents(rng: np.random.Generator, count: int, with_trigger: bool) -> list[str]:
    """Eight filler words each; with `with_trigger`, the trigger word at a random place among them."""
    documents = []
    for _ in range(count):
        words = list(rng.choice(FILLER, size=8))
        if with_trigger:
            words.insert(int(rng.integers(0, 9)), TRIGGER)
        documents.append(" ".join(words))
    return documents


@pytest.fixture(scope="module")
def trigger_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, str]:
    """A frozen-GloVe text run where one word alone decides the class."""
    root = tmp_path_factory.mktemp("trigger")
    rng = np.random.default_rng(0)
    data = write_class_documents(
        root / "data",
        {"alert": trigger_documents(rng, 30, True), "calm": trigger_documents(rng, 30, False)},
    )
    config = RunConfig(
        data=DataConfig(source=str(data), modality="text", val_fraction=0.2, test_fraction=0.2, seed=0),
        model=ModelConfig(backbone="glove_6b_50d", weights="glove", sequence_length=32),
        train=TrainConfig(epochs=10, batch_size=16),  # the default rate: a head that converges, not saturates
    )
    store = RunStore(root / "workspace")
    outcome = run_experiment(config, store=store)
    assert outcome.status == "completed", outcome.error
    return store, outcome.run_id


def test_the_planted_trigger_word_gets_the_largest_attribution(trigger_run: tuple[RunStore, str]) -> None:
    store, run_id = trigger_run
    text = "budget review with the client and a lottery ticket on the table"

    result = model_tasks.attribute_run_text(str(store.workspace), run_id, text)

    assert result.predicted == "alert" and result.class_explained == "alert"
    assert [word.word for word in result.words] == text.split() and result.words_left_out == 0
    top = max(result.words, key=lambda word: word.attribution)
    assert top.word == TRIGGER, [(word.word, round(word.attribution, 3)) for word in result.words]
    assert top.attribution > 0.05, "leaving the trigger out must lower the probability clearly"
    assert pickle.loads(pickle.dumps(result)) == result


def test_explaining_the_other_class_turns_the_trigger_against_it(trigger_run: tuple[RunStore, str]) -> None:
    classifier = load_run_classifier(*trigger_run)
    text = "lottery notes " + " ".join(["garden"] * 250)

    result = attribute_words(classifier, text, "calm", max_words=5)

    assert result.class_explained == "calm" and len(result.words) == 5 and result.words_left_out == 247
    assert min(result.words, key=lambda word: word.attribution).word == TRIGGER
    with pytest.raises(TransferLabError, match="no class 'zebra': choose one of alert, calm"):
        attribute_words(classifier, text, "zebra")


@pytest.fixture(scope="module")
def image_run(shapes_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, str]:
    """A 1-epoch MobileNetV2 at 64 px from random weights: a 2x2 feature map, enough for the plumbing."""
    store = RunStore(tmp_path_factory.mktemp("image-explain") / "workspace")
    config = RunConfig(
        data=DataConfig(source=str(shapes_dataset)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=64),
        train=TrainConfig(epochs=1, batch_size=16, early_stopping_patience=None, reduce_lr_patience=None),
    )
    outcome = run_experiment(config, store=store)
    assert outcome.status == "completed", outcome.error
    return store, outcome.run_id


def test_explain_run_files_answers_plain_data_and_keeps_going_past_a_bad_file(
    image_run: tuple[RunStore, str], shapes_dataset: Path, tmp_path: Path
) -> None:
    store, run_id = image_run
    good = sorted(shapes_dataset.rglob("*.png"))[:2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    classes = load_run_classifier(store, run_id).class_names

    heatmaps = model_tasks.explain_run_files(str(store.workspace), run_id, [str(good[0]), str(broken), str(good[1])])
    chosen = model_tasks.explain_run_files(str(store.workspace), run_id, [str(good[0])], classes[2])

    assert [heatmap.path for heatmap in heatmaps] == [str(good[0]), str(broken), str(good[1])]
    assert heatmaps[1].heatmap is None and heatmaps[1].problem and "broken" not in heatmaps[1].problem
    for heatmap in (heatmaps[0], heatmaps[2]):
        assert isinstance(heatmap, FileHeatmap) and heatmap.problem is None
        assert heatmap.predicted in classes and heatmap.class_explained == heatmap.predicted
        assert heatmap.heatmap.shape == (64, 64) and heatmap.heatmap.dtype == np.float32
        assert 0.0 <= heatmap.heatmap.min() <= heatmap.heatmap.max() <= 1.0 and heatmap.map_cells == (2, 2)
    assert chosen[0].class_explained == classes[2]
    again = pickle.loads(pickle.dumps(heatmaps))
    np.testing.assert_array_equal(again[0].heatmap, heatmaps[0].heatmap)
    with pytest.raises(TransferLabError, match="Word attributions explain text runs"):
        model_tasks.attribute_run_text(str(store.workspace), run_id, "some words")


def test_the_server_reads_explanations_without_tensorflow() -> None:
    script = (
        "import sys, tl_core.results.model_tasks, tl_core.results.heatmaps, tl_core.results.word_attributions\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
