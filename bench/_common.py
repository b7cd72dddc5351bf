"""Helpers shared by the benchmarks: arguments, cached datasets, timing, ratio lines, device notes.

The benchmarks run by hand (`python -m bench.<name>`) on shared, noisy machines, so every figure is
measured side by side in one process, repeated with the competitors interleaved, and reported as a
ratio of medians. Nothing here asserts a time.

Example:
    >>> print(ratio_line("speed-up", 7.3, 5.0))
    speed-up: 7.3x (target >= 5x) PASS
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

import argparse
import contextlib
import cProfile
import io
import pstats
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tl_core.data.synthetic import SHAPE_CLASSES, draw_shape_image

BENCH_CACHE_ENV = "TRANSFERLAB_BENCH_CACHE"
DEFAULT_BENCH_CACHE = Path("~/.cache/transferlab/bench")
DATASET_SEED = 0
JPEG_QUALITY = 90
T = TypeVar("T")


def base_parser(
    description: str, *, images: int, image_size: int, source_size: int = 256, repeats: int = 3
) -> argparse.ArgumentParser:
    """The arguments every benchmark takes, with that benchmark's defaults.

    Args:
        description: the script's one-line purpose (shown by --help).
        images: default number of generated images.
        image_size: default model input side in pixels.
        source_size: default side of the generated JPEG files.
        repeats: default number of interleaved repetitions.

    Returns:
        A parser the script may extend before parsing.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        help="registry name (default: efficientnet_lite0, offline ImageNet weights)",
    )
    parser.add_argument("--weights", default="imagenet", help="imagenet, none, or a weights file")
    parser.add_argument(
        "--image-size", type=int, default=image_size, help=f"model input side in px (default {image_size})"
    )
    parser.add_argument("--images", type=int, default=images, help=f"generated images in all (default {images})")
    parser.add_argument(
        "--classes",
        type=int,
        default=5,
        choices=range(2, len(SHAPE_CLASSES) + 1),
        metavar="2-5",
        help="shape classes (default 5)",
    )
    parser.add_argument(
        "--source-size", type=int, default=source_size, help=f"side of the generated JPEG files (default {source_size})"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=repeats,
        help=f"interleaved repetitions; medians are reported (default {repeats})",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"generated datasets live here (default ${BENCH_CACHE_ENV} or {DEFAULT_BENCH_CACHE})",
    )
    return parser


def bench_cache_dir(explicit: Path | None) -> Path:
    """Where generated datasets are kept between runs: `explicit`, else $TRANSFERLAB_BENCH_CACHE, else ~/.cache/transferlab/bench."""
    chosen = explicit or Path(os.environ.get(BENCH_CACHE_ENV) or DEFAULT_BENCH_CACHE)
    path = Path(chosen).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_class_images(class_dir: str, class_index: int, count: int, size: int, seed: int) -> None:
    """One class's JPEGs (a process-pool task: generation is CPU bound)."""
    class_name = list(SHAPE_CLASSES)[class_index]
    shape, colour = SHAPE_CLASSES[class_name]
    rng = np.random.default_rng([seed, class_index])
    for index in range(count):
        image = draw_shape_image(shape, colour, size, rng)
        image.save(Path(class_dir) / f"{class_name}_{index:05d}.jpg", format="JPEG", quality=JPEG_QUALITY)


def shapes_jpeg_dataset(
    cache_dir: Path, *, images: int, source_size: int, classes: int = 5, seed: int = DATASET_SEED
) -> Path:
    """A balanced folder of coloured-shape JPEGs (tl_core.data.synthetic's drawing), generated once and reused.

    Args:
        cache_dir: the bench cache; the dataset goes into a sub-folder named after its parameters.
        images: images in all (split evenly over the classes, at least 3 per class).
        source_size: side of each JPEG (bigger files make decoding as costly as real photos).
        classes: number of shape classes (2-5).
        seed: the same seed writes the same pixels.

    Returns:
        The dataset root (`<class>/<class>_NNNNN.jpg`).
    """
    per_class = max(3, images // classes)
    root = cache_dir / f"shapes-{classes}x{per_class}-{source_size}px-seed{seed}"
    if root.is_dir():
        return root
    # Generate next to the target, then rename: an interrupted run never leaves a partial dataset behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=cache_dir))
    try:
        class_dirs = []
        for name in list(SHAPE_CLASSES)[:classes]:
            (staging / name).mkdir()
            class_dirs.append(str(staging / name))
        with ProcessPoolExecutor(max_workers=min(classes, os.cpu_count() or 2)) as pool:
            list(
                pool.map(
                    _write_class_images,
                    class_dirs,
                    range(classes),
                    [per_class] * classes,
                    [source_size] * classes,
                    [seed] * classes,
                )
            )
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


@contextlib.contextmanager
def fresh_workspace(parent: Path | None = None) -> Iterator[Path]:
    """An empty workspace folder (no image or feature caches), deleted afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="tl-bench-ws-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def timed(function: Callable[[], T]) -> tuple[float, T]:
    """(wall seconds, result) of one call."""
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """'median (min-max, n=k)' for a table cell."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{median(values):.2f} ({min(values):.2f}-{max(values):.2f}, n={len(values)})"


def ratio_line(
    label: str, value: float, target: float, *, at_least: bool = True, unit: str = "x", digits: int = 2
) -> str:
    """One verdict line: '<label>: 7.3x (target >= 5x) PASS'."""
    passed = value >= target if at_least else value <= target
    comparison = ">=" if at_least else "<="
    return f"{label}: {value:.{digits}f}{unit} (target {comparison} {target:g}{unit}) {'PASS' if passed else 'FAIL'}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal and pasteable into bench/README.md)."""
    cells = [[str(value) for value in row] for row in rows]
    widths = [max(len(str(header)), *(len(row[index]) for row in cells)) for index, header in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(value.ljust(width) for value, width in zip(values, widths)) + " |"

    return "\n".join(
        [
            line(list(headers)),
            "|" + "|".join("-" * (width + 2) for width in widths) + "|",
            *(line(row) for row in cells),
        ]
    )


def quiet_logs() -> None:
    """Silence TensorFlow's Python-side warnings (retracing notices) so the tables stay readable."""
    import warnings

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", message=".*shuffle=True.*was passed.*")


def device_lines() -> list[str]:
    """The compute device and the GPU-only speed options (mixed precision, XLA)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    cpus = os.cpu_count() or 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"device: {'GPU: ' + ', '.join(gpu.name for gpu in gpus) if gpus else 'CPU only'}; {cpus} CPU cores, load average {load:.1f}; TensorFlow {tf.__version__}"
    ]
    if gpus:
        lines.append(
            "GPU path: TrainConfig.mixed_precision=True and jit_compile=True are honoured here (float16 compute, XLA)."
        )
    else:
        lines.append(
            "GPU path: no GPU here; TrainConfig.mixed_precision (float16) and jit_compile (XLA) exist and are only enabled on a GPU (XLA measured 5-10x slower on CPU)."
        )
    return lines


def noise_note(repeats: int) -> str:
    return (
        f"Figures are medians of {repeats} interleaved repetition(s) measured in this one process; "
        "the machine is shared, so compare the ratios, not the absolute seconds."
    )


@dataclass
class EventClock:
    """A training listener that notes when each event arrived (wall clock, seconds since `started`)."""

    started: float = field(default_factory=time.perf_counter)
    arrivals: list[tuple[float, Any]] = field(default_factory=list)

    def on_event(self, event: Any) -> None:
        self.arrivals.append((time.perf_counter() - self.started, event))

    def first(self, kind: str, **matching: Any) -> float | None:
        """Seconds until the first event of class `kind` whose attributes equal `matching`."""
        for seconds, event in self.arrivals:
            if type(event).__name__ == kind and all(
                getattr(event, key, None) == value for key, value in matching.items()
            ):
                return seconds
        return None

    def times(self, kind: str, **matching: Any) -> list[float]:
        return [
            s
            for s, e in self.arrivals
            if type(e).__name__ == kind and all(getattr(e, k, None) == v for k, v in matching.items())
        ]


def steady_throughput(epoch_end_times: Sequence[float], images_per_epoch: int) -> float:
    """Images/s over whole epochs, from consecutive epoch-end times; the first epoch (graph tracing) is left out."""
    if len(epoch_end_times) < 2:
        return float("nan")
    return images_per_epoch * (len(epoch_end_times) - 1) / (epoch_end_times[-1] - epoch_end_times[0])


def profile_call(
    function: Callable[[], T], *, pattern: str = r"tl_core|keras/src/(trainers|saving|callbacks)", limit: int = 25
) -> tuple[T, str]:
    """Run `function` under cProfile; returns its result and the top cumulative entries matching `pattern`."""
    profiler = cProfile.Profile()
    result = profiler.runcall(function)
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("cumulative").print_stats(pattern, limit)
    return result, buffer.getvalue()


def preprocessed_float_images(images: np.ndarray, preprocessing: str, batch: int = 256) -> np.ndarray:
    """uint8 images -> float32 in the backbone's input scale (what the floor's model.predict consumes)."""
    from tl_core.models.preprocessing import build_preprocessing

    layer = build_preprocessing(preprocessing)
    out = np.empty(images.shape, np.float32)
    for start in range(0, len(images), batch):
        out[start : start + batch] = np.asarray(layer(np.asarray(images[start : start + batch], np.float32)))
    return out
