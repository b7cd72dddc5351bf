"""HeadFitter: a head on in-memory features, one graph call per epoch, with fit's logs and callbacks.

These test the fast path itself, so they turn it on whatever `TRANSFERLAB_FASTPATH` says; `can_fit_fast`
is checked with the switch both ways (tests/test_fastpath.py trains a whole run both ways)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tl_core.fastpath.head_fit import HeadFitter, can_fit_fast
from tl_core.models.transfer_model import build_head

pytestmark = pytest.mark.usefixtures("fastpath_on")

FEATURES = 16
CLASSES = 3


def _data(count: int, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(CLASSES, FEATURES)) * 3
    labels = rng.integers(0, CLASSES, count)
    return (centres[labels] + rng.normal(size=(count, FEATURES)) * noise).astype(np.float32), labels


def _head(learning_rate: float = 1e-2, dropout: float = 0.0) -> keras.Model:
    keras.utils.set_random_seed(3)
    head = build_head(FEATURES, CLASSES, (), dropout)
    head.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return head


class _Logs(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[dict[str, float]] = []
        self.batch_calls = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.batch_calls += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs.append(dict(logs or {}))


def test_logs_match_keras_losses_and_accuracies_when_nothing_changes_the_weights():
    train, val = _data(70, 1, noise=4.0), _data(20, 2, noise=4.0)
    head = _head(learning_rate=0.0)  # weights stay put, so the epoch's running loss is the loss of the fixed head
    logs = _Logs()
    HeadFitter(head, *train, *val, batch_size=16, class_weight=None, seed=0).fit(1, [logs])
    train_loss, train_accuracy = head.evaluate(*train, verbose=0)
    val_loss, val_accuracy = head.evaluate(*val, verbose=0)
    got = logs.epochs[0]
    assert got["loss"] == pytest.approx(train_loss, rel=1e-5)
    assert got["accuracy"] == pytest.approx(train_accuracy)
    assert got["val_loss"] == pytest.approx(val_loss, rel=1e-5)
    assert got["val_accuracy"] == pytest.approx(val_accuracy)
    assert logs.batch_calls == 1  # batch hooks once per epoch


def test_validation_metrics_are_those_of_the_head_after_the_epochs_updates():
    """Validation runs in the epoch's graph, after its training loop: it must see the updated weights."""
    train, val = _data(70, 1, noise=4.0), _data(20, 2, noise=4.0)
    head = _head(learning_rate=0.05)
    before = head.evaluate(*val, verbose=0)[0]
    logs = _Logs()
    HeadFitter(head, *train, *val, batch_size=16, class_weight=None, seed=0).fit(2, [logs])
    val_loss, val_accuracy = head.evaluate(*val, verbose=0)
    assert logs.epochs[-1]["val_loss"] == pytest.approx(val_loss, rel=1e-5) and logs.epochs[-1]["val_loss"] < before
    assert logs.epochs[-1]["val_accuracy"] == pytest.approx(val_accuracy)


def test_class_weights_weight_the_loss_like_keras_sample_weights():
    features, labels = _data(50, 4, noise=4.0)
    head = _head(learning_rate=0.0)
    class_weight = {0: 0.5, 1: 2.0, 2: 1.0}
    logs = _Logs()
    HeadFitter(head, features, labels, None, None, batch_size=50, class_weight=class_weight, seed=0).fit(1, [logs])
    probabilities = head.predict(features, verbose=0)
    weights = np.array([class_weight[int(label)] for label in labels])
    expected = np.sum(-np.log(probabilities[np.arange(50), labels]) * weights) / 50
    assert logs.epochs[0]["loss"] == pytest.approx(expected, rel=1e-5)
    assert "val_loss" not in logs.epochs[0]


def test_it_learns_and_the_same_seed_gives_the_same_head():
    train, val = _data(300, 5), _data(60, 6)
    heads = []
    for _ in range(2):
        head = _head(dropout=0.2)
        logs = _Logs()
        HeadFitter(head, *train, *val, batch_size=32, class_weight=None, seed=7).fit(5, [logs])
        heads.append(head)
    assert len(logs.epochs) == 5
    assert logs.epochs[-1]["val_accuracy"] >= 0.9
    assert logs.epochs[-1]["loss"] < logs.epochs[0]["loss"]
    for first, second in zip(heads[0].get_weights(), heads[1].get_weights()):
        np.testing.assert_array_equal(first, second)


def test_callbacks_stop_training_and_change_the_learning_rate_inside_the_graph():
    train, val = _data(100, 8), _data(30, 9)

    class FreezeAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 0:
                self.model.optimizer.learning_rate = 0.0
                self.frozen = [w.copy() for w in self.model.get_weights()]

    head = _head()
    freeze = FreezeAfterFirstEpoch()
    logs = _Logs()
    HeadFitter(head, *train, *val, batch_size=16, class_weight=None, seed=0).fit(3, [freeze, logs])
    for kept, now in zip(freeze.frozen, head.get_weights()):
        np.testing.assert_array_equal(kept, now)  # the traced step read the new rate: nothing moved
    assert len(logs.epochs) == 3

    head = _head()
    logs = _Logs()
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=1e9)  # no epoch counts as better
    HeadFitter(head, *train, *val, batch_size=16, class_weight=None, seed=0).fit(10, [stopper, logs])
    assert len(logs.epochs) == 2 and stopper.stopped_epoch == 1


def test_a_batch_larger_than_the_data_trains_in_one_step():
    features, labels = _data(5, 10)
    head = _head()
    logs = _Logs()
    fitter = HeadFitter(head, features, labels, None, None, batch_size=64, class_weight=None, seed=0)
    fitter.fit(2, [logs])
    assert fitter.batches == 1 and len(logs.epochs) == 2


def test_fast_fitting_is_off_under_a_strategy_and_with_the_switch_off(monkeypatch: pytest.MonkeyPatch):
    import tensorflow as tf

    assert can_fit_fast()
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert not can_fit_fast()
    monkeypatch.setenv("TRANSFERLAB_FASTPATH", "0")
    assert not can_fit_fast()  # the caller trains with `fit` instead


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.Adam(1e-2, amsgrad=True),
        lambda: keras.optimizers.Adam(1e-2, weight_decay=1e-3),
        lambda: keras.optimizers.Adam(1e-2, clipnorm=1.0),
        lambda: keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-2, 10, 0.5)),
        lambda: keras.optimizers.SGD(1e-2),
    ],
    ids=["amsgrad", "weight-decay", "clipnorm", "schedule", "sgd"],
)
def test_other_optimizers_and_options_train_the_head(optimizer):
    head = _head()
    head.compile(optimizer=optimizer(), loss="sparse_categorical_crossentropy")
    head.optimizer.build(head.trainable_variables)
    before = [weights.copy() for weights in head.get_weights()]

    HeadFitter(head, *_data(40, 9), None, None, batch_size=16, class_weight=None, seed=0).fit(1, [])
    assert any(not np.array_equal(old, new) for old, new in zip(before, head.get_weights()))  # and it still trains


def test_under_mixed_precision_the_loss_scale_optimizer_trains_the_head():
    """The GPU path (`TrainConfig.mixed_precision`): compile wraps Adam in a LossScaleOptimizer, whose scaled loss the step uses."""
    from tl_core.training.loop import _compile
    from tl_core.training.runner import precision_policy

    with precision_policy(True):
        keras.utils.set_random_seed(4)
        head = build_head(FEATURES, CLASSES, (8,), 0.1)
        _compile(head, 1e-2, jit_compile=False)
        head.optimizer.build(head.trainable_variables)
        before = [weights.copy() for weights in head.get_weights()]
        logs = _Logs()

        assert type(head.optimizer).__name__ == "LossScaleOptimizer"
        HeadFitter(head, *_data(60, 10), *_data(20, 11), batch_size=16, class_weight=None, seed=0).fit(2, [logs])

    assert keras.mixed_precision.global_policy().name == "float32"
    assert all(np.isfinite(value) for value in logs.epochs[-1].values())
    assert any(not np.array_equal(old, new) for old, new in zip(before, head.get_weights()))
