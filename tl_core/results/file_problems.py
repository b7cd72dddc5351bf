"""What a prediction looks like, and what is wrong with a file a user brought: no model, no TensorFlow.

The web server imports this module to check uploads and to read results that the model worker
(`tl_core.jobs.model_worker`) sends back, so it must stay light: the model code is in `tl_core.results.predict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tl_core.data.images import DEFAULT_MAX_PIXELS, ImageDecodeError, inspect_image
from tl_core.errors import DataError
from tl_core.modalities import get_modality


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float


@dataclass(frozen=True)
class FilePrediction:
    """One file of a batch: its top-k labels, or (`predictions` empty) why it could not be read."""

    path: Path
    predictions: list[Prediction]
    problem: str | None = None  # what is wrong and what to do; never names the file or a server setting


def file_problem(error: DataError, modality: str = "image", *, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """What is wrong with a file a user brought and what they can do about it, without its path.

    The advice names only things the file's owner controls (the file itself), never a server setting.

    Args:
        error: why the file could not be read (`ImageDecodeError` for images, `DataError` for documents).
        modality: the kind of file the model takes; its `unreadable_file_fix` is the advice when the error has none.
        max_pixels: the pixel limit the image was checked against.

    Returns:
        A sentence to put after the file's name, e.g. `f"{name}: {file_problem(error)}"`.
    """
    if isinstance(error, ImageDecodeError) and error.kind == "too-large":
        limit = f"{max_pixels / 1e6:g} megapixels" if max_pixels >= 1_000_000 else f"{max_pixels:,} pixels"
        return (
            f"it has more than {limit}, the most TransferLab reads (a guard against decompression bombs): "
            "make it smaller in an image editor, save it as JPEG or PNG and try again."
        )
    if isinstance(error, ImageDecodeError):
        return error.fix
    return get_modality(modality).unreadable_file_fix


def image_problem(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Why an image file cannot be predicted (see `file_problem`), or None when it can; a cheap check, no model."""
    try:
        inspect_image(path, max_pixels=max_pixels)
    except DataError as error:
        return file_problem(error, "image", max_pixels=max_pixels)
    return None
