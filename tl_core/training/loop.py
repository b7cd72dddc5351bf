"""The training loop: runs the phases that phases.py plans, with freeze policies and typed events (the per-epoch callbacks are in callbacks.py,
each phase's `fit` call, on cached features or on images, in phase_fits.py).

A run is a list of phases. Every mode starts with a `head` phase (backbone frozen): the head's normalisation
is first adapted to the training split's features, and its learning rate scales with their number
(`head_learning_rate`), so a linear head on any backbone converges within a few epochs. `fine-tune`
then unfreezes the top layers and `full` every layer, recompiling at a ~10x lower learning rate
after restoring the best head (fine-tune only once the head has converged). In the head phase the
head trains on cached bottleneck features unless augmentation needs the backbone to see each
augmented image. The best weights by validation loss are kept across phases and restored at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from tl_core.config import TrainConfig
from tl_core.data.types import TrainingData
from tl_core.events import (
    EpochEnded,
    LogMessage,
    NullListener,
    PhaseEnded,
    PhaseStarted,
    RunStatus,
    TrainingListener,
)
from tl_core.models.transfer_model import (
    FreezeBackbone,
    TransferModel,
    count_trainable_weights,
    standardize_head_inputs,
)
from tl_core.stopping import StopToken
from tl_core.training.callbacks import BestWeights, EventBridge
from tl_core.training.feature_cache import extract_features
from tl_core.training.phase_fits import PhaseFit, fit_on_features, fit_on_images
from tl_core.training.phases import HEAD_RATE_FEATURES, Phase, head_learning_rate, plan_phases

__all__ = [
    "HEAD_RATE_FEATURES",
    "Phase",
    "TrainResult",
    "head_learning_rate",
    "plan_phases",
    "train_head",
    "train_model",
]

IMBALANCE_RATIO_FOR_AUTO_WEIGHTS = 1.5


@dataclass
class TrainResult:
    """Learned-state summary of one training call (the weights live in the model itself)."""

    status: RunStatus
    epochs_run: int
    history: list[EpochEnded] = field(default_factory=list)
    best_epoch: int | None = None
    best_phase: str | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    used_feature_cache: bool = False
    phases: list[str] = field(default_factory=list)


def class_weights_for(labels: np.ndarray, num_classes: int, setting: str) -> dict[int, float] | None:
    """Inverse-frequency weights (mean 1); `auto` uses them only when the largest class is 1.5x the smallest."""
    if setting == "off" or len(labels) == 0:
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts[counts > 0]
    if setting == "auto" and present.max() / present.min() < IMBALANCE_RATIO_FOR_AUTO_WEIGHTS:
        return None
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return {index: float(weight) for index, weight in enumerate(weights)}


def _compile(model: keras.Model, learning_rate: float, jit_compile: bool) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )


@dataclass
class _Session:
    """What the phases of one training call share."""

    config: TrainConfig
    run_id: str
    listener: TrainingListener
    stop: StopToken
    best: BestWeights
    result: TrainResult
    monitor: str
    class_weight: dict[int, float] | None
    train_count: int
    jit_compile: bool


def _start_session(
    labels: dict[str, np.ndarray],
    num_classes: int,
    config: TrainConfig,
    model: keras.Model,
    *,
    run_id: str,
    listener: TrainingListener | None,
    stop: StopToken | None,
    checkpoint_path: Path | None,
    jit_compile: bool,
) -> _Session:
    """Monitor, class weights and best-weights tracking for a training call (with their log lines)."""
    listener = listener or NullListener()
    has_val = len(labels.get("val", ())) > 0
    if not has_val:
        listener.on_event(
            LogMessage(
                run_id,
                level="warning",
                text="No validation images: monitoring training loss instead. Add images so each class has at least 3.",
            )
        )
    class_weight = class_weights_for(labels["train"], num_classes, config.class_weighting)
    if class_weight:
        listener.on_event(
            LogMessage(run_id, level="info", text="Imbalanced classes: weighting the loss by inverse class frequency.")
        )
    return _Session(
        config=config,
        run_id=run_id,
        listener=listener,
        stop=stop or StopToken(),
        best=BestWeights(model, checkpoint_path),
        result=TrainResult(status="completed", epochs_run=0),
        monitor="val_loss" if has_val else "loss",
        class_weight=class_weight,
        train_count=len(labels["train"]),
        jit_compile=jit_compile,
    )


def _run_phase(
    session: _Session, phase: Phase, target: keras.Model, fit: PhaseFit, *, description: str, trainable_weights: int
) -> bool:
    """Compile `target`, train it for one phase with events, then restore the best weights; True when stopped by request."""
    config, listener, best, result = session.config, session.listener, session.best, session.result
    _compile(target, phase.learning_rate, session.jit_compile)
    listener.on_event(
        PhaseStarted(
            session.run_id,
            phase=phase.name,
            epochs=phase.epochs,
            learning_rate=phase.learning_rate,
            trainable_weights=trainable_weights,
            description=description,
            open_blocks=tuple(getattr(phase.policy, "open_blocks", ())),
        )
    )
    bridge = EventBridge(
        run_id=session.run_id,
        phase=phase.name,
        epoch_offset=result.epochs_run,
        monitor=session.monitor,
        listener=listener,
        stop=session.stop,
        best=best,
        batches_per_epoch=math.ceil(session.train_count / config.batch_size),
        history=result.history,
    )
    callbacks: list[keras.callbacks.Callback] = [bridge]
    early = None
    if config.early_stopping_patience:
        early = keras.callbacks.EarlyStopping(monitor=session.monitor, patience=config.early_stopping_patience)
        callbacks.append(early)
    if config.reduce_lr_patience:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=session.monitor, factor=0.5, patience=config.reduce_lr_patience, min_lr=1e-7, verbose=0
            )
        )
    fit(target, phase.epochs, callbacks)

    result.epochs_run += bridge.epochs_run
    result.phases.append(phase.name)
    stopped_early = bool(early is not None and early.stopped_epoch > 0)
    listener.on_event(
        PhaseEnded(
            session.run_id,
            phase=phase.name,
            epochs_run=bridge.epochs_run,
            best_val_loss=None if math.isinf(best.best_value) else best.best_value,
            stopped_early=stopped_early,
        )
    )
    # The next phase starts from the best weights so far: fine-tune only a converged head.
    best.restore()
    best.save_checkpoint()
    if bridge.stopped_by_user:
        result.status = "stopped"
        listener.on_event(
            LogMessage(
                session.run_id,
                level="info",
                text=f"Stopped by request after {result.epochs_run} epochs; keeping the best weights (epoch {best.best_epoch}).",
            )
        )
    return bridge.stopped_by_user


def _features_fit(session: _Session, features: Callable[[str], np.ndarray], labels: dict[str, np.ndarray]) -> PhaseFit:
    """A phase's `fit` on cached features, validating when the session monitors `val_loss`."""
    return fit_on_features(
        features,
        labels,
        session.config,
        validate=session.monitor == "val_loss",
        class_weight=session.class_weight,
        jit_compile=session.jit_compile,
    )


def _finish(session: _Session, started: float) -> TrainResult:
    result, best = session.result, session.best
    result.best_epoch = best.best_epoch
    result.best_phase = next((e.phase for e in result.history if e.epoch == best.best_epoch), None)
    result.best_metrics = best.best_metrics
    result.elapsed_s = time.perf_counter() - started
    return result


def train_head(
    head: keras.Model,
    features: Callable[[str], np.ndarray],
    labels: dict[str, np.ndarray],
    config: TrainConfig,
    *,
    num_classes: int,
    run_id: str = "",
    listener: TrainingListener | None = None,
    stop: StopToken | None = None,
    checkpoint_path: Path | None = None,
    jit_compile: bool = False,
) -> TrainResult:
    """Feature extraction without the backbone: train a head alone on cached bottleneck features.

    The same head phase as `train_model` (events, callbacks, best weights), for a caller that has every
    split's features already and builds the backbone only afterwards, to assemble the classifier.

    Args:
        head: from `model.build_head`, with the classifier's feature dimension and classes; its normalisation
            is adapted to the training features here.
        features: returns a split's features (`train`, and `val` when it has images).
        labels: int class indices per split; an empty `val` monitors the training loss.
        config: `epochs`, `learning_rate`, batch size and callbacks settings (the mode is not used).
        num_classes: for class weighting.
        run_id: stamped on every event.
        listener: receives typed events; None trains silently.
        stop: cooperative stop token.
        checkpoint_path: where the head's best weights are written (`.weights.h5`).
        jit_compile: XLA; the caller enables it only on a GPU.

    Returns:
        A `TrainResult` (`phases == ["head"]`); `head` holds the best weights found.
    """
    started = time.perf_counter()
    session = _start_session(
        labels,
        num_classes,
        config,
        head,
        run_id=run_id,
        listener=listener,
        stop=stop,
        checkpoint_path=checkpoint_path,
        jit_compile=jit_compile,
    )
    session.result.used_feature_cache = True
    train_features = features("train")
    phase = plan_phases(config, feature_dim=train_features.shape[1])[0]
    if session.stop.should_stop():  # stopped while the features were computed: nothing trained, not completed
        session.result.status = "stopped"
    else:
        standardize_head_inputs(head, train_features)
        description = "backbone frozen: training the head only (on cached backbone features)"
        _run_phase(
            session,
            phase,
            head,
            _features_fit(session, features, labels),
            description=description,
            trainable_weights=count_trainable_weights(head),
        )
    return _finish(session, started)


def train_model(
    transfer_model: TransferModel,
    data: TrainingData,
    config: TrainConfig,
    *,
    run_id: str = "",
    listener: TrainingListener | None = None,
    stop: StopToken | None = None,
    checkpoint_path: Path | None = None,
    feature_provider: Callable[[str], np.ndarray] | None = None,
    use_feature_cache: bool | None = None,
    jit_compile: bool = False,
) -> TrainResult:
    """Train `transfer_model` through the phases of `config.mode`.

    Args:
        transfer_model: from `build_transfer_model`; its backbone starts frozen.
        data: uint8 images and labels per split (`train` required, `val` recommended).
        config: epochs, learning rates, mode, callbacks settings.
        run_id: stamped on every event.
        listener: receives typed events; None trains silently.
        stop: cooperative stop token; the current batch finishes, the best weights are kept.
        checkpoint_path: where the best weights are written (`.weights.h5`).
        feature_provider: returns cached bottleneck features for a split name; enables head training
            on features. The head's normalisation is adapted to its `train` features, or without it to the
            features of one frozen pass over the training examples.
        use_feature_cache: override `config.use_feature_cache` (the caller turns it off for augmentation).
        jit_compile: XLA; the caller enables it only on a GPU.

    Returns:
        A `TrainResult`; the model holds the best weights found.
    """
    started = time.perf_counter()
    labels = {name: data.labels[name] for name in data.labels if name == "train" or data.has(name)}
    session = _start_session(
        labels,
        len(data.class_names),
        config,
        transfer_model.model,
        run_id=run_id,
        listener=listener,
        stop=stop,
        checkpoint_path=checkpoint_path,
        jit_compile=jit_compile,
    )
    feature_mode = (
        config.use_feature_cache if use_feature_cache is None else use_feature_cache
    ) and feature_provider is not None
    blocks = None
    if config.mode == "progressive":
        from tl_core.models.blocks import backbone_blocks

        blocks = backbone_blocks(transfer_model.backbone)
    if not session.stop.should_stop():  # the cached train features, else one frozen pass over the training examples
        train_features = (
            feature_provider("train")
            if feature_provider is not None
            else extract_features(
                transfer_model.feature_extractor, data.images["train"], batch_size=max(32, config.batch_size)
            )
        )
        standardize_head_inputs(transfer_model.head, train_features)
    for phase in plan_phases(
        config,
        blocks,
        top_layers_limit=transfer_model.spec.fine_tune_top_layers,
        feature_dim=transfer_model.feature_dim,
    ):
        if session.stop.should_stop():  # a stop between phases (or before the first) ends the run as stopped
            session.result.status = "stopped"
            break
        best_before_phase = session.best.best_value
        description = phase.policy.apply(transfer_model.backbone)
        on_features = feature_mode and isinstance(phase.policy, FreezeBackbone)
        target = transfer_model.head if on_features else transfer_model.model
        session.best.track(target)
        if on_features:
            description += " (on cached backbone features)"
            session.result.used_feature_cache = True
        fit = (
            _features_fit(session, feature_provider, data.labels)
            if on_features
            else fit_on_images(data, config, class_weight=session.class_weight)
        )
        if _run_phase(
            session,
            phase,
            target,
            fit,
            description=description,
            trainable_weights=count_trainable_weights(transfer_model.model),
        ):
            break
        plateaued = (
            config.plateau_tolerance is not None
            and not session.best.best_value < best_before_phase - config.plateau_tolerance
        )
        if phase.name.startswith("stage-") and plateaued:
            session.listener.on_event(
                LogMessage(
                    session.run_id,
                    level="info",
                    text=f"Validation loss stopped improving at {phase.name} (by less than {config.plateau_tolerance:g}): not unfreezing deeper blocks.",
                )
            )
            break

    transfer_model.backbone.trainable = False
    return _finish(session, started)
