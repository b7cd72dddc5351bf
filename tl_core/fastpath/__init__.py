"""Every use of private TensorFlow/Keras API, behind one switch: `TRANSFERLAB_FASTPATH=0` falls back to plain Keras.

The fast paths, and what each falls back to when the switch is off:

- `head_fit`: the head trains on cached features in one compiled graph call per epoch (`HeadFitter`);
  off: `model.fit` over a `tf.data` pipeline of the same features (`can_fit_fast()` says no).
- `frozen_inference`: a frozen backbone's features through a lean graph with batch normalisation folded
  into the convolutions (it walks Keras' node graph: `_keras_history`, `_inbound_nodes`, `_run_through_graph`);
  off: Keras' own `predict_on_batch` (`frozen_inference_function()` gives None).
- `graph_options`: one-off graphs skip Grappler's rewrites, per thread (TensorFlow's eager context);
  off: TensorFlow's default options.
- `saving_mend`: Keras' per-thread cache of attribute skip sets filled under the key Keras reads it by
  (`keras.src.saving`); off: saving and loading as Keras does it, unmended.

Turn the switch off to debug a run with nothing but public Keras, or to try a new Keras or TensorFlow
release whose internals may have moved: runs then train the same model, only slower (tests/test_fastpath.py
runs one training both ways). The switch is read at each use, so a test or a worker process may set it any time.

Example:
    TRANSFERLAB_FASTPATH=0 python -m tl_core train ...   # plain Keras throughout
"""

from __future__ import annotations

import os

from tl_core.errors import TransferLabError

SWITCH_ENV = "TRANSFERLAB_FASTPATH"
_SWITCH_TEXTS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def enabled() -> bool:
    """Whether the fast paths run: `TRANSFERLAB_FASTPATH` unset or empty (the default), 1/true/yes/on; 0/false/no/off turns them off.

    Returns:
        True unless the variable turns the fast paths off.

    Raises:
        TransferLabError: the variable holds anything else (the message names it and the values it takes).
    """
    text = os.environ.get(SWITCH_ENV, "").strip().lower()
    if not text:
        return True
    if text not in _SWITCH_TEXTS:
        raise TransferLabError(
            f"{SWITCH_ENV}={os.environ[SWITCH_ENV]!r} is not understood: set it to 0 (or false/off) for plain Keras only, "
            f"or 1 (or true/on), or leave it unset, for the fast paths (the default)."
        )
    return _SWITCH_TEXTS[text]
