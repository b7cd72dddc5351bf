"""Grad-CAM (Selvaraju et al., 2017) for a finished image run: where in the image the evidence for a class lies.

The feature map explained is the last spatial one the head sees: the input of the classifier's global pooling
layer. That is the backbone's output for every way a run is built (frozen, fine-tuned, a run used as a
backbone, a cut layer), whether the backbone is a nested model or the classifier is flat. Grad-CAM weighs
its channels by the mean gradient of the class score (the logit, before softmax, as keras.io's Grad-CAM
example does) and keeps the positive part. Only the head lies between that map and the score, so the
gradient is taken through the pooling and the head alone (the backbone runs forward once, outside the tape).

A TransferLab head standardises its features first (`Normalization` adapted to the training split), so the
channels are weighed against the training images' mean activation: the map is the weighted feature map minus
that mean. For a linear head this is exactly each location's share of the class score (the peak is the same
either way: the mean shifts a map by one number), so the positive part kept is evidence beyond the average
training image's.

Why it is written here: no maintained Grad-CAM library fits Keras 3. tf-keras-vis targets tf.keras 2,
Captum is for PyTorch, and keras / keras-hub ship none; the method itself is a few lines of
`tf.GradientTape` (the keras.io example, made to find the feature map by itself).

Example:
    >>> cam = GradCam(classifier.model)
    >>> probabilities, maps = cam.explain(images)  # uint8 (N, S, S, 3) -> (N, classes), (N, h, w)
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tl_core.errors import BackboneError

_SPATIAL_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D, keras.layers.Flatten)
_SELF_CHECK_TOLERANCE = 1e-4
NO_SPATIAL_MAP = (
    "Grad-CAM needs a spatial feature map (height x width x channels) in front of the head, and this run's backbone "
    "gives one vector per image: a TF Hub or SavedModel feature-vector model pools inside, so where the evidence "
    "lies cannot be recovered. Every backbone of `python -m tl_core backbones --all` has one (with weights "
    "imagenet, none, a weights file or a finished run), and so does a SavedModel that returns a feature map: "
    "train a run with one of those to explain its predictions."
)


class GradCam:
    """Class-activation maps for one loaded classifier (uint8 images in, softmax probabilities out).

    Args:
        model: a TransferLab classifier (`tl_core.results.predict.load_run_classifier(...).model`).

    Raises:
        BackboneError: the model has no spatial feature map in front of its head, or a head Grad-CAM cannot read.
    """

    def __init__(self, model: keras.Model) -> None:
        pooling = _spatial_pooling(model)
        self.feature_map_model = keras.Model(model.input, pooling.input, name="feature_map")
        if not any(
            layer.weights for layer in self.feature_map_model.layers
        ):  # pooling the image itself: nothing learned
            raise BackboneError(NO_SPATIAL_MAP)
        self._head = keras.Model(pooling.input, model.output, name="head_from_feature_map")
        self._head_layers = _chain_layers(self._head)
        final = self._head_layers[-1]
        if not isinstance(final, keras.layers.Dense):
            raise BackboneError(
                f"Grad-CAM reads class scores from the classifier's last Dense layer, but it ends in a "
                f"{type(final).__name__} ('{final.name}'): this model was not built by TransferLab."
            )
        self._final = final
        self._feature_mean = _normalization_mean(self._head_layers)

    def explain(self, images: np.ndarray, class_indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and one Grad-CAM map per image.

        Args:
            images: uint8 `(N, S, S, 3)`, read as in training (`tl_core.data.images.load_image_array`).
            class_indices: the class to explain per image; None explains each image's predicted class.

        Returns:
            `(probabilities (N, classes), maps (N, h, w))`: each map is the weighted feature map before the
            ReLU (its positive part is the evidence; `np.maximum(maps, 0)` is the usual heatmap).
        """
        feature_map = tf.cast(self.feature_map_model(images, training=False), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(feature_map)
            logits = self._logits(feature_map)
            probabilities = tf.nn.softmax(logits)
            chosen = tf.argmax(logits, axis=-1) if class_indices is None else tf.constant(class_indices, tf.int64)
            # Each image's score depends on its own feature map only (BatchNorm in inference mode): one gradient serves the batch.
            centred = logits - tf.reduce_mean(logits, axis=-1, keepdims=True)
            scores = tf.reduce_sum(tf.gather(centred, chosen, axis=1, batch_dims=1))
        gradients = tape.gradient(scores, feature_map)
        channel_weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        maps = tf.reduce_sum(channel_weights * (feature_map - self._feature_mean), axis=-1)
        self._check_head(feature_map, probabilities)
        return probabilities.numpy(), maps.numpy()

    def _logits(self, feature_map: tf.Tensor) -> tf.Tensor:
        x = feature_map
        for layer in self._head_layers[:-1]:
            x = layer(x, training=False)
        x = tf.cast(x, tf.float32)
        kernel = tf.cast(self._final.kernel, tf.float32)
        logits = tf.matmul(x, kernel)
        return logits + tf.cast(self._final.bias, tf.float32) if self._final.use_bias else logits

    def _check_head(self, feature_map: tf.Tensor, probabilities: tf.Tensor) -> None:
        """Our layer-by-layer reading of the head must give the model's own probabilities: never a wrong map."""
        expected = keras.ops.convert_to_numpy(self._head(feature_map, training=False)).astype(np.float32)
        if not np.allclose(probabilities.numpy(), expected, atol=_SELF_CHECK_TOLERANCE):
            raise BackboneError(
                "Grad-CAM could not follow this classifier's head from its feature map to the class scores (its "
                "layers do not form a chain ending in a softmax Dense layer): it was not built by TransferLab."
            )


def _spatial_pooling(model: keras.Model) -> keras.layers.Layer:
    """The last top-level layer that turns a 4-D feature map into one vector per image."""
    pooling = [layer for layer in model.layers if isinstance(layer, _SPATIAL_POOLING) and _rank(layer) == 4]
    if not pooling:
        raise BackboneError(NO_SPATIAL_MAP)
    return pooling[-1]


def _normalization_mean(head_layers: list[keras.layers.Layer]) -> tf.Tensor:
    """The per-channel training mean the head's first layer subtracts (0 for a head without one)."""
    first = head_layers[0] if head_layers else None
    if isinstance(first, keras.layers.GlobalAveragePooling2D | keras.layers.GlobalMaxPooling2D | keras.layers.Flatten):
        first = head_layers[1] if len(head_layers) > 1 else None
    if isinstance(first, keras.layers.Normalization) and first.built:
        return tf.reshape(tf.cast(first.mean, tf.float32), (-1,))
    return tf.constant(0.0)


def _rank(layer: keras.layers.Layer) -> int | None:
    try:
        return len(layer.input.shape)
    except (AttributeError, ValueError):  # a layer used more than once has no single input
        return None


def _chain_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of `model` in call order, nested models opened (`GradCam._check_head` verifies the chain)."""
    layers: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            layers.extend(_chain_layers(layer))
        else:
            layers.append(layer)
    return layers
