"""The fast-path switch: how `TRANSFERLAB_FASTPATH` is read, and one small training run both ways with the same results."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tl_core import fastpath  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.images import load_image_array  # noqa: E402
from tl_core.errors import TransferLabError  # noqa: E402
from tl_core.fastpath.head_fit import HeadFitter  # noqa: E402
from tl_core.results.predict import load_run_classifier  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training import feature_cache, runner  # noqa: E402

IMAGE_SIZE = 48


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, True),
        ("", True),
        ("1", True),
        ("on", True),
        (" True ", True),
        ("0", False),
        ("off", False),
        ("FALSE", False),
        ("no", False),
    ],
)
def test_the_switch_is_on_by_default_and_read_at_each_call(
    value: str | None, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv(fastpath.SWITCH_ENV, raising=False)
    else:
        monkeypatch.setenv(fastpath.SWITCH_ENV, value)
    assert fastpath.enabled() is expected


def test_a_value_it_does_not_understand_names_the_variable_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_FASTPATH", "sometimes")
    with pytest.raises(
        TransferLabError, match=r"TRANSFERLAB_FASTPATH='sometimes' is not understood: set it to 0 .* or 1"
    ):
        fastpath.enabled()


def _train_once(switch: str, dataset: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """One feature-extraction run with the switch set to `switch`: what it learned, and which paths it took."""
    monkeypatch.setenv("TRANSFERLAB_FASTPATH", switch)
    taken: dict[str, Any] = {"head_fitter": 0, "keras_fit": 0, "lean_graphs": [], "features": []}
    real_lean, real_extract, real_fit_fast, real_fit = (
        feature_cache.frozen_inference_function,
        feature_cache.extract_features,
        HeadFitter.fit,
        keras.Model.fit,
    )

    def lean(model: keras.Model) -> Any:
        function = real_lean(model)
        taken["lean_graphs"].append(function is not None)
        return function

    def extract(*args: Any, **kwargs: Any) -> np.ndarray:
        taken["features"].append(real_extract(*args, **kwargs))
        return taken["features"][-1]

    def fit_fast(self: HeadFitter, *args: Any, **kwargs: Any) -> None:
        taken["head_fitter"] += 1
        real_fit_fast(self, *args, **kwargs)

    def fit(self: keras.Model, *args: Any, **kwargs: Any) -> Any:
        taken["keras_fit"] += 1
        return real_fit(self, *args, **kwargs)

    with monkeypatch.context() as spies:
        spies.setattr(feature_cache, "frozen_inference_function", lean)
        spies.setattr(feature_cache, "extract_features", extract)
        spies.setattr(HeadFitter, "fit", fit_fast)
        spies.setattr(keras.Model, "fit", fit)
        store = RunStore(
            workspace
        )  # a workspace of its own: features are computed, not read from the other run's cache
        # One batch per epoch and no dropout: the head's steps do not depend on the shuffling order or a random mask,
        # which the two paths draw differently, so the only differences left are float rounding.
        config = RunConfig(
            data=DataConfig(source=str(dataset)),
            # Packaged ImageNet weights (offline): a random backbone's features are ~1e-10, which the head cannot learn from.
            model=ModelConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=IMAGE_SIZE, dropout=0.0),
            train=TrainConfig(
                epochs=3, batch_size=128, learning_rate=1e-2, early_stopping_patience=None, reduce_lr_patience=None
            ),
        )
        outcome = runner.run_experiment(config, store=store)
    assert outcome.status == "completed", outcome.error
    classifier = load_run_classifier(store, outcome.run_id)
    return {
        **taken,
        "summary": outcome.summary,
        "class_names": classifier.class_names,
        "model": classifier.model,
        "epochs": [record.metrics for record in store.epochs(outcome.run_id)],
    }


def test_a_run_trains_the_same_model_with_the_fast_paths_on_and_off(
    shapes_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _train_once("1", shapes_dataset, tmp_path / "fast", monkeypatch)
    plain = _train_once("0", shapes_dataset, tmp_path / "plain", monkeypatch)

    # Each run took its own paths: the lean graph and HeadFitter, or Keras' predict_on_batch and fit.
    assert fast["lean_graphs"] and all(fast["lean_graphs"]) and fast["head_fitter"] == 1 and fast["keras_fit"] == 0
    assert (
        plain["lean_graphs"] and not any(plain["lean_graphs"]) and plain["head_fitter"] == 0 and plain["keras_fit"] == 1
    )

    assert fast["class_names"] == plain["class_names"] == ["blue_triangle", "green_square", "red_circle"]
    # Features: the lean graph folds batch normalisation into the convolutions, which changes only float rounding:
    # measured up to 8e-6 of the largest feature (4.6e-5 of 6.0) over 16 layers; allowed 3e-5 of it.
    assert (
        [len(features) for features in fast["features"]]
        == [len(features) for features in plain["features"]]
        == [48, 12, 12]
    )
    for lean, keras_features in zip(fast["features"], plain["features"], strict=True):
        np.testing.assert_allclose(lean, keras_features, rtol=1e-5, atol=3e-5 * float(np.abs(keras_features).max()))

    # The head: the same full-batch Adam steps from the same seed on features that differ by rounding, so the
    # per-epoch metrics and the saved classifiers' outputs agree to float32 rounding carried through three steps
    # (measured: metrics within 1.7e-5 relative, probabilities within 6e-6; allowed 1e-4 each). The head does learn
    # (accuracy 0 -> 0.75 -> 1.0 on training features here), so equal results are not those of an idle head.
    assert len(fast["epochs"]) == len(plain["epochs"]) == 3
    for fast_epoch, plain_epoch in zip(fast["epochs"], plain["epochs"], strict=True):
        assert fast_epoch.keys() == plain_epoch.keys()
        assert fast_epoch == pytest.approx(plain_epoch, rel=1e-4, abs=1e-5)
    assert fast["epochs"][-1]["accuracy"] > fast["epochs"][0]["accuracy"]
    assert fast["summary"]["test_accuracy"] == plain["summary"]["test_accuracy"]
    images = np.stack([load_image_array(path, IMAGE_SIZE) for path in sorted(shapes_dataset.rglob("*.png"))])
    fast_probabilities = keras.ops.convert_to_numpy(fast["model"](images, training=False))
    plain_probabilities = keras.ops.convert_to_numpy(plain["model"](images, training=False))
    np.testing.assert_allclose(fast_probabilities, plain_probabilities, atol=1e-4)
    np.testing.assert_array_equal(fast_probabilities.argmax(1), plain_probabilities.argmax(1))
