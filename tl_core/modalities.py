"""What differs between images and text, in one place; the runner, CLI and app ask here, never branch.

A modality says how to scan a source into examples, load a split's examples for training, build the
transfer model, and batch examples into a `tf.data.Dataset`. Everything else (splitting, the training
loop and its phases, the feature cache, the run store, evaluation, export) is shared.

Example:
    >>> modality = get_modality(resolve_modality("data/reviews", "auto"))
    >>> report = modality.scan("data/reviews", extract_root=None)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from tl_core.config import ConfigError, Modality, ModelConfig

if TYPE_CHECKING:
    import keras
    import numpy as np
    import tensorflow as tf

    from tl_core.data.types import DatasetSplit, ScanReport, TrainingData
    from tl_core.models.transfer_model import TransferModel

AUTO = "auto"
LogFunction = Callable[[str, str], None]
# For a split's name, the callback its decoding calls as progress(done, total) (see tl_core/training/preparation.py).
SplitProgress = Callable[[str], Callable[[int, int], None]]


class DataModality(ABC):
    """One kind of example (images, documents): its defaults and the operations that differ by kind.

    A new modality is one new subclass registered in `MODALITIES`; callers never branch on its name.
    Operations import their engine code lazily, so scanning never loads TensorFlow.

    Attributes:
        name: the `DataConfig.modality` value, e.g. `image`.
        noun: what one example is called in messages ("image", "document").
        default_backbone: the registry name a new run starts from (offline weights).
        default_weights: the pretrained weights keyword of that backbone.
        input_unit: what `TransferModel.image_size` counts ("px" or "tokens").
        decodes_to_cache: whether loading decodes examples into an on-disk cache (sized against the disk quota
            first, and decoded in a helper process while the model builds).
        reuses_folder_scans: whether a folder's scan is kept in the workspace and reused while no file changed.
    """

    name: Modality
    noun: str
    default_backbone: str
    default_weights: str
    input_unit: str
    decodes_to_cache: bool = False
    reuses_folder_scans: bool = False

    @abstractmethod
    def scan(self, source: str | Path, *, extract_root: Path | None, readable_roots: Sequence[str] = ()) -> ScanReport:
        """Validate a source and list its usable examples (raises `DataError` when nothing is trainable).

        `readable_roots`: on a workshop server, the only folders the dataset's files may resolve into.
        """

    @abstractmethod
    def input_size(self, model_config: ModelConfig) -> int:
        """What the model reads per example: pixels per side, or tokens per document."""

    @abstractmethod
    def load(
        self,
        split: DatasetSplit,
        input_size: int,
        cache_dir: Path,
        log: LogFunction,
        progress: SplitProgress | None = None,
        decoded_elsewhere: Collection[str] = (),
    ) -> TrainingData:
        """Every split's examples ready for training.

        `progress` follows the decoding of each split (it may raise to stop); `decoded_elsewhere`: splits whose
        cache this run has just made in a helper process (logged as decoded, not reused).
        """

    @abstractmethod
    def build(
        self,
        model_config: ModelConfig,
        num_classes: int,
        *,
        cache_dir: Path | None = None,
        backbone: keras.Model | None = None,
        augmentation_seed: int | None = None,
    ) -> TransferModel:
        """The transfer model: preprocessing (or tokenising) -> frozen backbone -> new head."""

    @abstractmethod
    def dataset(
        self,
        examples: np.ndarray,
        labels: np.ndarray,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        sample_weights: np.ndarray | None = None,
    ) -> tf.data.Dataset:
        """Batches of (examples, labels[, weights]) for `fit`, `predict` and evaluation."""

    def describe_input_size(self, size: int) -> str:
        """The input size for people, e.g. `96px` or `256 tokens per document`."""
        return f"{size} {self.input_unit} per {self.noun}"


class ImageModality(DataModality):
    """Image files: decoded once into a memory-mapped cache at the model's input size."""

    name: Modality = "image"
    noun = "image"
    default_backbone = "efficientnet_lite0"
    default_weights = "imagenet"
    input_unit = "px"
    decodes_to_cache = True
    reuses_folder_scans = True

    def scan(self, source: str | Path, *, extract_root: Path | None, readable_roots: Sequence[str] = ()) -> ScanReport:
        from tl_core.data.image_dataset import scan_dataset

        return scan_dataset(source, extract_root=extract_root, readable_roots=readable_roots)

    def input_size(self, model_config: ModelConfig) -> int:
        """Pixels per side: the setting, or the backbone's default when unset."""
        from tl_core.models.registry import get_backbone_spec, resolve_image_size

        return resolve_image_size(get_backbone_spec(model_config.backbone), model_config.image_size)

    def load(
        self,
        split: DatasetSplit,
        input_size: int,
        cache_dir: Path,
        log: LogFunction,
        progress: SplitProgress | None = None,
        decoded_elsewhere: Collection[str] = (),
    ) -> TrainingData:
        return _load_images(split, input_size, cache_dir, log, progress, decoded_elsewhere)

    def build(
        self,
        model_config: ModelConfig,
        num_classes: int,
        *,
        cache_dir: Path | None = None,
        backbone: keras.Model | None = None,
        augmentation_seed: int | None = None,
    ) -> TransferModel:
        from tl_core.models.transfer_model import build_transfer_model

        return build_transfer_model(
            model_config, num_classes, cache_dir=cache_dir, backbone=backbone, augmentation_seed=augmentation_seed
        )

    def dataset(
        self,
        examples: np.ndarray,
        labels: np.ndarray,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        sample_weights: np.ndarray | None = None,
    ) -> tf.data.Dataset:
        from tl_core.data.image_cache import image_dataset

        return image_dataset(
            examples, labels, batch_size=batch_size, shuffle=shuffle, seed=seed, sample_weights=sample_weights
        )

    def describe_input_size(self, size: int) -> str:
        return f"{size}px"


class TextModality(DataModality):
    """Documents: .txt files or CSV/TSV rows, read as strings; tokenising happens inside the model."""

    name: Modality = "text"
    noun = "document"
    default_backbone = "glove_6b_50d"
    default_weights = "glove"
    input_unit = "tokens"

    def scan(self, source: str | Path, *, extract_root: Path | None, readable_roots: Sequence[str] = ()) -> ScanReport:
        from tl_core.data.text_dataset import scan_text_dataset

        return scan_text_dataset(source, extract_root=extract_root, readable_roots=readable_roots)

    def input_size(self, model_config: ModelConfig) -> int:
        """Word tokens per document."""
        return model_config.sequence_length

    def load(
        self,
        split: DatasetSplit,
        input_size: int,
        cache_dir: Path,
        log: LogFunction,
        progress: SplitProgress | None = None,
        decoded_elsewhere: Collection[str] = (),
    ) -> TrainingData:
        from tl_core.data.text_dataset import load_texts

        data = load_texts(split)
        for name in data.images:
            if len(data.images[name]):
                log(
                    "info",
                    f"{name}: {len(data.images[name])} documents, the first {input_size} word tokens of each are read.",
                )
        return data

    def build(
        self,
        model_config: ModelConfig,
        num_classes: int,
        *,
        cache_dir: Path | None = None,
        backbone: keras.Model | None = None,
        augmentation_seed: int | None = None,
    ) -> TransferModel:
        from tl_core.models.text_model import build_text_transfer_model

        return build_text_transfer_model(model_config, num_classes, cache_dir=cache_dir, backbone=backbone)

    def dataset(
        self,
        examples: np.ndarray,
        labels: np.ndarray,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        sample_weights: np.ndarray | None = None,
    ) -> tf.data.Dataset:
        from tl_core.models.text_model import text_dataset

        return text_dataset(
            examples, labels, batch_size=batch_size, shuffle=shuffle, seed=seed, sample_weights=sample_weights
        )


MODALITIES: dict[str, DataModality] = {modality.name: modality for modality in (ImageModality(), TextModality())}


def get_modality(name: str) -> DataModality:
    """The modality called `name` (`image` or `text`)."""
    if name not in MODALITIES:
        raise ConfigError(f"modality={name!r}: choose one of {', '.join(get_args(Modality))}.")
    return MODALITIES[name]


def resolve_modality(source: str | Path, requested: str = AUTO) -> Modality:
    """`requested`, or for `auto` what the source holds: text when it has more documents than images."""
    if requested != AUTO:
        return get_modality(requested).name
    from tl_core.data.checks import detect_modality

    return detect_modality(source)


def _load_images(
    split: DatasetSplit,
    image_size: int,
    cache_dir: Path,
    log: LogFunction,
    progress: SplitProgress | None,
    decoded_elsewhere: Collection[str],
) -> TrainingData:
    import numpy as np

    from tl_core.data.image_cache import build_image_cache
    from tl_core.data.types import SPLIT_NAMES, TrainingData

    images: dict[str, Any] = {}
    labels: dict[str, Any] = {}
    for name in SPLIT_NAMES:
        examples = split.examples(name)
        labels[name] = split.labels(name)
        if not examples:
            images[name] = np.zeros((0, image_size, image_size, 3), np.uint8)
            continue
        cached = build_image_cache(examples, image_size, cache_dir, progress=progress(name) if progress else None)
        for problem in cached.failures:
            log("warning", problem.message)
        origin = (
            "decoded and cached"
            if not cached.reused
            else "decoded and cached by a helper process"
            if name in decoded_elsewhere
            else "from the decoded-image cache"
        )
        log("info", f"{name}: {len(examples)} images {origin} at {image_size}px.")
        images[name] = cached.images
    return TrainingData(tuple(split.class_names), images, labels)
