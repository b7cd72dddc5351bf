"""Defaults and helpers for the Model page: the backbone table and turning widget values into configs."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from tl_core.config import ConfigError, ModelConfig, TrainConfig
from tl_core.modalities import get_modality
from tl_core.models.registry import list_backbones
from tl_core.models.spec import BackboneSpec

# A laptop CPU shows the first curve within a minute at this size with the default backbone.
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
    """The settings a new run starts from: the modality's offline backbone (a small image network, GloVe word vectors)."""
    defaults = get_modality(modality)
    return ModelConfig(
        backbone=defaults.default_backbone,
        weights=defaults.default_weights,
        image_size=DEFAULT_IMAGE_SIZE if defaults.uses_image_size else None,
        sequence_length=DEFAULT_SEQUENCE_LENGTH,
    )


def default_train_config() -> TrainConfig:
    return TrainConfig(epochs=DEFAULT_EPOCHS)


def has_offline_weights(spec: BackboneSpec) -> bool:
    """True when the backbone's pretrained weights (ImageNet, or GloVe for text) ship with an installed package (no download)."""
    return get_modality(spec.modality).has_offline_weights(spec)


PRETRAINED_KEYWORDS = ("imagenet", "glove", "pretrained")  # every BackboneSpec.pretrained_weights


def pretrained_on(spec: BackboneSpec) -> str:
    """What the backbone's packaged weights learned from, in a few words: `ImageNet-1k`, `ImageNet, then fine-tuned
    on dog breeds`, `GloVe 6B` (the provenance without where the file comes from)."""
    return spec.weights_provenance.split(" (")[0].split(", from ")[0]


def weights_words(model: ModelConfig) -> str:
    """The starting weights of `model` for people: `ImageNet-1k weights`, `random weights`, `weights of run …`."""
    from tl_core.config import RUN_WEIGHTS_PREFIX
    from tl_core.models.registry import get_backbone_spec

    if model.weights in PRETRAINED_KEYWORDS:
        return f"{pretrained_on(get_backbone_spec(model.backbone))} weights"
    if model.weights == "none":
        return "random weights"
    if model.weights.startswith(RUN_WEIGHTS_PREFIX):
        return f"weights of run {model.weights[len(RUN_WEIGHTS_PREFIX) :]}"
    return f"weights from {model.weights}"


def recommended_here(modality: str) -> list[BackboneSpec]:
    """The beginner view's backbones: every one whose pretrained weights are installed on this server (any tier),
    then the recommended ones that would need a download."""
    installed = [spec for spec in list_backbones(None, modality=modality) if has_offline_weights(spec)]
    return installed + [spec for spec in list_backbones("recommended", modality=modality) if spec not in installed]


def weights_availability(spec: BackboneSpec) -> str:
    """Where a backbone's pretrained weights come from, in the backbone table's words."""
    if has_offline_weights(spec):
        return "offline ✓"
    if not spec.feature_dim:  # only TF Hub entries have no fixed size: the user names the model as its weights
        return "a TF Hub handle or SavedModel folder"
    return get_modality(spec.modality).missing_weights


def size_range(spec: BackboneSpec) -> str:
    """`32–224 px` or `32 px and up` when the backbone has no upper limit (`words` for text backbones)."""
    unit = get_modality(spec.modality).size_unit
    return f"{spec.min_size}–{spec.max_size} {unit}" if spec.max_size else f"{spec.min_size} {unit} and up"


SPEED_COLUMN = "speed (2 CPU cores)"


def backbone_table(specs: Sequence[BackboneSpec]) -> pd.DataFrame:
    """One row per backbone with what a user compares: size, speed proxies, weights and their origin (one modality per table)."""
    rows = []
    for spec in specs:
        modality = get_modality(spec.modality)
        rows.append(
            {
                "backbone": spec.name,
                "name": spec.display_name,
                "parameters (M)": round(spec.parameters / 1e6, 2) if spec.parameters else None,
                "input size": f"{spec.default_size} {modality.size_unit} ({size_range(spec)})",
                "feature size": spec.feature_dim or None,  # 0: a TF Hub model's size is known once it is loaded
                modality.weights_column: weights_availability(spec),
                "provenance": spec.weights_provenance,
                "tier": spec.tier,
            }
        )
        if any(other.speed for other in specs):  # text backbones: what a first run costs differs a hundredfold
            rows[-1][SPEED_COLUMN] = spec.speed or None
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
