"""Bottleneck features: padded last batches (one graph trace), equal to a direct call, cached by key."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tl_core.config import ModelConfig  # noqa: E402
from tl_core.features import cached_features, extract_features, load_cached_features  # noqa: E402
from tl_core.model import build_transfer_model  # noqa: E402

TINY = ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32)


def test_partial_last_batches_are_padded_so_the_graph_is_traced_once() -> None:
    keras.utils.set_random_seed(0)
    extractor = build_transfer_model(TINY, 3).feature_extractor
    images = np.random.default_rng(0).integers(0, 256, (70, 32, 32, 3), dtype=np.uint8)
    progress: list[tuple[int, int]] = []

    features = extract_features(extractor, images, batch_size=32, progress=lambda done, total: progress.append((done, total)))
    fewer = extract_features(extractor, images[:45], batch_size=32)

    assert extractor.predict_function.experimental_get_tracing_count() == 1  # 32, 6 and 13 rows: one shape
    direct = keras.ops.convert_to_numpy(extractor(images, training=False))
    np.testing.assert_allclose(features, direct, atol=1e-5)
    np.testing.assert_allclose(fewer, direct[:45], atol=1e-5)
    assert features.shape == (70, extractor.output.shape[-1]) and progress == [(32, 70), (64, 70), (70, 70)]


def test_concurrent_streams_give_the_serial_features_with_progress_in_order() -> None:
    keras.utils.set_random_seed(0)
    extractor = build_transfer_model(TINY, 3).feature_extractor
    images = np.random.default_rng(2).integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    progress: list[tuple[int, int]] = []

    serial = extract_features(extractor, images, batch_size=16, streams=1)
    concurrent = extract_features(extractor, images, batch_size=16, streams=3, progress=lambda done, total: progress.append((done, total)))

    np.testing.assert_array_equal(concurrent, serial)
    assert progress == [(stop, 100) for stop in (16, 32, 48, 64, 80, 96, 100)]
    assert extractor.predict_function.experimental_get_tracing_count() == 1  # the first batch traced it, alone


def test_a_progress_callback_that_raises_stops_extraction_within_a_few_batches() -> None:
    extractor = build_transfer_model(TINY, 3).feature_extractor
    images = np.random.default_rng(3).integers(0, 256, (400, 32, 32, 3), dtype=np.uint8)
    calls: list[int] = []
    original = extractor.predict_on_batch

    def counted(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return original(batch)

    extractor.predict_on_batch = counted

    def stop_at_the_second_batch(done: int, total: int) -> None:
        if done >= 8:
            raise KeyboardInterrupt("stop requested")

    try:
        extract_features(extractor, images, batch_size=4, streams=2, progress=stop_at_the_second_batch)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the callback's exception must reach the caller")
    assert len(calls) <= 4  # of 100 batches: only those already in flight finished


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
