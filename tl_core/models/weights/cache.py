"""Where converted offline weights live, and how they are written (atomically) and reused.

A conversion (PyTorch state dict or legacy `.h5` -> Keras variables) runs once per user;
afterwards the cached arrays are loaded directly. Weights, not whole models, are cached: the
architectures are convolutional, so the same file fills a model built at any input size.

The cache holds the model's variables as a plain `.npz` in `model.weights` order (the converters
build the same graph every time), read with `set_weights`: 0.06 s for EfficientNet-Lite0 against
0.26-0.96 s for Keras' `load_weights` of a `.weights.h5` (measured; paid by every run that builds it).
A `.weights.h5` from an older release is read once and rewritten as `.npz`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

CACHE_DIR_ENV = "TRANSFERLAB_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/transferlab/weights")

logger = logging.getLogger(__name__)


def resolve_cache_dir(cache_dir: Path | None = None) -> Path:
    """The folder for converted weights.

    Args:
        cache_dir: an explicit folder; wins over everything else.

    Returns:
        `cache_dir`, else `$TRANSFERLAB_CACHE_DIR`, else `~/.cache/transferlab/weights` (expanded).
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_DIR_ENV)
    return Path(from_env).expanduser() if from_env else DEFAULT_CACHE_DIR.expanduser()


def cached_weights_path(cache_dir: Path | None, name: str, source: Path, converter_version: int) -> Path:
    """The cache file for one source weights file.

    Args:
        cache_dir: see `resolve_cache_dir`.
        name: the offline weights name (e.g. `efficientnet_lite0`).
        source: the packaged weights file; its name and size go into the key, so a new package release converts anew.
        converter_version: bump when the conversion or the architecture changes.

    Returns:
        A `.weights.npz` path inside the cache folder (it may not exist yet).
    """
    size = source.stat().st_size if source.is_file() else 0
    return resolve_cache_dir(cache_dir) / f"{name}--{source.stem}-{size}--v{converter_version}.weights.npz"


def _legacy_path(cache_path: Path) -> Path:
    """Where releases before the `.npz` cache kept the same weights (Keras `.weights.h5`)."""
    return cache_path.with_name(cache_path.name.removesuffix(".npz") + ".h5")


def save_weights_atomically(model: keras.Model, path: Path) -> bool:
    """Write `model`'s weights to `path` via a temporary file and a rename, so readers never see half a file.

    Args:
        model: the model whose weights to save.
        path: the final `.weights.npz` path.

    Returns:
        True if written; False if the cache folder is not writable (logged: the model still works, it just converts again next time).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
        os.close(handle)
    except OSError as exc:
        logger.warning(
            "Cannot write the weights cache in %s (%s); converting again next time. Set %s to a writable folder.",
            path.parent,
            exc,
            CACHE_DIR_ENV,
        )
        return False
    temp_path = Path(temp_name)
    try:
        with open(temp_path, "wb") as output:
            np.savez(output, *model.get_weights())
        os.replace(temp_path, path)
        return True
    except OSError as exc:
        logger.warning("Cannot write the weights cache %s (%s); converting again next time.", path, exc)
        return False
    finally:
        temp_path.unlink(missing_ok=True)


def load_or_convert(model: keras.Model, cache_path: Path, convert: Callable[[keras.Model], None]) -> keras.Model:
    """Fill `model` from the cache if there is a usable file, else convert and cache the result.

    Args:
        model: a freshly built model with the architecture the cache file was saved from.
        cache_path: from `cached_weights_path`.
        convert: fills `model` from the packaged weights (called only when the cache misses).

    Returns:
        `model`, filled.
    """
    if cache_path.is_file():
        try:
            _load_arrays(model, cache_path)
            return model
        except (ValueError, OSError, KeyError, EOFError) as exc:  # damaged or from another architecture: rebuild it
            logger.warning("Ignoring unusable cached weights %s (%s); converting again.", cache_path, exc)
    legacy = _legacy_path(cache_path)
    if legacy.is_file():
        try:
            model.load_weights(legacy)
            if save_weights_atomically(model, cache_path):
                legacy.unlink(missing_ok=True)
            return model
        except (ValueError, OSError, KeyError) as exc:
            logger.warning("Ignoring unusable cached weights %s (%s); converting again.", legacy, exc)
    convert(model)
    save_weights_atomically(model, cache_path)
    return model


def _load_arrays(model: keras.Model, path: Path) -> None:
    """Fill `model` from an `.npz` of its weights in order; a count or shape that does not fit raises ValueError."""
    with np.load(path, allow_pickle=False) as stored:
        arrays = [stored[f"arr_{index}"] for index in range(len(stored.files))]
    expected = [tuple(variable.shape) for variable in model.weights]
    if [array.shape for array in arrays] != expected:
        raise ValueError(f"{len(arrays)} arrays do not fit the model's {len(expected)} variables")
    model.set_weights(arrays)
