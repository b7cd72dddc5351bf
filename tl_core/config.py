"""Inert, validated configuration: one frozen dataclass tree flows from the UI/CLI to the engine.

Configuration never holds learned state (that lives in `TrainResult` and the run store).
This module imports nothing from `tl_core` so every other module may import it.

Example:
    >>> cfg = RunConfig(data=DataConfig(source="flowers/"), model=ModelConfig(backbone="mobilenet_v2"))
    >>> cfg.train.mode
    'feature-extraction'
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Mode = Literal["feature-extraction", "fine-tune", "full", "progressive"]
Pooling = Literal["avg", "max"]
ClassWeighting = Literal["auto", "on", "off"]
Modality = Literal["image", "text"]

MODES: tuple[str, ...] = get_args(Mode)
RUN_WEIGHTS_PREFIX = "run:"  # `ModelConfig.weights` of `run:<RUN_ID>`: a finished run's backbone
MIN_SEQUENCE_LENGTH = 8
MAX_SEQUENCE_LENGTH = 4096


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which one and how to fix it."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled data is and how it is split.

    Args:
        source: a folder (one sub-folder per class), a .zip/.tar/.tar.gz of one, or a CSV of `path,label`
            (text: a CSV/TSV with a text and a label column).
        val_fraction: share of each class held out for validation (ignored if the data has `val/`).
        test_fraction: share of each class held out for testing (ignored if the data has `test/`).
        seed: the same seed and data always give the same split.
        modality: the kind of examples: `image` files, or `text` documents (.txt files or CSV/TSV rows).
        readable_roots: on a workshop server, the folders the user may read (their own area and the shared
            datasets): every file the dataset names must resolve inside one of them. Empty: any file (personal mode).
    """

    source: str
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    modality: Modality = "image"
    readable_roots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(bool(str(self.source).strip()), "DataConfig.source is empty: pass a folder, archive or CSV path.")
        _require(0.0 <= self.val_fraction < 1.0, f"val_fraction={self.val_fraction} must be in [0, 1).")
        _require(0.0 <= self.test_fraction < 1.0, f"test_fraction={self.test_fraction} must be in [0, 1).")
        _require(
            self.val_fraction + self.test_fraction < 0.9,
            f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:.2f} leaves too little "
            "to train on: keep their sum below 0.9.",
        )
        _require(
            self.modality in get_args(Modality), f"modality={self.modality!r}: choose one of {get_args(Modality)}."
        )
        # Lists from JSON (a stored run's config) become tuples so the config stays hashable.
        object.__setattr__(self, "readable_roots", tuple(str(root) for root in self.readable_roots))
        _require(
            all(root.startswith("/") for root in self.readable_roots),
            f"readable_roots={self.readable_roots}: give absolute folder paths, or none for any folder.",
        )


@dataclass(frozen=True)
class ModelConfig:
    """What network to build.

    Args:
        backbone: a registry name (`python -m tl_core backbones` lists them); the default has offline ImageNet weights.
        weights: `imagenet`, `none` (random init), a weights file (.h5/.weights.h5/.keras),
            a TF Hub handle or local SavedModel folder, or `run:<RUN_ID>` (a finished run's backbone).
        image_size: square input side in pixels; None uses the backbone's default.
        pooling: how the bottleneck feature map becomes a vector.
        cut_layer: take features from this backbone layer instead of the last one.
        head_hidden_units: sizes of optional hidden Dense(relu) layers in the head, e.g. (128,).
        dropout: dropout rate before each Dense layer of the head.
        augment: random flip/rotation/zoom/contrast/translation on training images.
        sequence_length: text models only: word tokens per document the model reads (longer ones are cut).
    """

    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    image_size: int | None = None
    pooling: Pooling = "avg"
    cut_layer: str | None = None
    head_hidden_units: tuple[int, ...] = ()
    dropout: float = 0.2
    augment: bool = False
    sequence_length: int = 256

    def __post_init__(self) -> None:
        _require(bool(self.backbone), "ModelConfig.backbone is empty: pass a registry name such as 'mobilenet_v2'.")
        _require(bool(self.weights), "ModelConfig.weights is empty: pass 'imagenet', 'none' or a path.")
        _require(
            self.image_size is None or 16 <= self.image_size <= 1024,
            f"image_size={self.image_size} must be between 16 and 1024 pixels (or None for the backbone default).",
        )
        _require(
            isinstance(self.sequence_length, int)
            and not isinstance(self.sequence_length, bool)
            and MIN_SEQUENCE_LENGTH <= self.sequence_length <= MAX_SEQUENCE_LENGTH,
            f"sequence_length={self.sequence_length} must be a whole number of tokens between {MIN_SEQUENCE_LENGTH} and "
            f"{MAX_SEQUENCE_LENGTH}, e.g. 256 (documents longer than that are cut).",
        )
        _require(self.pooling in get_args(Pooling), f"pooling={self.pooling!r}: choose 'avg' or 'max'.")
        _require(0.0 <= self.dropout < 1.0, f"dropout={self.dropout} must be in [0, 1).")
        _require(
            all(isinstance(u, int) and u > 0 for u in self.head_hidden_units),
            f"head_hidden_units={self.head_hidden_units} must be positive integers, e.g. (128,).",
        )
        # Lists from JSON or widgets become tuples so the config stays hashable.
        object.__setattr__(self, "head_hidden_units", tuple(self.head_hidden_units))


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Args:
        mode: `feature-extraction` (frozen backbone, train the head), `fine-tune` (head first, then
            the top `fine_tune_layers` layers at a lower rate), `full` (head first, then every layer) or
            `progressive` (head first, then unfreeze one backbone block at a time from the top).
        epochs: epochs for the head (phase one).
        fine_tune_epochs: epochs for the unfrozen phase (`fine-tune` and `full` only).
        learning_rate: head learning rate.
        fine_tune_learning_rate: unfrozen-phase rate; None means `learning_rate / 10`.
        fine_tune_layers: how many of the backbone's top layers to unfreeze in `fine-tune` mode.
        stage_epochs: epochs per unfrozen block in `progressive` mode.
        max_stages: most blocks to unfreeze in `progressive` mode; None goes down to the first block.
        plateau_tolerance: `progressive` stops when a stage improves validation loss by less than this;
            None always goes down to `max_stages`.
        compare_scratch: also train the same architecture from random weights with the same budget
            and split, and flag negative transfer when it beats the pretrained model.
        early_stopping_patience: epochs without val-loss improvement before stopping; None disables.
        reduce_lr_patience: epochs without improvement before halving the rate; None disables.
        class_weighting: `auto` weights classes by inverse frequency when the data is imbalanced.
        use_feature_cache: in feature extraction, compute backbone features once and train the head
            on them (augmentation forces end-to-end training instead).
        mixed_precision: float16 compute on a GPU (ignored on CPU, where it is slower).
        jit_compile: XLA; never used on CPU, where it was measured 5-10x slower.
    """

    mode: Mode = "feature-extraction"
    epochs: int = 10
    fine_tune_epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float | None = None
    fine_tune_layers: int = 20
    stage_epochs: int = 2
    max_stages: int | None = None
    plateau_tolerance: float | None = 1e-3
    compare_scratch: bool = False
    early_stopping_patience: int | None = 5
    reduce_lr_patience: int | None = 3
    class_weighting: ClassWeighting = "auto"
    use_feature_cache: bool = True
    mixed_precision: bool = False
    jit_compile: bool = False
    seed: int = 42

    def __post_init__(self) -> None:
        _require(self.mode in MODES, f"mode={self.mode!r}: choose one of {', '.join(MODES)}.")
        _require(self.epochs >= 1, f"epochs={self.epochs} must be at least 1.")
        _require(self.fine_tune_epochs >= 0, f"fine_tune_epochs={self.fine_tune_epochs} must be 0 or more.")
        _require(1 <= self.batch_size <= 4096, f"batch_size={self.batch_size} must be between 1 and 4096.")
        _require(0 < self.learning_rate < 1, f"learning_rate={self.learning_rate} must be in (0, 1), e.g. 1e-3.")
        _require(
            self.fine_tune_learning_rate is None or 0 < self.fine_tune_learning_rate < 1,
            f"fine_tune_learning_rate={self.fine_tune_learning_rate} must be in (0, 1), e.g. 1e-4.",
        )
        _require(self.fine_tune_layers >= 1, f"fine_tune_layers={self.fine_tune_layers} must be at least 1.")
        _require(self.stage_epochs >= 1, f"stage_epochs={self.stage_epochs} must be at least 1.")
        _require(
            self.max_stages is None or self.max_stages >= 1,
            f"max_stages={self.max_stages} must be at least 1, or None for all blocks.",
        )
        _require(
            self.plateau_tolerance is None or self.plateau_tolerance >= 0,
            f"plateau_tolerance={self.plateau_tolerance} must be 0 or more, or None to never stop early.",
        )
        for name in ("early_stopping_patience", "reduce_lr_patience"):
            value = getattr(self, name)
            _require(value is None or value >= 1, f"{name}={value} must be at least 1, or None to disable.")
        _require(
            self.class_weighting in get_args(ClassWeighting),
            f"class_weighting={self.class_weighting!r}: choose 'auto', 'on' or 'off'.",
        )

    @property
    def effective_fine_tune_learning_rate(self) -> float:
        """The unfrozen phase's rate: about 10x below the head's unless set explicitly."""
        return self.fine_tune_learning_rate if self.fine_tune_learning_rate is not None else self.learning_rate / 10


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; stored verbatim with the run."""

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        def build(kind: type, values: dict[str, Any] | None) -> Any:
            values = dict(values or {})
            known = {f.name for f in dataclasses.fields(kind)}
            unknown = set(values) - known
            _require(not unknown, f"Unknown {kind.__name__} field(s) {sorted(unknown)}: allowed are {sorted(known)}.")
            return kind(**values)

        return cls(
            data=build(DataConfig, raw.get("data")),
            model=build(ModelConfig, raw.get("model")),
            train=build(TrainConfig, raw.get("train")),
            name=raw.get("name"),
        )

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **sections: Any) -> RunConfig:
        """A copy with whole sections (`data=`, `model=`, `train=`, `name=`) replaced."""
        return dataclasses.replace(self, **sections)
