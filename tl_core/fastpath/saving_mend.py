"""A mend for Keras 3's saving: the per-thread cache of attribute skip sets, filled under the key Keras reads it by.

While it walks a model, `keras.src.saving.saving_lib` asks `get_attr_skipset(type)` which attributes
to skip. That function builds a throwaway reference object (a `Layer()`, an `Operation()`) and lists its
attributes, and means to cache the result: it stores it under "saving_attr_skipset_<type>" but looks it
up under "saving_attr_skiplist_<type>" (keras 3.15.1), so the cache never hits and every layer of every
save and load builds a new reference object. For EfficientNet-Lite0 (160 layers) that is about a quarter
of a save and of a load: measured 0.333 -> 0.251 s per save and 0.83 -> 0.64 s per load (medians of 6,
interleaved), with byte-identical `config.json` and identical weights. Weights files (`save_weights`,
`load_weights`: the training checkpoints) walk the model the same way.

`tl_core.models.keras_files` calls `remember_attr_skipsets` before each save and load, in the thread that
does it (Keras keeps this state per thread; a dict lookup once filled). With the fast path off, or if a
Keras release renames these internals, it does nothing and saving works as Keras does it.
"""

from __future__ import annotations

from tl_core import fastpath

# The object types our models contain that `_walk_saveable` asks about (layers, models, ops, optimizers, losses).
WALKED_TYPES = ("Operation", "Layer", "Functional", "Sequential", "Optimizer", "Loss")


def remember_attr_skipsets() -> None:
    """Fill Keras' per-thread cache of attribute skip sets under the key it reads (see the module docstring).

    A no-op when `tl_core.fastpath.enabled()` is False or Keras' internals are not where this expects them.
    """
    if not fastpath.enabled():
        return
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib
    except ImportError:  # another Keras layout: nothing to mend
        return
    if not hasattr(saving_lib, "get_attr_skipset"):
        return
    for obj_type in WALKED_TYPES:
        key = f"saving_attr_skiplist_{obj_type}"
        if global_state.get_global_attribute(key) is None:
            global_state.set_global_attribute(key, saving_lib.get_attr_skipset(obj_type))
