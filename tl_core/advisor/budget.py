"""The advisor's budget axis: training steps of the real model timed on this machine, and seconds per mode from them.

`tl_core.advisor.mode_advice` turns these estimates into a recommendation (a mode over the user's time budget falls
back to a cheaper one); the Train page shows them next to each mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from tl_core.advisor.results import ModeEstimate
from tl_core.config import TrainConfig
from tl_core.models.transfer_model import FreezeBackbone, TransferModel, UnfreezeAll, UnfreezeTop
from tl_core.training.feature_cache import batch_predictor, extract_features

TIMING_TARGET_S = 1.0  # per kind of step, after the warm-up step
TIMING_MIN_STEPS, TIMING_MAX_STEPS = 1, 10


@dataclass(frozen=True)
class Throughput:
    """Images (or feature rows) per second timed on this machine; None where the run will not need it."""

    feature_extraction: float  # `extract_features` over images, as the feature cache runs it
    evaluation: float  # the compiled test step: validation and test passes over images
    head_on_features: float | None
    frozen_training: float | None
    top_training: float
    full_training: float


def _seconds_per_call(step: Callable[[], Any]) -> float:
    step()  # warm-up: the first call builds the graph
    calls, started = 0, time.perf_counter()
    while calls < TIMING_MAX_STEPS and (calls < TIMING_MIN_STEPS or time.perf_counter() - started < TIMING_TARGET_S):
        step()
        calls += 1
    return (time.perf_counter() - started) / calls


def measure_step_throughput(
    transfer_model: TransferModel,
    train_config: TrainConfig,
    *,
    head_on_features: bool,
    jit_compile: bool = False,
    between_steps: Callable[[], None] = lambda: None,
) -> Throughput:
    """Time feature extraction, evaluation and training steps of the real model at `train_config.batch_size`.

    Args:
        transfer_model: from `build_transfer_model`; its weights change, so build one for measuring only.
        train_config: batch size, learning rates and `fine_tune_layers`.
        head_on_features: time the head on cached features (else frozen end-to-end training).
        jit_compile: compile with XLA, as training does on a GPU.
        between_steps: called before each kind of step is timed (a stop request raises there).

    Returns:
        Images per second for each kind of step.
    """
    batch, size = train_config.batch_size, transfer_model.image_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, int(transfer_model.head.output.shape[-1]), batch).astype(np.int32)

    def training_rate(model: keras.Model, inputs: np.ndarray, learning_rate: float) -> float:
        between_steps()
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            jit_compile=jit_compile,
        )
        return batch / _seconds_per_call(lambda: model.train_on_batch(inputs, labels))

    predict = batch_predictor(transfer_model.feature_extractor)  # one traced graph, as a run's feature cache uses it
    extraction = batch / _seconds_per_call(
        lambda: extract_features(transfer_model.feature_extractor, images, batch_size=max(32, batch), predict=predict)
    )
    FreezeBackbone().apply(transfer_model.backbone)
    head = frozen = None
    if head_on_features:
        features = rng.standard_normal((batch, transfer_model.feature_dim)).astype(np.float32)
        head = training_rate(transfer_model.head, features, train_config.learning_rate)
    else:
        frozen = training_rate(transfer_model.model, images, train_config.learning_rate)
    UnfreezeAll().apply(transfer_model.backbone)
    full = training_rate(transfer_model.model, images, train_config.effective_fine_tune_learning_rate)
    between_steps()
    evaluation = batch / _seconds_per_call(lambda: transfer_model.model.test_on_batch(images, labels))
    UnfreezeTop(train_config.fine_tune_layers).apply(transfer_model.backbone)
    # part of the full backward pass cannot be slower than all of it: a lower reading is timing noise
    top = max(training_rate(transfer_model.model, images, train_config.effective_fine_tune_learning_rate), full)
    FreezeBackbone().apply(transfer_model.backbone)
    return Throughput(extraction, evaluation, head, None if frozen is None else max(frozen, top), top, full)


def estimate_modes(throughput: Throughput, sizes: dict[str, int], train_config: TrainConfig) -> dict[str, ModeEstimate]:
    """Seconds per mode as the runner trains: head phase, unfrozen phase, evaluation on test; all epochs counted.

    With cached features the head phase is one backbone pass over the images plus head epochs on
    features (feature extraction then evaluates on features too); otherwise each head epoch runs the backbone.
    """
    train, val, test = sizes["train"], sizes["val"], sizes["test"]
    evaluate_test = test / throughput.evaluation
    if throughput.head_on_features is not None:
        head_epochs = train_config.epochs * (train + val) / throughput.head_on_features
        extraction_total = head_epochs + (train + val + test) / throughput.feature_extraction
        head_phase = head_epochs + (train + val) / throughput.feature_extraction
    else:
        head_phase = train_config.epochs * (
            train / (throughput.frozen_training or throughput.top_training) + val / throughput.evaluation
        )
        extraction_total = head_phase + evaluate_test

    def with_unfrozen_phase(rate: float) -> float:
        return head_phase + train_config.fine_tune_epochs * (train / rate + val / throughput.evaluation) + evaluate_test

    return {
        "feature-extraction": ModeEstimate("feature-extraction", extraction_total, throughput.feature_extraction),
        "fine-tune": ModeEstimate("fine-tune", with_unfrozen_phase(throughput.top_training), throughput.top_training),
        "full": ModeEstimate("full", with_unfrozen_phase(throughput.full_training), throughput.full_training),
    }


def format_duration(seconds: float) -> str:
    """4.2 s, 12 s, 4.5 min, 2.1 h."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
