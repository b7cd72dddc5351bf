"""Top-k predictions for new image files with a finished run's model.

Images are decoded and resized exactly as in training (`tl_core.images.load_image_array`), and
the saved model carries its own preprocessing, so no backbone-specific code is needed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from tl_core.errors import RunNotFoundError
from tl_core.export import KERAS_FILE, LABELS_FILE, read_labels
from tl_core.images import load_image_array
from tl_core.runs import RunStore
from tl_core.savedmodel_layer import SavedModelLayer  # noqa: F401 - registers the layer that TF Hub backbones are saved with


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float


@dataclass
class LoadedClassifier:
    model: keras.Model
    class_names: list[str]
    image_size: int


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
    model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    return LoadedClassifier(model, read_labels(folder / LABELS_FILE), int(model.input.shape[1]))


def top_k_predictions(probabilities: np.ndarray, class_names: list[str], top_k: int) -> list[list[Prediction]]:
    top_k = max(1, min(top_k, len(class_names)))
    order = np.argsort(-probabilities, axis=1)[:, :top_k]
    return [[Prediction(class_names[i], float(row[i])) for i in indices] for row, indices in zip(probabilities, order)]


def predict_files(classifier: LoadedClassifier, paths: list[Path], top_k: int = 3) -> list[list[Prediction]]:
    """Top-k labels for each image file (decoding errors name the file)."""
    batch = np.stack([load_image_array(path, classifier.image_size) for path in paths])
    probabilities = keras.ops.convert_to_numpy(classifier.model(batch, training=False))
    return top_k_predictions(probabilities, classifier.class_names, top_k)
