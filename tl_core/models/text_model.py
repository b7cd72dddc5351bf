"""Build the text transfer model (the text modality's `tl_core.models.transfer_model.build_transfer_model`).

    raw string -> backbone (tokenizer -> word vectors -> masked pooling, or a SavedModel) -> head (standardisation, softmax)

The classifier takes raw strings, so every export (`.keras`, SavedModel via `model.export`) carries
the tokenizer, and the head's standardisation of the document vectors (adapted to the training split's). It returns the same `TransferModel` as images; `image_size` holds the sequence length
(word tokens read per document) so code that records "the model's input size" keeps working. The
freeze policies of `tl_core.models.transfer_model` apply unchanged to `TransferModel.backbone`.

Loading a saved text classifier needs this module imported first (it registers the tokenizer's
standardisation and the pooling layer): `import tl_core.models.text_model` before `keras.models.load_model`.

Example:
    >>> tm = build_text_transfer_model(ModelConfig(backbone="glove_6b_50d", weights="glove"), 3)
    >>> tm.model.predict(np.array(["a goal in the final minute"], dtype=object)).shape
    (1, 3)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from tl_core.config import ModelConfig
from tl_core.errors import BackboneError
from tl_core.models.registry import get_backbone_spec
from tl_core.models.text_backbones import build_text_backbone, standardize_text  # noqa: F401 - registers it for loading
from tl_core.models.text_layers import MaskedPooling  # noqa: F401 - registers it for loading
from tl_core.models.transfer_model import TransferModel, build_head

if TYPE_CHECKING:
    import tensorflow as tf

TEXT_CLASSIFIER_NAME = "transferlab_text_classifier"


def build_text_transfer_model(
    model_config: ModelConfig,
    num_classes: int,
    *,
    cache_dir: Path | None = None,
    backbone: keras.Model | None = None,
) -> TransferModel:
    """Build the text classifier for `num_classes` classes.

    Args:
        model_config: a text backbone (`glove_6b_50d`, `hub_text_embedding`), its weights, `sequence_length`,
            pooling and head settings.
        num_classes: at least 2.
        cache_dir: the weights cache (MiniLM's packaged zip is extracted there once).
        backbone: an already-built text backbone (e.g. a finished run's) to use instead of `model_config.weights`.

    Returns:
        A `TransferModel` (model: string -> probabilities; feature_extractor: string -> vector) whose backbone
        starts frozen; `image_size` is the sequence length.
    """
    if num_classes < 2:
        raise BackboneError(f"A classifier needs at least 2 classes, got {num_classes}: add another class folder.")
    spec = get_backbone_spec(model_config.backbone)
    if spec.modality != "text":
        raise BackboneError(
            f"{spec.display_name} is an image backbone and cannot read text: use glove_6b_50d (offline) or hub_text_embedding."
        )
    if backbone is None:
        backbone = build_text_backbone(
            spec, model_config.weights, model_config.sequence_length, pooling=model_config.pooling, cache_dir=cache_dir
        )
    elif backbone.inputs[0].dtype != "string":
        raise BackboneError(
            "The given backbone does not take text (its input is not a string tensor): pick a text run's backbone."
        )
    backbone.trainable = False

    texts = keras.Input(shape=(), dtype="string", name="text")
    features = backbone(texts)
    feature_dim = int(features.shape[-1])
    head = build_head(feature_dim, num_classes, model_config.head_hidden_units, model_config.dropout)
    outputs = head(features)
    model = keras.Model(texts, outputs, name=TEXT_CLASSIFIER_NAME)
    feature_extractor = keras.Model(texts, features, name="feature_extractor")
    return TransferModel(model, backbone, feature_extractor, head, spec, model_config.sequence_length, feature_dim)


def as_text_array(texts: np.ndarray | list[str]) -> np.ndarray:
    """A 1-D object array of str (what text models, `text_dataset` and `TrainingData` hold)."""
    array = np.asarray(texts, dtype=object)
    if array.ndim != 1:
        raise ValueError(f"texts must be one string per example (1-D), got shape {array.shape}.")
    return array


def text_dataset(
    texts: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    sample_weights: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches of (strings, int32 labels[, float32 weights]), the text counterpart of `image_cache.image_dataset`.

    Args:
        texts: N documents (1-D array or list of str).
        labels: N class indices.
        batch_size: documents per batch (the last batch may be smaller).
        shuffle: reshuffle every epoch; the order sequence is fixed by `seed`.
        seed: shuffling seed.
        sample_weights: optional N per-example loss weights.

    Returns:
        A prefetching `tf.data.Dataset`.
    """
    import tensorflow as tf

    texts = as_text_array(texts)
    if len(texts) != len(labels) or (sample_weights is not None and len(sample_weights) != len(labels)):
        raise ValueError(f"texts ({len(texts)}), labels ({len(labels)}) and sample_weights must have the same length.")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1.")
    columns: tuple[np.ndarray, ...] = (
        texts.astype(str) if len(texts) else np.zeros(0, dtype=str),
        np.asarray(labels, dtype=np.int32),
    )
    if sample_weights is not None:
        columns = (*columns, np.asarray(sample_weights, dtype=np.float32))
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        dataset = dataset.shuffle(max(1, len(texts)), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
