"""Defaults and helpers for the Model page: the backbone table and turning widget values into configs."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from tl_core.config import ConfigError, ModelConfig, TrainConfig
from tl_core.models.spec import BackboneSpec

# A laptop CPU shows the first curve within a minute at this size with the default backbone.
DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_WEIGHTS = "imagenet"
DEFAULT_IMAGE_SIZE = 96
DEFAULT_SEQUENCE_LENGTH = 256  # word tokens per document; most news articles' opening paragraphs fit
DEFAULT_EPOCHS = 10
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
BATCH_SIZES = (8, 16, 32, 64, 128, 256)

MODE_LABELS = {
    "feature-extraction": "Feature extraction — keep the backbone frozen, train a new head (fastest)",
    "fine-tune": "Fine-tune the top layers — head first, then unfreeze the top N layers",
    "full": "Full fine-tune — head first, then train every layer (slowest, needs more data)",
    "progressive": "Progressive — head first, then unfreeze one block at a time from the top until it stops helping",
}


def mode_label(mode: str, *, short: bool = False) -> str:
    """The mode's description for people (`short`: only the part before the dash, lower-case)."""
    label = MODE_LABELS.get(mode, mode)
    return label.split(" — ")[0].lower() if short else label


def default_model_config(modality: str = "image") -> ModelConfig:
    """The settings a new run starts from: a small offline image backbone, or GloVe word vectors for text."""
    if modality == "text":
        from tl_core.modalities import get_modality

        text = get_modality("text")
        return ModelConfig(
            backbone=text.default_backbone, weights=text.default_weights, sequence_length=DEFAULT_SEQUENCE_LENGTH
        )
    return ModelConfig(backbone=DEFAULT_BACKBONE, weights=DEFAULT_WEIGHTS, image_size=DEFAULT_IMAGE_SIZE)


def default_train_config() -> TrainConfig:
    return TrainConfig(epochs=DEFAULT_EPOCHS)


def has_offline_weights(spec: BackboneSpec) -> bool:
    """True when the backbone's pretrained weights (ImageNet, or GloVe for text) ship with an installed package (no download)."""
    if spec.modality == "text":
        from tl_core.models.text_backbones import has_packaged_weights

        return has_packaged_weights(spec)
    from tl_core.models.weights import OFFLINE_WEIGHTS

    provider = OFFLINE_WEIGHTS.get(spec.offline_weights) if spec.offline_weights else None
    return bool(provider and provider.is_installed())


def weights_availability(spec: BackboneSpec) -> str:
    """Where a backbone's pretrained weights come from, in the backbone table's words."""
    if has_offline_weights(spec):
        return "offline ✓"
    if spec.modality == "text":
        return (
            "package not installed" if spec.feature_dim else "a TF Hub handle or SavedModel folder"
        )  # only TF Hub entries have no fixed size
    return "needs a download"


def size_range(spec: BackboneSpec) -> str:
    """`32–224 px` or `32 px and up` when the backbone has no upper limit (`words` for text backbones)."""
    unit = "words" if spec.modality == "text" else "px"
    return f"{spec.min_size}–{spec.max_size} {unit}" if spec.max_size else f"{spec.min_size} {unit} and up"


def backbone_table(specs: Sequence[BackboneSpec]) -> pd.DataFrame:
    """One row per backbone with what a user compares: size, speed proxies, weights and their origin (one modality per table)."""
    rows = []
    for spec in specs:
        text = spec.modality == "text"
        rows.append(
            {
                "backbone": spec.name,
                "name": spec.display_name,
                "parameters (M)": round(spec.parameters / 1e6, 2) if spec.parameters else None,
                "input size": f"{spec.default_size} {'words' if text else 'px'} ({size_range(spec)})",
                "feature size": spec.feature_dim or None,  # 0: a TF Hub model's size is known once it is loaded
                "pretrained weights" if text else "ImageNet weights": weights_availability(spec),
                "provenance": spec.weights_provenance,
                "tier": spec.tier,
            }
        )
    return pd.DataFrame(rows)


def parse_hidden_units(text: str) -> tuple[int, ...]:
    """`"256, 128"` -> (256, 128); empty -> (); anything else raises ConfigError saying how to write it."""
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    try:
        units = tuple(int(part) for part in parts)
    except ValueError:
        raise ConfigError(
            f"Hidden units {text!r}: write whole numbers separated by commas, e.g. 128 or 256, 128 (leave empty for none)."
        ) from None
    if any(unit <= 0 or unit > 8192 for unit in units):
        raise ConfigError(f"Hidden units {text!r}: each layer needs between 1 and 8192 units, e.g. 128.")
    return units
