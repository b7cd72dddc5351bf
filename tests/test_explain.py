"""Grad-CAM (tl_core.results.grad_cam, tl_core.results.explain): the heatmap points at the evidence, on every
way a run is built, and says plainly when a backbone has no spatial feature map to explain."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.images import load_image_array  # noqa: E402
from tl_core.errors import BackboneError, TransferLabError  # noqa: E402
from tl_core.models.transfer_model import build_transfer_model  # noqa: E402
from tl_core.results.explain import explain_each_file  # noqa: E402
from tl_core.results.grad_cam import GradCam  # noqa: E402
from tl_core.results.heatmaps import overlay_heatmap  # noqa: E402
from tl_core.results.predict import load_run_classifier  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.runner import run_experiment  # noqa: E402

MARK_COLOUR = (230, 30, 30)
REGION_SIZE = 128  # EfficientNet-Lite0's last map is 4x4 here; at 64 px (2x2) Grad-CAM's peak is not reliable


def region_image(rng: np.random.Generator, size: int, marked: bool) -> Image.Image:
    """Noise; a grey distractor patch somewhere in the bottom half; if `marked`, a red patch in the top-right quadrant."""
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    side = size // 4
    y, x = rng.integers(size // 2, size - side + 1), rng.integers(0, size - side + 1)
    pixels[y : y + side, x : x + side] = 128
    if marked:
        y, x = rng.integers(0, size // 2 - side + 1), rng.integers(size // 2, size - side + 1)
        pixels[y : y + side, x : x + side] = MARK_COLOUR
    return Image.fromarray(pixels)


def train_run(root: Path, data: Path, model: ModelConfig, **train: object) -> tuple[RunStore, str]:
    store = RunStore(root / "workspace")
    config = RunConfig(
        data=DataConfig(source=str(data)),
        model=model,
        train=TrainConfig(
            batch_size=16, early_stopping_patience=None, reduce_lr_patience=None, **{"epochs": 1, **train}
        ),
    )
    outcome = run_experiment(config, store=store)
    assert outcome.status == "completed"
    return store, outcome.run_id


@pytest.fixture(scope="module")
def region_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, str, Path]:
    """A run that can only tell `marked` from `plain` by the red patch in the top-right quadrant; new marked images."""
    root = tmp_path_factory.mktemp("region")
    rng = np.random.default_rng(0)
    for name in ("marked", "plain"):
        (root / "data" / name).mkdir(parents=True)
        for index in range(40):
            region_image(rng, REGION_SIZE, name == "marked").save(root / "data" / name / f"{index}.png")
    (root / "new").mkdir()
    for index in range(12):
        region_image(rng, REGION_SIZE, True).save(root / "new" / f"marked_{index}.png")
    model = ModelConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=REGION_SIZE)
    store, run_id = train_run(root, root / "data", model, epochs=3, learning_rate=3e-3)
    return store, run_id, root / "new"


def test_grad_cam_peaks_where_the_class_evidence_is(region_run: tuple[RunStore, str, Path], tmp_path: Path) -> None:
    store, run_id, new = region_run
    classifier = load_run_classifier(store, run_id)
    paths = sorted(new.glob("*.png"))

    results = [r.explanation for r in explain_each_file(classifier, paths, tmp_path / "out")]

    assert all(e is not None and e.predicted == "marked" for e in results), "the model must have learned the mark"
    in_top_right = [e.peak[0] < 0.5 and e.peak[1] > 0.5 for e in results if e is not None]
    assert sum(in_top_right) >= 0.75 * len(paths), [e.peak for e in results if e is not None]  # chance: 0.25
    # Most of the heatmap lies in that quadrant, not only its maximum.
    heat = np.stack([e.heatmap for e in results if e is not None])
    half = REGION_SIZE // 2
    assert heat[:, :half, half:].sum() > heat.sum() / 2


def test_the_heatmap_follows_the_evidence_when_it_moves(region_run: tuple[RunStore, str, Path], tmp_path: Path) -> None:
    """Mirrored images carry the mark top-left: a map that always lit the top-right (a fixed bias) fails here."""
    store, run_id, new = region_run
    mirrored = []
    for path in sorted(new.glob("*.png")):
        mirrored.append(tmp_path / path.name)
        Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored[-1])

    results = explain_each_file(load_run_classifier(store, run_id), mirrored, class_name="marked")

    peaks = [r.explanation.peak for r in results if r.explanation is not None]
    assert sum(y < 0.5 and x < 0.5 for y, x in peaks) >= 0.75 * len(mirrored), peaks
    assert all(r.explanation is not None and r.explanation.overlay_path is None for r in results), "no out_dir: no PNG"


@pytest.fixture(scope="module")
def shapes_runs(shapes_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[RunStore, str]]:
    """A fine-tuned run, a cut-layer run and a run on a finished run's backbone, at 64 px."""
    root = tmp_path_factory.mktemp("variants")
    tiny = ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=64)
    fine_tuned = train_run(root, shapes_dataset, tiny, mode="fine-tune", fine_tune_epochs=1, fine_tune_layers=3)
    cut = train_run(root, shapes_dataset, dataclasses.replace(tiny, cut_layer="block_6_expand"))
    on_run = train_run(root, shapes_dataset, dataclasses.replace(tiny, weights=f"run:{fine_tuned[1]}"))
    return {"fine-tuned": fine_tuned, "cut layer": cut, "run as backbone": on_run}


@pytest.mark.parametrize("variant", ["fine-tuned", "cut layer", "run as backbone"])
def test_every_kind_of_image_run_explains(
    shapes_runs: dict[str, tuple[RunStore, str]], shapes_dataset: Path, variant: str, tmp_path: Path
) -> None:
    store, run_id = shapes_runs[variant]
    classifier = load_run_classifier(store, run_id)
    paths = sorted(shapes_dataset.rglob("*.png"))[:3]

    results = explain_each_file(classifier, paths, tmp_path, class_name=classifier.class_names[1])

    expected_cells = (8, 8) if variant == "cut layer" else (2, 2)  # block_6_expand comes before block 6 halves the map
    for result in results:
        explanation = result.explanation
        assert explanation is not None and result.problem is None
        assert explanation.class_explained == classifier.class_names[1]
        assert explanation.map_cells == expected_cells
        assert (
            explanation.heatmap.shape == (64, 64)
            and 0.0 <= explanation.heatmap.min() <= explanation.heatmap.max() <= 1.0
        )
        assert all(0.0 < fraction < 1.0 for fraction in explanation.peak)
        with Image.open(explanation.overlay_path) as overlay:
            assert overlay.format == "PNG" and overlay.size == Image.open(result.path).size
    probabilities = classifier.model(np.stack([load_image_array(p, 64) for p in paths])).numpy()
    for result, row in zip(results, probabilities):  # the same model as `predict`: same class, same probability
        assert result.explanation.predicted == classifier.class_names[int(np.argmax(row))]
        assert result.explanation.probability == pytest.approx(float(row.max()), abs=1e-5)


class FeatureVectorModule(tf.Module):
    """A TF Hub-style feature-vector SavedModel: images -> one vector each (it pools inside)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = tf.Variable(np.random.default_rng(0).normal(size=(3, 8)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(images, axis=[1, 2]) @ self.kernel


def test_a_backbone_without_a_spatial_map_is_refused_plainly(tmp_path: Path) -> None:
    folder = tmp_path / "feature_vector"
    tf.saved_model.save(FeatureVectorModule(), str(folder))
    model = build_transfer_model(
        ModelConfig(backbone="mobilenet_v2_035", weights=str(folder), image_size=32), num_classes=2
    ).model

    with pytest.raises(BackboneError, match="spatial feature map") as refused:
        GradCam(model)

    assert "backbones --all" in str(refused.value) and "feature-vector" in str(refused.value)


def test_a_text_run_and_a_bad_opacity_are_refused(shapes_runs: dict[str, tuple[RunStore, str]]) -> None:
    classifier = load_run_classifier(*shapes_runs["cut layer"])
    with pytest.raises(TransferLabError, match="alpha=1.5 must be between 0"):
        explain_each_file(classifier, [], alpha=1.5)
    with pytest.raises(TransferLabError, match="no class 'zebra': choose one of " + ", ".join(classifier.class_names)):
        explain_each_file(classifier, [], class_name="zebra")
    classifier.modality = "text"
    with pytest.raises(TransferLabError, match="Grad-CAM explains image runs"):
        explain_each_file(classifier, [])


def test_overlay_blends_with_the_opacity_asked_for() -> None:
    picture = Image.new("RGB", (40, 20), (0, 0, 0))
    heatmap = np.zeros((4, 4), dtype=np.float32)
    heatmap[0, 3] = 1.0

    hidden, full = overlay_heatmap(picture, heatmap, alpha=0.0), overlay_heatmap(picture, heatmap, alpha=1.0)

    assert hidden.size == full.size == (40, 20)
    assert np.asarray(hidden).max() == 0, "alpha 0 shows the image only"
    coloured = np.asarray(full).astype(int)
    assert not np.array_equal(coloured[2, 37], coloured[17, 2]), (
        "the hot corner is coloured differently from a cold one"
    )
