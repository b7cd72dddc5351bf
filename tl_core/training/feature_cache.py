"""Bottleneck-feature cache for feature extraction.

A frozen backbone gives the same features every epoch, so they are computed once per split and the
head trains on them (measured ~200x faster per epoch than re-running a frozen MobileNetV2). Features
are kept on disk keyed by what produced them, so a second run on the same data and backbone skips the
backbone entirely.

In a workspace with a disk quota (tl_core/server/disk_budget.py) the features' size is checked against it
before the backbone runs, and the file is written under the workspace's lock only when it still fits.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tl_core.config import ModelConfig
from tl_core.data.image_cache import release_pages
from tl_core.data.images import DECODING_VERSION
from tl_core.data.types import Example
from tl_core.fastpath.frozen_inference import frozen_inference_function
from tl_core.fastpath.graph_options import without_graph_rewrites
from tl_core.server.disk_budget import check_room, reserved


@dataclass(frozen=True)
class FeatureSet:
    features: np.ndarray  # float32 (N, feature_dim)
    reused: bool
    path: Path | None


def feature_cache_key(*parts: str) -> str:
    """A stable key from everything that determines the features (data, backbone, weights, size, cut, pooling)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def weights_identity(weights: str) -> str:
    """What makes two `weights` values give the same features (a changed file gives new ones)."""
    path = Path(weights).expanduser()
    if path.exists():
        stat = path.stat()
        return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return weights


def examples_feature_key(
    examples: Sequence[Example],
    model_config: ModelConfig,
    image_size: int,
    *,
    cut_layer: str | None,
    seed: int,
    random_weights_tag: str = "",
) -> str:
    """The cache key of these images' features under this backbone, shared by runs and the advisor.

    Random weights (`none`) differ per seed; `random_weights_tag` keeps features from draws that
    may differ (the advisor's and a run's) under separate keys.
    """
    identity = weights_identity(model_config.weights)
    if model_config.weights == "none":
        identity += f":seed{seed}{random_weights_tag}"
    content = hashlib.sha256("".join(e.content_hash for e in examples).encode()).hexdigest()
    return feature_cache_key(
        content,
        model_config.backbone,
        identity,
        str(image_size),
        str(cut_layer),
        model_config.pooling,
        f"decoding{DECODING_VERSION}",
    )


BatchPredictor = Callable[[np.ndarray], np.ndarray]
FEATURE_CACHE_ADVICE = "Train on fewer images, or pick a backbone or cut layer with fewer features (Model page)"
_NPY_HEADER_BYTES = 128


def feature_cache_bytes(count: int, feature_dim: int) -> int:
    """Bytes of the saved features of `count` examples with `feature_dim` float32 features each."""
    return count * feature_dim * np.dtype(np.float32).itemsize + _NPY_HEADER_BYTES


class SharedPredictor:
    """A `batch_predictor` made at its first batch and then reused, for several `extract_features` calls over one
    frozen backbone (e.g. each split of a run), which then share one traced graph. `extract_features` runs the
    first batch of a shape alone, so the predictor is made and traced once; afterwards every batch can run at once.
    """

    def __init__(self, feature_extractor: keras.Model) -> None:
        self._feature_extractor = feature_extractor
        self._predict: BatchPredictor | None = None
        self._warm_shapes: set[tuple[int, ...]] = set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._predict is None:
            self._predict = batch_predictor(self._feature_extractor)
        features = self._predict(batch)
        self._warm_shapes.add(batch.shape)
        return features

    def is_warm_for(self, shape: tuple[int, ...]) -> bool:
        """Whether a batch of this shape has run (its graph is traced)."""
        return shape in self._warm_shapes


# Two batches in flight at once: one batch's op chain leaves cores idle (small late-stage tensors, one op at a
# time), a second batch fills them. On 2 CPU cores, medians of 8 interleaved, one stream vs two: EfficientNet-Lite0
# 265 vs 309 images/s at 128 px, 92 vs 105 at 224 px; three gained nothing more. The cost is a second batch's
# activations in memory (+0.26 GiB for MobileNetV2 at 224 px, batch 32; bench/README.md finding 12).
FEATURE_STREAMS = 2


def batch_predictor(feature_extractor: keras.Model) -> BatchPredictor:
    """One batch's features as a compiled graph (4-9x faster than an eager call here).

    The frozen lean graph of `tl_core.fastpath.frozen_inference` where every layer is supported (its first batch
    0.25-0.4 s shorter for EfficientNet-Lite0, outputs identical), else (or with `TRANSFERLAB_FASTPATH=0`) Keras' own `predict_on_batch`.
    The lean graph holds the weights as they are now: keep one predictor only while the backbone is frozen.
    """
    function = frozen_inference_function(feature_extractor)
    if function is None:
        return feature_extractor.predict_on_batch
    return lambda batch: function(batch).numpy()


def extract_features(
    feature_extractor: keras.Model,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    streams: int = FEATURE_STREAMS,
    predict: BatchPredictor | None = None,
) -> np.ndarray:
    """Run the extractor over uint8 images in inference mode, one chunk at a time (the memmap is never loaded whole).

    Every batch has `batch_size` rows (the last one is padded with zeros, its extra rows dropped), so the
    compiled graph is traced once per extractor and not again for each split's partial last batch.
    The memory-mapped pages a chunk touched are released after it, so RSS stays flat however large the cache.
    After the first batch (which traces the graph; skipped for a `SharedPredictor` already warm for this shape),
    up to `streams` batches run at once in worker threads;
    `progress` is still called in order, from this thread. `predict` (a `SharedPredictor`) lets several
    calls over a frozen backbone share one traced graph; by default each call makes its own.
    """
    count = len(images)
    feature_dim = int(feature_extractor.output.shape[-1])
    features = np.empty((count, feature_dim), dtype=np.float32)
    if count == 0:
        return features
    # A distribution strategy's scope belongs to this thread, so distributed extraction stays in it.
    distributed = tf.distribute.has_strategy()
    if not distributed and predict is None:
        predict = batch_predictor(feature_extractor)

    def run_batch(start: int) -> int:
        stop = min(start + batch_size, count)
        batch = np.array(images[start:stop])  # a copy, so the mapped pages can be released right away
        release_pages(images)
        with (
            without_graph_rewrites()
        ):  # per thread: the predict graph is one-off work (tl_core/fastpath/graph_options.py)
            if distributed:  # predict_on_batch returns per-replica rows concatenated under MirroredStrategy
                features[start:stop] = keras.ops.convert_to_numpy(feature_extractor(batch, training=False))
                return stop
            if len(batch) < batch_size:  # one input shape for every call: no retrace (~1 s at 128 px)
                # zeros for images, empty strings for documents (an object array of 0s is no tf.string)
                padded = np.full((batch_size, *batch.shape[1:]), "" if batch.dtype == object else 0, dtype=batch.dtype)
                padded[: len(batch)] = batch
                batch = padded
            features[start:stop] = predict(batch)[: stop - start]
        return stop

    def report(stop: int) -> None:
        if progress is not None:
            progress(stop, count)

    starts = range(0, count, batch_size)
    warm = isinstance(predict, SharedPredictor) and predict.is_warm_for((batch_size, *images.shape[1:]))
    if not warm:
        report(run_batch(starts[0]))  # alone: it traces the graph, which must happen once, not in two threads at once
        starts = starts[1:]
    if distributed or streams <= 1:
        for start in starts:
            report(run_batch(start))
        return features
    with ThreadPoolExecutor(streams, thread_name_prefix="features") as pool:
        in_flight: deque[Future[int]] = deque()  # bounded, so a `progress` that raises (a stop) waits for few batches
        for start in starts:
            in_flight.append(pool.submit(run_batch, start))
            if len(in_flight) >= streams:
                report(in_flight.popleft().result())
        while in_flight:
            report(in_flight.popleft().result())
    return features


def load_cached_features(cache_dir: Path, key: str, count: int) -> np.ndarray | None:
    """The features saved under `key` when they exist for `count` images, else None (no backbone needed).

    Args:
        cache_dir: the feature cache folder.
        key: from `examples_feature_key`.
        count: the number of images the features must cover.

    Returns:
        float32 (count, feature_dim), or None when missing or unreadable.
    """
    path = cache_dir / f"{key}.npy"
    if not path.is_file():
        return None
    try:
        cached = np.load(path)
    except (OSError, ValueError):  # a damaged file is recomputed, not fatal
        return None
    return cached if cached.ndim == 2 and cached.shape[0] == count else None


def cached_features(
    feature_extractor: keras.Model,
    images: np.ndarray,
    *,
    cache_dir: Path | None,
    key: str,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    predict: BatchPredictor | None = None,
) -> FeatureSet:
    """Features for `images`, from `cache_dir/<key>.npy` when present, else computed (see `extract_features`) and saved there.

    Raises:
        QuotaExceededError: the features would take the workspace over its disk quota: checked before the
            backbone runs, and again, under the workspace's lock, when they are saved.
    """
    feature_dim = int(feature_extractor.output.shape[-1])
    if len(images) == 0:
        return FeatureSet(np.zeros((0, feature_dim), np.float32), False, None)
    path = cache_dir / f"{key}.npy" if cache_dir is not None else None
    cached = load_cached_features(cache_dir, key, len(images)) if cache_dir is not None else None
    if cached is not None:
        return FeatureSet(cached, True, path)
    what = f"The feature cache of {len(images):,} examples ({feature_dim} features each)"
    needed = feature_cache_bytes(len(images), feature_dim)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        check_room(path.parent, needed, what, FEATURE_CACHE_ADVICE)  # before minutes of backbone work
    features = extract_features(feature_extractor, images, batch_size=batch_size, progress=progress, predict=predict)
    if path is not None:
        partial = path.with_suffix(f".{os.getpid()}.partial.npy")
        try:
            with reserved(path.parent, needed, what, FEATURE_CACHE_ADVICE):
                np.save(partial, features)
            os.replace(partial, path)  # atomic: a crash never leaves a half-written cache
        finally:
            partial.unlink(missing_ok=True)
    return FeatureSet(features, False, path)
