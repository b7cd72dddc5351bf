"""Decode each image once into an on-disk uint8 cache, then stream batches from it with `tf.data`.

The cache is a `.npy` file memory-mapped read-only: 20,000 images at 224 px are 3 GB on disk but
only the batches in flight are in RAM, and nothing is ever held as float32. It is keyed by the
ordered content hashes and the image size, so a second run on the same split skips decoding.

In a workspace with a disk quota (tl_core/server/disk_budget.py) a cache is only started when it fits: the
file is created at its full size under the workspace's lock, so it counts against the quota before
its first row is decoded, and a run can check all its caches at once before decoding any.

Example:
    >>> cached = build_image_cache(split.examples("train"), 224, Path("cache/images"))
    >>> dataset = image_dataset(cached.images, split.labels("train"), batch_size=32, shuffle=True, seed=1)
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tl_core.data import images as image_io
from tl_core.data.types import Example, Problem
from tl_core.errors import DataError
from tl_core.server.disk_budget import check_room, reserved

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger(__name__)
_CACHE_FORMAT_VERSION = (
    f"1.{image_io.DECODING_VERSION}"  # the file layout and the decoding: a change makes old caches unused
)
RELEASE_EVERY_ROWS = 64  # while decoding: flush and release the written pages this often (a flush is one msync)
_HEADER_AND_FAILURES_BYTES = 4096  # the .npy header (128 bytes) and its failures list, with room to spare
IMAGE_CACHE_ADVICE = "Train at a smaller image size (Model page) or on fewer images"


@dataclass
class ImageCacheResult:
    images: np.ndarray  # read-only memmap (N, S, S, 3) uint8
    cache_path: Path | None  # None for an empty example list
    reused: bool
    failures: list[Problem]  # images that could not be decoded now and were cached as black


def image_cache_key(examples: Sequence[Example], image_size: int) -> str:
    """sha256 of the ordered content hashes and the image size (and the cache format)."""
    digest = hashlib.sha256(f"v{_CACHE_FORMAT_VERSION}|{image_size}|".encode())
    for example in examples:
        digest.update(example.content_hash.encode())
    return digest.hexdigest()


def image_cache_path(examples: Sequence[Example], image_size: int, cache_dir: Path) -> Path:
    """Where `build_image_cache` keeps these examples decoded at this size."""
    return Path(cache_dir) / f"images-{image_cache_key(examples, image_size)[:32]}-{len(examples)}x{image_size}.npy"


def image_cache_bytes(count: int, image_size: int) -> int:
    """Bytes `build_image_cache` writes for `count` images at `image_size` px (the rows, the header, the failures list).

    Example:
        >>> image_cache_bytes(10_000, 256) // 2**20
        1875
    """
    return count * image_size * image_size * 3 + _HEADER_AND_FAILURES_BYTES


def check_image_cache_room(example_lists: Sequence[Sequence[Example]], image_size: int, cache_dir: Path) -> None:
    """Refuse, before anything is decoded, a run whose image caches would not fit in its workspace's disk quota.

    Args:
        example_lists: the images of each cache the run needs (e.g. one list per split).
        image_size: square side in pixels.
        cache_dir: the workspace's image cache folder.

    Raises:
        QuotaExceededError: the caches not built yet need more than is left of the quota (none where there is no quota).
    """
    needed = sum(
        image_cache_bytes(len(examples), image_size)
        for examples in example_lists
        if examples and not has_image_cache(examples, image_size, cache_dir)
    )
    if needed:
        check_room(
            cache_dir,
            needed,
            f"The image cache for this run ({sum(map(len, example_lists)):,} images at {image_size} px)",
            IMAGE_CACHE_ADVICE,
        )


def has_image_cache(examples: Sequence[Example], image_size: int, cache_dir: Path) -> bool:
    """Whether `build_image_cache` would reuse a complete cache for these examples (and decode nothing)."""
    return (
        bool(examples)
        and _open_existing(image_cache_path(examples, image_size, cache_dir), len(examples), image_size) is not None
    )


def release_pages(array: np.ndarray, *, flush: bool = False) -> None:
    """Drop the memory-mapped pages of `array` from this process's RSS (no-op for an ordinary array).

    Every page a process touches in a memmap stays mapped, and counted in its RSS, until the kernel
    needs the memory: reading a 3 GB cache once made a run's RSS grow by 3 GB. `MADV_DONTNEED` unmaps
    them; the data stays in the page cache (or on disk), and the next read costs a minor fault.

    Args:
        array: a `np.memmap` (or a view of one); its whole mapping is released.
        flush: write dirty pages to the file first (for a mapping being written).
    """
    mapping = getattr(array, "_mmap", None)
    if not isinstance(mapping, mmap.mmap) or mapping.closed:
        return
    if flush:
        mapping.flush()
    mapping.madvise(mmap.MADV_DONTNEED)


def _failures_path(cache_path: Path) -> Path:
    return cache_path.with_suffix(".failures.json")


def _open_existing(cache_path: Path, count: int, image_size: int) -> np.ndarray | None:
    """The cache opened read-only when it exists and has the expected shape, else None."""
    if not cache_path.is_file():
        return None
    try:
        images = np.load(cache_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if images.shape != (count, image_size, image_size, 3) or images.dtype != np.uint8:
        return None
    return images


def _decode_into(
    cache: np.ndarray,
    examples: Sequence[Example],
    image_size: int,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> list[Problem]:
    """Fill `cache` row by row from a thread pool (Pillow releases the GIL while decoding)."""
    failures: list[Problem] = []

    def decode(index: int) -> None:
        cache[index] = image_io.load_image_array(examples[index].path, image_size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(decode, index): index for index in range(len(examples))}
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                error = future.exception()
                if isinstance(error, DataError):  # a bad file, not a bug: keep going with a black image
                    example = examples[futures[future]]
                    cache[futures[future]] = 0
                    kind = error.kind if isinstance(error, image_io.ImageDecodeError) else "unreadable"
                    reason = error.fix if isinstance(error, image_io.ImageDecodeError) else str(error)
                    message = f"{example.relpath} could not be decoded ({reason}); it is used as a black image. Fix or remove it and train again."
                    failures.append(Problem("warning", kind, message, example.relpath))
                    logger.warning("image cache: %s", failures[-1].message)
                elif error is not None:
                    raise error
                if (
                    done % RELEASE_EVERY_ROWS == 0
                ):  # written rows need not stay in RSS (flushed first, so nothing is lost)
                    release_pages(cache, flush=True)
                if progress is not None:
                    progress(done, len(examples))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # stop queued decodes before the partial file is removed
            raise
    failures.sort(key=lambda problem: problem.file or "")
    return failures


def build_image_cache(
    examples: Sequence[Example],
    image_size: int,
    cache_dir: Path,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImageCacheResult:
    """Decode and resize `examples` once into `cache_dir`, or reuse the cache from an earlier build.

    Args:
        examples: images in the order the cache rows should have.
        image_size: square side in pixels (the model's input size).
        cache_dir: folder for cache files; created if missing.
        workers: decoding threads (default: min(8, CPU count)).
        progress: called as progress(done, total) while decoding.

    Returns:
        The read-only memmap, its path, whether it was reused, and the images that failed to decode.

    Raises:
        QuotaExceededError: a new cache would take the workspace over its disk quota; nothing is written.
    """
    if image_size < 1:
        raise DataError(f"image_size={image_size} must be a positive number of pixels, e.g. 224.")
    if not examples:
        return ImageCacheResult(np.zeros((0, image_size, image_size, 3), np.uint8), None, False, [])
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_path = image_cache_path(examples, image_size, cache_dir)
    existing = _open_existing(cache_path, len(examples), image_size)
    if existing is not None:
        failures_file = _failures_path(cache_path)
        failures = [Problem(**row) for row in json.loads(failures_file.read_text())] if failures_file.is_file() else []
        return ImageCacheResult(existing, cache_path, True, failures)
    partial = cache_path.with_name(f".{cache_path.stem}.{os.getpid()}.partial.npy")
    what = f"The image cache of {len(examples):,} images at {image_size} px"
    try:
        with reserved(cache_dir, image_cache_bytes(len(examples), image_size), what, IMAGE_CACHE_ADVICE):
            # Created at its full length: from here on it counts in full against the quota.
            cache = np.lib.format.open_memmap(
                partial, mode="w+", dtype=np.uint8, shape=(len(examples), image_size, image_size, 3)
            )
        failures = _decode_into(cache, examples, image_size, workers or min(8, os.cpu_count() or 2), progress)
        release_pages(cache, flush=True)
        cache.flush()
        del cache
        _failures_path(cache_path).write_text(json.dumps([asdict(problem) for problem in failures]))
        os.replace(partial, cache_path)  # atomic: a crash never leaves a half-written cache under the real name
    finally:
        partial.unlink(missing_ok=True)
    return ImageCacheResult(np.load(cache_path, mmap_mode="r"), cache_path, False, failures)


def image_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    sample_weights: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches of (uint8 images, int32 labels[, float32 weights]) read from `images` as needed.

    Only indices go through `tf.data`; each batch gathers its rows from the (memory-mapped) array in
    a `tf.numpy_function`, so the cache is never copied into a TensorFlow constant.

    Args:
        images: (N, S, S, 3) uint8, usually the memmap from `build_image_cache`.
        labels: N class indices.
        batch_size: images per batch (the last batch may be smaller).
        shuffle: reshuffle every epoch; the order sequence is fixed by `seed`.
        seed: shuffling seed.
        sample_weights: optional N per-example loss weights.

    Returns:
        A prefetching `tf.data.Dataset`.
    """
    import tensorflow as tf  # deferred: scanning and caching must not pay for importing TensorFlow

    if len(images) != len(labels) or (sample_weights is not None and len(sample_weights) != len(labels)):
        raise ValueError(
            f"images ({len(images)}), labels ({len(labels)}) and sample_weights must have the same length."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1.")
    label_array = np.asarray(labels, dtype=np.int32)
    weight_array = None if sample_weights is None else np.asarray(sample_weights, dtype=np.float32)
    image_size = images.shape[1]

    def gather(indices: np.ndarray) -> tuple[np.ndarray, ...]:
        batch = (np.asarray(images[indices], dtype=np.uint8), label_array[indices])
        release_pages(images)  # the rows are copied: keep RSS flat over an epoch of a large cache
        return batch if weight_array is None else (*batch, weight_array[indices])

    output_types = [tf.uint8, tf.int32] + ([] if weight_array is None else [tf.float32])

    def load(indices: tf.Tensor) -> tuple[tf.Tensor, ...]:
        tensors = tf.numpy_function(gather, [indices], output_types, stateful=False)
        tensors[0].set_shape((None, image_size, image_size, 3))
        for tensor in tensors[1:]:
            tensor.set_shape((None,))
        return tuple(tensors)

    dataset = tf.data.Dataset.range(len(images))
    if shuffle:
        dataset = dataset.shuffle(max(1, len(images)), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
