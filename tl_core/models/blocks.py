"""Where a backbone divides: its blocks (for progressive fine-tuning) and the layers features can be cut at.

Blocks are recognised by each family's layer names (EfficientNet block1a ..., MobileNetV2 block_1 ...,
ResNet conv2_block1 ..., ConvNeXt stages, Inception mixed blocks, NASNet cells); unknown models split
into about eight groups of equally many weighted layers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import keras


def output_rank(operation: Any) -> int | None:
    """The rank of an operation's output (4 for a feature map), or None for a layer used more than once."""
    try:
        return len(operation.output.shape)
    except (AttributeError, ValueError):  # layers used more than once have no single output
        return None


# Block naming across families; each maps a layer name to its block key, or None (joins the block before it).
def _convnext_stage(name: str) -> str | None:
    stage = re.search(r"_stage_(\d+)_", name)
    if stage:
        return f"stage_{stage.group(1)}"
    downsampling = re.search(r"_downsampling_block_(\d+)$", name)
    return f"stage_{int(downsampling.group(1)) + 1}" if downsampling else None


def _prefix_rule(pattern: str) -> Callable[[str], str | None]:
    compiled = re.compile(pattern)

    def key(name: str) -> str | None:
        match = compiled.search(name)
        return match.group(1) if match else None

    return key


_BLOCK_KEY_RULES: tuple[Callable[[str], str | None], ...] = (
    _prefix_rule(r"^(block\d+[a-z])_"),  # EfficientNet, EfficientNetV2, EfficientNet-Lite: block1a ...
    _prefix_rule(r"^(block_\d+|expanded_conv)_"),  # MobileNetV2: expanded_conv, block_1 ... block_16
    _prefix_rule(r"^(expanded_conv(?:_\d+)?)_(?!\d)"),  # MobileNetV3
    _prefix_rule(r"^conv_(?:dw|pw|pad)_(\d+)"),  # MobileNet
    _prefix_rule(r"^(conv\d+_block\d+)_"),  # ResNet, ResNetV2, DenseNet: conv2_block1 ...
    _prefix_rule(r"^(block\d+)_"),  # VGG, Xception
    _convnext_stage,  # ConvNeXt stages
)
# Families whose blocks are only recognisable by the layer that ends them.
_BLOCK_END_RULES: tuple[re.Pattern[str], ...] = (
    re.compile(r"^mixed\d+$"),  # InceptionV3
    re.compile(r"^(mixed_\d[a-z]|block(35|17|8)_\d+_ac)$"),  # InceptionResNetV2
    re.compile(r"_concat_"),  # NASNet cells
)
_FALLBACK_GROUPS = 8
_MIN_KEYED_FRACTION = 0.5


def _group_by_key(names: list[str], key: Callable[[str], str | None]) -> tuple[list[list[str]], int]:
    stem: list[str] = []
    blocks: list[list[str]] = []
    keys: list[str] = []
    for name in names:
        block_key = key(name)
        if block_key is None:
            (blocks[-1] if blocks else stem).append(name)
        elif block_key in keys:
            blocks[keys.index(block_key)].append(name)
        else:
            keys.append(block_key)
            blocks.append([name])
    return ([stem] if stem else []) + blocks, len(keys)


def _group_by_block_end(names: list[str], end: re.Pattern[str]) -> tuple[list[list[str]], int]:
    blocks: list[list[str]] = [[]]
    ends = 0
    for name in names:
        blocks[-1].append(name)
        if end.search(name):
            ends += 1
            blocks.append([])
    if not blocks[-1]:
        blocks.pop()
    elif len(blocks) > 1:  # layers after the last block end (the top) join the last block
        blocks[-2].extend(blocks.pop())
    return blocks, ends


def _equal_groups(names: list[str], weighted: set[str]) -> list[list[str]]:
    if len(weighted) < 2:
        return [names] if names else []
    group_count = min(_FALLBACK_GROUPS, len(weighted))
    groups: list[list[str]] = [[] for _ in range(group_count)]
    current, seen = 0, 0
    for name in names:
        if name in weighted:
            current = seen * group_count // len(weighted)
            seen += 1
        groups[current].append(name)
    return [group for group in groups if group]


def _block_groups(names: list[str], weighted: set[str]) -> list[list[str]]:
    """Group `names` (in graph order) with the naming rule that finds the most blocks."""
    best: list[list[str]] = []
    best_count = 1
    for key in _BLOCK_KEY_RULES:
        keyed = sum(1 for name in weighted if key(name) is not None)
        blocks, count = _group_by_key(names, key)
        if count > best_count and keyed >= _MIN_KEYED_FRACTION * len(weighted):
            best, best_count = blocks, count
    for end in _BLOCK_END_RULES:
        blocks, count = _group_by_block_end(names, end)
        if count > best_count:
            best, best_count = blocks, count
    return best or _equal_groups(names, weighted)


def backbone_blocks(model: keras.Model) -> list[list[str]]:
    """The backbone's natural stages in order, for progressive fine-tuning.

    Recognised by layer names: EfficientNet(V2, -Lite) block1a ... block7a, MobileNetV2 expanded_conv and
    block_1 ... block_16, ResNet/DenseNet conv2_block1 ..., ConvNeXt stages, Inception mixed blocks,
    NASNet cells ... Layers before the first block form a leading "stem" list; the top layers after the last
    block join the last one. Unrecognised models: the layers split into ~8 groups of equally many weighted layers.

    Args:
        model: a backbone (a functional Keras model).

    Returns:
        Lists of layer names (input layers left out); every layer appears in exactly one list.
    """
    names = [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    return _block_groups(names, {layer.name for layer in model.layers if layer.weights})


def graph_operations(model: keras.Model) -> dict[str, Any]:
    """Every operation of the graph by name, inputs left out: layers plus ops we did not name
    (e.g. ConvNeXt's residual "add"), which end blocks too."""
    return {op.name: op for op in model.operations if not isinstance(op, keras.layers.InputLayer)}


def _snake_case(class_name: str) -> str:
    # Keras' own rule for automatic names: "BatchNormalization" -> "batch_normalization", "ReLU" -> "re_lu".
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _has_stable_name(operation: Any) -> bool:
    """False for automatic names ("add_27"): they change from one build to the next in a process."""
    return re.fullmatch(rf"{_snake_case(type(operation).__name__)}(_\d+)?", operation.name) is None


def candidate_cut_layers(model: keras.Model) -> list[str]:
    """Where features can be taken from: one operation per block boundary, in order.

    Each is the last feature-map operation of a block or, when that one has an automatic name (Xception's
    and ConvNeXt's residual adds), the first named feature-map operation of the next block. Only stable
    names are offered; the final output is not.
    """
    operations = graph_operations(model)
    weighted = {layer.name for layer in model.layers if layer.weights}
    blocks = _block_groups(list(operations), weighted)
    candidates = []
    for block, next_block in zip(blocks, blocks[1:]):
        maps = [name for name in block if output_rank(operations[name]) == 4]
        if maps and _has_stable_name(operations[maps[-1]]):
            candidates.append(maps[-1])
            continue
        following = [
            name for name in next_block if output_rank(operations[name]) == 4 and _has_stable_name(operations[name])
        ]
        if following:
            candidates.append(following[0])
    return list(dict.fromkeys(candidates))
