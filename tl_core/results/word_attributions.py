"""Which words made a text run say what it said: occlusion, one word left out at a time.

A word's attribution is how much the probability of the class explained drops when that word is removed
from the document (negative: the class is more likely without it). Occlusion needs nothing from the model
but its predictions, so it works the same for every text backbone (GloVe, MiniLM, a TF Hub embedding), and
all the variants of a document go through the model together, in batches of `BATCH_SIZE`. Words are the
document's whitespace-separated pieces, as a reader sees them (punctuation stays with its word); only the
first `MAX_WORDS` are explained, the rest stay in every variant.

The module imports no TensorFlow: the web server reads its result types (the model worker computes them).

Example:
    >>> result = attribute_words(classifier, "a cheap offer, click now")
    >>> max(result.words, key=lambda w: w.attribution).word
    'cheap'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tl_core.errors import TransferLabError
from tl_core.modalities import DataModality, get_modality
from tl_core.results.labels import class_index

if TYPE_CHECKING:
    from tl_core.results.predict import LoadedClassifier

MAX_WORDS = 200  # 201 predictions per document: about a second with GloVe, a few with MiniLM on 2 cores
BATCH_SIZE = 32


@dataclass(frozen=True)
class WordAttribution:
    """One word of the document and how much the class explained leans on it (a probability difference)."""

    word: str
    attribution: float


@dataclass(frozen=True)
class TextAttributions:
    """A document's words with their attributions, and the prediction they explain.

    Attributes:
        words: the first `MAX_WORDS` words in order, each with its attribution in [-1, 1].
        predicted: the class with the highest probability for the whole document.
        probability: its probability.
        class_explained: the class whose probability the attributions measure.
        words_left_out: words after the first `MAX_WORDS`, kept in the document but not explained.
    """

    words: list[WordAttribution]
    predicted: str
    probability: float
    class_explained: str
    words_left_out: int = 0


def attribute_words(
    classifier: LoadedClassifier, text: str, class_name: str | None = None, *, max_words: int = MAX_WORDS
) -> TextAttributions:
    """Each word's attribution for the predicted class (or `class_name`) by leaving it out.

    Args:
        classifier: a text run's model (`tl_core.results.predict.load_run_classifier`).
        text: the document.
        class_name: the class to explain; None explains the predicted one.
        max_words: how many of the first words to explain (each costs one prediction).

    Returns:
        The words with their attributions and the prediction explained.

    Raises:
        TransferLabError: an image run, or a class the run does not have.
    """
    modality = get_modality(classifier.modality)
    if not modality.takes_typed_text:
        raise TransferLabError(
            f"Word attributions explain text runs; this run classifies {modality.noun}s: use Grad-CAM "
            "(`python -m tl_core explain`, or the heatmaps on the Predict page) instead."
        )
    if max_words < 1:
        raise TransferLabError(f"max_words={max_words} must be at least 1.")
    words = text.split()
    explained = words[:max_words]
    variants = [text] + [" ".join(words[:index] + words[index + 1 :]) for index in range(len(explained))]
    probabilities = _probabilities(classifier, modality, variants)
    predicted = int(np.argmax(probabilities[0]))
    chosen = predicted if class_name is None else class_index(classifier.class_names, class_name)
    drops = probabilities[0, chosen] - probabilities[1:, chosen]
    return TextAttributions(
        words=[WordAttribution(word, float(drop)) for word, drop in zip(explained, drops)],
        predicted=classifier.class_names[predicted],
        probability=float(probabilities[0, predicted]),
        class_explained=classifier.class_names[chosen],
        words_left_out=len(words) - len(explained),
    )


def _probabilities(classifier: LoadedClassifier, modality: DataModality, texts: list[str]) -> np.ndarray:
    """The model's probabilities for every text, `BATCH_SIZE` at a time (MiniLM's attention grows with the batch)."""
    import keras

    rows = []
    for start in range(0, len(texts), BATCH_SIZE):
        batch = modality.model_batch(texts[start : start + BATCH_SIZE])
        rows.append(keras.ops.convert_to_numpy(classifier.model(batch, training=False)))
    return np.concatenate(rows).astype(np.float64)
