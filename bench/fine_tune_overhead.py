"""Benchmark: fine-tuning throughput of our training loop versus a bare `model.fit` of the same model.

Ours is `tl_core.training.runner.run_experiment` in fine-tune mode (one head epoch on cached features, then
the top layers unfrozen): its epochs stream batches from the memory-mapped image cache through
`tf.data`, send typed events, record every epoch in the run store (SQLite) and checkpoint the best
weights. The bare side builds the same model with the same layers unfrozen, compiles it the same
way and calls `model.fit` on the same images held in memory as a NumPy array. Both use the same
validation split. Throughput is images/s over whole fine-tune epochs (wall clock between epoch
ends, everything included; the first epoch, which traces the graph, is left out).

Usage:
    .venv/bin/python -m bench.fine_tune_overhead [--images 600] [--image-size 128] [--epochs 4] [--profile]
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
from tl_core.models.transfer_model import UnfreezeTop, build_transfer_model
from tl_core.runs.store import RunStore
from tl_core.training.runner import run_experiment

FINE_TUNE_PHASE = "fine-tune"


@dataclass
class Throughput:
    images_per_s: float  # whole epochs, wall clock between epoch ends
    inside_epoch_images_per_s: float  # Keras' own epoch span only (before the epoch-end callbacks)


class _EpochTimes(keras.callbacks.Callback):
    """Notes when each epoch begins and ends (wall clock), for the bare `model.fit`."""

    def __init__(self) -> None:
        super().__init__()
        self.begins: list[float] = []
        self.ends: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.begins.append(time.perf_counter())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.ends.append(time.perf_counter())


def experiment_config(args: argparse.Namespace, source: Path) -> RunConfig:
    """One head epoch on features, then `--epochs` fine-tune epochs with no early stop."""
    return RunConfig(
        data=DataConfig(source=str(source)),
        model=ModelConfig(backbone=args.backbone, weights=args.weights, image_size=args.image_size),
        train=TrainConfig(
            mode="fine-tune",
            epochs=1,
            fine_tune_epochs=args.epochs,
            fine_tune_layers=args.fine_tune_layers,
            batch_size=args.batch_size,
            early_stopping_patience=None,
        ),
        name="bench fine-tune overhead",
    )


def run_ours(config: RunConfig, store: RunStore, train_count: int) -> Throughput:
    clock = common.EventClock()
    outcome = run_experiment(config, store=store, listener=clock)
    if outcome.status != "completed":
        raise RuntimeError(f"benchmark run {outcome.run_id} {outcome.status}: {outcome.error}")
    ends = clock.times("EpochEnded", phase=FINE_TUNE_PHASE)
    inside = [
        event.seconds
        for _, event in clock.arrivals
        if type(event).__name__ == "EpochEnded" and event.phase == FINE_TUNE_PHASE
    ][1:]
    return Throughput(
        common.steady_throughput(ends, train_count), train_count / common.median(inside) if inside else float("nan")
    )


def run_bare(
    config: RunConfig, num_classes: int, arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> Throughput:
    """The same model, the same layers unfrozen, compiled the same way; `model.fit` on in-memory arrays."""
    keras.utils.set_random_seed(config.train.seed)
    transfer_model = build_transfer_model(config.model, num_classes)
    UnfreezeTop(config.train.fine_tune_layers).apply(transfer_model.backbone)
    model = transfer_model.model
    model.compile(
        optimizer=keras.optimizers.Adam(config.train.effective_fine_tune_learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    times = _EpochTimes()
    model.fit(
        arrays["train"],
        labels["train"],
        batch_size=config.train.batch_size,
        epochs=config.train.fine_tune_epochs,
        validation_data=(arrays["val"], labels["val"]),
        shuffle=True,
        callbacks=[times],
        verbose=0,
    )
    inside = [end - begin for begin, end in zip(times.begins, times.ends)][1:]
    count = len(labels["train"])
    return Throughput(
        common.steady_throughput(times.ends, count), count / common.median(inside) if inside else float("nan")
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.base_parser(__doc__.splitlines()[0], images=600, image_size=128, repeats=3)
    parser.add_argument(
        "--epochs", type=int, default=4, help="fine-tune epochs per run; the first is left out of the rate (default 4)"
    )
    parser.add_argument(
        "--fine-tune-layers",
        type=int,
        default=20,
        help="top backbone layers unfrozen (default 20, TrainConfig's default)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one extra run of ours with cProfile and print the top entries",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the table and the verdict line; returns the ratio."""
    args = parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first epoch traces the graph and is left out of the rate.")
    common.quiet_logs()
    cache_dir = common.bench_cache_dir(args.cache_dir)
    source = common.shapes_jpeg_dataset(
        cache_dir, images=args.images, source_size=args.source_size, classes=args.classes
    )
    config = experiment_config(args, source)
    print(
        f"Fine-tune overhead: {args.backbone} ({args.weights}) at {args.image_size}px, top {args.fine_tune_layers} layers unfrozen, "
        f"{args.epochs} fine-tune epochs, {args.images} JPEGs from {source}"
    )
    for line in common.device_lines():
        print(line)

    ours: list[Throughput] = []
    bare: list[Throughput] = []
    with common.fresh_workspace() as scratch:
        store = RunStore(scratch / "workspace")
        split = prepare_dataset(config.data, store).split
        labels = {name: split.labels(name) for name in ("train", "val")}
        # The bare side gets the very pixels ours trains on, loaded into RAM.
        arrays = {
            name: np.array(build_image_cache(split.examples(name), args.image_size, scratch / "bare-images").images)
            for name in ("train", "val")
        }
        train_count = len(labels["train"])
        for repeat in range(args.repeats):
            steps = [
                lambda: ours.append(run_ours(config, store, train_count)),
                lambda: bare.append(run_bare(config, len(split.class_names), arrays, labels)),
            ]
            for step in steps if repeat % 2 == 0 else steps[::-1]:
                step()
        profile_text = None
        if args.profile:
            _, profile_text = common.profile_call(
                lambda: run_ours(config, store, train_count),
                pattern=r"tl_core|keras/src/(callbacks|saving|trainers/epoch)|h5py|sqlite3",
            )

    ours_rate = common.median([t.images_per_s for t in ours])
    bare_rate = common.median([t.images_per_s for t in bare])
    print()
    print(f"split {split.sizes()}; {common.noise_note(args.repeats)}")
    print(
        common.format_table(
            ["path", "images/s, whole epochs: median (min-max)", "images/s inside Keras' epoch span"],
            [
                [
                    "bare model.fit on in-memory arrays",
                    common.spread([t.images_per_s for t in bare]),
                    common.spread([t.inside_epoch_images_per_s for t in bare]),
                ],
                [
                    "ours: run_experiment (tf.data from memmap, events, store, checkpoints)",
                    common.spread([t.images_per_s for t in ours]),
                    common.spread([t.inside_epoch_images_per_s for t in ours]),
                ],
            ],
        )
    )
    if profile_text:
        print("\ncProfile of one more run of ours (cumulative, tl_core / callbacks / saving frames):")
        print(profile_text)
    ratio = ours_rate / bare_rate
    print()
    print(common.ratio_line("fine-tune throughput vs bare model.fit", ratio, 0.95))
    return {"throughput_ratio": ratio}


if __name__ == "__main__":
    main()
