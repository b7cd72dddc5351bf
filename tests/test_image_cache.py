"""The decoded-image cache (built once, reused, crash-safe) and the tf.data pipeline streaming from it."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tl_core.data import images as image_io  # noqa: E402
from tl_core.data.image_cache import build_image_cache, image_dataset, release_pages  # noqa: E402
from tl_core.data.image_dataset import scan_dataset
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.data.types import Example

SIZE = 24


@pytest.fixture()
def examples(tmp_path: Path) -> list[Example]:
    root = make_shapes_dataset(tmp_path / "data", num_classes=2, images_per_class=5, image_size=40, image_format="JPEG")
    return scan_dataset(root).examples


def test_build_decodes_every_example_into_a_read_only_memmap(tmp_path: Path, examples: list[Example]) -> None:
    reported: list[tuple[int, int]] = []

    result = build_image_cache(
        examples, SIZE, tmp_path / "cache", workers=2, progress=lambda done, total: reported.append((done, total))
    )

    assert isinstance(result.images, np.memmap) and not result.images.flags.writeable
    assert result.images.shape == (10, SIZE, SIZE, 3) and result.images.dtype == np.uint8
    for row, example in zip(result.images, examples):
        assert np.array_equal(row, image_io.load_image_array(example.path, SIZE))
    assert not result.reused and result.failures == []
    assert reported[-1] == (10, 10) and len(reported) == 10
    assert [p.name for p in (tmp_path / "cache").iterdir() if "partial" in p.name] == []


def test_second_build_reuses_the_cache_without_decoding(
    tmp_path: Path, examples: list[Example], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_image_cache(examples, SIZE, tmp_path / "cache")

    def must_not_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the cache exists")

    monkeypatch.setattr(image_io, "decode_image", must_not_decode)
    monkeypatch.setattr(image_io, "load_image_array", must_not_decode)
    second = build_image_cache(examples, SIZE, tmp_path / "cache")

    assert second.reused and second.cache_path == first.cache_path
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))
    with pytest.raises(AssertionError, match="decoded although"):  # a different size or order is a different cache
        build_image_cache(list(reversed(examples)), SIZE, tmp_path / "cache")


def test_undecodable_image_becomes_black_with_a_warning_that_survives_reuse(
    tmp_path: Path, examples: list[Example]
) -> None:
    Path(examples[3].path).write_bytes(b"")  # broken after the scan

    result = build_image_cache(examples, SIZE, tmp_path / "cache")
    reused = build_image_cache(examples, SIZE, tmp_path / "cache")

    assert not np.any(result.images[3]) and np.any(result.images[2]) and np.any(result.images[4])
    assert [(p.kind, p.file) for p in result.failures] == [("zero-bytes", examples[3].relpath)]
    assert reused.reused and reused.failures == result.failures


def test_crash_mid_build_leaves_no_cache_behind(
    tmp_path: Path, examples: list[Example], monkeypatch: pytest.MonkeyPatch
) -> None:
    def progress(done: int, total: int) -> None:
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_image_cache(examples, SIZE, tmp_path / "cache", workers=1, progress=progress)

    assert list((tmp_path / "cache").glob("*.npy")) == [] and list((tmp_path / "cache").glob(".*")) == []
    assert not build_image_cache(examples, SIZE, tmp_path / "cache").reused


def test_empty_example_list_gives_an_empty_array(tmp_path: Path) -> None:
    result = build_image_cache([], SIZE, tmp_path / "cache")

    assert result.images.shape == (0, SIZE, SIZE, 3) and result.cache_path is None


class _CountingImages:
    """Array stand-in that records which rows are read, to prove the pipeline reads lazily."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape
        self.rows_read = 0

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        rows = self.array[index]
        self.rows_read += len(rows)
        return rows


def _images_and_labels(count: int = 10) -> tuple[np.ndarray, np.ndarray]:
    images = np.zeros((count, 8, 8, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(count)  # each image carries its own index
    return images, np.arange(count) % 3


def _order(dataset: object) -> list[int]:
    return [int(v) for images, *_ in dataset for v in images.numpy()[:, 0, 0, 0]]  # type: ignore[attr-defined]


def test_dataset_yields_uint8_images_and_int32_labels_in_batches() -> None:
    images, labels = _images_and_labels()

    batches = list(image_dataset(images, labels, batch_size=4, shuffle=False))

    assert [len(b[1]) for b in batches] == [4, 4, 2]
    first_images, first_labels = batches[0]
    assert first_images.dtype.name == "uint8" and first_images.shape == (4, 8, 8, 3)
    assert first_labels.dtype.name == "int32" and first_labels.numpy().tolist() == [0, 1, 2, 0]
    assert _order(image_dataset(images, labels, batch_size=4, shuffle=False)) == list(range(10))


def test_shuffling_is_seeded_and_keeps_labels_with_their_images() -> None:
    images, labels = _images_and_labels(30)

    first = _order(image_dataset(images, labels, batch_size=8, shuffle=True, seed=3))
    again = _order(image_dataset(images, labels, batch_size=8, shuffle=True, seed=3))
    other = _order(image_dataset(images, labels, batch_size=8, shuffle=True, seed=4))

    assert first == again and first != other and first != list(range(30)) and sorted(first) == list(range(30))
    for batch_images, batch_labels in image_dataset(images, labels, batch_size=8, shuffle=True, seed=3):
        assert (batch_images.numpy()[:, 0, 0, 0] % 3).tolist() == batch_labels.numpy().tolist()


def test_sample_weights_come_third() -> None:
    images, labels = _images_and_labels()
    weights = np.linspace(0.5, 1.4, 10)

    batch_images, batch_labels, batch_weights = next(
        iter(image_dataset(images, labels, batch_size=10, shuffle=False, sample_weights=weights))
    )

    assert batch_weights.dtype.name == "float32" and np.allclose(batch_weights.numpy(), weights)


def test_dataset_reads_rows_lazily_instead_of_copying_the_cache() -> None:
    images, labels = _images_and_labels(40)
    counting = _CountingImages(images)

    dataset = image_dataset(counting, labels, batch_size=5, shuffle=True, seed=0)  # type: ignore[arg-type]
    assert counting.rows_read == 0
    next(iter(dataset.take(1)))

    assert 5 <= counting.rows_read < 40  # only the first batch (plus what prefetch ran ahead for)


def _mapped_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isalnum() and "-" in line.split()[0]:  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_pages_read_through_the_cache_leave_the_process_rss(tmp_path: Path) -> None:
    path = tmp_path / "rows.npy"
    written = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(64, 128, 128, 3))
    written[:] = 7
    assert _mapped_kib(path) > 2000  # 3 MiB written through the mapping are resident
    release_pages(written, flush=True)
    assert _mapped_kib(path) < 200
    del written
    cache = np.load(path, mmap_mode="r")

    batches = [
        int(batch[0][:, 0, 0, 0].numpy().sum())
        for batch in image_dataset(cache, np.zeros(64, np.int32), batch_size=16, shuffle=True, seed=0)
    ]

    assert sum(batches) == 7 * 64  # the data is intact after flushing and releasing
    assert _mapped_kib(path) < 600  # without the release a full read leaves ~3 MiB resident
    assert int(np.asarray(cache[5:7]).sum()) == 7 * 2 * 128 * 128 * 3
    assert _mapped_kib(path) > 0
    release_pages(cache)
    assert _mapped_kib(path) < 200
    release_pages(np.zeros(3))  # an ordinary array: nothing to release
