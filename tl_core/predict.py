"""Top-k predictions for new images or documents with a finished run's model.

Images are decoded and resized exactly as in training (`tl_core.images.load_image_array`); text files
are decoded as in training (`tl_core.text_data.read_document`). The saved model carries its own
preprocessing (and, for text, its tokeniser), so no backbone-specific code is needed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from tl_core import keras_files
from tl_core.errors import RunNotFoundError
from tl_core.export import KERAS_FILE, LABELS_FILE, read_labels
from tl_core.images import load_image_array
from tl_core.runs import RunStore
from tl_core.savedmodel_layer import SavedModelLayer  # noqa: F401 - registers the layer that TF Hub backbones are saved with
from tl_core.text_data import read_document
from tl_core.text_model import as_text_array  # also registers the text layers, so text models load


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float


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


def predict_files(classifier: LoadedClassifier, paths: list[Path], top_k: int = 3) -> list[list[Prediction]]:
    """Top-k labels for each image file, or each text file for a text model (decoding errors name the file)."""
    if classifier.modality == "text":
        return predict_texts(classifier, [read_document(str(path)) for path in paths], top_k)
    batch = np.stack([load_image_array(path, classifier.image_size) for path in paths])
    probabilities = keras.ops.convert_to_numpy(classifier.model(batch, training=False))
    return top_k_predictions(probabilities, classifier.class_names, top_k)


def predict_texts(classifier: LoadedClassifier, texts: list[str], top_k: int = 3) -> list[list[Prediction]]:
    """Top-k labels for each document given as a string (typed or read from a file)."""
    if classifier.modality != "text":
        raise ValueError("This run's model classifies images: pass image files to predict_files instead.")
    probabilities = keras.ops.convert_to_numpy(classifier.model(as_text_array(texts), training=False))
    return top_k_predictions(probabilities, classifier.class_names, top_k)
