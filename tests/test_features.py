"""Bottleneck features: padded last batches (one graph trace), equal to a direct call, cached by key."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tl_core.config import ModelConfig  # noqa: E402
from tl_core.fastpath.frozen_inference import frozen_inference_function  # noqa: E402
from tl_core.models.transfer_model import build_transfer_model  # noqa: E402
from tl_core.training import feature_cache as features_module  # noqa: E402
from tl_core.training.feature_cache import SharedPredictor, cached_features, extract_features, load_cached_features  # noqa: E402

TINY = ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32)


@pytest.mark.parametrize("graph", ["frozen lean graph", "keras predict_on_batch"])
def test_partial_last_batches_are_padded_so_the_graph_is_traced_once(graph: str, fastpath_on: None) -> None:
    keras.utils.set_random_seed(0)
    extractor = build_transfer_model(TINY, 3).feature_extractor
    images = np.random.default_rng(0).integers(0, 256, (70, 32, 32, 3), dtype=np.uint8)
    progress: list[tuple[int, int]] = []
    lean = frozen_inference_function(extractor)
    assert lean is not None  # MobileNetV2 is made of supported layers only
    predict = (lambda batch: lean(batch).numpy()) if graph == "frozen lean graph" else extractor.predict_on_batch

    features = extract_features(
        extractor, images, batch_size=32, progress=lambda done, total: progress.append((done, total)), predict=predict
    )
    fewer = extract_features(extractor, images[:45], batch_size=32, predict=predict)

    traced = lean if graph == "frozen lean graph" else extractor.predict_function
    assert traced.experimental_get_tracing_count() == 1  # 32, 6 and 13 rows: one shape
    direct = keras.ops.convert_to_numpy(extractor(images, training=False))
    np.testing.assert_allclose(features, direct, atol=1e-5)
    np.testing.assert_allclose(fewer, direct[:45], atol=1e-5)
    assert features.shape == (70, extractor.output.shape[-1]) and progress == [(32, 70), (64, 70), (70, 70)]


def test_a_shared_predictor_traces_one_graph_for_several_calls() -> None:
    extractor = build_transfer_model(TINY, 3).feature_extractor
    images = np.random.default_rng(4).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    traced: list[object] = []
    real = features_module.batch_predictor

    def counted(model: keras.Model) -> object:
        traced.append(model)
        return real(model)

    features_module.batch_predictor = counted
    try:
        predict = SharedPredictor(extractor)
        first = extract_features(extractor, images[:20], batch_size=8, predict=predict)
        second = extract_features(extractor, images[20:], batch_size=8, predict=predict)
    finally:
        features_module.batch_predictor = real
    assert traced == [extractor]  # made once, at the first batch
    assert predict.is_warm_for((8, 32, 32, 3)) and not predict.is_warm_for(
        (16, 32, 32, 3)
    )  # the second call ran every batch at once
    np.testing.assert_allclose(
        np.concatenate([first, second]), keras.ops.convert_to_numpy(extractor(images, training=False)), atol=1e-5
    )


def test_concurrent_streams_give_the_serial_features_with_progress_in_order(fastpath_on: None) -> None:
    keras.utils.set_random_seed(0)
    extractor = build_transfer_model(TINY, 3).feature_extractor
    images = np.random.default_rng(2).integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    progress: list[tuple[int, int]] = []

    lean = frozen_inference_function(extractor)
    predict = lambda batch: lean(batch).numpy()  # noqa: E731

    serial = extract_features(extractor, images, batch_size=16, streams=1, predict=predict)
    concurrent = extract_features(
        extractor,
        images,
        batch_size=16,
        streams=3,
        progress=lambda done, total: progress.append((done, total)),
        predict=predict,
    )

    np.testing.assert_array_equal(concurrent, serial)
    assert progress == [(stop, 100) for stop in (16, 32, 48, 64, 80, 96, 100)]
    assert lean.experimental_get_tracing_count() == 1  # the first batch traced it, alone


def test_a_progress_callback_that_raises_stops_extraction_within_a_few_batches() -> None:
    extractor = build_transfer_model(TINY, 3).feature_extractor
    images = np.random.default_rng(3).integers(0, 256, (400, 32, 32, 3), dtype=np.uint8)
    calls: list[int] = []
    predict = SharedPredictor(extractor)

    def counted(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return predict(batch)

    def stop_at_the_second_batch(done: int, total: int) -> None:
        if done >= 8:
            raise KeyboardInterrupt("stop requested")

    try:
        extract_features(extractor, images, batch_size=4, streams=2, progress=stop_at_the_second_batch, predict=counted)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the callback's exception must reach the caller")
    assert 2 <= len(calls) <= 4  # of 100 batches: only those already in flight finished


def test_features_are_cached_by_key_and_checked_against_the_image_count(tmp_path: Path) -> None:
    extractor = build_transfer_model(TINY, 3).feature_extractor
    images = np.random.default_rng(1).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)

    first = cached_features(extractor, images, cache_dir=tmp_path, key="k", batch_size=4)
    again = cached_features(extractor, images, cache_dir=tmp_path, key="k", batch_size=4)

    assert not first.reused and again.reused and np.array_equal(first.features, again.features)
    assert np.array_equal(load_cached_features(tmp_path, "k", 10), first.features)
    assert load_cached_features(tmp_path, "k", 11) is None  # another image count: not these features
    assert load_cached_features(tmp_path, "missing", 10) is None
    (tmp_path / "broken.npy").write_bytes(b"not a numpy file")
    assert load_cached_features(tmp_path, "broken", 10) is None
