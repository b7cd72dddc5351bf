"""The GloVe text transfer model: tokenizer and pooling, freeze policies, training via train_model, save/export."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tl_core.config import ConfigError, ModelConfig, TrainConfig  # noqa: E402
from tl_core.data.image_dataset import split_dataset  # noqa: E402
from tl_core.data.text_dataset import load_texts, scan_text_dataset  # noqa: E402
from tl_core.data.text_demo import make_topics_dataset  # noqa: E402
from tl_core.data.types import TrainingData
from tl_core.errors import BackboneError  # noqa: E402
from tl_core.models.registry import get_backbone_spec, list_backbones  # noqa: E402
from tl_core.models.text_backbones import load_glove  # noqa: E402
from tl_core.models.text_model import build_text_transfer_model, text_dataset  # noqa: E402
from tl_core.models.transfer_model import FreezeBackbone, UnfreezeAll, UnfreezeTop  # noqa: E402
from tl_core.training.loop import train_model

GLOVE = ModelConfig(backbone="glove_6b_50d", weights="glove", sequence_length=64)


def _vector(word: str) -> np.ndarray:
    glove = load_glove()
    return glove.vectors[glove.words.index(word)]


@pytest.fixture(scope="module")
def topics(tmp_path_factory: pytest.TempPathFactory) -> TrainingData:
    root = make_topics_dataset(tmp_path_factory.mktemp("text") / "topics", num_classes=3, docs_per_class=20, seed=0)
    return load_texts(split_dataset(scan_text_dataset(root), val_fraction=0.2, test_fraction=0.2, seed=0))


def _accuracy(model: keras.Model, data: TrainingData, split: str) -> float:
    probabilities = model.predict(
        text_dataset(data.images[split], data.labels[split], batch_size=32, shuffle=False), verbose=0
    )
    return float(np.mean(probabilities.argmax(axis=1) == data.labels[split]))


def test_text_entries_are_in_their_own_registry() -> None:
    assert [spec.name for spec in list_backbones(modality="text")] == [
        "glove_6b_50d",
        "all_minilm_l6_v2",
        "hub_text_embedding",
    ]
    assert all(spec.modality == "image" for spec in list_backbones())
    assert get_backbone_spec("GloVe-6B-50d").modality == "text"
    with pytest.raises(BackboneError, match="'image' or 'text'"):
        list_backbones(modality="audio")
    with pytest.raises(ConfigError, match="between 8 and 4096"):
        ModelConfig(sequence_length=4)


def test_features_are_the_mean_of_known_glove_words() -> None:
    transfer = build_text_transfer_model(GLOVE, 2)
    texts = np.array(["Cat", "the CAT!", "cat zzqqxxw qqzzyyk", "zzqqxxw", ""], dtype=object)
    features = transfer.feature_extractor.predict(texts, verbose=0)
    np.testing.assert_allclose(features[0], _vector("cat"), rtol=1e-6)
    np.testing.assert_allclose(features[1], (_vector("the") + _vector("cat")) / 2, rtol=1e-5)
    np.testing.assert_allclose(features[2], _vector("cat"), rtol=1e-6)  # unknown words and padding are left out
    np.testing.assert_array_equal(features[3:], 0.0)
    assert transfer.image_size == 64 and transfer.feature_dim == 50 and transfer.spec.modality == "text"
    tokens = transfer.backbone.get_layer("tokenizer")(tf.constant(["well-known U.S. café"])).numpy()[0]
    assert tokens.shape == (64,) and [load_glove().words[i - 2] for i in tokens[:5]] == [
        "well",
        "known",
        "u",
        "s",
        "café",
    ]


def test_freeze_policies_switch_the_embedding() -> None:
    transfer = build_text_transfer_model(GLOVE, 3)
    assert transfer.backbone.trainable_weights == []
    UnfreezeTop(20).apply(transfer.backbone)
    assert [w.name for w in transfer.backbone.trainable_weights] == ["embeddings"]
    FreezeBackbone().apply(transfer.backbone)
    assert transfer.backbone.trainable_weights == []
    UnfreezeAll().apply(transfer.backbone)
    assert len(transfer.model.trainable_weights) == 3  # embedding + the head's Dense kernel and bias


def test_scratch_baseline_has_the_same_architecture_with_random_vectors() -> None:
    pretrained = build_text_transfer_model(GLOVE, 3)
    scratch = build_text_transfer_model(ModelConfig(backbone="glove_6b_50d", weights="none", sequence_length=64), 3)
    assert [w.shape for w in scratch.model.weights] == [w.shape for w in pretrained.model.weights]
    random_vectors = scratch.backbone.get_layer("embedding").embeddings.numpy()
    assert not np.allclose(random_vectors[2:10], load_glove().vectors[:8])
    with pytest.raises(BackboneError, match="'glove'"):
        build_text_transfer_model(ModelConfig(backbone="glove_6b_50d", weights="imagenet"), 3)
    with pytest.raises(BackboneError, match="image backbone"):
        build_text_transfer_model(ModelConfig(backbone="mobilenet_v2_035", weights="none"), 3)


def test_frozen_glove_learns_topics_then_fine_tunes_through_train_model(
    topics: TrainingData, monkeypatch: pytest.MonkeyPatch
) -> None:
    transfer = build_text_transfer_model(GLOVE, 3)
    features = {name: transfer.feature_extractor.predict(topics.images[name], verbose=0) for name in ("train", "val")}
    config = TrainConfig(
        mode="feature-extraction",
        epochs=25,
        batch_size=16,
        early_stopping_patience=None,
        reduce_lr_patience=None,
    )
    result = train_model(transfer, topics, config, feature_provider=features.__getitem__)
    assert result.used_feature_cache and result.status == "completed"
    assert _accuracy(transfer.model, topics, "test") >= 0.8  # chance is 1/3

    embedding_before = transfer.backbone.get_layer("embedding").embeddings.numpy()[:2000].copy()
    tune = TrainConfig(
        mode="fine-tune",
        epochs=1,
        fine_tune_epochs=2,
        batch_size=16,
        fine_tune_learning_rate=0.01,
        early_stopping_patience=None,
        reduce_lr_patience=None,
        use_feature_cache=False,
    )
    result = train_model(transfer, topics, tune)
    assert result.phases == ["head", "fine-tune"] and result.epochs_run == 3
    assert not np.allclose(embedding_before, transfer.backbone.get_layer("embedding").embeddings.numpy()[:2000])
    assert transfer.backbone.trainable_weights == []  # train_model refreezes at the end
    assert _accuracy(transfer.model, topics, "test") >= 0.8


def test_keras_file_and_saved_model_round_trips(topics: TrainingData, tmp_path: Path) -> None:
    transfer = build_text_transfer_model(GLOVE, 3)
    transfer.model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    transfer.model.fit(
        text_dataset(topics.images["train"], topics.labels["train"], batch_size=16, shuffle=True),
        epochs=3,
        verbose=0,
        shuffle=False,
    )
    texts = topics.images["test"]
    expected = transfer.model.predict(texts, verbose=0)
    assert expected.std() > 0.01  # a trained head, not uniform outputs

    transfer.model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(texts, verbose=0), expected, rtol=1e-5, atol=1e-6)

    transfer.model.export(str(tmp_path / "saved_model"), verbose=False)
    exported = tf.saved_model.load(str(tmp_path / "saved_model"))  # keep a reference: its variables die with it
    np.testing.assert_allclose(exported.serve(tf.constant(texts.astype(str))).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_text_dataset_batches_strings_and_weights() -> None:
    texts = np.array(["a", "b", "c", "d", "e"], dtype=object)
    batches = list(text_dataset(texts, np.arange(5), batch_size=2, shuffle=True, seed=3, sample_weights=np.ones(5)))
    assert [len(b[0]) for b in batches] == [2, 2, 1] and batches[0][0].dtype == tf.string and len(batches[0]) == 3
    assert sorted(s.decode() for b in batches for s in b[0].numpy()) == ["a", "b", "c", "d", "e"]
    with pytest.raises(ValueError, match="same length"):
        text_dataset(texts, np.arange(4), batch_size=2, shuffle=False)
