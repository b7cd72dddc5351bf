"""Saving and loading Keras model and weights files, the one way TransferLab does it.

Every `.keras` and `.weights.h5` file a run writes or reads goes through these four functions, so they all
get `tl_core.fastpath.saving_mend` (a Keras saving cost paid once per type instead of once per layer:
about a quarter of each save and load) and the same loading rules (not compiled, safe mode). Apart from
that mend, which `TRANSFERLAB_FASTPATH=0` turns off, they are Keras' public API as it stands.

Example:
    save_model(classifier, run_dir / "model.keras")
    restored = load_model(run_dir / "model.keras")
"""

from __future__ import annotations

from pathlib import Path

import keras

from tl_core.fastpath.saving_mend import remember_attr_skipsets


def save_model(model: keras.Model, path: Path) -> None:
    """`model.save(path)` (a `.keras` file)."""
    remember_attr_skipsets()
    model.save(path)


def save_weights(model: keras.Model, path: Path) -> None:
    """`model.save_weights(path)` (a `.weights.h5` file): training checkpoints walk the model the same way."""
    remember_attr_skipsets()
    model.save_weights(path)


def load_weights(model: keras.Model, path: Path) -> None:
    """`model.load_weights(path)`: a `.weights.h5` file (or a legacy `.h5` in layer order), strictly."""
    remember_attr_skipsets()
    model.load_weights(path)


def load_model(path: Path) -> keras.Model:
    """A `.keras` file loaded for inference: not compiled, safe mode (no arbitrary code from the file)."""
    remember_attr_skipsets()
    return keras.saving.load_model(path, compile=False, safe_mode=True)
