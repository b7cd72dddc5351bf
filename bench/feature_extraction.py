"""Benchmark: feature extraction end to end versus the tutorial recipe and the forward-pass floor.

Measured side by side, interleaved, in one process on the same files and the same split:

* ours: `tl_core.training.runner.run_experiment` in feature-extraction mode (scan + decode + backbone
  features + head epochs + evaluation + saving), in a fresh workspace (no image or feature cache);
* ours again in the same workspace (the decoded images and the features are reused);
* the standard recipe from the Keras/TF tutorials: `keras.utils.image_dataset_from_directory` ->
  preprocessing -> frozen backbone(training=False) -> pooling -> dropout -> softmax, `model.fit`
  for the same epochs, `model.evaluate` on the test split;
* the floor: one `model.predict` of the backbone over every image, already decoded and preprocessed
  in memory (graph already traced; the cold figure with tracing is printed too).

Usage:
    .venv/bin/python -m bench.feature_extraction [--images 600] [--image-size 128] [--repeats 3] [--profile]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from bench import _common as common  # first: quiets TensorFlow's start-up logging
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.image_cache import build_image_cache
from tl_core.data.prep import prepare_dataset
from tl_core.data.types import SPLIT_NAMES as SPLITS
from tl_core.data.types import DatasetSplit
from tl_core.models.build import build_backbone
from tl_core.models.preprocessing import build_preprocessing
from tl_core.models.registry import get_backbone_spec, resolve_image_size
from tl_core.runs.store import RunStore
from tl_core.training.runner import run_experiment


@dataclass
class OursFigures:
    seconds: float
    head_trained_s: float  # run start -> the head phase ended (a trained head)
    test_accuracy: float
    reused_features: bool
    reused_images: bool
    segments: dict[str, float]


@dataclass
class RecipeFigures:
    seconds: float
    test_accuracy: float


def experiment_config(args: argparse.Namespace, source: Path) -> RunConfig:
    """Feature extraction for exactly `--epochs` epochs (no early stop, so both sides train the same epochs)."""
    return RunConfig(
        data=DataConfig(source=str(source)),
        model=ModelConfig(backbone=args.backbone, weights=args.weights, image_size=args.image_size),
        train=TrainConfig(
            mode="feature-extraction", epochs=args.epochs, batch_size=args.batch_size, early_stopping_patience=None
        ),
        name="bench feature extraction",
    )


def _segments(clock: common.EventClock, total: float) -> dict[str, float]:
    """Where one run's wall time went, from the arrival times of its events and log lines.

    Each milestone's segment is the time since the milestone before it, whatever their order: a second
    run on cached features trains the head first and builds the backbone afterwards. A first run decodes
    its images in a helper process while it builds the model (tl_core/data/decode_helper.py), so its decode
    segment is only the decoding left when the build is done, plus opening the caches.
    """
    logs = [(seconds, event.text) for seconds, event in clock.arrivals if type(event).__name__ == "LogMessage"]
    started = clock.first("RunStarted") or 0.0
    decoded = max(
        (s for s, text in logs if "decoded-image cache" in text or "decoded and cached" in text), default=None
    )
    built = next((s for s, text in logs if text.startswith("Built ")), None)
    featured = max(
        (s for s, text in logs if "backbone features" in text and text.startswith(("train", "val"))), default=None
    )  # test: after training
    head_started = clock.first("PhaseStarted", phase="head")
    head_done = clock.first("PhaseEnded", phase="head")
    finished = clock.first("RunFinished") or total
    milestones = {
        "scan + run record": started,
        "build model (a helper process decodes meanwhile)": built,
        "decode: the rest, after the build": decoded,
        "backbone features, train + val (or cached ones loaded)": featured,
        "head set-up (build head, compile)": head_started,
        "head epochs (incl. fit set-up and tracing)": head_done,
        "evaluate + save": finished,
    }
    present = sorted((seconds, name) for name, seconds in milestones.items() if seconds is not None)
    segments = dict.fromkeys(milestones, 0.0)
    previous = 0.0
    for seconds, name in present:
        segments[name] = seconds - previous
        previous = seconds
    return segments


def run_ours(config: RunConfig, store: RunStore) -> OursFigures:
    """One `run_experiment` call, timed from the call to its return."""
    clock = common.EventClock()
    outcome = run_experiment(config, store=store, listener=clock)
    total = time.perf_counter() - clock.started
    if outcome.status != "completed":
        raise RuntimeError(f"benchmark run {outcome.run_id} {outcome.status}: {outcome.error}")
    head = clock.first("PhaseEnded", phase="head") or total
    return OursFigures(
        seconds=total,
        head_trained_s=head,
        test_accuracy=float(
            outcome.summary["test_accuracy"] if outcome.summary["test_accuracy"] is not None else float("nan")
        ),
        reused_features=any("reused cached backbone features" in line for line in outcome.log),
        reused_images=any("from the decoded-image cache" in line or "no image read" in line for line in outcome.log),
        segments=_segments(clock, total),
    )


def link_split_folders(split: DatasetSplit, target: Path) -> Path:
    """`target/<split>/<class>/` of symbolic links, so the recipe reads exactly our files and split."""
    for name in SPLITS:
        for index, example in enumerate(split.examples(name)):
            folder = target / name / example.label
            folder.mkdir(parents=True, exist_ok=True)
            link = folder / f"{index:05d}{Path(example.path).suffix}"
            if not link.exists():
                link.symlink_to(example.path)
    return target


def tutorial_recipe(
    split_root: Path, args: argparse.Namespace, num_classes: int, weights_cache: Path | None
) -> RecipeFigures:
    """The keras.io / tensorflow.org transfer-learning recipe, timed from reading the folders to the test accuracy."""
    import tensorflow as tf

    def started() -> RecipeFigures:
        keras.utils.set_random_seed(42)
        size = (args.image_size, args.image_size)

        def folder(name: str, shuffle: bool) -> tf.data.Dataset:
            dataset = keras.utils.image_dataset_from_directory(
                split_root / name, image_size=size, batch_size=args.batch_size, shuffle=shuffle, seed=42, verbose=False
            )
            return dataset.prefetch(tf.data.AUTOTUNE)

        train, val, test = folder("train", True), folder("val", False), folder("test", False)
        spec = get_backbone_spec(args.backbone)
        backbone = build_backbone(spec, args.weights, args.image_size, cache_dir=weights_cache)
        backbone.trainable = False
        inputs = keras.Input((*size, 3))
        x = build_preprocessing(spec.preprocessing)(inputs)
        x = backbone(x, training=False)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dropout(0.2)(x)
        outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        model.fit(train, validation_data=val, epochs=args.epochs, verbose=0)
        _, accuracy = model.evaluate(test, verbose=0)
        return RecipeFigures(0.0, float(accuracy))

    seconds, figures = common.timed(started)
    figures.seconds = seconds
    return figures


class ForwardPassFloor:
    """One `model.predict` of the backbone over every image, decoded and preprocessed in memory beforehand."""

    def __init__(
        self, split: DatasetSplit, args: argparse.Namespace, scratch: Path, weights_cache: Path | None
    ) -> None:
        examples = [e for name in SPLITS for e in split.examples(name)]
        decoded = build_image_cache(examples, args.image_size, scratch / "floor-images").images
        spec = get_backbone_spec(args.backbone)
        self.inputs = common.preprocessed_float_images(decoded, spec.preprocessing)
        self.backbone = build_backbone(spec, args.weights, args.image_size, cache_dir=weights_cache)
        self.batch_size = args.batch_size
        self.cold_s, _ = common.timed(self.measure)  # the first predict traces the graph

    def measure(self) -> np.ndarray:
        return self.backbone.predict(self.inputs, batch_size=self.batch_size, verbose=0)

    def seconds(self) -> float:
        return common.timed(self.measure)[0]


def _warm_up(args: argparse.Namespace, weights_cache: Path | None) -> None:
    """Pay one-off process costs (weight conversion cache, Keras trainer set-up) outside the timings."""
    spec = get_backbone_spec(args.backbone)
    build_backbone(spec, args.weights, resolve_image_size(spec, args.image_size), cache_dir=weights_cache)
    tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    tiny.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    tiny.fit(
        np.zeros((8, 4)), np.zeros(8, int), epochs=1, verbose=0, validation_data=(np.zeros((2, 4)), np.zeros(2, int))
    )
    tiny.predict(np.zeros((2, 4)), verbose=0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.base_parser(__doc__.splitlines()[0], images=600, image_size=128)
    parser.add_argument("--epochs", type=int, default=10, help="head epochs on both sides (default 10)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one extra run of ours with cProfile and print the top entries",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the table and the verdict lines; returns the ratios."""
    args = parse_args(argv)
    common.quiet_logs()
    cache_dir = common.bench_cache_dir(args.cache_dir)
    weights_cache = None  # the default converted-weights cache: not part of a workspace, warmed below
    source = common.shapes_jpeg_dataset(
        cache_dir, images=args.images, source_size=args.source_size, classes=args.classes
    )
    config = experiment_config(args, source)
    print(
        f"Feature extraction: {args.backbone} ({args.weights}) at {args.image_size}px, {args.epochs} head epochs, "
        f"{args.images} JPEGs of {args.source_size}px from {source}"
    )
    for line in common.device_lines():
        print(line)
    _warm_up(args, weights_cache)

    ours: list[OursFigures] = []
    second: list[OursFigures] = []
    recipe: list[RecipeFigures] = []
    floor_s: list[float] = []
    with common.fresh_workspace() as scratch:
        split = prepare_dataset(config.data, RunStore(scratch / "split-workspace")).split
        split_root = link_split_folders(split, scratch / "split-folders")
        floor = ForwardPassFloor(split, args, scratch, weights_cache)

        def our_pair() -> None:
            with common.fresh_workspace(scratch) as workspace:
                store = RunStore(workspace)
                ours.append(run_ours(config, store))
                second.append(run_ours(config, store))

        for repeat in range(args.repeats):
            # Alternate who goes first, so a neighbour's burst of load does not always hit the same side.
            order = [
                our_pair,
                lambda: recipe.append(tutorial_recipe(split_root, args, len(split.class_names), weights_cache)),
                lambda: floor_s.append(floor.seconds()),
            ]
            for step in order if repeat % 2 == 0 else order[::-1]:
                step()
        profile_text = second_profile_text = None
        if args.profile:
            with common.fresh_workspace(scratch) as workspace:
                _, profile_text = common.profile_call(lambda: run_ours(config, RunStore(workspace)))
                _, second_profile_text = common.profile_call(lambda: run_ours(config, RunStore(workspace)))

    ours_s = common.median([f.seconds for f in ours])
    recipe_s = common.median([f.seconds for f in recipe])
    floor_median = common.median(floor_s)
    first_head = common.median([f.head_trained_s for f in ours])
    second_head = common.median([f.head_trained_s for f in second])
    ours_accuracy = common.median([f.test_accuracy for f in ours])
    recipe_accuracy = common.median([f.test_accuracy for f in recipe])
    sizes = split.sizes()

    print()
    print(f"split {sizes}; {common.noise_note(args.repeats)}")
    print(
        common.format_table(
            ["path", "seconds: median (min-max)", "test accuracy", "notes"],
            [
                [
                    "tutorial recipe: image_dataset_from_directory + model.fit",
                    common.spread([f.seconds for f in recipe]),
                    f"{recipe_accuracy:.3f}",
                    f"{args.epochs} epochs over the images",
                ],
                [
                    "ours: run_experiment, fresh workspace",
                    common.spread([f.seconds for f in ours]),
                    f"{ours_accuracy:.3f}",
                    f"trained head after {first_head:.2f} s",
                ],
                [
                    "ours: second run, same workspace",
                    common.spread([f.seconds for f in second]),
                    f"{common.median([f.test_accuracy for f in second]):.3f}",
                    f"trained head after {second_head:.2f} s; features reused: {all(f.reused_features for f in second)}, images reused or not needed: {all(f.reused_images for f in second)}",
                ],
                [
                    "floor: backbone.predict on preprocessed arrays",
                    common.spread(floor_s),
                    "-",
                    f"cold (with graph tracing): {floor.cold_s:.2f} s",
                ],
            ],
        )
    )
    print()
    print("where our time goes (median seconds per segment):")
    print(
        common.format_table(
            ["segment", "first run", "second run"],
            [
                [
                    name,
                    f"{common.median([f.segments[name] for f in ours]):.2f}",
                    f"{common.median([f.segments[name] for f in second]):.2f}",
                ]
                for name in ours[0].segments
            ],
        )
    )
    if profile_text:
        print("\ncProfile of one more first run (cumulative, tl_core and Keras trainer/saving frames):")
        print(profile_text)
        print("\ncProfile of its second run (cached features):")
        print(second_profile_text)

    speedup = recipe_s / ours_s
    floor_ratio = ours_s / floor_median
    second_share = second_head / first_head
    accuracy_gap = (ours_accuracy - recipe_accuracy) * 100
    print()
    print(common.ratio_line("feature extraction speed-up vs plain model.fit", speedup, 5.0, digits=1))
    print(
        f"test accuracy, ours minus plain model.fit: {accuracy_gap:+.1f} points ({ours_accuracy:.3f} vs {recipe_accuracy:.3f}) "
        f"(target within 1 point) {'PASS' if abs(accuracy_gap) <= 1.0 else 'FAIL'}"
    )
    print(common.ratio_line("feature extraction end to end vs forward-pass floor", floor_ratio, 1.3, at_least=False))
    print(
        common.ratio_line(
            "second run on the same data, time to trained head vs first run",
            second_share * 100,
            10,
            at_least=False,
            unit="%",
            digits=1,
        )
    )
    return {
        "speedup": speedup,
        "floor_ratio": floor_ratio,
        "second_run_share": second_share,
        "accuracy_gap_points": accuracy_gap,
    }


if __name__ == "__main__":
    main()
