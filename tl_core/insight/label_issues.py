"""Likely label errors: examples whose out-of-fold prediction disagrees confidently with their given label.

Every example goes through the frozen backbone once (the features come from, and go to, the workspace's feature
cache under the same keys a run uses, so a run on the same data and backbone and this check reuse each other's
features). A linear probe (`tl_core.advisor.probe.linear_probe`: logistic regression on standardised features)
is fitted K times, each time without one stratified fold, and predicts that fold: every example gets
probabilities from a model that never saw its label. cleanlab's `find_label_issues` then flags the examples
whose given label those probabilities do not support (its confident-learning rule, `prune_by_noise_rate`),
ranked by self-confidence; `get_label_quality_scores` gives each one's score (the out-of-fold probability of
the given label: lower is more likely wrong).

This is its own package, `tl_core.insight`, because it is about the data, not a run: it needs the training
package's feature cache, which `tl_core.data` must not import, and no trained model, unlike `tl_core.results`.

Labels come from the examples' `label` field only, and the dataset is prepared as a run prepares it, so the
workspace's labels-override file (`tl_core.data.label_overrides`: relabelled or excluded examples) is applied
before `rank_label_issues`; the features, keyed by the examples' content, are reused as they are.

Example:
    >>> check = check_labels(DataConfig("shapes/"), ModelConfig("efficientnet_lite0", "imagenet", 64), store)
    >>> check.issues[0].to_dict()
    {'path': '/data/shapes/red_circle/img_003.png', 'given_label': 'red_circle', 'suggested_label': 'blue_triangle', 'score': 0.02}
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from tl_core.advisor.probe import linear_probe
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.prep import prepare_dataset
from tl_core.data.types import SPLIT_NAMES, Example
from tl_core.errors import DataError
from tl_core.events import NullListener
from tl_core.modalities import get_modality
from tl_core.models.registry import backbone_for_data
from tl_core.runs.store import RunStore
from tl_core.stopping import StopToken
from tl_core.training.feature_extraction import split_features
from tl_core.training.preparation import PreparationReporter

DEFAULT_FOLDS = 5
# With fewer examples of a class per fold, each held-out prediction of it comes from one or two training examples.
MIN_FOLDS = 3
RANKING = "self_confidence"


@dataclass(frozen=True)
class LabelIssue:
    """One example whose given label looks wrong.

    Attributes:
        path: the example's file (absolute), or for a table row its `table#row` reference.
        given_label: the label the dataset gives it.
        suggested_label: the class the out-of-fold probe finds most probable.
        score: the out-of-fold probability of the given label (cleanlab's self-confidence quality score,
            0-1): lower is more likely wrong.
    """

    path: str
    given_label: str
    suggested_label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "given_label": self.given_label,
            "suggested_label": self.suggested_label,
            "score": self.score,
        }


@dataclass(frozen=True)
class LabelCheck:
    """The outcome of a label check: how many examples were checked, and the likely errors, most likely first.

    Attributes:
        checked: examples checked (every usable example of the dataset).
        folds: K of the K-fold probes.
        issues: the flagged examples, lowest score first.
        class_names: the dataset's classes.
        notes: what people should know about how it was checked (e.g. fewer folds than usual).
        elapsed_s: seconds, features included.
    """

    checked: int
    folds: int
    issues: tuple[LabelIssue, ...]
    class_names: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON: `{"checked": N, "issues": [{"path", "given_label", "suggested_label", "score"}]}`."""
        return {"checked": self.checked, "issues": [issue.to_dict() for issue in self.issues]}

    def format_text(self) -> str:
        """A table for people, most likely error first."""
        if not self.issues:
            return f"Checked {self.checked} examples ({self.folds}-fold): no likely label errors found."
        given = max(len("given"), *(len(i.given_label) for i in self.issues))
        suggested = max(len("suggested"), *(len(i.suggested_label) for i in self.issues))
        lines = [
            f"Checked {self.checked} examples ({self.folds}-fold): {len(self.issues)} likely label errors, most likely first.",
            "score = out-of-fold probability of the given label (lower: more likely wrong).",
            "",
            f"{'score':>6}  {'given':<{given}}  {'suggested':<{suggested}}  path",
            *(
                f"{i.score:6.3f}  {i.given_label:<{given}}  {i.suggested_label:<{suggested}}  {i.path}"
                for i in self.issues
            ),
        ]
        return "\n".join(lines)


def fold_count(labels: Sequence[str], folds: int = DEFAULT_FOLDS) -> tuple[int, str | None]:
    """K for stratified K-fold: `folds`, or fewer when a class has fewer examples (with a note saying so).

    Raises:
        DataError: a class has fewer than `MIN_FOLDS` examples; the message names it and what is needed.
    """
    counts = Counter(labels)
    smallest, size = min(counts.items(), key=lambda item: (item[1], item[0]))
    if size < MIN_FOLDS:
        raise DataError(
            f"Too few examples to find label errors: class '{smallest}' has {size}. Each class needs at least "
            f"{MIN_FOLDS} examples ({folds} for the usual {folds}-fold check), so that every example is predicted by "
            "a model trained on others of its class: add examples to the small classes."
        )
    if size >= folds:
        return folds, None
    return size, f"Class '{smallest}' has only {size} examples, so {size} folds are used instead of {folds}."


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each example's class probabilities from a linear probe fitted on the other folds (stratified, shuffled).

    Returns:
        float (N, number of classes); every class must occur in `labels` at least `folds` times.
    """
    features = np.asarray(features, np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(linear_probe(features), features, labels, cv=splitter, method="predict_proba")


def rank_label_issues(
    features: np.ndarray,
    examples: Sequence[Example],
    class_names: Sequence[str],
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 42,
) -> LabelCheck:
    """The likely label errors among `examples`, given their frozen features (row i is example i).

    Args:
        features: float (N, feature_dim).
        examples: the examples, labelled (their `label` is the given label).
        class_names: every class, in the order of the probabilities' columns.
        folds: K; fewer when a class is smaller (see `fold_count`).
        seed: for the folds' shuffle.

    Returns:
        The check, issues ranked most likely first.

    Raises:
        DataError: a class too small for K-fold.
    """
    started = time.perf_counter()
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[e.label] for e in examples], dtype=np.int64)
    k, note = fold_count([e.label for e in examples], folds)
    probabilities = out_of_fold_probabilities(features, labels, k, seed)
    # n_jobs=1: cleanlab otherwise forks a multiprocessing pool per call, and a fork of a process that runs
    # TensorFlow's (or a test runner's) threads can deadlock in the child; it did, twice, in the test suite. One
    # process ranks thousands of examples in milliseconds.
    flagged = find_label_issues(labels, probabilities, return_indices_ranked_by=RANKING, n_jobs=1)
    scores = get_label_quality_scores(labels, probabilities, method=RANKING)
    issues = tuple(
        LabelIssue(
            path=examples[i].path,
            given_label=examples[i].label,
            suggested_label=class_names[int(probabilities[i].argmax())],
            score=round(float(scores[i]), 4),
        )
        for i in flagged
    )
    return LabelCheck(
        len(examples), k, issues, tuple(class_names), (note,) if note else (), time.perf_counter() - started
    )


def check_labels(
    data: DataConfig,
    model: ModelConfig,
    store: RunStore,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 42,
    weights_cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    stop: StopToken | None = None,
) -> LabelCheck:
    """Scan `data`, compute (or reuse) every example's frozen features under `model`, and rank likely label errors.

    The dataset is split as a run with `data` splits it (the workspace's label decisions applied), and each
    split's features are cached under the keys a run with `model` and `seed` uses: a feature-extraction run on
    the same data reuses them, and the other way round.

    Args:
        data: the dataset (its `modality` resolved already).
        model: backbone, weights and input size (its head settings are unused).
        store: the workspace whose caches are used.
        folds: K of the K-fold probes.
        seed: the random backbone's draw (`weights="none"`) and the folds' shuffle.
        weights_cache_dir: where converted offline weights are cached.
        progress: called with each step in words (the CLI prints them on stderr).
        stop: checked at every batch of the feature pass (a job's Stop).

    Returns:
        The check; its `elapsed_s` includes scanning and features.

    Raises:
        DataError: unreadable data, or a class too small for K-fold. BackboneError: a backbone for other data.
        PreparationStopped: `stop` was set during the feature pass.
    """
    started = time.perf_counter()
    found = dataset_features(
        data, model, store, seed=seed, weights_cache_dir=weights_cache_dir, progress=progress, stop=stop, folds=folds
    )
    return _checked(found, folds=folds, seed=seed, progress=progress, started=started)


@dataclass(frozen=True)
class DatasetFeatures:
    """Every usable example of a prepared dataset (train, val, then test) and its frozen features (row i: example i)."""

    examples: tuple[Example, ...]
    features: np.ndarray
    class_names: tuple[str, ...]
    noun: str


def dataset_features(
    data: DataConfig,
    model: ModelConfig,
    store: RunStore,
    *,
    seed: int = 42,
    weights_cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    stop: StopToken | None = None,
    folds: int | None = None,
) -> DatasetFeatures:
    """The prepared dataset's examples and their frozen features, from the workspace's feature cache or one pass.

    With `folds`, the classes are first checked to be large enough for K-fold (before any backbone work).
    """
    say = progress or (lambda text: None)
    modality = get_modality(data.modality)
    backbone_for_data(model.backbone, modality.name, modality.default_backbone)
    config = RunConfig(data=data, model=model, train=TrainConfig(seed=seed))
    split = prepare_dataset(data, store).split
    examples = tuple(example for name in SPLIT_NAMES for example in split.examples(name))
    if folds is not None:
        fold_count([e.label for e in examples], folds)

    def build() -> Any:
        keras.utils.set_random_seed(seed)  # as a run does, so random weights give a run's features
        return modality.build(model, len(split.class_names), cache_dir=weights_cache_dir)

    def log(level: str, text: str) -> None:
        say(text if level == "info" else f"{level}: {text}")

    preparation = PreparationReporter(NullListener(), "label-issues", stop or StopToken())
    features, _ = split_features(config, modality, split, modality.input_size(model), store, build, log, preparation)
    every_feature = np.concatenate([features(name) for name in SPLIT_NAMES if split.examples(name)])
    return DatasetFeatures(examples, every_feature, tuple(split.class_names), modality.noun)


def check_features(
    found: DatasetFeatures, *, folds: int = DEFAULT_FOLDS, seed: int = 42, progress: Callable[[str], None] | None = None
) -> LabelCheck:
    """`rank_label_issues` on features already computed (e.g. shared with the near-duplicate search)."""
    return _checked(found, folds=folds, seed=seed, progress=progress, started=time.perf_counter())


def _checked(
    found: DatasetFeatures, *, folds: int, seed: int, progress: Callable[[str], None] | None, started: float
) -> LabelCheck:
    k, _ = fold_count([e.label for e in found.examples], folds)
    if progress:
        progress(f"fitting {k}-fold probes on {len(found.examples)} {found.noun}s.")
    check = rank_label_issues(found.features, found.examples, found.class_names, folds=folds, seed=seed)
    return LabelCheck(
        check.checked, check.folds, check.issues, check.class_names, check.notes, time.perf_counter() - started
    )
