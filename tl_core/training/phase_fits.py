"""How one training phase runs `fit`: on in-memory cached features, or on batches of images or texts.

The loop (tl_core/training/loop.py) decides what each phase trains and with which callbacks; the `PhaseFit`
returned here is the one call that then trains it for the phase's epochs. A head on cached features trains
with `HeadFitter` (tl_core/fastpath/head_fit.py) when the fast path is on, else with `fit` over `tf.data`;
a model on images or texts trains with `fit` over the modality's own batches.

Example:
    >>> fit = fit_on_images(data, config, class_weight=None)
    >>> fit(transfer_model.model, 5, [bridge])  # five epochs, events through the callbacks
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from tl_core.config import TrainConfig
from tl_core.data.types import TrainingData
from tl_core.fastpath.head_fit import HeadFitter, can_fit_fast
from tl_core.modalities import get_modality

# fit(target, epochs, callbacks): one phase's `model.fit` call on features or on images.
PhaseFit = Callable[[keras.Model, int, list[keras.callbacks.Callback]], None]


def fit_on_features(
    features: Callable[[str], np.ndarray],
    labels: dict[str, np.ndarray],
    config: TrainConfig,
    *,
    validate: bool,
    class_weight: dict[int, float] | None,
    jit_compile: bool,
) -> PhaseFit:
    """Fit on in-memory features: a compiled epoch per call (`HeadFitter`), or `fit` over `tf.data` under a distribution strategy or with `TRANSFERLAB_FASTPATH=0`.

    `fit` over `tf.data` measured 2-3x faster per epoch than `fit`'s own array adapter; `HeadFitter` another
    ~3x per epoch and about half of `fit`'s set-up (0.4-0.8 s instead of 0.8-1.0 s for 10 epochs of 510 features).

    Args:
        features: returns a split's features (`train`, and `val` when `validate`).
        labels: int class indices per split.
        config: batch size and seed.
        validate: evaluate on `val` after each epoch (the loop monitors `val_loss`).
        class_weight: loss weight per class index, or None.
        jit_compile: XLA for `HeadFitter`'s epoch; the caller enables it only on a GPU.
    """
    import tensorflow as tf  # the engine's backend; imported here like image_dataset does

    def fit(target: keras.Model, epochs: int, callbacks: list[keras.callbacks.Callback]) -> None:
        if (
            can_fit_fast()
        ):  # one graph call per epoch instead of fit's per-step and per-call costs (tl_core/fastpath/head_fit.py)
            validation = (features("val"), labels["val"]) if validate else (None, None)
            fitter = HeadFitter(
                target,
                features("train"),
                labels["train"],
                *validation,
                batch_size=config.batch_size,
                class_weight=class_weight,
                seed=config.seed,
                jit_compile=jit_compile,
            )
            fitter.fit(epochs, callbacks)
            return
        train_count = len(labels["train"])
        train = tf.data.Dataset.from_tensor_slices((features("train"), labels["train"].astype(np.int32)))
        train = (
            train.shuffle(max(1, train_count), seed=config.seed, reshuffle_each_iteration=True)
            .batch(config.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        validation = None
        if validate:  # one big batch: the mean loss does not depend on it, the step overhead does
            validation = (
                tf.data.Dataset.from_tensor_slices((features("val"), labels["val"].astype(np.int32)))
                .batch(max(config.batch_size, 1024))
                .cache()
            )
        target.fit(
            train,
            epochs=epochs,
            validation_data=validation,
            class_weight=class_weight,
            callbacks=callbacks,
            verbose=0,
            shuffle=False,
        )

    return fit


def fit_on_images(data: TrainingData, config: TrainConfig, *, class_weight: dict[int, float] | None) -> PhaseFit:
    """Fit on the modality's batches of `data` (images or texts), shuffled with `config.seed`; validates on `val` when it has examples."""

    def fit(target: keras.Model, epochs: int, callbacks: list[keras.callbacks.Callback]) -> None:
        batches = get_modality(data.modality).dataset
        train_ds = batches(
            data.images["train"], data.labels["train"], batch_size=config.batch_size, shuffle=True, seed=config.seed
        )
        val_ds = (
            batches(data.images["val"], data.labels["val"], batch_size=config.batch_size, shuffle=False)
            if data.has("val")
            else None
        )
        target.fit(
            train_ds,
            epochs=epochs,
            validation_data=val_ds,
            class_weight=class_weight,
            callbacks=callbacks,
            verbose=0,
            shuffle=False,
        )

    return fit
