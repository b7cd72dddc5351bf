"""Linear probes on frozen features: how well a backbone's features, cut at some layer, separate the user's classes.

A stratified sample of the split goes through the backbone once (decoded images and features are cached in
the workspace, as a run caches them); scikit-learn's `LogisticRegression` on standardised features is then
scored on the validation sample. The mode advisor (`tl_core.advisor.mode_advice`) probes the chosen cut;
`probe_cut_depths` compares several depths.

Both report their steps through `AdvisorSteps` (words for the CLI, `StageStarted` and `PreparationProgress`
events for a job's progress) and stop cooperatively: between steps, and per batch of decoding and features.

Example:
    >>> probe_cut_depths(split, ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=48), cache_dir=Path("ws/cache"))
    [('block_5_add', 0.61), ('block_9_add', 0.83), ('block_13_expand_relu', 0.9), ('out_relu', 0.94)]
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from sklearn.feature_selection import VarianceThreshold
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from tl_core.advisor.results import DEPTH_FRACTIONS
from tl_core.config import ModelConfig
from tl_core.data.image_cache import build_image_cache
from tl_core.data.types import DatasetSplit, Example
from tl_core.errors import BackboneError
from tl_core.events import NullListener, StageStarted, TrainingListener
from tl_core.models.blocks import candidate_cut_layers
from tl_core.models.preprocessing import build_preprocessing
from tl_core.models.transfer_model import build_transfer_model
from tl_core.stopping import StopToken
from tl_core.training.feature_cache import SharedPredictor, cached_features, examples_feature_key
from tl_core.training.preparation import PreparationReporter, ProgressCallback

# A feature whose spread is below this fraction of the widest feature's carries nothing but rounding noise
# (random-weight features can be ~1e-6 in scale): it is dropped rather than standardised up to unit variance.
RELATIVE_SPREAD_FLOOR = 1e-6


class AdvisorStopped(Exception):
    """A stop request arrived between two of the advisor's steps (a stop, not a failure)."""


@dataclass
class AdvisorSteps:
    """Where the advisor reports its steps and learns of a stop.

    Args:
        progress: called with each step in words (the CLI prints them).
        listener: receives each step as `StageStarted` and decoding and feature extraction as `PreparationProgress`.
        stop: checked at each step (raising `AdvisorStopped`) and each batch (raising `PreparationStopped`).
        job_id: the `run_id` of the events.
    """

    progress: Callable[[str], None] | None = None
    listener: TrainingListener | None = None
    stop: StopToken | None = None
    job_id: str = "advisor"

    def start(self, description: str) -> None:
        self.check_stop()
        if self.progress is not None:
            self.progress(description)
        if self.listener is not None:
            self.listener.on_event(StageStarted(self.job_id, description))

    def check_stop(self) -> None:
        if self.stop is not None and self.stop.should_stop():
            raise AdvisorStopped("Stopped by request before the advisor finished.")

    def callback(self, step: str, split: str) -> ProgressCallback | None:
        """Per-batch progress (and stop) for decoding or feature extraction of one sample; None when nobody listens."""
        if self.listener is None and self.stop is None:
            return None
        return PreparationReporter(self.listener or NullListener(), self.job_id, self.stop or StopToken()).callback(
            step, split
        )


def stratified_sample(examples: Sequence[Example], cap: int, seed: int) -> tuple[Example, ...]:
    """At most `cap` examples, every class kept in proportion (at least one each), seeded; input order kept."""
    if len(examples) <= cap:
        return tuple(examples)
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        by_class[example.label].append(index)
    shares = {label: cap * len(indices) / len(examples) for label, indices in by_class.items()}
    quotas = {label: max(1, math.floor(share)) for label, share in shares.items()}
    # the rounding remainder goes to the classes with the largest fractional share
    for label in sorted(shares, key=lambda name: shares[name] % 1, reverse=True)[: max(0, cap - sum(quotas.values()))]:
        quotas[label] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        int(i)
        for label in sorted(by_class)
        for i in rng.choice(by_class[label], min(quotas[label], len(by_class[label])), replace=False)
    ]
    return tuple(examples[i] for i in sorted(chosen))


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    inverse_regularization: float = 1.0,
    iterations: int = 1000,
) -> float:
    """Validation accuracy of L2-regularised logistic regression on standardised features.

    scikit-learn's `LogisticRegression(C=inverse_regularization)` (multinomial, L-BFGS) after `StandardScaler`,
    in float64; features with (almost) no spread are dropped first (`RELATIVE_SPREAD_FLOOR`).

    Returns:
        The fraction of `val_y` predicted correctly (`sklearn.metrics.accuracy_score`).
    """
    train_x, val_x = np.asarray(train_x, np.float64), np.asarray(val_x, np.float64)
    probe = linear_probe(train_x, inverse_regularization=inverse_regularization, iterations=iterations)
    probe.fit(train_x, train_y)
    return float(accuracy_score(val_y, probe.predict(val_x)))


def linear_probe(features: np.ndarray, *, inverse_regularization: float = 1.0, iterations: int = 1000) -> Pipeline:
    """An unfitted probe for features like `features`: near-constant ones dropped, the rest standardised, then
    `LogisticRegression(C=inverse_regularization)`. `features` set only the spread below which a feature is dropped.
    """
    widest = float(np.asarray(features, np.float64).std(axis=0).max(initial=0.0))
    # VarianceThreshold keeps variance > threshold; with no spread at all every feature is kept (all zero once centred).
    steps = [VarianceThreshold((RELATIVE_SPREAD_FLOOR * widest) ** 2)] if widest > 0 else []
    return make_pipeline(*steps, StandardScaler(), LogisticRegression(C=inverse_regularization, max_iter=iterations))


def scatter_ratio(features: np.ndarray, labels: np.ndarray) -> float:
    """trace(between-class scatter) / trace(within-class scatter): ~0 for random labels, >1 for clear clusters.

    It is scikit-learn's `calinski_harabasz_score` without its degrees of freedom, (k - 1) / (n - k), which
    would make sets of different sizes incomparable.
    """
    overall = features.mean(axis=0)
    between = within = 0.0
    for label in np.unique(labels):
        members = features[labels == label]
        centre = members.mean(axis=0)
        between += len(members) * float(np.sum((centre - overall) ** 2))
        within += float(np.sum((members - centre) ** 2))
    return between / within if within > 0 else math.inf


def probe_split(split: DatasetSplit, max_images: int) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """(train sample, validation sample); without validation images a third of the train sample is held out."""
    val = stratified_sample(split.val, max_images // 3, split.seed)
    train = stratified_sample(split.train, max_images - len(val), split.seed)
    if val:
        return train, val
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(train):
        by_class[example.label].append(index)
    held = {i for indices in by_class.values() if len(indices) >= 2 for i in indices[: max(1, len(indices) // 3)]}
    return tuple(e for i, e in enumerate(train) if i not in held), tuple(e for i, e in enumerate(train) if i in held)


def pooled_extractor(
    backbone: keras.Model, layer_name: str, preprocessing: str, image_size: int, pooling: str
) -> keras.Model:
    """uint8 image -> preprocessing -> backbone up to `layer_name` -> pooling, as `build_transfer_model` wires it."""
    cut = keras.Model(backbone.inputs, backbone.get_layer(layer_name).output)
    images = keras.Input((image_size, image_size, 3), dtype="uint8")
    feature_map = cut(build_preprocessing(preprocessing)(keras.layers.Rescaling(1.0)(images)), training=False)
    if len(feature_map.shape) == 2:
        return keras.Model(images, feature_map)
    pool = keras.layers.GlobalMaxPooling2D() if pooling == "max" else keras.layers.GlobalAveragePooling2D()
    return keras.Model(images, pool(feature_map))


def sample_features(
    extractor: keras.Model,
    samples: Sequence[tuple[str, Sequence[Example]]],
    split: DatasetSplit,
    model_config: ModelConfig,
    image_size: int,
    cut_layer: str | None,
    seed: int,
    cache_dir: Path,
    steps: AdvisorSteps,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(features, labels) per named sample, through the decoded-image and feature caches under `cache_dir`."""
    index = {name: i for i, name in enumerate(split.class_names)}
    results = []
    predict = SharedPredictor(extractor)  # the samples share one traced graph
    for name, examples in samples:
        images = build_image_cache(
            examples, image_size, cache_dir / "images", progress=steps.callback("decode", name)
        ).images
        # Random weights get their own tag: a run's random draw may differ from the advisor's.
        key = examples_feature_key(
            examples, model_config, image_size, cut_layer=cut_layer, seed=seed, random_weights_tag=":advisor"
        )
        features = cached_features(
            extractor,
            images,
            cache_dir=cache_dir / "features",
            key=key,
            predict=predict,
            progress=steps.callback("features", name),
        ).features
        results.append((features, np.array([index[e.label] for e in examples], dtype=np.int32)))
    return results


def probe_cut_depths(
    split: DatasetSplit,
    model_config: ModelConfig,
    *,
    cache_dir: Path,
    layers: list[str] | None = None,
    max_probe_images: int = 400,
    seed: int = 42,
    weights_cache_dir: Path | None = None,
    steps: AdvisorSteps | None = None,
) -> list[tuple[str, float]]:
    """Linear-probe validation accuracy of the features cut at several backbone layers.

    Args:
        split: the dataset split (a stratified sample of it is used).
        model_config: backbone, weights, size and pooling; its `cut_layer` is ignored.
        cache_dir: cache root, as in `advise`.
        layers: layer names; None takes 3 evenly spaced block outputs and the final layer.
        max_probe_images: cap on the sample.
        seed: seed for random (`weights="none"`) backbones.
        weights_cache_dir: where converted offline weights are cached.
        steps: where the steps are reported and a stop is noticed (default: silent, never stopped).

    Returns:
        (layer name, probe accuracy) in the order probed; the final layer's name means "no cut".

    Raises:
        BackboneError: a layer the backbone does not have, or too few images to probe.
        AdvisorStopped, PreparationStopped: `steps.stop` was set.
    """
    steps = steps or AdvisorSteps()
    steps.start("building the model")
    keras.utils.set_random_seed(seed)
    full_config = dataclasses.replace(model_config, cut_layer=None)
    transfer_model = build_transfer_model(full_config, len(split.class_names), cache_dir=weights_cache_dir)
    backbone = transfer_model.backbone
    candidates = candidate_cut_layers(backbone)
    final_layer = backbone.layers[-1].name
    if layers is None:
        picks = (
            [candidates[round((len(candidates) - 1) * fraction)] for fraction in DEPTH_FRACTIONS] if candidates else []
        )
        layers = list(dict.fromkeys([*picks, final_layer]))
    names = {layer.name for layer in backbone.layers}
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise BackboneError(
            f"{model_config.backbone} has no layer '{unknown[0]}'. Block outputs to cut at: {', '.join(candidates) or 'none'}; or {final_layer} (no cut)."
        )
    train_sample, val_sample = probe_split(split, max_probe_images)
    if not train_sample or not val_sample:
        raise BackboneError(
            f"Too few images to compare cut depths ({len(split.train)} training images): add images so each class has at least 3."
        )
    results = []
    for number, name in enumerate(layers, start=1):
        steps.start(f"probing {name} (depth {number} of {len(layers)})")
        extractor = pooled_extractor(
            backbone, name, transfer_model.spec.preprocessing, transfer_model.image_size, model_config.pooling
        )
        (train_x, train_y), (val_x, val_y) = sample_features(
            extractor,
            (("train", train_sample), ("val", val_sample)),
            split,
            full_config,
            transfer_model.image_size,
            None if name == final_layer else name,
            seed,
            Path(cache_dir),
            steps,
        )
        results.append((name, linear_probe_accuracy(train_x, train_y, val_x, val_y)))
    return results
