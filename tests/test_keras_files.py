"""`.keras` save and load through tl_core.fastpath.keras_files: the same files as Keras writes, Keras' skip-set cache hit."""

from __future__ import annotations

import json
import os
import threading
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.saving import saving_lib  # noqa: E402

from tl_core.fastpath import keras_files  # noqa: E402
from tl_core.config import ModelConfig  # noqa: E402
from tl_core.models.transfer_model import build_transfer_model  # noqa: E402


def _tiny_classifier() -> keras.Model:
    return build_transfer_model(ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32), 3).model


def test_after_remembering_keras_reads_each_skip_set_from_its_cache_in_that_thread() -> None:
    seen: dict[str, bool] = {}

    def in_a_fresh_thread() -> None:  # Keras' global state is per thread: a new thread starts empty
        seen["before"] = saving_lib.get_attr_skipset("Layer") is saving_lib.get_attr_skipset("Layer")
        keras_files.remember_attr_skipsets()
        seen["after"] = all(saving_lib.get_attr_skipset(kind) is saving_lib.get_attr_skipset(kind) for kind in keras_files._WALKED_TYPES)

    thread = threading.Thread(target=in_a_fresh_thread)
    thread.start()
    thread.join()
    # Without it Keras builds a new set on every call (its cache key is misspelt); with it, the same cached set.
    assert seen == {"before": False, "after": True}


def test_saved_files_match_what_keras_writes_and_load_back(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = _tiny_classifier()
    plain, ours = tmp_path / "plain.keras", tmp_path / "ours.keras"
    model.save(plain)
    keras_files.save_model(model, ours)

    with zipfile.ZipFile(plain) as a, zipfile.ZipFile(ours) as b:
        assert json.loads(a.read("config.json")) == json.loads(b.read("config.json"))
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    for path in (plain, ours):
        loaded = keras_files.load_model(path)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images, training=False)), expected, atol=1e-6)


def test_weights_files_hold_the_same_arrays_as_keras_writes_and_load_back(tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    model = _tiny_classifier()
    plain, ours = tmp_path / "plain.weights.h5", tmp_path / "ours.weights.h5"
    model.save_weights(plain)
    keras_files.save_weights(model, ours)
    cached_after_load: list[bool] = []
    for path in (plain, ours):
        for load in ("keras", "ours"):
            twin = _tiny_classifier()
            if load == "keras":
                twin.load_weights(path)
            else:  # in a fresh thread, whose Keras state starts empty: the load fills the skip-set cache first
                thread = threading.Thread(target=lambda: (keras_files.load_weights(twin, path),
                                                          cached_after_load.append(saving_lib.get_attr_skipset("Layer") is saving_lib.get_attr_skipset("Layer"))))
                thread.start()
                thread.join()
            for mine, theirs in zip(twin.weights, model.weights, strict=True):
                np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs))
    assert cached_after_load == [True, True]
