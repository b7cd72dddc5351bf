"""A Grad-CAM heatmap as plain data, and drawing it over its image: numpy and PIL only, no TensorFlow.

The model worker (`tl_core.jobs.model_worker`) computes heatmaps (`tl_core.results.explain`) and sends back
`FileHeatmap`s; the web server blends them over the pictures itself, so moving an opacity slider redraws
without asking the model again. Matplotlib (for the colour map, ~0.8 s to import) is imported on first use.

Example:
    >>> overlay_heatmap(Image.open("cat.jpg"), heatmap, alpha=0.5).save("cat.gradcam.png")
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

DEFAULT_ALPHA = 0.45
DEFAULT_COLORMAP = "turbo"
OVERLAY_MAX_SIDE = 1024  # overlays of large photos are drawn at most this many pixels on their longer side


@dataclass(frozen=True)
class FileHeatmap:
    """One image file explained, as the server receives it; `heatmap` is None when the file could not be read.

    Attributes:
        path: the image file.
        predicted: the class with the highest probability ("" when unreadable).
        probability: its probability.
        class_explained: the class the heatmap shows evidence for.
        heatmap: `(S, S)` float32 values in [0, 1] at the model's input size; 1 where the evidence is strongest.
        peak: where the heatmap is highest, as fractions `(y, x)` of the image's height and width.
        map_cells: `(height, width)` of the feature map explained: the heatmap's real resolution.
        problem: why the file could not be read and what to do (never names the file).
    """

    path: str
    predicted: str = ""
    probability: float = 0.0
    class_explained: str = ""
    heatmap: np.ndarray | None = None
    peak: tuple[float, float] = (0.5, 0.5)
    map_cells: tuple[int, int] = (0, 0)
    problem: str | None = None


def overlay_heatmap(
    image: Image.Image, heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA, colormap: str = DEFAULT_COLORMAP
) -> Image.Image:
    """The heatmap, coloured with a Matplotlib colour map and stretched over the whole image, blended onto it.

    Args:
        image: the picture (any size; drawn at most `OVERLAY_MAX_SIDE` pixels on its longer side).
        heatmap: 2-D values in [0, 1].
        alpha: opacity of the heatmap, from 0 (image only) to 1 (heatmap only).
        colormap: a Matplotlib colour map name ("turbo", "jet", "inferno" ...).

    Returns:
        An RGB image the size of `image` (or smaller, see above).
    """
    from matplotlib import colormaps

    picture = image.convert("RGB")
    picture.thumbnail((OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE))
    values = resize_map(np.clip(heatmap, 0.0, 1.0), (picture.height, picture.width))
    coloured = (colormaps[colormap](values)[..., :3] * 255).astype(np.uint8)
    return Image.blend(picture, Image.fromarray(coloured, "RGB"), alpha)


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D float map resized bilinearly to `(height, width)`."""
    height, width = size
    resized = Image.fromarray(np.asarray(values, dtype=np.float32), "F").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)
