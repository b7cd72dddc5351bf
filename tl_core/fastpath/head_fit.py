"""Training a head on in-memory bottleneck features, one compiled call per epoch.

`model.fit` costs ~1 s of set-up and tracing per call plus a few milliseconds per step (iterator,
callbacks, metric objects), while a head step on features is microseconds of arithmetic: for a
feature-extraction run that fixed cost is most of the head's time, and all of a second run's
(profiled: 1.2-1.6 s of a 1.5 s second run at 600 images). Here a whole epoch (shuffled batches, the
gradient steps, the running loss and accuracy) is one `tf.function` call over tensors already in
memory, validation included; the Keras callbacks (our event bridge, EarlyStopping,
ReduceLROnPlateau) are driven once per epoch with the same logs `fit` would give them.

The semantics follow `fit` with `compile(loss="sparse_categorical_crossentropy", metrics=[accuracy])`:
each batch's loss is the class-weighted sum over the batch divided by its size; `loss` and `accuracy`
are averaged over the epoch's examples (accuracy weighted by the class weights, as Keras does);
`val_loss` and `val_accuracy` are unweighted. It uses public API only, but copies what `fit` does, so it sits
behind the fast-path switch: with `TRANSFERLAB_FASTPATH=0`, or under a distribution strategy other than the
default one (the head's variables are mirrored and `fit` handles them), `can_fit_fast` says no and the caller
uses `fit`. The optimizer's own `apply` runs each step (a fused `ResourceApplyAdam` saved ~30 ms of tracing
per run through four private optimizer attributes, and was dropped for that).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from tl_core import fastpath
from tl_core.fastpath.graph_options import without_graph_rewrites


def can_fit_fast() -> bool:
    """Whether to train a head with `HeadFitter` rather than `model.fit`: the fast path is on
    (`tl_core.fastpath.enabled()`) and no distribution strategy is in scope (the head's variables are plain ones, not mirrored)."""
    return fastpath.enabled() and not tf.distribute.has_strategy()


@contextlib.contextmanager
def _without_retracing_warning() -> Iterator[None]:
    """Each fitter traces its own graphs once; after five heads TensorFlow warns of "excessive retracing" of the
    same code, which is expected here (a new head per run) and would only alarm users reading the log."""
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tf_logger.setLevel(level)


def _crossentropy(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    """Per-example sparse categorical crossentropy, Keras' own: it uses the softmax's logits when it can, unclipped."""
    return keras.losses.sparse_categorical_crossentropy(labels, probabilities)


class HeadFitter:
    """Fits one compiled head on features; epochs are single graph calls.

    Args:
        head: a compiled Keras model (its optimizer is used; `compile` set the learning rate).
        train_features, train_labels: the training split in memory.
        val_features, val_labels: the validation split, or None to monitor the training loss only.
        batch_size: examples per gradient step (the last batch of an epoch may be smaller).
        class_weight: per-class loss weights, or None.
        seed: the shuffling seed (each epoch draws the next permutation).
        jit_compile: compile the epoch function with XLA (the caller enables it only on a GPU).
    """

    def __init__(
        self,
        head: keras.Model,
        train_features: np.ndarray,
        train_labels: np.ndarray,
        val_features: np.ndarray | None,
        val_labels: np.ndarray | None,
        *,
        batch_size: int,
        class_weight: dict[int, float] | None,
        seed: int,
        jit_compile: bool = False,
    ) -> None:
        self.head = head
        self.count = len(train_labels)
        self.batch_size = max(1, min(batch_size, self.count))
        self.batches = math.ceil(self.count / self.batch_size)
        self.features = tf.constant(train_features, tf.float32)
        self.labels = tf.constant(train_labels, tf.int32)
        weights = np.ones(self.count, np.float32)
        if class_weight:
            weights = np.array([class_weight.get(int(label), 1.0) for label in train_labels], np.float32)
        self.weights = tf.constant(weights)
        self.val = None
        if val_features is not None and val_labels is not None and len(val_labels):
            self.val = (tf.constant(val_features, tf.float32), tf.constant(val_labels, tf.int32))
        self._rng = np.random.default_rng(seed)
        head.optimizer.build(
            head.trainable_variables
        )  # slots exist before tracing: a graph loop cannot create variables
        self._train_epoch = tf.function(
            self._epoch_graph, jit_compile=jit_compile, autograph=False
        )  # an explicit while_loop: no conversion cost

    def _epoch_graph(self, order: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """Train loss and accuracy over the epoch, then validation loss and accuracy after it when there is a
        validation split: one graph, so one trace and one call per epoch (the variables' reads after the loop
        are ordered after its updates by the function's automatic control dependencies)."""
        head, optimizer = self.head, self.head.optimizer
        variables = head.trainable_variables

        def step(
            index: tf.Tensor, loss_sum: tf.Tensor, correct: tf.Tensor, weight_sum: tf.Tensor
        ) -> tuple[tf.Tensor, ...]:
            rows = order[index * self.batch_size : (index + 1) * self.batch_size]
            features = tf.gather(self.features, rows)
            labels = tf.gather(self.labels, rows)
            weights = tf.gather(self.weights, rows)
            size = tf.cast(tf.shape(rows)[0], tf.float32)
            with tf.GradientTape() as tape:
                probabilities = head(features, training=True)
                loss = tf.reduce_sum(_crossentropy(labels, probabilities) * weights) / size
                scaled = optimizer.scale_loss(loss)  # a LossScaleOptimizer under mixed precision; identity otherwise
            optimizer.apply(tape.gradient(scaled, variables), variables)
            hits = tf.cast(tf.equal(tf.argmax(probabilities, axis=1, output_type=tf.int32), labels), tf.float32)
            return (
                index + 1,
                loss_sum + loss * size,
                correct + tf.reduce_sum(hits * weights),
                weight_sum + tf.reduce_sum(weights),
            )

        zero = tf.constant(0.0)
        _, loss_sum, correct, weight_sum = tf.while_loop(
            lambda index, *_: index < self.batches, step, (tf.constant(0), zero, zero, zero)
        )
        train = (loss_sum / tf.cast(self.count, tf.float32), correct / weight_sum)
        return train if self.val is None else train + self._evaluate_graph(*self.val)

    def _evaluate_graph(self, features: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        probabilities = self.head(features, training=False)
        loss = tf.reduce_mean(_crossentropy(labels, probabilities))
        hits = tf.cast(tf.equal(tf.argmax(probabilities, axis=1, output_type=tf.int32), labels), tf.float32)
        return loss, tf.reduce_mean(hits)

    def fit(self, epochs: int, callbacks: Sequence[keras.callbacks.Callback]) -> None:
        """Train for up to `epochs` epochs, calling the callbacks as `fit` would (batch hooks once per epoch)."""
        with without_graph_rewrites():  # the epoch loop runs for a second or so: Grappler's ~0.1 s would not pay back
            self._fit(epochs, callbacks)

    def _fit(self, epochs: int, callbacks: Sequence[keras.callbacks.Callback]) -> None:
        callback_list = keras.callbacks.CallbackList(list(callbacks), model=self.head)
        self.head.stop_training = False
        callback_list.on_train_begin()
        for epoch in range(epochs):
            callback_list.on_epoch_begin(epoch)
            order = tf.constant(self._rng.permutation(self.count).astype(np.int32))
            with _without_retracing_warning() if epoch == 0 else contextlib.nullcontext():
                metrics = [float(value) for value in self._train_epoch(order)]
            logs = {"loss": metrics[0], "accuracy": metrics[1]}
            callback_list.on_train_batch_end(self.batches - 1, dict(logs))
            if self.val is not None:
                logs.update(val_loss=metrics[2], val_accuracy=metrics[3])
            callback_list.on_epoch_end(epoch, logs)
            if self.head.stop_training:
                break
        callback_list.on_train_end()
