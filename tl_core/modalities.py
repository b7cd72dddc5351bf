"""What differs between images and text, in one place; the runner, CLI and app ask here, never branch.

A modality says how to scan a source into examples, load a split's examples for training, build the
transfer model, and batch examples into a `tf.data.Dataset`; and the words, flags and file readers that the
app, CLI, prediction and export use where the kinds differ. Everything else (splitting, the training loop
and its phases, the feature cache, the run store, evaluation, export) is shared.

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
from tl_core.layout import KERAS_FILE, LABELS_JSON_FILE, SAVED_MODEL_DIR, TFLITE_FILE

if TYPE_CHECKING:
    import keras
    import numpy as np
    import tensorflow as tf

    from tl_core.data.types import DatasetSplit, ScanReport, TrainingData
    from tl_core.models.spec import BackboneSpec
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
        size_unit: what a backbone's sizes count in, for people ("px" or "words").
        everyday_plural: several examples in a sentence ("pictures", "documents").
        scanning_message: shown while a dataset of this kind is scanned.
        preview: how the app shows examples: "thumbnails" or "excerpts" (plain-text beginnings).
        backbones_heading: what the Model page calls the backbone table ("text backbones").
        model_intro: the Model page's first sentence: what transfer learning reuses for this kind of data.
        weights_column: the backbone table's column saying where pretrained weights come from.
        missing_weights: that column when no installed package holds a backbone's weights.
        weights_elsewhere: the same in the CLI's `backbones` table.
        unreadable_file_fix: what to do with a file brought for prediction that cannot be read.
        demo_file_glob: the files a demo dataset of this kind writes per class.
        model_input: what an exported model takes, for the model card (`{size}`: the input size).
        export_usage: the model card's example of using the export (`{size}`: the input size).
        decodes_to_cache: whether loading decodes examples into an on-disk cache (sized against the disk quota
            first, and decoded in a helper process while the model builds).
        reuses_folder_scans: whether a folder's scan is kept in the workspace and reused while no file changed.
        uses_image_size: whether `ModelConfig.image_size` applies (a run's backbone then fixes it); if not the
            model reads `sequence_length` tokens.
        has_augmentation: whether training can augment examples (flips and rotations are for pictures).
        has_cut_depths: whether a backbone can be cut at an earlier block (a text backbone has one weighted layer).
        measured_by_advisor: whether the mode advisor and the cut-depth probe can measure its backbones.
        advisor_times_encoders: whether its advice times each offline encoder on the user's documents and
            recommends a backbone and mode (`tl_core.advisor.text_advice`) instead of probing modes.
        takes_typed_text: whether a run's model classifies strings typed in (`predict --text`, the Predict page).
        has_classic_baseline: whether `--compare-scratch` also fits TF-IDF + logistic regression on the run's split
            (`tl_core.training.classic_baseline`: a bag of words for documents; pixels have no such reference).
    """

    name: Modality
    noun: str
    default_backbone: str
    default_weights: str
    input_unit: str
    size_unit: str
    everyday_plural: str
    scanning_message: str
    preview: str
    backbones_heading: str
    model_intro: str
    weights_column: str
    missing_weights: str
    weights_elsewhere: str
    unreadable_file_fix: str
    demo_file_glob: str
    model_input: str
    export_usage: str
    decodes_to_cache: bool = False
    reuses_folder_scans: bool = False
    uses_image_size: bool = False
    has_augmentation: bool = False
    has_cut_depths: bool = False
    measured_by_advisor: bool = False
    advisor_times_encoders: bool = False
    takes_typed_text: bool = False
    has_classic_baseline: bool = False

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

    @abstractmethod
    def has_offline_weights(self, spec: BackboneSpec) -> bool:
        """Whether `spec`'s pretrained weights ship with an installed package (no download)."""

    @abstractmethod
    def read_for_prediction(self, path: Path, input_size: int, *, max_pixels: int) -> Any:
        """One file a user brought, read exactly as in training (raises `DataError` when it cannot be)."""

    @abstractmethod
    def model_batch(self, examples: Sequence[Any]) -> Any:
        """Examples read by `read_for_prediction` (or typed) as the one batch a run's saved model takes."""

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
    size_unit = "px"
    everyday_plural = "pictures"
    scanning_message = "Scanning the images…"
    preview = "thumbnails"
    backbones_heading = "backbones"
    model_intro = "Transfer learning reuses a network trained on millions of photos (the backbone) and trains a small new head for your classes."
    weights_column = "ImageNet weights"
    missing_weights = "needs a download"
    weights_elsewhere = "download (imagenet)"
    unreadable_file_fix = "it cannot be read: save it again as JPEG or PNG and try again."
    demo_file_glob = "*.png"
    model_input = "uint8 RGB images, {size}x{size} pixels; preprocessing is inside the model"
    export_usage = f"""```python
import json, keras, numpy as np
from PIL import Image
model = keras.saving.load_model("{KERAS_FILE}")
labels = json.load(open("{LABELS_JSON_FILE}", encoding="utf-8"))
image = np.asarray(Image.open("photo.jpg").convert("RGB").resize(({{size}}, {{size}})))
probabilities = model.predict(image[None])[0]
print(labels[int(probabilities.argmax())])
```"""
    decodes_to_cache = True
    reuses_folder_scans = True
    uses_image_size = True
    has_augmentation = True
    has_cut_depths = True
    measured_by_advisor = True

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

    def has_offline_weights(self, spec: BackboneSpec) -> bool:
        from tl_core.models.weights import OFFLINE_WEIGHTS

        provider = OFFLINE_WEIGHTS.get(spec.offline_weights) if spec.offline_weights else None
        return bool(provider and provider.is_installed())

    def read_for_prediction(self, path: Path, input_size: int, *, max_pixels: int) -> Any:
        """Decoded and resized to `input_size` pixels per side."""
        from tl_core.data.images import load_image_array

        return load_image_array(path, input_size, max_pixels=max_pixels)

    def model_batch(self, examples: Sequence[Any]) -> Any:
        import numpy as np

        return np.stack(examples)

    def describe_input_size(self, size: int) -> str:
        return f"{size}px"


class TextModality(DataModality):
    """Documents: .txt files or CSV/TSV rows, read as strings; tokenising happens inside the model."""

    name: Modality = "text"
    noun = "document"
    default_backbone = "glove_6b_50d"
    default_weights = "glove"
    input_unit = "tokens"
    size_unit = "words"
    everyday_plural = "documents"
    scanning_message = "Reading the documents…"
    preview = "excerpts"
    backbones_heading = "text backbones"
    model_intro = "Your dataset holds text. Transfer learning reuses word vectors learned from billions of words (the backbone) and trains a small new head for your classes."
    weights_column = "pretrained weights"
    missing_weights = "package not installed"
    weights_elsewhere = "folder or handle"
    unreadable_file_fix = "it is not a plain-text file (it holds binary data or cannot be read): save it as UTF-8 text (.txt) and try again."
    demo_file_glob = "*.txt"
    model_input = "raw UTF-8 strings, one document each; lower-casing and tokenising are inside the model, which reads the first {size} word tokens"
    export_usage = f"""With TensorFlow only, through the SavedModel:
```python
import json, tensorflow as tf
model = tf.saved_model.load("{SAVED_MODEL_DIR}")
labels = json.load(open("{LABELS_JSON_FILE}", encoding="utf-8"))
probabilities = model.serve(tf.constant(["the text to classify"])).numpy()[0]
print(labels[int(probabilities.argmax())])
```
`{KERAS_FILE}` uses TransferLab's tokeniser: `import tl_core.models.text_model` before `keras.saving.load_model`.
`{TFLITE_FILE}` needs TensorFlow Lite's Flex delegate (select TensorFlow ops) for its string operations."""
    takes_typed_text = True
    has_classic_baseline = True
    advisor_times_encoders = True

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

    def has_offline_weights(self, spec: BackboneSpec) -> bool:
        from tl_core.models.text_backbones import has_packaged_weights

        return has_packaged_weights(spec)

    def read_for_prediction(self, path: Path, input_size: int, *, max_pixels: int) -> Any:
        """The document's text (a file, or a table row); the model reads its first `input_size` tokens."""
        from tl_core.data.text_dataset import read_document

        return read_document(str(path))

    def model_batch(self, examples: Sequence[Any]) -> Any:
        from tl_core.models.text_model import as_text_array

        return as_text_array(examples)


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
