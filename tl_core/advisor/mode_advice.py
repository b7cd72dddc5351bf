"""Feature extraction or fine-tuning? A recommendation measured on the user's data, backbone and machine.

Three axes, each reported as a plain sentence with the number behind it:
  1. dataset size: a few hundred images favour a frozen backbone, thousands favour fine-tuning;
  2. similarity to the pretraining data, measured on frozen features of a stratified sample: a linear
     probe's validation accuracy, the between/within-class scatter ratio and, for backbones with an
     ImageNet head, how unsure that head is about the images;
  3. budget: seconds per mode from steps timed on this machine for this backbone and image size
     (`tl_core.advisor.budget`).

Example:
    >>> advice = advise(report, split, ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=64),
    ...                 TrainConfig(), cache_dir=Path("workspace/cache"))
    >>> advice.recommended_mode
    'feature-extraction'
    >>> print(format_advice(advice))
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tl_core.advisor.budget import ModeEstimate, estimate_modes, format_duration, measure_step_throughput
from tl_core.models.registry import candidate_cut_layers, get_backbone_spec
from tl_core.config import ModelConfig, TrainConfig
from tl_core.data.image_dataset import DatasetSplit, Example, ScanReport
from tl_core.errors import BackboneError
from tl_core.training.feature_cache import SharedPredictor, cached_features, examples_feature_key
from tl_core.data.image_cache import build_image_cache
from tl_core.models.transfer_model import build_transfer_model
from tl_core.models.preprocessing import build_preprocessing
from tl_core.training.runner import precision_policy

SMALL_DATASET_MAX_IMAGES = 1000
LARGE_DATASET_MIN_IMAGES = 5000
LARGE_DATASET_MIN_PER_CLASS = 500
# Probe skill = (accuracy - chance) / (1 - chance): comparable across class counts and imbalance.
HIGH_PROBE_SKILL = 0.8
LOW_PROBE_SKILL = 0.5
# Mean entropy of the ImageNet head as a fraction of log(1000): low means "looks like ImageNet".
FAMILIAR_ENTROPY = 0.35
UNFAMILIAR_ENTROPY = 0.6
ENTROPY_MAX_IMAGES = 200
MODE_ORDER = ("feature-extraction", "fine-tune", "full")


@dataclass(frozen=True)
class Advice:
    """The recommendation, the sentences that justify it and the measurements behind them."""

    recommended_mode: str
    reasons: tuple[str, ...]
    estimates: dict[str, ModeEstimate]
    probe_accuracy: float | None
    separability: float | None  # trace(between-class scatter) / trace(within-class scatter)
    pretrained_entropy: float | None  # mean ImageNet-head entropy / log(1000), in [0, 1]
    train_images: int
    num_classes: int
    chance_accuracy: float | None = None  # the probe's majority-class baseline
    backbone: str = ""
    image_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus `estimated_seconds` and `images_per_second` as {mode: value}."""
        raw = dataclasses.asdict(self)
        raw["reasons"] = list(self.reasons)
        raw["estimated_seconds"] = {mode: e.estimated_seconds for mode, e in self.estimates.items()}
        raw["images_per_second"] = {mode: e.images_per_second for mode, e in self.estimates.items()}
        return raw


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
    chosen = [int(i) for label in sorted(by_class) for i in rng.choice(by_class[label], min(quotas[label], len(by_class[label])), replace=False)]
    return tuple(examples[i] for i in sorted(chosen))


def linear_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, num_classes: int, *,
                          inverse_regularization: float = 1.0, iterations: int = 1000) -> float:
    """Validation accuracy of L2-regularised softmax (logistic) regression on standardised features.

    The objective is scikit-learn's `LogisticRegression(C=inverse_regularization)`, solved in the
    orthonormal basis of the features' SVD: there the loss curvature has one bound in every direction,
    so accelerated proximal gradient steps (exact for the L2 term) converge without tuning.

    Returns:
        The fraction of `val_y` predicted correctly.
    """
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    std = np.where(std > 1e-6 * std.max(), std, 1.0)  # relative: random-weight features can be ~1e-6 in scale
    design = ((train_x - mean) / std).astype(np.float64)
    count = len(design)
    left, singular, right = np.linalg.svd(design, full_matrices=False)
    kept = singular > 1e-8 * max(float(singular.max(initial=0.0)), 1e-30)
    left, singular, right = left[:, kept], singular[kept], right[kept]
    # centred columns: a constant column completes the orthonormal basis, for the (unregularised) bias
    basis = np.hstack([left, np.full((count, 1), 1.0 / math.sqrt(count))])
    step = 2.0 * count  # 1 / Lipschitz constant: softmax curvature <= 1/2, mean over `count` rows
    shrink = 1.0 / (1.0 + step / (inverse_regularization * count) / np.append(singular**2, np.inf))[:, None]
    targets = np.eye(num_classes)[train_y]
    coefficients = np.zeros((basis.shape[1], num_classes))
    extrapolated, momentum = coefficients.copy(), 1.0
    for _ in range(iterations):
        logits = basis @ extrapolated
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        updated = (extrapolated - step * basis.T @ (probabilities - targets) / count) * shrink
        next_momentum = (1.0 + math.sqrt(1.0 + 4.0 * momentum**2)) / 2.0
        extrapolated = updated + (momentum - 1.0) / next_momentum * (updated - coefficients)
        coefficients, momentum = updated, next_momentum
    weights = right.T @ (coefficients[:-1] / singular[:, None])
    logits = ((val_x - mean) / std) @ weights + coefficients[-1] / math.sqrt(count)
    return float(np.mean(np.argmax(logits, axis=1) == val_y))


def scatter_ratio(features: np.ndarray, labels: np.ndarray) -> float:
    """trace(between-class scatter) / trace(within-class scatter): ~0 for random labels, >1 for clear clusters."""
    overall = features.mean(axis=0)
    between = within = 0.0
    for label in np.unique(labels):
        members = features[labels == label]
        centre = members.mean(axis=0)
        between += len(members) * float(np.sum((centre - overall) ** 2))
        within += float(np.sum((members - centre) ** 2))
    return between / within if within > 0 else math.inf


def normalized_entropy(probabilities: np.ndarray) -> float:
    """Mean entropy of probability rows over log(number of classes): 0 = one-hot, 1 = uniform."""
    clipped = np.clip(probabilities.astype(np.float64), 1e-12, 1.0)
    return float(np.mean(-np.sum(clipped * np.log(clipped), axis=1)) / math.log(probabilities.shape[1]))


def _probe_split(split: DatasetSplit, max_images: int) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
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


def _pooled_extractor(backbone: keras.Model, layer_name: str, preprocessing: str, image_size: int, pooling: str) -> keras.Model:
    """uint8 image -> preprocessing -> backbone up to `layer_name` -> pooling, as `build_transfer_model` wires it."""
    cut = keras.Model(backbone.inputs, backbone.get_layer(layer_name).output)
    images = keras.Input((image_size, image_size, 3), dtype="uint8")
    feature_map = cut(build_preprocessing(preprocessing)(keras.layers.Rescaling(1.0)(images)), training=False)
    if len(feature_map.shape) == 2:
        return keras.Model(images, feature_map)
    pool = keras.layers.GlobalMaxPooling2D() if pooling == "max" else keras.layers.GlobalAveragePooling2D()
    return keras.Model(images, pool(feature_map))


def _sample_features(extractor: keras.Model, samples: Sequence[Sequence[Example]], split: DatasetSplit, model_config: ModelConfig,
                     image_size: int, cut_layer: str | None, seed: int, cache_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(features, labels) per sample, through the decoded-image and feature caches under `cache_dir`."""
    index = {name: i for i, name in enumerate(split.class_names)}
    results = []
    predict = SharedPredictor(extractor)  # the samples share one traced graph
    for examples in samples:
        images = build_image_cache(examples, image_size, cache_dir / "images").images
        # Random weights get their own tag: a run's random draw may differ from the advisor's.
        key = examples_feature_key(examples, model_config, image_size, cut_layer=cut_layer, seed=seed, random_weights_tag=":advisor")
        features = cached_features(extractor, images, cache_dir=cache_dir / "features", key=key, predict=predict).features
        results.append((features, np.array([index[e.label] for e in examples], dtype=np.int32)))
    return results


@dataclass
class Measurements:
    """What `recommend` decides from; a measurement is None when it could not be taken."""

    train_images: int
    smallest_class: int
    probe_accuracy: float | None = None
    chance_accuracy: float | None = None
    separability: float | None = None
    pretrained_entropy: float | None = None
    image_size: int | None = None
    median_side: float | None = None  # shorter side of the median image, in pixels
    fine_tune_layers: int = 20
    estimates: dict[str, ModeEstimate] = field(default_factory=dict)
    time_budget_s: float | None = None


def recommend(m: Measurements) -> tuple[str, tuple[str, ...]]:
    """The mode to train with and the reasons: size sets the range, the probe picks within it, the budget caps it."""
    large = m.train_images >= LARGE_DATASET_MIN_IMAGES or m.smallest_class >= LARGE_DATASET_MIN_PER_CLASS
    small = not large and m.train_images <= SMALL_DATASET_MAX_IMAGES
    counted = f"{m.train_images} training images ({m.smallest_class} in the smallest class)"
    if small:
        reasons = [f"{counted} is a small set: fine-tuning millions of backbone weights on it tends to overfit, so train a head on frozen features."]
    elif large:
        reasons = [f"{counted} is a large set: enough to adapt the backbone itself without overfitting."]
    else:
        reasons = [f"{counted} is a medium-sized set: enough to adapt the top {m.fine_tune_layers} backbone layers at a low learning rate once the head has converged."]
    skill = None
    if m.probe_accuracy is not None and m.chance_accuracy is not None:
        skill = (m.probe_accuracy - m.chance_accuracy) / max(1e-9, 1.0 - m.chance_accuracy)
        measured = f"Linear probe on frozen features reaches {m.probe_accuracy:.2f} validation accuracy (chance {m.chance_accuracy:.2f})"
        if skill >= HIGH_PROBE_SKILL:
            reasons.append(f"{measured}: the pretrained features already separate your classes.")
        elif skill >= LOW_PROBE_SKILL:
            reasons.append(f"{measured}: the frozen features capture part of the task; adapting the backbone should add accuracy.")
        else:
            reasons.append(f"{measured}: the frozen features barely separate your classes, so the task differs from what the backbone learned.")
            if small:
                reasons.append(f"With {m.train_images} images fine-tuning is unlikely to fix that: try an earlier cut layer (compare cut depths) or another backbone.")
    if m.separability is not None:
        verdict = "classes form distinct clusters" if m.separability >= 1.0 else "classes overlap, though a linear head may still split them" if m.separability >= 0.2 else "classes overlap heavily"
        reasons.append(f"Between-class to within-class scatter of the features is {m.separability:.2f}: {verdict}.")
    if m.pretrained_entropy is not None:
        hint = ("is confident on your images: a hint they resemble its pretraining photos" if m.pretrained_entropy <= FAMILIAR_ENTROPY
                else "is unsure about your images: a hint they differ from its pretraining photos" if m.pretrained_entropy >= UNFAMILIAR_ENTROPY
                else "is moderately sure about your images")
        reasons.append(f"The pretrained ImageNet head {hint} (mean prediction entropy {m.pretrained_entropy:.2f} of the maximum).")
    if m.median_side is not None and m.image_size is not None and 2 * m.median_side < m.image_size:
        reasons.append(f"Your images are {m.median_side:.0f} px on the short side (median), upscaled to {m.image_size} px: blurrier than the backbone's pretraining photos.")

    if small:
        mode = "feature-extraction"
    elif skill is not None and skill >= HIGH_PROBE_SKILL:
        mode = "fine-tune" if large else "feature-extraction"
    elif large and (skill is None or skill < LOW_PROBE_SKILL or (m.pretrained_entropy or 0.0) >= UNFAMILIAR_ENTROPY):
        mode = "full"
    else:
        mode = "fine-tune"

    if m.estimates:
        times = ", ".join(f"{name} {format_duration(e.estimated_seconds)}" for name, e in m.estimates.items())
        reasons.append(f"Estimated on this machine: {times} ({m.estimates['feature-extraction'].images_per_second:.0f} images/s "
                       f"through the frozen backbone, {m.estimates['full'].images_per_second:.0f} images/s training it fully).")
        if m.time_budget_s is not None and m.estimates[mode].estimated_seconds > m.time_budget_s:
            cheaper = [name for name in MODE_ORDER[: MODE_ORDER.index(mode)] if m.estimates[name].estimated_seconds <= m.time_budget_s]
            fallback = cheaper[-1] if cheaper else "feature-extraction"
            reasons.append(f"{mode} would take about {format_duration(m.estimates[mode].estimated_seconds)}, over your {format_duration(m.time_budget_s)} budget: {fallback} instead.")
            mode = fallback
    return mode, tuple(reasons)


def pretrained_head_entropy(model_config: ModelConfig, examples: Sequence[Example], image_size: int, cache_dir: Path, weights_cache_dir: Path | None) -> float | None:
    """How unsure the backbone's packaged ImageNet head is about `examples` (a proxy for "unlike ImageNet").

    Args:
        model_config: the backbone and weights; only `imagenet` weights of an offline entry with a head count.
        examples: images to classify (a sample of the training set).
        image_size: side the images are decoded at and the classifier is built for.
        cache_dir: cache root; decoded images go to `images/`.
        weights_cache_dir: where converted offline weights are cached.

    Returns:
        Mean prediction entropy over log(1000), in [0, 1]; None for backbones without an ImageNet head.
    """
    from tl_core.models.weights import get_offline_weights
    from tl_core.models.weights.pretrained import scale_pixels

    spec = get_backbone_spec(model_config.backbone)
    if spec.offline_weights is None or model_config.weights.strip().lower() != "imagenet" or not examples:
        return None
    weights = get_offline_weights(spec.offline_weights)
    if not weights.has_imagenet_head or not weights.is_installed():
        return None
    images = build_image_cache(examples, image_size, cache_dir / "images").images
    classifier = weights.build_classifier(image_size, cache_dir=weights_cache_dir)
    return normalized_entropy(classifier.predict(scale_pixels(np.asarray(images), weights.preprocessing), batch_size=32, verbose=0))


def advise(report: ScanReport, split: DatasetSplit, model_config: ModelConfig, train_config: TrainConfig, *, cache_dir: Path,
           max_probe_images: int = 600, measure_throughput: bool = True, time_budget_s: float | None = None,
           weights_cache_dir: Path | None = None, progress: Callable[[str], None] | None = None) -> Advice:
    """Recommend a training mode for `split` with `model_config`, measuring the features and this machine.

    Args:
        report: the dataset scan (image sizes).
        split: the split training will use.
        model_config: backbone, weights, size, cut layer and pooling.
        train_config: epochs, fine-tune epochs and layers, batch size (for the time estimates).
        cache_dir: cache root; decoded images go to `images/`, features to `features/` (the workspace's
            `cache` folder shares them with training runs).
        max_probe_images: cap on the stratified sample the probe uses (up to a third from validation).
        measure_throughput: time this machine (~10-30 s for small backbones, mostly graph building);
            False leaves `estimates` empty.
        time_budget_s: step down to a cheaper mode when the recommended one is estimated to take longer.
        weights_cache_dir: where converted offline weights are cached.
        progress: called with a short description of each stage.

    Returns:
        The `Advice`.
    """
    say = progress or (lambda text: None)
    num_classes = len(split.class_names)
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    keras.utils.set_random_seed(train_config.seed)  # as the runner does, so random weights are reproducible
    with precision_policy(train_config.mixed_precision and on_gpu):
        say("building the model")
        transfer_model = build_transfer_model(model_config, num_classes, cache_dir=weights_cache_dir)
        image_size = transfer_model.image_size
        train_sample, val_sample = _probe_split(split, max_probe_images)
        probe_accuracy = chance = separability = None
        if train_sample and val_sample:
            say(f"extracting frozen features of {len(train_sample) + len(val_sample)} sample images")
            (train_x, train_y), (val_x, val_y) = _sample_features(transfer_model.feature_extractor, (train_sample, val_sample), split,
                                                                  model_config, image_size, model_config.cut_layer, train_config.seed, Path(cache_dir))
            probe_accuracy = linear_probe_accuracy(train_x, train_y, val_x, val_y, num_classes)
            chance = float(np.bincount(val_y, minlength=num_classes).max() / len(val_y))
            separability = scatter_ratio(np.vstack([train_x, val_x]), np.concatenate([train_y, val_y]))
        entropy_sample = stratified_sample(train_sample, ENTROPY_MAX_IMAGES, split.seed)
        entropy = pretrained_head_entropy(model_config, entropy_sample, image_size, Path(cache_dir), weights_cache_dir)
        estimates: dict[str, ModeEstimate] = {}
        if measure_throughput:
            say("timing feature extraction and training steps on this machine")
            head_on_features = train_config.use_feature_cache and not model_config.augment
            throughput = measure_step_throughput(transfer_model, train_config, head_on_features=head_on_features, jit_compile=train_config.jit_compile and on_gpu)
            estimates = estimate_modes(throughput, split.sizes(), train_config)
    stats = report.size_stats
    mode, reasons = recommend(Measurements(
        len(split.train), min(split.class_counts("train").values()), probe_accuracy, chance, separability, entropy, image_size,
        min(stats["width_median"], stats["height_median"]) if stats else None, train_config.fine_tune_layers, estimates, time_budget_s,
    ))
    return Advice(mode, reasons, estimates, probe_accuracy, separability, entropy, len(split.train), num_classes, chance, model_config.backbone, image_size)


def probe_cut_depths(split: DatasetSplit, model_config: ModelConfig, *, cache_dir: Path, layers: list[str] | None = None,
                     max_probe_images: int = 400, seed: int = 42, weights_cache_dir: Path | None = None) -> list[tuple[str, float]]:
    """Linear-probe validation accuracy of the features cut at several backbone layers.

    Args:
        split: the dataset split (a stratified sample of it is used).
        model_config: backbone, weights, size and pooling; its `cut_layer` is ignored.
        cache_dir: cache root, as in `advise`.
        layers: layer names; None takes 3 evenly spaced block outputs and the final layer.
        max_probe_images: cap on the sample.
        seed: seed for random (`weights="none"`) backbones.
        weights_cache_dir: where converted offline weights are cached.

    Returns:
        (layer name, probe accuracy) in the order probed; the final layer's name means "no cut".

    Raises:
        BackboneError: a layer the backbone does not have, or too few images to probe.
    """
    keras.utils.set_random_seed(seed)
    full_config = dataclasses.replace(model_config, cut_layer=None)
    transfer_model = build_transfer_model(full_config, len(split.class_names), cache_dir=weights_cache_dir)
    backbone = transfer_model.backbone
    candidates = candidate_cut_layers(backbone)
    final_layer = backbone.layers[-1].name
    if layers is None:
        picks = [candidates[round((len(candidates) - 1) * fraction)] for fraction in (0.25, 0.5, 0.75)] if candidates else []
        layers = list(dict.fromkeys([*picks, final_layer]))
    names = {layer.name for layer in backbone.layers}
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise BackboneError(f"{model_config.backbone} has no layer '{unknown[0]}'. Block outputs to cut at: {', '.join(candidates) or 'none'}; or {final_layer} (no cut).")
    train_sample, val_sample = _probe_split(split, max_probe_images)
    if not train_sample or not val_sample:
        raise BackboneError(f"Too few images to compare cut depths ({len(split.train)} training images): add images so each class has at least 3.")
    results = []
    for name in layers:
        extractor = _pooled_extractor(backbone, name, transfer_model.spec.preprocessing, transfer_model.image_size, model_config.pooling)
        (train_x, train_y), (val_x, val_y) = _sample_features(extractor, (train_sample, val_sample), split, full_config, transfer_model.image_size,
                                                              None if name == final_layer else name, seed, Path(cache_dir))
        results.append((name, linear_probe_accuracy(train_x, train_y, val_x, val_y, len(split.class_names))))
    return results


def format_advice(advice: Advice) -> str:
    """The advice for a terminal: recommendation, reasons, then a table of time estimates."""
    where = f"  ({advice.backbone} at {advice.image_size} px)" if advice.backbone else ""
    lines = [f"Recommended mode: {advice.recommended_mode}{where}", "", "Why:", *(f"  - {reason}" for reason in advice.reasons)]
    if advice.estimates:
        lines += ["", f"{'mode':<20} {'estimated time':>14} {'images/s':>9}"]
        for name, estimate in advice.estimates.items():
            marker = "  <- recommended" if name == advice.recommended_mode else ""
            lines.append(f"{name:<20} {format_duration(estimate.estimated_seconds):>14} {estimate.images_per_second:>9.0f}{marker}")
    return "\n".join(lines)
