"""Where converted offline weights live, and how they are written (atomically) and reused.

A conversion (PyTorch state dict or legacy `.h5` -> Keras variables) runs once per user;
afterwards the Keras weights file in the cache is loaded directly. Weights files, not whole
models, are cached: the architectures are convolutional, so the same file fills a model built
at any input size.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

import keras

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
        A `.weights.h5` path inside the cache folder (it may not exist yet).
    """
    size = source.stat().st_size if source.is_file() else 0
    return resolve_cache_dir(cache_dir) / f"{name}--{source.stem}-{size}--v{converter_version}.weights.h5"


def save_weights_atomically(model: keras.Model, path: Path) -> bool:
    """Write `model`'s weights to `path` via a temporary file and a rename, so readers never see half a file.

    Args:
        model: the model whose weights to save.
        path: the final `.weights.h5` path.

    Returns:
        True if written; False if the cache folder is not writable (logged: the model still works, it just converts again next time).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".weights.h5", dir=path.parent)
        os.close(handle)
    except OSError as exc:
        logger.warning("Cannot write the weights cache in %s (%s); converting again next time. Set %s to a writable folder.", path.parent, exc, CACHE_DIR_ENV)
        return False
    temp_path = Path(temp_name)
    try:
        model.save_weights(temp_path, overwrite=True)
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
            model.load_weights(cache_path)
            return model
        except (ValueError, OSError, KeyError) as exc:  # damaged or from another architecture: rebuild it
            logger.warning("Ignoring unusable cached weights %s (%s); converting again.", cache_path, exc)
    convert(model)
    save_weights_atomically(model, cache_path)
    return model
