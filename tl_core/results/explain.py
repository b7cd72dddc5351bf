"""Explain a finished image run's predictions: a Grad-CAM heatmap per file, overlaid on the image as a PNG.

Images are read exactly as in training (`tl_core.data.images.load_image_array`), explained in batches with
one loaded model (`tl_core.results.grad_cam.GradCam`), and each heatmap, stretched back over the whole
image (training squashes images to a square, so the map covers the image as the model saw it), is drawn
over the picture with a colour map. A file that cannot be read spoils nothing else: it gets its own
problem (as in `tl_core.results.predict.predict_each_file`) while the others are explained.

Example:
    >>> classifier = load_run_classifier(RunStore("workspace"), run_id)
    >>> [r.explanation.peak for r in explain_each_file(classifier, [Path("cat.jpg")], Path("out"))]
    [(0.31, 0.62)]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from tl_core.data.images import DEFAULT_MAX_PIXELS, decode_image, load_image_array
from tl_core.errors import DataError, TransferLabError
from tl_core.results.file_problems import file_problem
from tl_core.results.grad_cam import GradCam
from tl_core.results.heatmaps import DEFAULT_ALPHA, overlay_heatmap, resize_map
from tl_core.results.labels import class_index
from tl_core.results.predict import LoadedClassifier

BATCH_SIZE = 8
OVERLAY_SUFFIX = ".gradcam.png"
FINE_MAP_CELLS = 4  # a 2x2 map at 64 px put the peak in the wrong quadrant in our tests; 4x4 at 128 px did not


@dataclass(frozen=True)
class Explanation:
    """Why the model said what it said about one image.

    Attributes:
        predicted: the class with the highest probability.
        probability: its probability.
        class_explained: the class the heatmap shows evidence for (the predicted one unless another was asked for).
        heatmap: `(S, S)` values in [0, 1] at the model's input size; 1 where the evidence is strongest.
        peak: where the heatmap is highest, as fractions `(y, x)` of the image's height and width (the centre of
            the highest cell of the feature map, which has `S / 32` cells a side for most backbones).
        map_cells: `(height, width)` of the feature map explained: the heatmap's real resolution (below
            `FINE_MAP_CELLS` a side it is too coarse to say much; a larger image size or an earlier cut layer helps).
        overlay_path: the PNG of the heatmap over the image, when one was written.
    """

    predicted: str
    probability: float
    class_explained: str
    heatmap: np.ndarray
    peak: tuple[float, float]
    map_cells: tuple[int, int]
    overlay_path: Path | None = None


@dataclass(frozen=True)
class FileExplanation:
    """One file of a batch: its explanation, or (`explanation` None) why it could not be read."""

    path: Path
    explanation: Explanation | None
    problem: str | None = None  # what is wrong and what to do; never names the file


def explain_images(
    cam: GradCam, class_names: list[str], images: np.ndarray, class_name: str | None = None
) -> list[Explanation]:
    """Explanations of uint8 `(N, S, S, 3)` images read as in training, without overlays."""
    chosen = None if class_name is None else np.full(len(images), class_index(class_names, class_name))
    probabilities, maps = cam.explain(images, chosen)
    side = (int(images.shape[1]), int(images.shape[2]))
    explanations = []
    for row, raw_map in zip(probabilities, maps):
        predicted = int(np.argmax(row))
        explained = predicted if chosen is None else int(chosen[0])
        explanations.append(
            Explanation(
                predicted=class_names[predicted],
                probability=float(row[predicted]),
                class_explained=class_names[explained],
                heatmap=_normalised(resize_map(raw_map, side)),
                peak=_peak(raw_map),
                map_cells=(int(raw_map.shape[0]), int(raw_map.shape[1])),
            )
        )
    return explanations


def explain_each_file(
    classifier: LoadedClassifier,
    paths: list[Path],
    out_dir: Path | None = None,
    *,
    class_name: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[FileExplanation]:
    """Explain each image file with one loaded model, in order; unreadable files get a problem instead.

    Args:
        classifier: an image run's model (`tl_core.results.predict.load_run_classifier`).
        paths: the image files.
        out_dir: where to write one overlay PNG per readable file (`<stem>.gradcam.png`); None writes none.
        class_name: the class to explain in every image; None explains each image's predicted class.
        alpha: opacity of the heatmap over the image, from 0 (image only) to 1 (heatmap only).
        max_pixels: refuse images with more pixels than this (decompression-bomb guard).

    Returns:
        One `FileExplanation` per path, in order.

    Raises:
        TransferLabError: a text run, an unknown `class_name`, or a run whose backbone has no spatial feature map.
    """
    if classifier.modality != "image":
        raise TransferLabError(
            f"Grad-CAM explains image runs; this run classifies {classifier.modality} documents, "
            "whose explanation (words highlighted) is not available yet."
        )
    if not 0.0 <= alpha <= 1.0:
        raise TransferLabError(f"alpha={alpha} must be between 0 (image only) and 1 (heatmap only).")
    if class_name is not None:
        class_index(classifier.class_names, class_name)
    cam = GradCam(classifier.model)
    images: dict[int, np.ndarray] = {}
    problems: dict[int, str] = {}
    for index, path in enumerate(paths):
        try:
            images[index] = load_image_array(path, classifier.image_size, max_pixels=max_pixels)
        except DataError as error:
            problems[index] = file_problem(error, "image", max_pixels=max_pixels)
    readable = list(images)
    explained: dict[int, Explanation] = {}
    names = _overlay_names(paths)
    for start in range(0, len(readable), BATCH_SIZE):
        indices = readable[start : start + BATCH_SIZE]
        batch = np.stack([images[index] for index in indices])
        for index, explanation in zip(indices, explain_images(cam, classifier.class_names, batch, class_name)):
            if out_dir is not None:
                overlay = overlay_heatmap(decode_image(paths[index], max_pixels=max_pixels), explanation.heatmap, alpha)
                explanation = replace(explanation, overlay_path=_save_png(overlay, out_dir / names[index]))
            explained[index] = explanation
    return [FileExplanation(path, explained.get(index), problems.get(index)) for index, path in enumerate(paths)]


def _normalised(weighted: np.ndarray) -> np.ndarray:
    positive = np.maximum(weighted, 0.0)
    top = float(positive.max())
    return positive / top if top > 0 else positive


def _peak(feature_map_weights: np.ndarray) -> tuple[float, float]:
    """The centre of the feature-map cell where the evidence is highest, as fractions of height and width.

    Taken on the map itself, not its smoothed enlargement, whose maximum is a plateau reaching the border
    when the highest cell is on the edge.
    """
    y, x = np.unravel_index(int(np.argmax(feature_map_weights)), feature_map_weights.shape)
    return (float((y + 0.5) / feature_map_weights.shape[0]), float((x + 0.5) / feature_map_weights.shape[1]))


def _overlay_names(paths: list[Path]) -> list[str]:
    """`<stem>.gradcam.png` per file; files of the same name (from different folders) get `-2`, `-3` ..."""
    names: list[str] = []
    taken: set[str] = set()
    for path in paths:
        name, count = path.stem + OVERLAY_SUFFIX, 1
        while name in taken:
            count += 1
            name = f"{path.stem}-{count}{OVERLAY_SUFFIX}"
        taken.add(name)
        names.append(name)
    return names


def _save_png(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
