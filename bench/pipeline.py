"""Benchmark: the input pipeline (decode + resize into the image cache) versus the backbone's appetite.

Measured side by side, interleaved, in one process:

* `tl_core.data.image_cache.build_image_cache` over every image into an empty folder (JPEG decode, EXIF
  orientation, RGB, bilinear resize, write to the memory-mapped cache), images/s;
* the backbone's consumption rate: `model.predict` on already decoded, preprocessed in-memory
  images (graph traced beforehand), and our own feature pass (`tl_core.training.feature_cache.extract_features`:
  the lean inference graph, two batches in flight) on the same decoded images, images/s; the pipeline
  should be at least 3x faster than the faster of the two, so it is never the bottleneck;
* for reference, one pass of `keras.utils.image_dataset_from_directory` (tf.data decode + resize).

Then a second `build_image_cache` on the same files: it must reuse the cache and decode nothing
(decodes are counted by wrapping the single decode function).

Usage:
    .venv/bin/python -m bench.pipeline [--images 2000] [--image-size 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench import _common as common  # first: quiets TensorFlow's start-up logging
from tl_core.config import ModelConfig
from tl_core.data import image_cache
from tl_core.data.image_dataset import scan_dataset
from tl_core.models.build import build_backbone
from tl_core.models.registry import get_backbone_spec, resolve_image_size
from tl_core.models.transfer_model import build_transfer_model
from tl_core.training.feature_cache import SharedPredictor, extract_features


@contextlib.contextmanager
def counting_decodes() -> Iterator[list[int]]:
    """Counts calls of the one decode + resize function the image cache uses."""
    original = image_cache.image_io.load_image_array
    calls = [0]

    def counted(*args: object, **kwargs: object) -> np.ndarray:
        calls[0] += 1
        return original(*args, **kwargs)

    image_cache.image_io.load_image_array = counted
    try:
        yield calls
    finally:
        image_cache.image_io.load_image_array = original


def keras_folder_pass(root: Path, image_size: int, batch_size: int) -> int:
    """One full pass of the tutorials' `image_dataset_from_directory` (decode + resize in tf.data)."""
    import keras
    import tensorflow as tf

    dataset = keras.utils.image_dataset_from_directory(
        root, image_size=(image_size, image_size), batch_size=batch_size, shuffle=False, verbose=False
    )
    return sum(int(images.shape[0]) for images, _ in dataset.prefetch(tf.data.AUTOTUNE))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.base_parser(__doc__.splitlines()[0], images=2000, image_size=128)
    parser.add_argument(
        "--backbone-images", type=int, default=256, help="images the backbone rate is measured on (default 256)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="decoding threads (default: the engine's, min(8, CPU count))"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the table and the verdict lines; returns the ratios."""
    args = parse_args(argv)
    common.quiet_logs()
    cache_dir = common.bench_cache_dir(args.cache_dir)
    source = common.shapes_jpeg_dataset(
        cache_dir, images=args.images, source_size=args.source_size, classes=args.classes
    )
    spec = get_backbone_spec(args.backbone)
    image_size = resolve_image_size(spec, args.image_size)
    print(
        f"Input pipeline: {args.images} JPEGs of {args.source_size}px -> {image_size}px; backbone {args.backbone} ({args.weights}); source {source}"
    )
    for line in common.device_lines():
        print(line)

    scan_s, report = common.timed(lambda: scan_dataset(source))
    examples = report.examples
    decode_s: list[float] = []
    keras_s: list[float] = []
    backbone_s: list[float] = []
    ours_s: list[float] = []
    with common.fresh_workspace() as scratch:
        sample = image_cache.build_image_cache(examples[: args.backbone_images], image_size, scratch / "sample").images
        inputs = common.preprocessed_float_images(sample, spec.preprocessing)
        backbone = build_backbone(spec, args.weights, image_size)
        backbone.predict(inputs[: args.batch_size], batch_size=args.batch_size, verbose=0)  # trace outside the timing
        extractor = build_transfer_model(
            ModelConfig(backbone=args.backbone, weights=args.weights, image_size=image_size), 2
        ).feature_extractor
        predictor = SharedPredictor(extractor)  # one traced graph, as a run's splits share it

        def our_pass() -> None:
            extract_features(extractor, sample, batch_size=args.batch_size, predict=predictor)

        our_pass()  # trace outside the timing
        keras_folder_pass(source, image_size, args.batch_size)  # the same for tf.data's first use

        def build(folder: Path) -> None:
            decode_s.append(
                common.timed(lambda: image_cache.build_image_cache(examples, image_size, folder, workers=args.workers))[
                    0
                ]
            )

        last_folder = scratch / "cache-0"
        for repeat in range(args.repeats):
            if repeat:
                shutil.rmtree(last_folder, ignore_errors=True)  # keep one cache on disk at a time
            last_folder = scratch / f"cache-{repeat}"
            steps = [
                lambda folder=last_folder: build(folder),
                lambda: backbone_s.append(
                    common.timed(lambda: backbone.predict(inputs, batch_size=args.batch_size, verbose=0))[0]
                ),
                lambda: ours_s.append(common.timed(our_pass)[0]),
                lambda: keras_s.append(common.timed(lambda: keras_folder_pass(source, image_size, args.batch_size))[0]),
            ]
            for step in steps if repeat % 2 == 0 else steps[::-1]:
                step()
        with counting_decodes() as decodes:
            second_s, second = common.timed(
                lambda: image_cache.build_image_cache(examples, image_size, last_folder, workers=args.workers)
            )

    count = len(examples)
    decode_rate = count / common.median(decode_s)
    predict_rate = len(inputs) / common.median(backbone_s)
    ours_rate = len(sample) / common.median(ours_s)
    backbone_rate = max(predict_rate, ours_rate)  # the pipeline must keep up with the faster consumer
    keras_rate = count / common.median(keras_s)
    print()
    print(common.noise_note(args.repeats))
    print(
        common.format_table(
            ["stage", "images", "seconds: median (min-max)", "images/s (median)"],
            [
                ["scan (hash + 1/8-scale decode check), once", count, f"{scan_s:.2f}", f"{count / scan_s:.0f}"],
                [
                    "build_image_cache: decode + resize, empty cache",
                    count,
                    common.spread(decode_s),
                    f"{decode_rate:.0f}",
                ],
                [
                    "reference: image_dataset_from_directory, one pass",
                    count,
                    common.spread(keras_s),
                    f"{keras_rate:.0f}",
                ],
                [
                    f"backbone {args.backbone}: model.predict, preprocessed in memory",
                    len(inputs),
                    common.spread(backbone_s),
                    f"{predict_rate:.0f}",
                ],
                [
                    f"backbone {args.backbone}: our extract_features (lean graph, 2 in flight)",
                    len(sample),
                    common.spread(ours_s),
                    f"{ours_rate:.0f}",
                ],
                [
                    "build_image_cache again, same files",
                    count,
                    f"{second_s:.3f}",
                    f"reused={second.reused}, decodes={decodes[0]}",
                ],
            ],
        )
    )
    ratio = decode_rate / backbone_rate
    skipped = second.reused and decodes[0] == 0
    print()
    print(
        common.ratio_line(
            "decode + resize (build_image_cache) vs backbone consumption (the faster consumer)", ratio, 3.0, digits=1
        )
    )
    print(
        f"second build on the same data: {second_s:.3f} s ({second_s / common.median(decode_s):.1%} of the first), reused={second.reused}, "
        f"images decoded={decodes[0]} (target: skips decoding entirely) {'PASS' if skipped else 'FAIL'}"
    )
    return {"decode_vs_backbone": ratio, "second_build_s": second_s, "second_build_reused": float(skipped)}


if __name__ == "__main__":
    main()
