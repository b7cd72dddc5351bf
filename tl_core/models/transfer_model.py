"""Build the transfer model and apply freeze policies.

    uint8 image -> to float -> augmentation (training only) -> the backbone's preprocessing
      -> backbone(training=False) -> pooling -> head (standardisation, dropout, hidden Dense, softmax)

Preprocessing lives inside the model so every export carries it; so does the head's standardisation of the
features (a `Normalization` layer that training adapts to the training split's features). The backbone is
always called with `training=False`, so BatchNorm stays in inference mode even when its layers are unfrozen
(the keras.io transfer-learning rule); freeze policies also keep BatchNorm layers non-trainable.

Example:
    >>> tm = build_transfer_model(ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=64), 3)
    >>> FreezeBackbone().apply(tm.backbone)
    'backbone frozen: training the head only'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import keras
import numpy as np

from tl_core.config import ModelConfig
from tl_core.errors import BackboneError
from tl_core.models import keras_files
from tl_core.models.build import build_backbone
from tl_core.models.preprocessing import build_preprocessing
from tl_core.models.registry import get_backbone_spec, resolve_image_size
from tl_core.models.spec import BackboneSpec

AUGMENTATION_LAYER = "augmentation"
BACKBONE_LAYER = "backbone"
HEAD_LAYER = "head"
FEATURE_NORMALIZATION_LAYER = "feature_normalization"
# The head divides no feature by a variance below this share of the features' mean variance (see `standardize_head_inputs`).
VARIANCE_FLOOR = 0.1
_MOMENTS_CHUNK_ROWS = 8192


@dataclass
class TransferModel:
    """The classifier and the parts training needs to reach separately (they share weights).

    Attributes:
        model: uint8 image -> class probabilities; what is saved, evaluated and exported.
        backbone: the pretrained feature network (nested inside `model`).
        feature_extractor: uint8 image -> pooled bottleneck features (no augmentation).
        head: features -> class probabilities (nested inside `model`).
    """

    model: keras.Model
    backbone: keras.Model
    feature_extractor: keras.Model
    head: keras.Model
    spec: BackboneSpec
    image_size: int
    feature_dim: int


def build_augmentation(seed: int | None = None) -> keras.Sequential:
    """Random flip, rotation, zoom, contrast and translation; active only when `training=True`."""
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.08, seed=seed),
            keras.layers.RandomZoom(0.15, seed=seed),
            keras.layers.RandomTranslation(0.1, 0.1, seed=seed),
            keras.layers.RandomContrast(0.2, seed=seed),
        ],
        name=AUGMENTATION_LAYER,
    )


def build_head(feature_dim: int, num_classes: int, hidden_units: tuple[int, ...], dropout: float) -> keras.Model:
    """Standardisation -> Dropout -> [Dense(relu) -> Dropout]* -> Dense(softmax); both ends float32 under mixed precision.

    The `Normalization` layer is the identity until `standardize_head_inputs` adapts it to the training
    features; it is part of the head, so the saved classifier and every export standardise as training did.
    The output layer starts at zero (a uniform prediction): on standardised features a linear head then
    converges in a few epochs (a random start cost 1-3 points of test accuracy at 5 epochs on the demo datasets).

    Example:
        >>> head = build_head(1280, 3, (), 0.2)
        >>> standardize_head_inputs(head, train_features)
    """
    features = keras.Input((feature_dim,), name="features")
    # float32 under mixed precision too: a small feature's variance would round to 0 in float16
    x = keras.layers.Normalization(dtype="float32", name=FEATURE_NORMALIZATION_LAYER)(features)
    for index, units in enumerate(hidden_units):
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"head_dropout_{index}")(x)
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{index}")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", kernel_initializer="zeros", dtype="float32", name="predictions"
    )(x)
    return keras.Model(features, outputs, name=HEAD_LAYER)


def standardize_head_inputs(head: keras.Model, train_features: np.ndarray) -> None:
    """Adapt the head's normalisation to the training features: each then enters the head with mean 0 and variance 1.

    A feature that barely varies over the training split (a channel that fires on a few images, or never) is divided
    by a variance of at least `VARIANCE_FLOOR` times the features' mean: dividing by its ~0 spread would turn those
    few activations, or the slightest change at inference, into huge inputs that a head fits as noise. Measured at
    5 epochs on MNIST digits, 20 training images a class (a quarter of EfficientNet-Lite0's channels below 1e-4 of
    the mean variance): test accuracy 0.65 without the floor, 0.79 with a floor of 1e-3. The floor is 0.1, not
    1e-3, for Grad-CAM: a channel whose pooled value barely varies can still vary a lot from place to place, and
    a large weight on it paints that spatial noise over the heatmap (tests/test_explain.py's marked-region run:
    7 of 12 peaks in the marked quadrant at 1e-3, 9 at 0.1). Accuracy at 0.1 against 1e-3: BBC News (GloVe)
    0.968 and 0.968, digits at 200 a class 0.873 and 0.880, at 20 a class 0.633 and 0.667 (scikit-learn's
    logistic regression: 0.965, 0.880, 0.633).

    Args:
        head: from `build_head`.
        train_features: the training split's backbone features, (N, feature_dim) with N >= 1.
    """
    mean, variance = _feature_moments(np.asarray(train_features))
    floor = VARIANCE_FLOOR * variance.mean()
    layer = head.get_layer(FEATURE_NORMALIZATION_LAYER)
    used = np.maximum(variance, floor) if floor > 0 else np.ones_like(variance)  # every feature constant: centre only
    layer.set_weights([mean, used, np.asarray(len(train_features))])
    layer.finalize_state()  # the layer computes with tensors made from these weights, remade only here


def copy_head_weights(source: keras.Model, target: keras.Model) -> None:
    """Give `target` (a classifier's head) the weights of `source`, a head of the same shape trained on its own."""
    target.set_weights(source.get_weights())
    # `set_weights` alone leaves the layer computing with the old mean and variance
    target.get_layer(FEATURE_NORMALIZATION_LAYER).finalize_state()


def _feature_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance in float64, a chunk of rows at a time (no float64 copy of every feature)."""
    count = len(features)
    chunks = range(0, count, _MOMENTS_CHUNK_ROWS)
    mean = sum(features[start : start + _MOMENTS_CHUNK_ROWS].sum(axis=0, dtype=np.float64) for start in chunks) / count
    squares = sum(np.square(features[start : start + _MOMENTS_CHUNK_ROWS] - mean).sum(axis=0) for start in chunks)
    return mean, squares / count


def build_transfer_model(
    config: ModelConfig,
    num_classes: int,
    *,
    cache_dir: Path | None = None,
    backbone: keras.Model | None = None,
    augmentation_seed: int | None = None,
) -> TransferModel:
    """Build the classifier for `num_classes` classes.

    Args:
        config: backbone name, weights, size, pooling, cut layer and head settings.
        num_classes: at least 2.
        cache_dir: where converted offline weights are cached.
        backbone: an already-built backbone (e.g. a finished run's) to use instead of `config.weights`.
        augmentation_seed: seed for the random augmentation layers.

    Returns:
        A `TransferModel` whose backbone starts frozen.
    """
    if num_classes < 2:
        raise BackboneError(f"A classifier needs at least 2 classes, got {num_classes}: add another class folder.")
    spec = get_backbone_spec(config.backbone)
    image_size = resolve_image_size(spec, config.image_size)
    if backbone is None:
        backbone = build_backbone(spec, config.weights, image_size, cut_layer=config.cut_layer, cache_dir=cache_dir)
    backbone.trainable = False

    images = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0, name="to_float")(images)
    if config.augment:
        x = build_augmentation(augmentation_seed)(x)
    x = build_preprocessing(spec.preprocessing)(x)
    feature_map = backbone(x, training=False)
    if len(feature_map.shape) == 2:  # TF Hub feature-vector models pool internally
        features = feature_map
    elif config.pooling == "max":
        features = keras.layers.GlobalMaxPooling2D(name="pooling")(feature_map)
    else:
        features = keras.layers.GlobalAveragePooling2D(name="pooling")(feature_map)
    feature_dim = int(features.shape[-1])
    head = build_head(feature_dim, num_classes, config.head_hidden_units, config.dropout)
    outputs = head(features)
    model = keras.Model(images, outputs, name="transferlab_classifier")
    feature_extractor = keras.Model(images, features, name="feature_extractor")
    return TransferModel(model, backbone, feature_extractor, head, spec, image_size, feature_dim)


def inference_model(model: keras.Model) -> keras.Model:
    """The classifier without its augmentation layer (same weights), for saving and export.

    Augmentation is inactive at inference anyway, but its random ops would still sit in exported
    graphs (TFLite cannot convert them).
    """
    if AUGMENTATION_LAYER not in {layer.name for layer in model.layers}:
        return model
    images = keras.Input(
        model.input.shape[1:],
        dtype=model.input.dtype,
        name=model.input.name if hasattr(model.input, "name") else "image",
    )
    x = images
    for layer in model.layers[
        1:
    ]:  # our classifier is a chain: to_float, augmentation, preprocessing, backbone, pooling, head
        if layer.name == AUGMENTATION_LAYER:
            continue
        x = layer(x, training=False) if layer.name == BACKBONE_LAYER else layer(x)
    return keras.Model(images, x, name=model.name)


def backbone_from_saved_classifier(path: Path) -> keras.Model:
    """The trained backbone of one of our saved classifiers (`model.keras`), for domain-specific weights."""
    if not path.is_file():
        raise BackboneError(f"No saved model at {path}: only a finished run has one; pick a completed run.")
    classifier = keras_files.load_model(path)
    try:
        return classifier.get_layer(BACKBONE_LAYER)
    except ValueError as exc:
        raise BackboneError(f"{path} has no layer named '{BACKBONE_LAYER}': it was not saved by TransferLab.") from exc


def is_batch_norm(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def _weighted_layers(backbone: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in backbone.layers if layer.weights]


def count_trainable_weights(model: keras.Model) -> int:
    return int(sum(int(keras.ops.size(w)) for w in model.trainable_weights))


class FreezePolicy(Protocol):
    """Decides which backbone layers train in a phase; returns a one-line description for the log."""

    def apply(self, backbone: keras.Model) -> str: ...


class FreezeBackbone:
    """Feature extraction: nothing in the backbone trains."""

    def apply(self, backbone: keras.Model) -> str:
        backbone.trainable = False
        return "backbone frozen: training the head only"


class UnfreezeTop:
    """Fine-tuning: the top `num_layers` layers with weights train; BatchNorm stays frozen."""

    def __init__(self, num_layers: int) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers} must be at least 1.")
        self.num_layers = num_layers

    def apply(self, backbone: keras.Model) -> str:
        backbone.trainable = True
        weighted = _weighted_layers(backbone)
        trainable = [layer for layer in weighted if not is_batch_norm(layer)][-self.num_layers :]
        trainable_ids = {id(layer) for layer in trainable}
        for layer in backbone.layers:
            layer.trainable = id(layer) in trainable_ids
        first = trainable[0].name if trainable else "none"
        return f"unfroze the top {len(trainable)} backbone layers (from '{first}'); BatchNorm layers stay frozen"


class UnfreezeAll:
    """Full fine-tuning: every backbone layer except BatchNorm trains."""

    def apply(self, backbone: keras.Model) -> str:
        backbone.trainable = True
        for layer in backbone.layers:
            layer.trainable = not is_batch_norm(layer)
        return "unfroze every backbone layer; BatchNorm layers stay frozen"


class UnfreezeBlocks:
    """Progressive fine-tuning: the last `count` natural blocks (stages) of the backbone train; BatchNorm stays frozen."""

    def __init__(self, blocks: list[list[str]], count: int) -> None:
        if not 1 <= count <= len(blocks):
            raise ValueError(f"count={count} must be between 1 and the number of blocks ({len(blocks)}).")
        self.blocks = blocks
        self.count = count

    @property
    def open_blocks(self) -> list[str]:
        """A short name per open block (the common prefix of its layers), top block last."""
        return [os.path.commonprefix(block).rstrip("_") or block[0] for block in self.blocks[-self.count :]]

    def apply(self, backbone: keras.Model) -> str:
        backbone.trainable = True
        open_names = {name for block in self.blocks[-self.count :] for name in block}
        for layer in backbone.layers:
            layer.trainable = layer.name in open_names and not is_batch_norm(layer)
        return f"unfroze the top {self.count} of {len(self.blocks)} blocks ({', '.join(self.open_blocks)}); BatchNorm layers stay frozen"
