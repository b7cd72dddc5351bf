"""A string-input TF Hub-style text-embedding SavedModel as a text backbone: frozen, fine-tuned, saved, exported."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import socket  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tl_core.config import ModelConfig  # noqa: E402
from tl_core.errors import BackboneError, WeightsUnavailableError  # noqa: E402
from tl_core.models.registry import get_backbone_spec  # noqa: E402
from tl_core.models.savedmodel_layer import SavedModelLayer  # noqa: E402
from tl_core.models.text_backbones import build_text_backbone  # noqa: E402
from tl_core.models.text_model import build_text_transfer_model, text_dataset  # noqa: E402
from tl_core.models.transfer_model import FreezeBackbone, UnfreezeAll  # noqa: E402

VOCABULARY = ("goal", "match", "team", "vote", "party", "election", "market", "shares", "profit")
DIM = 8


class ToyTextEncoder(tf.Module):
    """Strings -> mean of word vectors (vocabulary lookup table + trainable embedding) -> projection."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        keys = tf.constant(VOCABULARY)
        initializer = tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(VOCABULARY), dtype=tf.int64))
        self.table = tf.lookup.StaticHashTable(initializer, default_value=len(VOCABULARY))
        self.embeddings = tf.Variable(rng.normal(size=(len(VOCABULARY) + 1, DIM)).astype("float32"), name="embeddings")
        self.projection = tf.Variable(np.eye(DIM, dtype="float32"), name="projection")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, texts: tf.Tensor) -> tf.Tensor:
        words = tf.strings.split(tf.strings.lower(texts))
        ids = tf.ragged.map_flat_values(self.table.lookup, words)
        vectors = tf.ragged.map_flat_values(tf.nn.embedding_lookup, self.embeddings, ids)
        counts = tf.maximum(tf.cast(words.row_lengths(), tf.float32), 1.0)[:, None]
        return (tf.reduce_sum(vectors, axis=1) / counts) @ self.projection


@pytest.fixture(scope="module")
def text_saved_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ToyTextEncoder]:
    folder = tmp_path_factory.mktemp("text_encoder") / "encoder"
    module = ToyTextEncoder()
    tf.saved_model.save(module, str(folder))
    return folder, module


def _topic_data(count: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sports / politics / business sentences made of the encoder's vocabulary words."""
    rng = np.random.default_rng(seed)
    topics = (("goal", "match", "team"), ("vote", "party", "election"), ("market", "shares", "profit"))
    labels = rng.integers(0, 3, count)
    texts = np.array([" ".join(rng.choice(topics[label], 4)) for label in labels], dtype=object)
    return texts, labels.astype(np.int32)


def test_layer_embeds_strings_like_the_module(text_saved_model: tuple[Path, ToyTextEncoder]) -> None:
    folder, module = text_saved_model
    texts = tf.constant(["Goal match", "vote party election", "unknown words only"])
    layer = SavedModelLayer(str(folder))
    np.testing.assert_allclose(layer(texts), module(texts), rtol=1e-6)
    assert sorted(w.name for w in layer.weights) == ["embeddings", "projection"]
    assert layer.trainable_weights == []


def test_hub_backbone_frozen_then_fine_tuned_with_adam(text_saved_model: tuple[Path, ToyTextEncoder]) -> None:
    folder, _ = text_saved_model
    transfer = build_text_transfer_model(
        ModelConfig(backbone="hub_text_embedding", weights=str(folder), dropout=0.0), 3
    )
    assert transfer.feature_dim == DIM and transfer.backbone.name == "backbone"
    texts, labels = _topic_data()
    layer = transfer.backbone.get_layer("saved_model")
    embeddings_before = next(w for w in layer.weights if w.name == "embeddings").numpy().copy()

    FreezeBackbone().apply(transfer.backbone)
    transfer.model.compile(
        optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    transfer.model.fit(text_dataset(texts, labels, batch_size=16, shuffle=True), epochs=10, verbose=0, shuffle=False)
    np.testing.assert_array_equal(embeddings_before, next(w for w in layer.weights if w.name == "embeddings").numpy())
    frozen_loss, frozen_accuracy = transfer.model.evaluate(
        text_dataset(texts, labels, batch_size=16, shuffle=False), verbose=0
    )
    assert frozen_accuracy > 0.8

    UnfreezeAll().apply(transfer.backbone)
    assert len(transfer.backbone.trainable_weights) == 2
    transfer.model.compile(
        optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    transfer.model.fit(text_dataset(texts, labels, batch_size=16, shuffle=True), epochs=10, verbose=0, shuffle=False)
    tuned = next(w for w in layer.weights if w.name == "embeddings").numpy()
    assert not np.allclose(embeddings_before, tuned)  # sparse (IndexedSlices) gradients reached the SavedModel's table
    tuned_loss, _ = transfer.model.evaluate(text_dataset(texts, labels, batch_size=16, shuffle=False), verbose=0)
    assert tuned_loss < frozen_loss


def test_hub_text_classifier_saves_and_exports_with_its_lookup_table(
    text_saved_model: tuple[Path, ToyTextEncoder], tmp_path: Path
) -> None:
    folder, _ = text_saved_model
    transfer = build_text_transfer_model(ModelConfig(backbone="hub_text_embedding", weights=str(folder)), 3)
    texts, _ = _topic_data(8)
    expected = transfer.model.predict(texts, verbose=0)
    transfer.model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(texts, verbose=0), expected, rtol=1e-5, atol=1e-6)
    transfer.model.export(str(tmp_path / "exported"), verbose=False)
    exported = tf.saved_model.load(str(tmp_path / "exported"))  # keep a reference: its variables die with it
    np.testing.assert_allclose(exported.serve(tf.constant(texts.astype(str))).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_bad_text_weights_fail_with_a_fix(tmp_path: Path, text_saved_model: tuple[Path, ToyTextEncoder]) -> None:
    spec = get_backbone_spec("hub_text_embedding")
    with pytest.raises(BackboneError, match="TF Hub handle or SavedModel folder"):
        build_text_backbone(spec, "glove", 64)
    image_model = tmp_path / "image_model"
    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.__call__ = tf.function(
        lambda images: tf.reduce_mean(images, axis=[1, 2]) * module.scale,
        input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)],
    )
    tf.saved_model.save(module, str(image_model))
    with pytest.raises(BackboneError, match="does not take a batch of strings"):
        build_text_backbone(spec, str(image_model), 64)


def test_online_handle_offline_fails_fast_naming_offline_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub_cache"))
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="glove_6b_50d") as caught:
        build_text_backbone(get_backbone_spec("hub_text_embedding"), "https://tfhub.dev/google/nnlm-en-dim50/2", 64)
    assert "SavedModel folder" in str(caught.value)
    assert time.monotonic() - started < 10
