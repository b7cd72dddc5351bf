"""Text runs end to end through the same engine as images: run store, evaluation, prediction, export."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.text_demo import make_topics_dataset  # noqa: E402
from tl_core.errors import BackboneError  # noqa: E402
from tl_core.layout import SUMMARY_FILE
from tl_core.modalities import resolve_modality  # noqa: E402
from tl_core.results.bundle import export_run  # noqa: E402
from tl_core.results.predict import LoadedClassifier, load_run_classifier, predict_files, predict_texts  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.runner import run_experiment


def text_config(source: Path, mode: str = "feature-extraction", weights: str = "glove", **train) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source), modality="text", val_fraction=0.2, test_fraction=0.2, seed=0),
        model=ModelConfig(backbone="glove_6b_50d", weights=weights, sequence_length=64),
        train=TrainConfig(
            mode=mode,
            epochs=20,
            batch_size=16,
            learning_rate=0.05,
            early_stopping_patience=None,
            reduce_lr_patience=None,
            **train,
        ),
    )


@pytest.fixture(scope="module")
def topics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_topics_dataset(tmp_path_factory.mktemp("text-run") / "topics", num_classes=3, docs_per_class=20, seed=0)


@pytest.fixture(scope="module")
def finished(topics: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, str]:
    store = RunStore(tmp_path_factory.mktemp("text-ws"))
    outcome = run_experiment(text_config(topics), store=store)
    assert outcome.status == "completed", outcome.error
    return store, outcome.run_id


def test_a_folder_of_txt_files_is_detected_as_text(topics: Path) -> None:
    assert resolve_modality(topics) == "text"
    assert resolve_modality(topics, "image") == "image"


def test_frozen_glove_run_learns_and_is_recorded(finished: tuple[RunStore, str]) -> None:
    store, run_id = finished
    record = store.get(run_id)
    summary = json.loads((store.run_dir(run_id) / SUMMARY_FILE).read_text())
    assert record.status == "completed" and summary["used_feature_cache"]
    assert summary["test_accuracy"] >= 0.8  # chance is 1/3
    assert summary["image_size"] == 64  # the tokens each document is read to
    assert "64 tokens per document" in store.read_log(run_id)


def test_predictions_on_typed_text_and_text_files(finished: tuple[RunStore, str], topics: Path) -> None:
    store, run_id = finished
    classifier = load_run_classifier(store, run_id)
    assert classifier.modality == "text"
    files = [sorted(folder.iterdir())[0] for folder in sorted(topics.iterdir())]
    from_files = predict_files(classifier, files, top_k=2)
    from_texts = predict_texts(classifier, [path.read_text() for path in files], top_k=2)
    assert [p[0].label for p in from_files] == [p[0].label for p in from_texts]
    assert sum(p[0].label == path.parent.name for p, path in zip(from_files, files)) >= 2
    with pytest.raises(ValueError, match="image"):
        predict_texts(LoadedClassifier(classifier.model, classifier.class_names, 224), ["an image model refuses text"])


def test_export_bundle_takes_raw_strings(finished: tuple[RunStore, str], tmp_path: Path) -> None:
    store, run_id = finished
    bundle = export_run(store, run_id, tmp_path / "bundle")
    assert bundle.tflite_path is not None and bundle.tflite_path.stat().st_size > 0  # converted with select TF ops
    served = tf.saved_model.load(str(bundle.saved_model_dir))
    documents = ["the match ended with a late goal for the home team", "rain and wind are expected tomorrow"]
    exported = served.serve(tf.constant(documents)).numpy()
    classifier = load_run_classifier(store, run_id)
    direct = np.array(
        [
            [p.probability for p in sorted(row, key=lambda p: classifier.class_names.index(p.label))]
            for row in predict_texts(classifier, documents, top_k=3)
        ]
    )
    np.testing.assert_allclose(exported, direct, atol=1e-5)
    card = bundle.model_card_path.read_text()
    assert "raw UTF-8 strings" in card and "| class | documents |" in card


def test_fine_tune_and_scratch_baseline_on_text(topics: Path, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "ws")
    outcome = run_experiment(
        text_config(topics, mode="fine-tune", fine_tune_epochs=2, compare_scratch=True), store=store
    )
    assert outcome.status == "completed", outcome.error
    assert outcome.result is not None and outcome.result.phases == ["head", "fine-tune"]
    assert outcome.summary["negative_transfer"] in (True, False)
    scratch = store.get(outcome.summary["scratch_run_id"])
    assert scratch.status == "completed" and scratch.weights == "none" and scratch.backbone == "glove_6b_50d"


def test_an_image_backbone_on_text_data_is_refused_with_the_fix(topics: Path, tmp_path: Path) -> None:
    config = text_config(topics).replace(model=ModelConfig(backbone="mobilenet_v2_035", weights="none"))
    with pytest.raises(BackboneError, match="glove_6b_50d"):
        run_experiment(config, store=RunStore(tmp_path / "ws"))
