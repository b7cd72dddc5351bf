"""The mode advisor: measured probe (can fail on shuffled labels), size and budget rules, timed estimates, cut depths,
the scikit-learn probe, and reporting steps and stopping (as advisory jobs use them)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

from tl_core.advisor.mode_advice import (
    Measurements,
    advise,
    format_advice,
    normalized_entropy,
    pretrained_head_entropy,
    recommend,
)  # noqa: E402
from tl_core.advisor.probe import (  # noqa: E402
    AdvisorSteps,
    AdvisorStopped,
    linear_probe_accuracy,
    probe_cut_depths,
    scatter_ratio,
    stratified_sample,
)
from tl_core.advisor.results import Advice, ModeEstimate  # noqa: E402
from tl_core.config import ModelConfig, TrainConfig  # noqa: E402
from tl_core.data.image_dataset import scan_dataset, split_dataset
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.data.types import DatasetSplit, ScanReport
from tl_core.errors import BackboneError  # noqa: E402

TINY = ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=48)
QUICK_TRAIN = TrainConfig(epochs=3, fine_tune_epochs=5, batch_size=16, fine_tune_layers=10)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScanReport, DatasetSplit, Path]:
    """3 learnable classes x 40 images at 48 px; 30% validation so the probe is scored on 36 images."""
    root = tmp_path_factory.mktemp("advisor")
    report = scan_dataset(make_shapes_dataset(root / "data", num_classes=3, images_per_class=40, image_size=48))
    return report, split_dataset(report, val_fraction=0.3, test_fraction=0.1, seed=1), root / "cache"


def _shuffled_labels(split: DatasetSplit, seed: int = 0) -> DatasetSplit:
    """The same images with their labels permuted across train and validation: nothing left to learn."""
    examples = [*split.train, *split.val]
    labels = np.random.default_rng(seed).permutation([e.label for e in examples])
    relabelled = [dataclasses.replace(e, label=str(label)) for e, label in zip(examples, labels)]
    return dataclasses.replace(
        split, train=tuple(relabelled[: len(split.train)]), val=tuple(relabelled[len(split.train) :])
    )


@pytest.mark.slow  # timing builds three training graphs (~15-30 s on 2 shared cores)
def test_advice_has_every_field_and_time_estimates_grow_with_unfrozen_layers(shapes) -> None:
    report, split, cache = shapes
    advice = advise(report, split, TINY, QUICK_TRAIN, cache_dir=cache)

    assert advice.recommended_mode == "feature-extraction"  # 84 images: a small set
    assert advice.train_images == len(split.train) and advice.num_classes == 3
    assert advice.probe_accuracy is not None and advice.separability is not None and advice.chance_accuracy is not None
    assert advice.pretrained_entropy is None  # random weights have no ImageNet head
    assert set(advice.estimates) == {"feature-extraction", "fine-tune", "full"}
    assert all(e.estimated_seconds > 0 and e.images_per_second > 0 for e in advice.estimates.values())
    seconds = {mode: e.estimated_seconds for mode, e in advice.estimates.items()}
    assert seconds["feature-extraction"] < seconds["fine-tune"] <= seconds["full"]
    assert advice.estimates["fine-tune"].images_per_second >= advice.estimates["full"].images_per_second

    as_dict = json.loads(json.dumps(advice.to_dict()))
    assert as_dict["recommended_mode"] == "feature-extraction" and as_dict["estimated_seconds"] == pytest.approx(
        seconds
    )
    assert isinstance(as_dict["reasons"], list) and all(
        any(c.isdigit() for c in reason) for reason in as_dict["reasons"]
    )
    assert any("Linear probe" in reason and f"{advice.probe_accuracy:.2f}" in reason for reason in advice.reasons)
    text = format_advice(advice)
    assert "Recommended mode: feature-extraction" in text and "full" in text and "<- recommended" in text


@pytest.fixture(scope="module")
def learnable(shapes) -> Advice:
    report, split, cache = shapes
    return advise(report, split, TINY, QUICK_TRAIN, cache_dir=cache, measure_throughput=False)


def test_probe_is_high_on_learnable_classes_and_near_chance_on_shuffled_labels(shapes, learnable: Advice) -> None:
    report, split, cache = shapes
    shuffled = advise(report, _shuffled_labels(split), TINY, QUICK_TRAIN, cache_dir=cache, measure_throughput=False)

    assert learnable.probe_accuracy >= 0.85
    assert any("already separate your classes" in reason for reason in learnable.reasons)
    assert learnable.estimates == {} and learnable.to_dict()["estimated_seconds"] == {}
    assert shuffled.probe_accuracy <= shuffled.chance_accuracy + 0.15
    assert shuffled.separability < 0.25 * learnable.separability
    assert any("barely separate" in reason for reason in shuffled.reasons)
    assert any("earlier cut layer" in reason for reason in shuffled.reasons)


def test_a_large_training_set_flips_the_advice_towards_fine_tuning(shapes, learnable: Advice) -> None:
    report, split, cache = shapes
    # The same images listed 70 times: 5,880 training images, as a large dataset reports them.
    large_split = dataclasses.replace(split, train=split.train * 70)
    large = advise(
        report, large_split, TINY, QUICK_TRAIN, cache_dir=cache, measure_throughput=False, max_probe_images=120
    )

    assert learnable.recommended_mode == "feature-extraction"
    assert large.recommended_mode in ("fine-tune", "full") and large.train_images == 70 * len(split.train)
    assert any("large set" in reason and str(large.train_images) in reason for reason in large.reasons)


def test_probe_cut_depths_measures_one_accuracy_per_layer(shapes) -> None:
    _, split, cache = shapes
    depths = probe_cut_depths(split, TINY, cache_dir=cache)
    assert len(depths) == 4 and depths[-1][0] == "out_relu"
    assert len({name for name, _ in depths}) == 4
    assert all(0.0 <= accuracy <= 1.0 for _, accuracy in depths)
    assert max(accuracy for _, accuracy in depths) >= 0.85

    chosen = probe_cut_depths(split, TINY, cache_dir=cache, layers=["block_2_add", "out_relu"])
    assert [name for name, _ in chosen] == ["block_2_add", "out_relu"]
    assert chosen[1][1] == pytest.approx(dict(depths)["out_relu"])  # same features, same probe
    with pytest.raises(BackboneError, match="no layer 'block_99_add'.*block_2_add"):
        probe_cut_depths(split, TINY, cache_dir=cache, layers=["block_99_add"])


def test_linear_probe_fits_separable_data_and_stays_at_chance_on_noise() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 64)) * 3
    labels = rng.integers(0, 4, 400)
    features = centres[labels] + rng.normal(size=(400, 64))
    assert linear_probe_accuracy(features[:300], labels[:300], features[300:], labels[300:]) >= 0.95
    noise = rng.normal(size=(400, 64))
    assert linear_probe_accuracy(noise[:300], labels[:300], noise[300:], labels[300:]) <= 0.4


def test_linear_probe_standardises_tiny_features_and_drops_the_ones_without_spread() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 16))
    labels = rng.integers(0, 3, 300)
    features = centres[labels] + rng.normal(size=(300, 16))
    reference = linear_probe_accuracy(features[:200], labels[:200], features[200:], labels[200:])
    assert reference >= 0.8
    # Random-weight features can be ~1e-6 in scale: standardised, they score as the same features at unit scale.
    tiny = (features * 1e-6).astype(np.float32)
    assert linear_probe_accuracy(tiny[:200], labels[:200], tiny[200:], labels[200:]) == pytest.approx(
        reference, abs=0.02
    )
    # 400 columns of rounding noise a billion times quieter than the signal: dropped, not blown up to unit variance.
    with_noise = np.hstack([features, rng.normal(size=(300, 400)) * 1e-9])
    assert linear_probe_accuracy(with_noise[:200], labels[:200], with_noise[200:], labels[200:]) == pytest.approx(
        reference, abs=0.02
    )


def test_scatter_ratio_is_calinski_harabasz_without_degrees_of_freedom() -> None:
    from sklearn.metrics import calinski_harabasz_score

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 120)
    features = rng.normal(size=(4, 8))[labels] + rng.normal(size=(120, 8))
    assert scatter_ratio(features, labels) == pytest.approx(
        calinski_harabasz_score(features, labels) * (4 - 1) / (120 - 4)
    )


def test_advisor_steps_report_in_words_and_as_events_and_a_stop_ends_them(shapes) -> None:
    from tl_core.events import PreparationProgress, StageStarted
    from tl_core.stopping import StopToken
    from tl_core.training.preparation import PreparationStopped

    report, split, cache = shapes

    class Recorder:
        """Keeps the events; with `stop_on_progress`, asks for a stop at the first batch decoded."""

        def __init__(self, stop_on_progress: StopToken | None = None) -> None:
            self.events: list[object] = []
            self.stop_on_progress = stop_on_progress

        def on_event(self, event: object) -> None:
            self.events.append(event)
            if self.stop_on_progress is not None and isinstance(event, PreparationProgress):
                self.stop_on_progress.request_stop()

    words: list[str] = []
    recorder = Recorder()
    probe_cut_depths(
        split,
        TINY,
        cache_dir=cache / "fresh",
        layers=["block_2_add"],
        steps=AdvisorSteps(progress=words.append, listener=recorder, stop=StopToken(), job_id="job-1"),
    )
    assert words == ["building the model", "probing block_2_add (depth 1 of 1)"]
    assert [e.description for e in recorder.events if isinstance(e, StageStarted)] == words
    decoded = [e for e in recorder.events if isinstance(e, PreparationProgress) and e.step == "decode"]
    assert {e.split for e in decoded} == {"train", "val"} and all(e.run_id == "job-1" for e in recorder.events)
    assert any(
        isinstance(e, PreparationProgress) and e.step == "features" and e.done == e.total for e in recorder.events
    )

    stopped = StopToken()
    stopped.request_stop()
    with pytest.raises(AdvisorStopped):  # at the next step
        advise(
            report,
            split,
            TINY,
            QUICK_TRAIN,
            cache_dir=cache,
            measure_throughput=False,
            steps=AdvisorSteps(stop=stopped),
        )
    stop = StopToken()
    with pytest.raises(PreparationStopped):  # within a sample's decoding (a new cache folder: nothing is cached yet)
        probe_cut_depths(
            split,
            TINY,
            cache_dir=cache / "stopped",
            layers=["out_relu"],
            steps=AdvisorSteps(listener=Recorder(stop), stop=stop),
        )


def test_entropy_is_zero_for_certain_and_one_for_uniform_predictions() -> None:
    assert normalized_entropy(np.eye(1000)[[3, 7]]) == pytest.approx(0.0, abs=1e-6)
    assert normalized_entropy(np.full((2, 1000), 1e-3)) == pytest.approx(1.0)
    assert 0.0 < normalized_entropy(np.array([[0.5, 0.5, 0.0, 0.0]])) == pytest.approx(0.5)


@pytest.mark.slow  # converts and builds the EfficientNet-Lite0 ImageNet classifier (~15 s)
def test_imagenet_head_is_sure_about_photos_and_unsure_about_noise(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for folder, images in (
        (
            "photos",
            {
                "animals": [skimage.data.chelsea(), skimage.data.astronaut()],
                "things": [skimage.data.coffee(), skimage.data.rocket()],
            },
        ),
        (
            "noise",
            {name: [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for _ in range(2)] for name in ("a", "b")},
        ),
    ):
        for label, pixels in images.items():
            (tmp_path / folder / label).mkdir(parents=True)
            for index, array in enumerate(pixels):
                Image.fromarray(array).save(tmp_path / folder / label / f"{index}.png")
    lite0 = ModelConfig(backbone="efficientnet_lite0", weights="imagenet")
    entropy = {
        folder: pretrained_head_entropy(
            lite0, scan_dataset(tmp_path / folder).examples, 160, tmp_path / "cache", tmp_path / "weights"
        )
        for folder in ("photos", "noise")
    }
    assert 0.0 <= entropy["photos"] < 0.35 and entropy["noise"] > 0.6
    photos = scan_dataset(tmp_path / "photos").examples
    assert pretrained_head_entropy(TINY, photos, 48, tmp_path / "cache", None) is None  # no ImageNet head
    assert (
        pretrained_head_entropy(dataclasses.replace(lite0, weights="none"), photos, 160, tmp_path / "cache", None)
        is None
    )


def test_stratified_sample_keeps_class_proportions(shapes) -> None:
    _, split, _ = shapes
    imbalanced = split.train + tuple(e for e in split.train if e.label == "red_circle") * 4
    sample = stratified_sample(imbalanced, 60, seed=3)
    counts = {label: sum(e.label == label for e in sample) for label in split.class_names}
    assert len(sample) == 60 and counts["red_circle"] == pytest.approx(60 * 5 / 7, abs=1)
    assert stratified_sample(imbalanced, 60, seed=3) == sample
    assert stratified_sample(split.train, 1000, seed=3) == split.train


def _estimates(fe: float, ft: float, full: float) -> dict[str, ModeEstimate]:
    return {
        "feature-extraction": ModeEstimate("feature-extraction", fe, 500.0),
        "fine-tune": ModeEstimate("fine-tune", ft, 200.0),
        "full": ModeEstimate("full", full, 50.0),
    }


@pytest.mark.parametrize(
    ("train_images", "smallest", "probe", "expected"),
    [
        (400, 100, 0.95, "feature-extraction"),  # small, features fit
        (400, 100, 0.40, "feature-extraction"),  # small, features do not fit: too little data to fine-tune
        (2500, 400, 0.95, "feature-extraction"),  # medium, features fit
        (2500, 400, 0.70, "fine-tune"),  # medium, partial fit
        (6000, 1500, 0.95, "fine-tune"),  # large, features fit: adapt the top
        (6000, 1500, 0.40, "full"),  # large, features do not fit: adapt everything
        (3000, 600, 0.40, "full"),  # 600 per class counts as large
    ],
)
def test_size_and_probe_rules(train_images: int, smallest: int, probe: float, expected: str) -> None:
    mode, reasons = recommend(Measurements(train_images, smallest, probe_accuracy=probe, chance_accuracy=0.25))
    assert mode == expected
    assert str(train_images) in reasons[0] and f"{probe:.2f}" in reasons[1]


def test_budget_steps_down_to_a_mode_that_fits() -> None:
    measurements = Measurements(
        8000, 2000, probe_accuracy=0.3, chance_accuracy=0.25, estimates=_estimates(60, 900, 4000)
    )
    assert recommend(measurements)[0] == "full"
    mode, reasons = recommend(dataclasses.replace(measurements, time_budget_s=1200))
    assert mode == "fine-tune" and any("over your 20.0 min budget" in reason for reason in reasons)
    assert recommend(dataclasses.replace(measurements, time_budget_s=30))[0] == "feature-extraction"


def test_unfamiliar_images_push_a_large_partially_fitting_set_to_full_fine_tuning() -> None:
    partial = Measurements(6000, 1500, probe_accuracy=0.75, chance_accuracy=0.25)  # skill 0.67: between the thresholds
    assert recommend(partial)[0] == "fine-tune"
    mode, reasons = recommend(dataclasses.replace(partial, pretrained_entropy=0.8))
    assert mode == "full" and any("unsure about your images" in reason and "0.80" in reason for reason in reasons)
