"""Training really learns, phases set the right flags, and the controls (stop, early stopping) work."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tl_core.config import ModelConfig, TrainConfig  # noqa: E402
from tl_core.data.image_cache import build_image_cache  # noqa: E402
from tl_core.data.image_dataset import scan_dataset, split_dataset  # noqa: E402
from tl_core.data.types import TrainingData
from tl_core.events import EpochEnded, PhaseEnded, PhaseStarted  # noqa: E402
from tl_core.models.transfer_model import build_head, build_transfer_model, is_batch_norm  # noqa: E402
from tl_core.stopping import StopToken  # noqa: E402
from tl_core.training.callbacks import BestWeights  # noqa: E402
from tl_core.training.feature_cache import extract_features  # noqa: E402
from tl_core.training.loop import class_weights_for, train_head, train_model

SIZE = 48
TINY = ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=SIZE)
# Frozen random features collapse (~1e-12 here), so learning is tested with the real offline ImageNet weights.
PRETRAINED = ModelConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=SIZE)


class Recorder:
    def __init__(self, on_epoch=None):
        self.events = []
        self.on_epoch = on_epoch

    def on_event(self, event):
        self.events.append(event)
        if isinstance(event, EpochEnded) and self.on_epoch:
            self.on_epoch(event)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture(scope="module")
def shapes_data(shapes_dataset, tmp_path_factory):
    split = split_dataset(scan_dataset(shapes_dataset), val_fraction=0.2, test_fraction=0.25, seed=1)
    cache = tmp_path_factory.mktemp("cache")
    images = {name: build_image_cache(split.examples(name), SIZE, cache).images for name in ("train", "val", "test")}
    labels = {name: split.labels(name) for name in ("train", "val", "test")}
    return TrainingData(tuple(split.class_names), images, labels)


def _features_provider(tm, data):
    cache = {}

    def provide(name):
        if name not in cache:
            cache[name] = extract_features(tm.feature_extractor, data.images[name])
        return cache[name]

    return provide


def _test_accuracy(tm, data):
    probabilities = keras.ops.convert_to_numpy(tm.model.predict(np.asarray(data.images["test"]), verbose=0))
    return float((probabilities.argmax(1) == data.labels["test"]).mean())


def test_cached_and_end_to_end_feature_extraction_both_learn_equally(shapes_data):
    config = TrainConfig(
        epochs=15, learning_rate=3e-3, batch_size=16, early_stopping_patience=None, reduce_lr_patience=None
    )
    keras.utils.set_random_seed(0)
    cached_model = build_transfer_model(PRETRAINED, 3)
    cached = train_model(
        cached_model, shapes_data, config, feature_provider=_features_provider(cached_model, shapes_data)
    )
    keras.utils.set_random_seed(0)
    e2e_model = build_transfer_model(PRETRAINED, 3)
    e2e = train_model(e2e_model, shapes_data, config, use_feature_cache=False)

    assert cached.used_feature_cache and not e2e.used_feature_cache
    chance = 1 / 3
    cached_acc, e2e_acc = _test_accuracy(cached_model, shapes_data), _test_accuracy(e2e_model, shapes_data)
    assert cached_acc >= chance + 0.4, cached_acc  # well above chance on held-out images
    assert abs(cached_acc - e2e_acc) <= 0.15, (cached_acc, e2e_acc)
    # The best weights were restored: the final model reproduces the best recorded val loss.
    val_loss = tm_val_loss(cached_model, shapes_data)
    assert val_loss == pytest.approx(cached.best_metrics["val_loss"], rel=0.05, abs=0.02)


def tm_val_loss(tm, data):
    probabilities = tm.model.predict(np.asarray(data.images["val"]), verbose=0)
    return float(keras.losses.SparseCategoricalCrossentropy()(data.labels["val"], probabilities))


def test_fine_tune_unfreezes_top_layers_and_keeps_batch_norm_in_inference(shapes_data):
    tm = build_transfer_model(TINY, 3)
    bn_layers = [layer for layer in tm.backbone.layers if is_batch_norm(layer)]
    moving_means = [np.array(layer.moving_mean) for layer in bn_layers]
    flags_per_phase = {}

    class FlagSpy(Recorder):
        def on_event(self, event):
            super().on_event(event)
            if isinstance(event, PhaseStarted):
                flags_per_phase[event.phase] = [
                    layer.name for layer in tm.backbone.layers if layer.trainable and layer.weights
                ]

    spy = FlagSpy()
    config = TrainConfig(mode="fine-tune", epochs=1, fine_tune_epochs=1, fine_tune_layers=4, batch_size=16)
    kernel_before = np.array(tm.backbone.get_layer("Conv_1").kernel)
    result = train_model(tm, shapes_data, config, listener=spy, feature_provider=_features_provider(tm, shapes_data))

    assert result.phases == ["head", "fine-tune"]
    assert flags_per_phase["head"] == []
    assert len(flags_per_phase["fine-tune"]) == 4
    assert not any("BN" in name or "bn" in name for name in flags_per_phase["fine-tune"])
    phases = spy.of(PhaseStarted)
    assert phases[1].learning_rate == pytest.approx(config.learning_rate / 10)
    assert phases[1].trainable_weights > phases[0].trainable_weights
    for layer, before in zip(bn_layers, moving_means):
        np.testing.assert_array_equal(np.array(layer.moving_mean), before)  # BatchNorm stayed in inference mode
    assert not np.array_equal(np.array(tm.backbone.get_layer("Conv_1").kernel), kernel_before) or result.best_epoch == 1
    assert [e.epoch for e in spy.of(EpochEnded)] == [1, 2]


def test_stop_finishes_the_batch_and_keeps_the_best_weights(shapes_data):
    tm = build_transfer_model(TINY, 3)
    stop = StopToken()
    recorder = Recorder(on_epoch=lambda event: stop.request_stop() if event.epoch == 2 else None)
    result = train_model(
        tm,
        shapes_data,
        TrainConfig(epochs=20, batch_size=16),
        listener=recorder,
        stop=stop,
        feature_provider=_features_provider(tm, shapes_data),
    )
    assert result.status == "stopped"
    assert result.epochs_run == 2
    assert result.best_epoch in (1, 2)


def test_early_stopping_ends_a_phase(shapes_data, tmp_path):
    tm = build_transfer_model(TINY, 3)
    recorder = Recorder()
    config = TrainConfig(
        epochs=60, learning_rate=0.5, early_stopping_patience=1, reduce_lr_patience=None, batch_size=16
    )
    result = train_model(
        tm,
        shapes_data,
        config,
        listener=recorder,
        feature_provider=_features_provider(tm, shapes_data),
        checkpoint_path=tmp_path / "best.weights.h5",
    )
    assert result.epochs_run < 60
    assert recorder.of(PhaseEnded)[0].stopped_early
    assert (tmp_path / "best.weights.h5").is_file()


def test_class_weights_only_when_imbalanced():
    assert class_weights_for(np.array([0, 0, 1, 1]), 2, "auto") is None
    weights = class_weights_for(np.array([0] * 9 + [1] * 3), 2, "auto")
    assert weights[1] == pytest.approx(3 * weights[0])
    assert class_weights_for(np.array([0] * 9 + [1] * 3), 2, "off") is None
    assert class_weights_for(np.array([0, 1]), 2, "on") == {0: 1.0, 1: 1.0}


def test_progressive_unfreezes_one_block_per_stage_and_records_the_best_depth(shapes_data):
    from tl_core.models.blocks import backbone_blocks

    tm = build_transfer_model(TINY, 3)
    blocks = backbone_blocks(tm.backbone)
    opened = []

    class StageSpy(Recorder):
        def on_event(self, event):
            super().on_event(event)
            if isinstance(event, PhaseStarted) and event.phase.startswith("stage-"):
                trainable = {layer.name for layer in tm.backbone.layers if layer.trainable and layer.weights}
                opened.append(trainable)
                assert not any(is_batch_norm(tm.backbone.get_layer(name)) for name in trainable)

    spy = StageSpy()
    config = TrainConfig(
        mode="progressive", epochs=1, stage_epochs=1, max_stages=3, plateau_tolerance=None, batch_size=16
    )
    result = train_model(tm, shapes_data, config, listener=spy, feature_provider=_features_provider(tm, shapes_data))

    assert result.phases == ["head", "stage-1", "stage-2", "stage-3"]
    assert opened[0] < opened[1] < opened[2]  # each stage opens one more block, from the top
    assert opened[0] <= set(blocks[-1]) and opened[1] - opened[0] <= set(blocks[-2])
    assert result.best_phase in result.phases
    assert "blocks" in spy.of(PhaseStarted)[1].description


def test_progressive_stops_when_validation_loss_plateaus(shapes_data):
    tm = build_transfer_model(TINY, 3)
    recorder = Recorder()
    # A huge tolerance: no stage can improve enough, so only the first stage runs.
    config = TrainConfig(mode="progressive", epochs=1, stage_epochs=1, plateau_tolerance=1e9, batch_size=16)
    result = train_model(
        tm, shapes_data, config, listener=recorder, feature_provider=_features_provider(tm, shapes_data)
    )
    assert result.phases == ["head", "stage-1"]
    assert any("stopped improving" in e.text for e in recorder.events if hasattr(e, "text"))


def test_best_weights_snapshot_only_the_head_on_features_and_restore_across_phases(tmp_path):
    tm = build_transfer_model(TINY, 3)
    best = BestWeights(tm.model, tmp_path / "best.weights.h5")
    full_snapshots = []
    original_get_weights = tm.model.get_weights
    tm.model.get_weights = lambda: full_snapshots.append(1) or original_get_weights()

    def shift(model, by):
        model.set_weights([w + by for w in model.get_weights()])

    best.track(tm.head)  # head phase on cached features
    assert best.update(1.0, 1, {"val_loss": 1.0})
    head_best = [w.copy() for w in tm.head.get_weights()]
    shift(tm.head, 0.5)
    assert not best.update(2.0, 2, {"val_loss": 2.0})
    best.restore()
    assert full_snapshots == []  # the frozen backbone was never copied
    for now, then in zip(tm.head.get_weights(), head_best):
        np.testing.assert_array_equal(now, then)

    backbone_at_best = [w.copy() for w in tm.backbone.get_weights()]
    shift(tm.head, 0.25)
    best.track(tm.model)  # fine-tune phase: restores the best head, then snapshots everything
    for now, then in zip(tm.head.get_weights(), head_best):
        np.testing.assert_array_equal(now, then)
    shift(tm.backbone, 0.1)  # this phase never improves: the backbone must come back too
    shift(tm.head, 0.1)
    assert not best.update(3.0, 3, {"val_loss": 3.0})
    best.restore()
    for now, then in zip(tm.backbone.get_weights() + tm.head.get_weights(), backbone_at_best + head_best):
        np.testing.assert_array_equal(now, then)

    shift(tm.head, 0.3)
    best._saved = False  # force a write of the best weights, as a phase end after an improvement does
    best.save_checkpoint()
    shift(tm.head, 0.2)
    tm.model.load_weights(tmp_path / "best.weights.h5")  # the checkpoint holds the whole model at its best
    for now, then in zip(tm.backbone.get_weights() + tm.head.get_weights(), backbone_at_best + head_best):
        np.testing.assert_allclose(now, then, atol=1e-6)


def test_train_head_learns_on_features_alone_and_keeps_the_best_epoch(shapes_data, tmp_path):
    keras.utils.set_random_seed(0)
    tm = build_transfer_model(PRETRAINED, 3)
    provide = _features_provider(tm, shapes_data)
    features = {name: provide(name) for name in ("train", "val", "test")}
    head = build_head(tm.feature_dim, 3, (), 0.2)
    recorder = Recorder()
    config = TrainConfig(
        epochs=12, learning_rate=3e-3, batch_size=16, early_stopping_patience=None, reduce_lr_patience=None
    )

    result = train_head(
        head,
        features.__getitem__,
        shapes_data.labels,
        config,
        num_classes=3,
        listener=recorder,
        checkpoint_path=tmp_path / "head.weights.h5",
    )

    assert result.phases == ["head"] and result.used_feature_cache and result.epochs_run == 12
    assert [e.phase for e in recorder.of(PhaseStarted)] == ["head"] and len(recorder.of(EpochEnded)) == 12
    probabilities = keras.ops.convert_to_numpy(head(features["val"], training=False))
    val_loss = float(keras.losses.SparseCategoricalCrossentropy()(shapes_data.labels["val"], probabilities))
    assert val_loss == pytest.approx(result.best_metrics["val_loss"], rel=0.05, abs=0.02)  # the best epoch was restored
    test_accuracy = float(
        (keras.ops.convert_to_numpy(head(features["test"])).argmax(1) == shapes_data.labels["test"]).mean()
    )
    assert test_accuracy >= 1 / 3 + 0.4, test_accuracy
    assert (tmp_path / "head.weights.h5").is_file()


def test_mid_phase_checkpoints_are_spaced_by_their_measured_cost(tmp_path):
    import keras

    from tl_core.training import callbacks

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    best = callbacks.BestWeights(model, tmp_path / "best.weights.h5")
    assert best.checkpoint_spacing_s() == callbacks.FIRST_CHECKPOINT_AFTER_S  # nothing timed yet
    assert (
        best.update(2.0, 1, {"val_loss": 2.0}) and not (tmp_path / "best.weights.h5").exists()
    )  # a short phase: written at its end
    best._last_write -= callbacks.FIRST_CHECKPOINT_AFTER_S + 0.01  # as if a second of training had passed
    assert best.update(1.0, 2, {"val_loss": 1.0}) and (tmp_path / "best.weights.h5").is_file()
    spacing = best.checkpoint_spacing_s()
    assert 0.0 < spacing <= callbacks.CHECKPOINT_INTERVAL_S
    assert spacing == pytest.approx(
        min(callbacks.CHECKPOINT_INTERVAL_S, best._write_seconds / callbacks.CHECKPOINT_OVERHEAD)
    )
    (tmp_path / "best.weights.h5").unlink()
    best._last_write -= spacing + 0.01  # as if that much training time had passed
    assert best.update(0.5, 3, {"val_loss": 0.5}) and (tmp_path / "best.weights.h5").is_file()
