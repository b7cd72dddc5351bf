"""`.keras` save and load through tl_core.models.keras_files: the same files as Keras writes; with the fast path on
(tl_core.fastpath.saving_mend) Keras' skip-set cache hits, with it off Keras runs unmended."""

from __future__ import annotations

import json
import os
import threading
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras.src.saving import saving_lib  # noqa: E402

from tl_core.config import ModelConfig  # noqa: E402
from tl_core.fastpath.saving_mend import WALKED_TYPES, remember_attr_skipsets  # noqa: E402
from tl_core.models import keras_files  # noqa: E402
from tl_core.models.transfer_model import build_transfer_model  # noqa: E402


def _tiny_classifier() -> keras.Model:
    return build_transfer_model(ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32), 3).model


def _skipsets_cached() -> bool:
    """Whether Keras gives this thread's cached skip set (the same object twice) rather than building a new one."""
    return saving_lib.get_attr_skipset("Layer") is saving_lib.get_attr_skipset("Layer")


@pytest.mark.parametrize("switch", ["1", "0"])
def test_after_remembering_keras_reads_each_skip_set_from_its_cache_in_that_thread_unless_the_fast_path_is_off(
    switch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFERLAB_FASTPATH", switch)
    seen: dict[str, bool] = {}

    def in_a_fresh_thread() -> None:  # Keras' global state is per thread: a new thread starts empty
        seen["before"] = _skipsets_cached()
        remember_attr_skipsets()
        seen["after"] = all(
            saving_lib.get_attr_skipset(kind) is saving_lib.get_attr_skipset(kind) for kind in WALKED_TYPES
        )

    thread = threading.Thread(target=in_a_fresh_thread)
    thread.start()
    thread.join()
    # Without it Keras builds a new set on every call (its cache key is misspelt); with it, the same cached set.
    assert seen == {"before": False, "after": switch == "1"}


def test_saved_files_match_what_keras_writes_and_load_back(tmp_path: Path, fastpath_on: None) -> None:
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


@pytest.mark.parametrize("switch", ["1", "0"])
def test_weights_files_hold_the_same_arrays_as_keras_writes_and_load_back(
    switch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFERLAB_FASTPATH", switch)
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

                def load_and_note(model=twin, source=path):
                    keras_files.load_weights(model, source)
                    cached_after_load.append(_skipsets_cached())

                thread = threading.Thread(target=load_and_note)
                thread.start()
                thread.join()
            for mine, theirs in zip(twin.weights, model.weights, strict=True):
                np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs))
    assert cached_after_load == [switch == "1"] * 2  # mended only with the fast path on
