"""What one backbone registry entry says: `BackboneSpec`, shared by the image and the text tables.

A module of its own so both tables (`tl_core.models.image_specs` for images, `tl_core.models.text_specs` for text)
and the builders import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

BACKBONE_NAME = "backbone"  # the Keras name of every backbone model inside a transfer model
TIERS = ("recommended", "standard", "large")


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry.

    Attributes:
        name: registry key, the Keras name in lower snake case (`efficientnet_b0`).
        display_name: for people (`EfficientNetB0`).
        family: architecture family (`EfficientNet`).
        default_size: input side used when none is given, in pixels.
        min_size: smallest input side the architecture takes.
        max_size: largest input side its weights allow, or None for no limit.
        preprocessing: a `tl_core.models.preprocessing` mode.
        feature_dim: channels of the last feature map.
        parameters: parameter count without the top, measured with `weights=None`.
        keras_factory: `keras.applications` attribute, or None for offline-only entries.
        factory_kwargs: extra factory arguments, e.g. `(("alpha", 0.35),)`.
        offline_weights: key into `tl_core.models.weights`, or None.
        weights_provenance: what the pretrained weights were trained on and where they come from.
        license: license of the pretrained weights.
        tier: "recommended" (beginner view), "standard" or "large".
        notes: one or two sentences for the backbone picker.
        modality: "image", or "text" for the entries of `tl_core.models.text_backbones` (there `default_size`,
            `min_size` and `max_size` count word tokens per document, not pixels).
        fine_tune_top_layers: the most weighted layers `fine-tune` mode opens, whatever the run's
            `fine_tune_layers` (a transformer's top blocks, not its word embeddings); None: no limit.
        pretrained_weights: the `weights` keyword that loads its pretrained weights (`imagenet`; `glove` and
            `pretrained` for the text backbones): what the app and the CLI start from when none is given.
        speed: a measured encoding speed on this project's 2-core CPU machine and where it was measured, for the
            backbone table ("" when none was measured for the table).
    """

    name: str
    display_name: str
    family: str
    default_size: int
    min_size: int
    max_size: int | None
    preprocessing: str
    feature_dim: int
    parameters: int
    keras_factory: str | None
    factory_kwargs: tuple[tuple[str, Any], ...]
    offline_weights: str | None
    weights_provenance: str
    license: str
    tier: Literal["recommended", "standard", "large"]
    notes: str
    modality: Literal["image", "text"] = "image"
    fine_tune_top_layers: int | None = None
    pretrained_weights: str = "imagenet"
    speed: str = ""
