"""Feature extraction or fine-tuning? A recommendation measured on the user's data, backbone and machine.

Three axes, each reported as a plain sentence with the number behind it:
  1. dataset size: a few hundred images favour a frozen backbone, thousands favour fine-tuning;
  2. similarity to the pretraining data, measured on frozen features of a stratified sample: a linear
     probe's validation accuracy, the between/within-class scatter ratio and, for backbones with an
     ImageNet head, how unsure that head is about the images;
  3. budget: seconds per mode from steps timed on this machine for this backbone and image size
     (`tl_core.advisor.budget`).

The measurements are the linear probes of `tl_core.advisor.probe`; the result is plain data
(`tl_core.advisor.results.Advice`) that an advisory job writes as JSON for the Model page.

Example:
    >>> advice = advise(report, split, ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=64),
    ...                 TrainConfig(), cache_dir=Path("workspace/cache"))
    >>> advice.recommended_mode
    'feature-extraction'
    >>> print(format_advice(advice))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tl_core.advisor.budget import estimate_modes, format_duration, measure_step_throughput
from tl_core.advisor.probe import (
    AdvisorSteps,
    linear_probe_accuracy,
    probe_split,
    sample_features,
    scatter_ratio,
    stratified_sample,
)
from tl_core.advisor.results import Advice, ModeEstimate
from tl_core.config import ModelConfig, TrainConfig
from tl_core.data.image_cache import build_image_cache
from tl_core.data.types import DatasetSplit, Example, ScanReport
from tl_core.models.registry import get_backbone_spec
from tl_core.models.transfer_model import build_transfer_model
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


def normalized_entropy(probabilities: np.ndarray) -> float:
    """Mean entropy of probability rows over log(number of classes): 0 = one-hot, 1 = uniform."""
    clipped = np.clip(probabilities.astype(np.float64), 1e-12, 1.0)
    return float(np.mean(-np.sum(clipped * np.log(clipped), axis=1)) / math.log(probabilities.shape[1]))


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
        reasons = [
            f"{counted} is a small set: fine-tuning millions of backbone weights on it tends to overfit, so train a head on frozen features."
        ]
    elif large:
        reasons = [f"{counted} is a large set: enough to adapt the backbone itself without overfitting."]
    else:
        reasons = [
            f"{counted} is a medium-sized set: enough to adapt the top {m.fine_tune_layers} backbone layers at a low learning rate once the head has converged."
        ]
    skill = None
    if m.probe_accuracy is not None and m.chance_accuracy is not None:
        skill = (m.probe_accuracy - m.chance_accuracy) / max(1e-9, 1.0 - m.chance_accuracy)
        measured = f"Linear probe on frozen features reaches {m.probe_accuracy:.2f} validation accuracy (chance {m.chance_accuracy:.2f})"
        if skill >= HIGH_PROBE_SKILL:
            reasons.append(f"{measured}: the pretrained features already separate your classes.")
        elif skill >= LOW_PROBE_SKILL:
            reasons.append(
                f"{measured}: the frozen features capture part of the task; adapting the backbone should add accuracy."
            )
        else:
            reasons.append(
                f"{measured}: the frozen features barely separate your classes, so the task differs from what the backbone learned."
            )
            if small:
                reasons.append(
                    f"With {m.train_images} images fine-tuning is unlikely to fix that: try an earlier cut layer (compare cut depths) or another backbone."
                )
    if m.separability is not None:
        verdict = (
            "classes form distinct clusters"
            if m.separability >= 1.0
            else "classes overlap, though a linear head may still split them"
            if m.separability >= 0.2
            else "classes overlap heavily"
        )
        reasons.append(f"Between-class to within-class scatter of the features is {m.separability:.2f}: {verdict}.")
    if m.pretrained_entropy is not None:
        hint = (
            "is confident on your images: a hint they resemble its pretraining photos"
            if m.pretrained_entropy <= FAMILIAR_ENTROPY
            else "is unsure about your images: a hint they differ from its pretraining photos"
            if m.pretrained_entropy >= UNFAMILIAR_ENTROPY
            else "is moderately sure about your images"
        )
        reasons.append(
            f"The pretrained ImageNet head {hint} (mean prediction entropy {m.pretrained_entropy:.2f} of the maximum)."
        )
    if m.median_side is not None and m.image_size is not None and 2 * m.median_side < m.image_size:
        reasons.append(
            f"Your images are {m.median_side:.0f} px on the short side (median), upscaled to {m.image_size} px: blurrier than the backbone's pretraining photos."
        )

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
        reasons.append(
            f"Estimated on this machine: {times} ({m.estimates['feature-extraction'].images_per_second:.0f} images/s "
            f"through the frozen backbone, {m.estimates['full'].images_per_second:.0f} images/s training it fully)."
        )
        if m.time_budget_s is not None and m.estimates[mode].estimated_seconds > m.time_budget_s:
            cheaper = [
                name
                for name in MODE_ORDER[: MODE_ORDER.index(mode)]
                if m.estimates[name].estimated_seconds <= m.time_budget_s
            ]
            fallback = cheaper[-1] if cheaper else "feature-extraction"
            reasons.append(
                f"{mode} would take about {format_duration(m.estimates[mode].estimated_seconds)}, over your {format_duration(m.time_budget_s)} budget: {fallback} instead."
            )
            mode = fallback
    return mode, tuple(reasons)


def pretrained_head_entropy(
    model_config: ModelConfig,
    examples: Sequence[Example],
    image_size: int,
    cache_dir: Path,
    weights_cache_dir: Path | None,
) -> float | None:
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
    return normalized_entropy(
        classifier.predict(scale_pixels(np.asarray(images), weights.preprocessing), batch_size=32, verbose=0)
    )


def advise(
    report: ScanReport,
    split: DatasetSplit,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    cache_dir: Path,
    max_probe_images: int = 600,
    measure_throughput: bool = True,
    time_budget_s: float | None = None,
    weights_cache_dir: Path | None = None,
    steps: AdvisorSteps | None = None,
) -> Advice:
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
        steps: where each step is reported and a stop is noticed (default: silent, never stopped).

    Returns:
        The `Advice`.

    Raises:
        AdvisorStopped, PreparationStopped: `steps.stop` was set.
    """
    steps = steps or AdvisorSteps()
    num_classes = len(split.class_names)
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    keras.utils.set_random_seed(train_config.seed)  # as the runner does, so random weights are reproducible
    with precision_policy(train_config.mixed_precision and on_gpu):
        steps.start("building the model")
        transfer_model = build_transfer_model(model_config, num_classes, cache_dir=weights_cache_dir)
        image_size = transfer_model.image_size
        train_sample, val_sample = probe_split(split, max_probe_images)
        probe_accuracy = chance = separability = None
        if train_sample and val_sample:
            steps.start(f"extracting frozen features of {len(train_sample) + len(val_sample)} sample images")
            (train_x, train_y), (val_x, val_y) = sample_features(
                transfer_model.feature_extractor,
                (("train", train_sample), ("val", val_sample)),
                split,
                model_config,
                image_size,
                model_config.cut_layer,
                train_config.seed,
                Path(cache_dir),
                steps,
            )
            probe_accuracy = linear_probe_accuracy(train_x, train_y, val_x, val_y)
            chance = float(np.bincount(val_y, minlength=num_classes).max() / len(val_y))
            separability = scatter_ratio(np.vstack([train_x, val_x]), np.concatenate([train_y, val_y]))
        entropy_sample = stratified_sample(train_sample, ENTROPY_MAX_IMAGES, split.seed)
        steps.check_stop()
        entropy = pretrained_head_entropy(model_config, entropy_sample, image_size, Path(cache_dir), weights_cache_dir)
        estimates: dict[str, ModeEstimate] = {}
        if measure_throughput:
            steps.start("timing feature extraction and training steps on this machine")
            head_on_features = train_config.use_feature_cache and not model_config.augment
            throughput = measure_step_throughput(
                transfer_model,
                train_config,
                head_on_features=head_on_features,
                jit_compile=train_config.jit_compile and on_gpu,
                between_steps=steps.check_stop,
            )
            estimates = estimate_modes(throughput, split.sizes(), train_config)
    stats = report.size_stats
    mode, reasons = recommend(
        Measurements(
            len(split.train),
            min(split.class_counts("train").values()),
            probe_accuracy,
            chance,
            separability,
            entropy,
            image_size,
            min(stats["width_median"], stats["height_median"]) if stats else None,
            train_config.fine_tune_layers,
            estimates,
            time_budget_s,
        )
    )
    return Advice(
        mode,
        reasons,
        estimates,
        probe_accuracy,
        separability,
        entropy,
        len(split.train),
        num_classes,
        chance,
        model_config.backbone,
        image_size,
    )


def format_advice(advice: Advice) -> str:
    """The advice for a terminal: recommendation, reasons, then a table of time estimates."""
    where = f"  ({advice.backbone} at {advice.image_size} px)" if advice.backbone else ""
    lines = [
        f"Recommended mode: {advice.recommended_mode}{where}",
        "",
        "Why:",
        *(f"  - {reason}" for reason in advice.reasons),
    ]
    if advice.estimates:
        lines += ["", f"{'mode':<20} {'estimated time':>14} {'images/s':>9}"]
        for name, estimate in advice.estimates.items():
            marker = "  <- recommended" if name == advice.recommended_mode else ""
            lines.append(
                f"{name:<20} {format_duration(estimate.estimated_seconds):>14} {estimate.images_per_second:>9.0f}{marker}"
            )
    return "\n".join(lines)
