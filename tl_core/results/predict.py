"""Top-k predictions for new images or documents with a finished run's model.

Images are decoded and resized exactly as in training (`tl_core.data.images.load_image_array`); text files
are decoded as in training (`tl_core.data.text_dataset.read_document`). The saved model carries its own
preprocessing (and, for text, its tokeniser), so no backbone-specific code is needed here.

A file that cannot be read (too many pixels, damaged, not an image) spoils nothing else in a batch:
`predict_each_file` predicts the others and says, for that file, what is wrong and what its owner can do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import tl_core.models.text_model  # noqa: F401 - registers the text layers, so text models load
from tl_core.data.images import DEFAULT_MAX_PIXELS
from tl_core.errors import DataError, RunNotFoundError
from tl_core.layout import KERAS_FILE, LABELS_FILE
from tl_core.modalities import get_modality
from tl_core.models import keras_files
from tl_core.models.savedmodel_layer import SavedModelLayer  # noqa: F401 - registers the layer that TF Hub backbones are saved with
from tl_core.results.export import read_labels
from tl_core.results.file_problems import FilePrediction, Prediction, file_problem
from tl_core.runs.store import RunStore


@dataclass
class LoadedClassifier:
    """A run's model; `image_size` is the input side for images, the tokens read per document for text."""

    model: keras.Model
    class_names: list[str]
    image_size: int
    modality: str = "image"


def load_run_classifier(store: RunStore, run_id: str) -> LoadedClassifier:
    """The saved best model of a run and its labels; a clear error when the run has none."""
    record = store.get(run_id)
    folder = store.run_dir(record.id)
    model_path = folder / KERAS_FILE
    if not model_path.is_file():
        raise RunNotFoundError(
            f"Run {record.id} ({record.status}) has no saved model at {model_path}: "
            "only runs that completed or were stopped have one. Train again, or pick another run with `python -m tl_core runs`."
        )
    model = keras_files.load_model(model_path)
    class_names = read_labels(folder / LABELS_FILE)
    if model.input.dtype == "string":
        sequence_length = int(record.config.get("model", {}).get("sequence_length", 0))
        return LoadedClassifier(model, class_names, sequence_length, modality="text")
    return LoadedClassifier(model, class_names, int(model.input.shape[1]))


def top_k_predictions(probabilities: np.ndarray, class_names: list[str], top_k: int) -> list[list[Prediction]]:
    top_k = max(1, min(top_k, len(class_names)))
    order = np.argsort(-probabilities, axis=1)[:, :top_k]
    return [[Prediction(class_names[i], float(row[i])) for i in indices] for row, indices in zip(probabilities, order)]


def predict_each_file(
    classifier: LoadedClassifier, paths: list[Path], top_k: int = 3, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[FilePrediction]:
    """Top-k labels for each image file (each text file for a text model), in order; unreadable files get a problem instead.

    Example:
        >>> [r.problem or r.predictions[0].label for r in predict_each_file(classifier, [Path("cat.jpg"), Path("huge.png")])]
        ['cat', 'it has more than 64 megapixels, the most TransferLab reads ...']
    """
    modality = get_modality(classifier.modality)
    inputs: list[np.ndarray | str] = []  # decoded images, or documents for a text model
    readable: list[int] = []
    problems: dict[int, str] = {}
    for index, path in enumerate(paths):
        try:
            inputs.append(modality.read_for_prediction(path, classifier.image_size, max_pixels=max_pixels))
        except DataError as error:
            problems[index] = file_problem(error, classifier.modality, max_pixels=max_pixels)
        else:
            readable.append(index)
    rows = _predict(classifier, inputs, top_k) if inputs else []
    by_index = dict(zip(readable, rows))
    return [FilePrediction(path, by_index.get(index, []), problems.get(index)) for index, path in enumerate(paths)]


def predict_files(classifier: LoadedClassifier, paths: list[Path], top_k: int = 3) -> list[list[Prediction]]:
    """Top-k labels for each image file, or each text file for a text model; all or nothing.

    Raises:
        DataError: naming the first file that cannot be read (`predict_each_file` predicts the others instead).
    """
    results = predict_each_file(classifier, paths, top_k)
    for result in results:
        if result.problem:
            raise DataError(f"{result.path}: {result.problem}")
    return [result.predictions for result in results]


def predict_texts(classifier: LoadedClassifier, texts: list[str], top_k: int = 3) -> list[list[Prediction]]:
    """Top-k labels for each document given as a string (typed or read from a file)."""
    modality = get_modality(classifier.modality)
    if not modality.takes_typed_text:
        raise ValueError(
            f"This run's model classifies {modality.noun}s: pass {modality.noun} files to predict_files instead."
        )
    return _predict(classifier, texts, top_k)


def _predict(classifier: LoadedClassifier, examples: Sequence[np.ndarray | str], top_k: int) -> list[list[Prediction]]:
    """Top-k labels for examples read as in training, batched as the run's modality says its model takes them."""
    batch = get_modality(classifier.modality).model_batch(examples)
    probabilities = keras.ops.convert_to_numpy(classifier.model(batch, training=False))
    return top_k_predictions(probabilities, classifier.class_names, top_k)
