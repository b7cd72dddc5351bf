"""The classic text baseline: TF-IDF + logistic regression, fitted on a run's own split.

Why this baseline: a bag of words weighted by TF-IDF under a linear classifier is the reference every text
classifier is measured against. It trains in seconds on a CPU, knows nothing beyond the run's training
documents, and on topic-like data it is hard to beat. A from-scratch run only says whether pretrained weights
help *this network*; this says whether the network is worth having at all: if a transfer run does not beat the
bag of words, its backbone adds nothing that counting words does not.

`--compare-scratch` (the Model page's "Compare with a from-scratch baseline") fits it for the modalities that
have one (`DataModality.has_classic_baseline`: text), on the run's training documents only (the validation
documents stay unseen, as the transfer run only selects epochs on them), and scores it on the documents the run
was evaluated on (test, else validation), so `classic_baseline_accuracy` sits beside the run's
`evaluation_accuracy` in its summary.

Example:
    >>> baseline = fit_classic_baseline(split, "test", seed=42)
    >>> baseline.accuracy, baseline.train_count
    (0.981, 1490)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from tl_core.data.types import DatasetSplit
    from tl_core.stopping import StopToken

# Words as the text models split them (`tl_core.data.text_dataset.count_tokens`), single letters and digits included.
TOKEN_PATTERN = r"(?u)[^\W_]+"
# TF-IDF values are small (rows have unit length), so a weaker penalty than scikit-learn's C=1 fits them better.
INVERSE_REGULARIZATION = 10.0
MAX_ITERATIONS = 1000  # lbfgs on TF-IDF features converges in tens of iterations; this only bounds a pathological fit
ACCURACY_KEY = "classic_baseline_accuracy"
VERDICT_KEY = "classic_baseline_verdict"
NAME = "TF-IDF + logistic regression"


@dataclass(frozen=True)
class ClassicBaseline:
    """What the fitted baseline scored: `accuracy` on `evaluation_count` documents of `evaluated_on`."""

    accuracy: float
    evaluated_on: str
    train_count: int
    evaluation_count: int


def classic_text_pipeline(seed: int) -> Pipeline:
    """The unfitted pipeline: lower-cased single-word TF-IDF (sublinear counts), then logistic regression.

    Single words, as "bag of words" means: word pairs multiply the features tenfold and the fit time with them.

    Args:
        seed: the logistic regression's `random_state`, so the same split always gives the same baseline.

    Returns:
        A scikit-learn `Pipeline` taking a list of document strings.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            ("tfidf", TfidfVectorizer(token_pattern=TOKEN_PATTERN, sublinear_tf=True)),
            (
                "logistic",
                LogisticRegression(C=INVERSE_REGULARIZATION, max_iter=MAX_ITERATIONS, random_state=seed),
            ),
        ]
    )


def fit_classic_baseline(split: DatasetSplit, evaluated_on: str, *, seed: int) -> ClassicBaseline:
    """Fit `classic_text_pipeline` on the split's training documents and score it on `evaluated_on`'s.

    Args:
        split: a text run's split (examples are documents, read as the run reads them).
        evaluated_on: the split the run was evaluated on, `test` or `val`.
        seed: see `classic_text_pipeline`.

    Returns:
        The baseline's accuracy and what it was fitted and scored on.

    Raises:
        ValueError: when the training documents hold a single class or no words (scikit-learn's message).
    """
    from sklearn.metrics import accuracy_score
    from threadpoolctl import threadpool_limits

    from tl_core.data.text_dataset import load_texts

    documents = load_texts(split)
    pipeline = classic_text_pipeline(seed)
    # One BLAS thread: lbfgs's small vector operations run several times slower when their threads
    # contend with the worker's TensorFlow threads or another run's.
    with threadpool_limits(limits=1, user_api="blas"):
        pipeline.fit(list(documents.images["train"]), documents.labels["train"])
        predicted = pipeline.predict(list(documents.images[evaluated_on]))
    return ClassicBaseline(
        accuracy=float(accuracy_score(documents.labels[evaluated_on], predicted)),
        evaluated_on=evaluated_on,
        train_count=len(documents.images["train"]),
        evaluation_count=len(documents.images[evaluated_on]),
    )


def classic_baseline_entries(
    split: DatasetSplit, summary: dict[str, Any], *, seed: int, stop: StopToken
) -> tuple[dict[str, Any], str]:
    """The entries a completed text run's summary gains, and the line for its log; never raises.

    A failure leaves `classic_baseline_accuracy` None and says why in the log line (the run's own results
    stand); a stop requested before the fit leaves the entries out.

    Args:
        split: the run's split.
        summary: the run's summary (its `evaluated_on` and `evaluation_accuracy` are compared against).
        seed: the run's seed.
        stop: the run's stop token, checked before the fit (which takes seconds and cannot be interrupted).

    Returns:
        (summary entries, log line starting with its level, e.g. `info: ...`).
    """
    if stop.should_stop():
        return {}, f"info: Stopped, so the classic baseline ({NAME}) was not fitted."
    evaluated_on = summary.get("evaluated_on")
    if evaluated_on is None:
        return {ACCURACY_KEY: None}, (
            f"info: The classic baseline ({NAME}) was not fitted: the run has no test or validation documents "
            "to score it on. Give the dataset a test fraction (--test-fraction) to compare."
        )
    try:
        baseline = fit_classic_baseline(split, evaluated_on, seed=seed)
    except Exception as exc:  # noqa: BLE001 - the baseline's failure must not fail a completed run
        return {ACCURACY_KEY: None}, (
            f"warning: The classic baseline ({NAME}) failed: {type(exc).__name__}: {exc}. The run's own results "
            "stand; check that the training documents hold words of at least two classes."
        )
    message = _verdict(baseline, summary.get("evaluation_accuracy"))
    return {ACCURACY_KEY: baseline.accuracy, VERDICT_KEY: message}, f"info: {message}"


def _verdict(baseline: ClassicBaseline, transfer_accuracy: float | None) -> str:
    """One sentence: the baseline's accuracy, and whether transfer beats it (by how much)."""
    split = "test" if baseline.evaluated_on == "test" else "validation"
    fitted = (
        f"Classic baseline ({NAME}, fitted on {baseline.train_count} training documents): "
        f"{baseline.accuracy:.3f} {split} accuracy on {baseline.evaluation_count} documents"
    )
    if transfer_accuracy is None:
        return f"{fitted}."
    margin = transfer_accuracy - baseline.accuracy
    if margin > 0:
        return f"{fitted}; transfer beats the bag of words by {margin:.1%} ({transfer_accuracy:.3f})."
    return (
        f"{fitted}; transfer does not beat the bag of words ({transfer_accuracy:.3f}, {margin:+.1%}): "
        "the backbone adds nothing over counting words here. Try fine-tuning it (--mode fine-tune), another text "
        "backbone, or reading more of each document (--sequence-length: the bag of words sees every word)."
    )
