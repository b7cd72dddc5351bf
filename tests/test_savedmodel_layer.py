"""SavedModelLayer: a tf.saved_model folder as a Keras 3 layer that freezes, unfreezes and fine-tunes."""

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

from tl_core.errors import BackboneError, WeightsUnavailableError  # noqa: E402
from tl_core.models.savedmodel_layer import SavedModelLayer, resolve_hub_handle  # noqa: E402

FEATURES = 4
TEXT_BUCKETS = 8
TRAINING_OFFSET = 1.0


class ToyEncoder(tf.Module):
    """image -> vector (mean colour @ kernel + bias; +1 in training mode) and string -> vector."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.kernel = tf.Variable(rng.normal(size=(3, FEATURES)).astype("float32"), name="encoder/kernel")
        self.bias = tf.Variable(np.zeros(FEATURES, "float32"), name="encoder/bias")
        self.text_table = tf.Variable(rng.normal(size=(TEXT_BUCKETS, FEATURES)).astype("float32"), name="text/table")
        self.call_count = tf.Variable(0, trainable=False, name="calls")

    @tf.function
    def __call__(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        vectors = tf.reduce_mean(images, axis=[1, 2]) @ self.kernel + self.bias
        return vectors + TRAINING_OFFSET if training else vectors

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def embed_text(self, texts: tf.Tensor) -> tf.Tensor:
        buckets = tf.strings.to_hash_bucket_fast(texts, TEXT_BUCKETS)
        return tf.one_hot(buckets, TEXT_BUCKETS) @ self.text_table


def write_toy_saved_model(folder: Path) -> ToyEncoder:
    """Save a `ToyEncoder` (with `__call__` for training True/False, and two signatures) into `folder`."""
    module = ToyEncoder()
    image_spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    for training in (False, True):
        module.__call__.get_concrete_function(image_spec, training=training)
    signatures = {
        "serving_default": module.__call__.get_concrete_function(image_spec, training=False),
        "embed_text": module.embed_text,
    }
    tf.saved_model.save(module, str(folder), signatures=signatures)
    return module


@pytest.fixture(scope="module")
def toy_saved_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ToyEncoder]:
    folder = tmp_path_factory.mktemp("toy_saved_model") / "encoder"
    return folder, write_toy_saved_model(folder)


def _images(count: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, size=(count, 8, 8, 3)).astype("float32")


def _regression_model(layer: SavedModelLayer) -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(1, name="head")(layer(inputs))
    return keras.Model(inputs, outputs)


def _kernel(layer: SavedModelLayer) -> np.ndarray:
    return next(w for w in layer.weights if w.name == "encoder_kernel").numpy().copy()


def _targets(images: np.ndarray) -> np.ndarray:
    return (images.mean(axis=(1, 2)) @ np.array([[2.0], [-1.0], [0.5]], "float32")).astype("float32")


def test_inference_matches_the_module(toy_saved_model: tuple[Path, ToyEncoder]) -> None:
    folder, module = toy_saved_model
    images = _images()
    layer = SavedModelLayer(str(folder))
    np.testing.assert_allclose(layer(images), module(images, training=False), rtol=1e-6)
    assert sorted(w.name for w in layer.weights) == ["encoder_bias", "encoder_kernel"]  # only what __call__ uses


def test_frozen_layer_has_no_trainable_weights_and_does_not_change(toy_saved_model: tuple[Path, ToyEncoder]) -> None:
    folder, _ = toy_saved_model
    layer = SavedModelLayer(str(folder), trainable=False)
    assert layer.trainable_weights == []
    model = _regression_model(layer)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    before = [w.numpy().copy() for w in layer.weights]
    head_before = model.get_layer("head").kernel.numpy().copy()
    images = _images()
    model.fit(images, _targets(images), epochs=2, batch_size=8, verbose=0)
    for old, new in zip(before, layer.weights):
        np.testing.assert_array_equal(old, new.numpy())
    assert not np.allclose(head_before, model.get_layer("head").kernel.numpy())


def test_trainable_layer_fine_tunes_with_adam(toy_saved_model: tuple[Path, ToyEncoder]) -> None:
    keras.utils.set_random_seed(
        0
    )  # the head's initial weights otherwise depend on which tests ran before (it failed after test_train.py)
    folder, _ = toy_saved_model
    layer = SavedModelLayer(str(folder), trainable=True)
    assert len(layer.trainable_weights) == 2
    model = _regression_model(layer)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    images = _images(32)
    targets = _targets(images)
    kernel_before = _kernel(layer)
    loss_before = model.evaluate(images, targets, verbose=0)
    model.fit(images, targets, epochs=15, batch_size=8, verbose=0)
    assert model.evaluate(images, targets, verbose=0) < loss_before * 0.5
    assert not np.allclose(kernel_before, _kernel(layer))


def test_training_flag_reaches_the_function_only_while_trainable(toy_saved_model: tuple[Path, ToyEncoder]) -> None:
    folder, module = toy_saved_model
    images = _images(4)
    frozen = SavedModelLayer(str(folder), trainable=False)
    np.testing.assert_allclose(frozen(images, training=True), module(images, training=False), rtol=1e-6)
    trainable = SavedModelLayer(str(folder), trainable=True)
    np.testing.assert_allclose(trainable(images, training=True), module(images, training=True), rtol=1e-6)
    fixed = SavedModelLayer(str(folder), trainable=True, arguments={"training": False})
    np.testing.assert_allclose(fixed(images, training=True), module(images, training=False), rtol=1e-6)


def test_toggling_trainable_after_build(toy_saved_model: tuple[Path, ToyEncoder]) -> None:
    folder, _ = toy_saved_model
    layer = SavedModelLayer(str(folder), trainable=False)
    model = _regression_model(layer)
    images = _images()
    model.compile(optimizer="adam", loss="mse")
    model.fit(images, _targets(images), epochs=1, verbose=0)
    layer.trainable = True
    assert len(layer.trainable_weights) == 2
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")  # recompile after changing trainable
    kernel_before = _kernel(layer)
    model.fit(images, _targets(images), epochs=2, batch_size=8, verbose=0)
    assert not np.allclose(kernel_before, _kernel(layer))
    layer.trainable = False
    assert layer.trainable_weights == []


def test_saved_keras_model_reloads_with_fine_tuned_values(
    toy_saved_model: tuple[Path, ToyEncoder], tmp_path: Path
) -> None:
    folder, _ = toy_saved_model
    model = _regression_model(SavedModelLayer(str(folder), trainable=True, name="encoder"))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    images = _images()
    model.fit(images, _targets(images), epochs=3, batch_size=8, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert reloaded.get_layer("encoder").get_config()["saved_model_dir"] == str(folder)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5)


def test_signatures_and_output_keys(toy_saved_model: tuple[Path, ToyEncoder]) -> None:
    folder, module = toy_saved_model
    texts = tf.constant(["cat", "dog", "cat"])
    text_layer = SavedModelLayer(str(folder), signature="embed_text")
    np.testing.assert_allclose(text_layer(texts), module.embed_text(texts), rtol=1e-6)
    images = _images(4)
    served = SavedModelLayer(str(folder), signature="serving_default", output_key="output_0")
    np.testing.assert_allclose(served(images), module(images, training=False), rtol=1e-6)
    with pytest.raises(BackboneError, match="output_0"):
        SavedModelLayer(str(folder), signature="serving_default", output_key="logits")(images)
    with pytest.raises(BackboneError, match="embed_text"):
        SavedModelLayer(str(folder), signature="no_such_function")


def test_from_config_round_trip(toy_saved_model: tuple[Path, ToyEncoder]) -> None:
    folder, _ = toy_saved_model
    layer = SavedModelLayer(str(folder), signature="embed_text", trainable=True, name="text")
    clone = SavedModelLayer.from_config(layer.get_config())
    assert (clone.saved_model_dir, clone.signature, clone.trainable, clone.name) == (
        str(folder),
        "embed_text",
        True,
        "text",
    )


def test_resolve_hub_handle_local_folders(toy_saved_model: tuple[Path, ToyEncoder], tmp_path: Path) -> None:
    folder, _ = toy_saved_model
    assert resolve_hub_handle(str(folder)) == str(folder)
    with pytest.raises(BackboneError, match="saved_model.pb"):
        resolve_hub_handle(str(tmp_path))
    with pytest.raises(BackboneError, match="neither a SavedModel folder nor a TF Hub handle"):
        resolve_hub_handle(str(tmp_path / "missing"))


def test_resolve_hub_handle_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub_cache"))
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="pass that folder's path"):
        resolve_hub_handle("https://tfhub.dev/google/imagenet/mobilenet_v2_035_96/feature_vector/5")
    assert time.monotonic() - started < 10
