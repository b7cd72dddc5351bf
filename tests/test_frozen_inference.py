"""The frozen lean inference graph: the Keras model's outputs, weights frozen at creation, unsupported layers refused.

These test the fast path itself, so they turn it on whatever `TRANSFERLAB_FASTPATH` says; one checks its fallback
with the switch off."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tl_core.config import ModelConfig  # noqa: E402
from tl_core.fastpath import frozen_inference  # noqa: E402
from tl_core.fastpath.frozen_inference import frozen_inference_function  # noqa: E402
from tl_core.models.transfer_model import build_transfer_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("fastpath_on")


def _randomise_batch_norms(model: keras.Model, seed: int, spread: float = 1.0) -> None:
    """Statistics and factors away from the defaults (mean 0, variance 1), nested models included, so a wrong
    fold shows in the outputs; a small `spread` keeps a deep network's activations in range."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 2 * spread, channels))
            layer.moving_variance.assign(rng.uniform(1 - 0.8 * spread, 1 + 2 * spread, channels))
            if layer.scale:
                layer.gamma.assign(rng.normal(1, 0.5 * spread, channels))
            if layer.center:
                layer.beta.assign(rng.normal(0, spread, channels))


@pytest.mark.parametrize(
    ("backbone", "weights", "pooling"),
    [
        ("efficientnet_lite0", "imagenet", "avg"),  # the default backbone, with its packaged weights
        ("mobilenet_v2_035", "none", "max"),
        ("efficientnet_v2_b0", "none", "avg"),
        ("mobilenet_v3_small", "none", "avg"),  # holds keras.ops nodes (x + 3.0) between its layers
        ("resnet50", "none", "avg"),  # its caffe preprocessing is a Dense layer
    ],
)
def test_outputs_equal_the_keras_feature_extractor(backbone: str, weights: str, pooling: str) -> None:
    keras.utils.set_random_seed(0)
    extractor = build_transfer_model(
        ModelConfig(backbone=backbone, weights=weights, image_size=32, pooling=pooling), 3
    ).feature_extractor
    if weights == "none":  # fresh statistics (mean 0, variance 1) would hide a wrong batch-normalisation fold
        _randomise_batch_norms(extractor, seed=0, spread=0.1)
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)

    lean = frozen_inference_function(extractor)

    assert lean is not None
    expected = keras.ops.convert_to_numpy(extractor(images, training=False))
    actual = lean(images).numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


def test_weights_are_frozen_at_creation_and_a_new_function_follows_changes() -> None:
    keras.utils.set_random_seed(1)
    extractor = build_transfer_model(
        ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32), 3
    ).feature_extractor
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    lean = frozen_inference_function(extractor)
    before = lean(images).numpy()

    last_bn = [
        layer for layer in extractor.get_layer("backbone").layers if isinstance(layer, keras.layers.BatchNormalization)
    ][-1]
    last_bn.beta.assign(last_bn.beta + 1.0)  # e.g. fine-tuning moved the weights: every feature grows by about 1

    changed = keras.ops.convert_to_numpy(extractor(images, training=False))
    assert np.abs(changed - before).min() > 0.5
    np.testing.assert_array_equal(lean(images).numpy(), before)  # the old function keeps the old weights
    np.testing.assert_allclose(frozen_inference_function(extractor)(images).numpy(), changed, rtol=1e-5, atol=1e-6)


def test_with_the_fast_path_off_every_model_gets_none_and_keeps_keras_predict(monkeypatch: pytest.MonkeyPatch) -> None:
    extractor = build_transfer_model(
        ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32), 3
    ).feature_extractor
    assert frozen_inference_function(extractor) is not None
    monkeypatch.setenv("TRANSFERLAB_FASTPATH", "off")
    assert frozen_inference_function(extractor) is None


def test_a_model_with_an_unsupported_layer_gets_none() -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.LayerNormalization()(x)  # weights of a kind the lean graph does not translate
    dense = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))

    assert frozen_inference_function(dense) is None


def test_a_graph_that_cannot_be_traced_falls_back_to_keras_before_any_batch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    extractor = build_transfer_model(
        ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32), 3
    ).feature_extractor

    def broken(*args: object) -> None:
        raise KeyError("an operation the walk did not prepare")

    monkeypatch.setattr(frozen_inference, "_run_graph", broken)

    assert frozen_inference_function(extractor) is None  # traced when made, so the failure shows here, not mid-run
    assert "could not be prepared" in caplog.text


def test_batch_normalization_folds_into_the_convolution_before_it_only_where_nothing_else_reads_the_raw_output() -> (
    None
):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 3))
    biased = keras.layers.Conv2D(4, 3, padding="same", use_bias=True, name="biased")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn_biased")(biased))
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(
        x
    )  # channel c * 2 + m
    x = keras.layers.BatchNormalization(name="bn_depthwise")(depthwise)
    shared = keras.layers.Conv2D(8, 1, name="shared")(x)  # read raw by the Add as well: not folded
    x = keras.layers.Add()([keras.layers.BatchNormalization(name="bn_shared")(shared), shared])
    activated = keras.layers.Conv2D(8, 1, activation="relu", name="activated")(x)  # BN after relu: not foldable
    x = keras.layers.BatchNormalization(name="bn_activated")(activated)
    returned = keras.layers.Conv2D(6, 1, name="returned")(x)  # also a model output: not folded
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.BatchNormalization(name="bn_returned")(returned))
    model = keras.Model(inputs, [pooled, returned])
    _randomise_batch_norms(model, seed=2)
    images = np.random.default_rng(2).normal(0, 1, (5, 8, 8, 3)).astype("float32")

    folds = frozen_inference._batch_norm_folds(model, frozen_inference._all_operations(model))
    lean = frozen_inference_function(model)

    assert sorted(normalization.name for normalization in folds.values()) == ["bn_biased", "bn_depthwise"]
    assert lean is not None
    expected = [keras.ops.convert_to_numpy(output) for output in model(images, training=False)]
    for actual, wanted in zip(lean(images), expected, strict=True):
        np.testing.assert_allclose(actual.numpy(), wanted, rtol=1e-5, atol=1e-5 * float(np.abs(wanted).max()))
