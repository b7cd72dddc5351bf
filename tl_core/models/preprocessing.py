"""Pixel preprocessing as stock Keras layers, so a saved `model.keras` carries it and loads anywhere.

Each backbone expects its inputs scaled one way (the `preprocess_input` of its keras.applications
module). The modes, for RGB pixel values x in [0, 255]:

    tf     x / 127.5 - 1                         MobileNet(V2), Xception, Inception, ResNetV2, NASNet
    torch  (x / 255 - ImageNet mean) / std        DenseNet
    caffe  RGB -> BGR, minus the ImageNet BGR mean ResNet (v1), VGG
    lite   (x - 127) / 128                       EfficientNet-Lite (TF Lite checkpoints)
    none   x as float (the model rescales itself)  EfficientNet(V2), ConvNeXt, MobileNetV3

Only Rescaling, Normalization and a frozen Dense (the channel permutation) are used: a model holding
these loads with `keras.saving.load_model(path, safe_mode=True)` without TransferLab installed.

Example:
    >>> images = keras.Input((224, 224, 3), dtype="uint8")
    >>> scaled = build_preprocessing("tf")(images)   # float32 in [-1, 1]
"""

from __future__ import annotations

import keras
import numpy as np

from tl_core.errors import BackboneError

PREPROCESSING_MODES = ("tf", "torch", "caffe", "lite", "none")
IMAGENET_RGB_MEAN = (0.485, 0.456, 0.406)
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)
IMAGENET_BGR_MEAN_255 = (103.939, 116.779, 123.68)  # keras imagenet_utils, caffe mode
LITE_CENTER = 127.0
LITE_SCALE = 128.0

# Input channel i (RGB) goes to output channel 2 - i (BGR); the matrix is its own inverse.
_RGB_BGR_SWAP = np.eye(3, dtype="float32")[::-1].copy()


def _check_mode(mode: str) -> None:
    if mode not in PREPROCESSING_MODES:
        raise BackboneError(f"Unknown preprocessing mode '{mode}': use one of {', '.join(PREPROCESSING_MODES)}.")


def _frozen_affine(kernel: np.ndarray, bias: np.ndarray, name: str) -> keras.layers.Dense:
    """A per-pixel channel map `x @ kernel + bias` with fixed, non-trainable weights."""
    return keras.layers.Dense(
        3,
        kernel_initializer=keras.initializers.Constant(kernel.tolist()),
        bias_initializer=keras.initializers.Constant(bias.tolist()),
        trainable=False,
        name=name,
    )


def build_preprocessing(mode: str, name: str = "preprocessing") -> keras.layers.Layer:
    """Layers turning RGB pixel values in [0, 255] (uint8 or float) into a backbone's expected input.

    Args:
        mode: one of `PREPROCESSING_MODES` (see the module docstring).
        name: the returned layer's name.

    Returns:
        A Rescaling layer, or a Sequential of stock layers; the first layer casts to float.

    Raises:
        BackboneError: unknown mode.
    """
    _check_mode(mode)
    if mode == "tf":
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=name)
    if mode == "lite":
        return keras.layers.Rescaling(1 / LITE_SCALE, offset=-LITE_CENTER / LITE_SCALE, name=name)
    if mode == "none":
        return keras.layers.Rescaling(1.0, name=name)
    if mode == "torch":
        return keras.Sequential(
            [
                keras.layers.Rescaling(1 / 255.0, name="scale_to_unit_range"),
                keras.layers.Normalization(
                    mean=list(IMAGENET_RGB_MEAN), variance=[s**2 for s in IMAGENET_RGB_STD], name="imagenet_mean_std"
                ),
            ],
            name=name,
        )
    bgr_mean = np.array(IMAGENET_BGR_MEAN_255, dtype="float32")
    return keras.Sequential(
        [
            keras.layers.Rescaling(1.0, name="to_float"),
            _frozen_affine(_RGB_BGR_SWAP, -bgr_mean, name="rgb_to_bgr_minus_mean"),
        ],
        name=name,
    )


def build_unit_range_from(mode: str, name: str = "to_unit_range") -> keras.layers.Layer:
    """The inverse of `build_preprocessing(mode)` followed by /255: RGB floats in [0, 1].

    TF Hub image models take RGB in [0, 1]; a Hub backbone placed after a registry entry's
    preprocessing starts with this layer.

    Args:
        mode: one of `PREPROCESSING_MODES`.
        name: the returned layer's name.

    Returns:
        A stock Keras layer.

    Raises:
        BackboneError: unknown mode.
    """
    _check_mode(mode)
    if mode == "tf":
        return keras.layers.Rescaling(0.5, offset=0.5, name=name)
    if mode == "lite":
        return keras.layers.Rescaling(LITE_SCALE / 255.0, offset=LITE_CENTER / 255.0, name=name)
    if mode == "none":
        return keras.layers.Rescaling(1 / 255.0, name=name)
    if mode == "torch":
        return keras.layers.Normalization(
            mean=list(IMAGENET_RGB_MEAN), variance=[s**2 for s in IMAGENET_RGB_STD], invert=True, name=name
        )
    bgr_mean = np.array(IMAGENET_BGR_MEAN_255, dtype="float32")
    # (y + mean_bgr) swapped back to RGB, then / 255.
    return _frozen_affine(_RGB_BGR_SWAP / 255.0, (bgr_mean @ _RGB_BGR_SWAP) / 255.0, name=name)
