"""ImageNet predictions with an offline pretrained classifier as-is (no training), e.g. to try a photo.

Example:
    >>> predict_pretrained("efficientnet_lite0", [Path("cat.jpg")], top_k=3)
    [[('Egyptian cat', 0.79), ('tiger cat', 0.09), ('tabby', 0.07)]]
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tl_core.data.images import load_image_array
from tl_core.errors import BackboneError, WeightsUnavailableError
from tl_core.models.weights import get_offline_weights
from tl_core.models.weights.imagenet_labels import IMAGENET_CLASS_COUNT, imagenet_class_names

logger = logging.getLogger(__name__)


def scale_pixels(images: np.ndarray, preprocessing: str) -> np.ndarray:
    """Scale uint8 RGB images the way the offline weights were trained.

    Args:
        images: (N, S, S, 3) values in 0..255.
        preprocessing: `lite` -> (x - 127) / 128, `tf` -> x / 127.5 - 1.

    Returns:
        float32 array of the same shape.
    """
    pixels = images.astype(np.float32)
    if preprocessing == "lite":
        return (pixels - 127.0) / 128.0
    if preprocessing == "tf":
        return pixels / 127.5 - 1.0
    raise ValueError(f"Unknown preprocessing {preprocessing!r}; expected 'lite' or 'tf'.")


def _class_names() -> list[str]:
    try:
        return imagenet_class_names()
    except WeightsUnavailableError as exc:  # predictions still work; only the names are missing
        logger.warning("%s Showing class indices instead.", exc)
        return [f"imagenet class {index}" for index in range(IMAGENET_CLASS_COUNT)]


def predict_pretrained(
    name: str, image_paths: list[Path], top_k: int = 5, cache_dir: Path | None = None
) -> list[list[tuple[str, float]]]:
    """Classify images into the 1000 ImageNet-1k classes with packaged pretrained weights.

    Args:
        name: offline weights with an ImageNet head, e.g. `efficientnet_lite0`.
        image_paths: image files (any format `tl_core.data.images` reads; EXIF orientation applied).
        top_k: how many classes to return per image (1..1000).
        cache_dir: where converted weights are cached (see `OfflineWeights.build_backbone`).

    Returns:
        For each image, `top_k` (class name, probability) pairs, most probable first. Without
        keras-hub installed, names read "imagenet class N" (a warning says how to get names).

    Raises:
        BackboneError: unknown name, no ImageNet head, or `top_k` out of range.
    """
    if not 1 <= top_k <= IMAGENET_CLASS_COUNT:
        raise BackboneError(f"top_k must be between 1 and {IMAGENET_CLASS_COUNT}; got {top_k}.")
    weights = get_offline_weights(name)
    classifier = weights.build_classifier(cache_dir=cache_dir)
    if not image_paths:
        return []
    images = np.stack([load_image_array(path, weights.default_size) for path in image_paths])
    probabilities = classifier.predict(scale_pixels(images, weights.preprocessing), batch_size=16, verbose=0)
    names = _class_names()
    results = []
    for row in probabilities:
        best = np.argsort(row)[::-1][:top_k]
        results.append([(names[index], float(row[index])) for index in best])
    return results
