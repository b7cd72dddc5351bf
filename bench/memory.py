"""Benchmark: peak resident memory while training on a large folder (default 20,000 images at 224 px).

The training runs in a subprocess (`run_experiment`, feature extraction, in a fresh workspace), so its
peak resident set is its own: the child samples /proc/self/status (VmRSS, RssAnon, RssFile) per
stage, and its child processes' VmRSS at the same moments (the helper that decodes the images while the
run builds its model), and reports `getrusage(RUSAGE_SELF).ru_maxrss`; the parent also reads
`getrusage(RUSAGE_CHILDREN).ru_maxrss`. After the run the child streams one shuffled epoch of
`image_dataset` over the training cache, the input path of fine-tuning. The generated JPEGs are
kept in the bench cache, so only the first run pays for writing them.

RssFile counts pages of the memory-mapped image cache that the process has touched; the kernel
can drop them at any time (they are a copy of a file), RssAnon cannot. Both are shown.

Usage:
    .venv/bin/python -m bench.memory [--images 20000] [--image-size 224] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import _common as common  # first: quiets TensorFlow's start-up logging

GIB = 1024**3
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile")
HELPERS_FIELD = "helpers VmRSS"  # the run's child processes (its decoding helper), sampled at the same moments
SAMPLE_INTERVAL_S = 0.05
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class StagePeak:
    name: str
    seconds: float = 0.0
    peaks: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((*STATUS_FIELDS, HELPERS_FIELD, "together"), 0)
    )  # bytes


def read_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of a process in bytes (Linux /proc); empty if it has just ended."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in STATUS_FIELDS:
                    values[key] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return values


def children_rss() -> int:
    """VmRSS of this process's children, summed (Linux /proc). Sampled, not `RUSAGE_CHILDREN`: a child's
    `ru_maxrss` counts the parent's pages it shares between fork and exec (0.7 GiB for a 0.1 GiB helper)."""
    pids = [pid for children in Path("/proc/self/task").glob("*/children") for pid in children.read_text().split()]
    return sum(read_status(pid).get("VmRSS", 0) for pid in pids)


class StageSampler:
    """A background thread sampling this process's memory, attributing each peak to the current stage."""

    def __init__(self) -> None:
        self.stages: list[StagePeak] = []
        self._stage_started = time.perf_counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.enter("start-up: import TensorFlow and tl_core")
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def enter(self, name: str) -> None:
        with self._lock:
            now = time.perf_counter()
            if self.stages:
                self.stages[-1].seconds = now - self._stage_started
            self._record(self.stages[-1] if self.stages else None)
            self.stages.append(StagePeak(name))
            self._stage_started = now

    def _record(self, stage: StagePeak | None) -> None:
        if stage is None:
            return
        own = read_status()
        for key, value in own.items():
            stage.peaks[key] = max(stage.peaks[key], value)
        helpers = children_rss()
        stage.peaks[HELPERS_FIELD] = max(stage.peaks[HELPERS_FIELD], helpers)
        stage.peaks["together"] = max(stage.peaks["together"], own.get("VmRSS", 0) + helpers)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            with self._lock:
                self._record(self.stages[-1])

    def finish(self) -> list[StagePeak]:
        self.enter("done")
        self._stop.set()
        self._thread.join()
        return self.stages[:-1]


class _StageListener:
    """Moves the sampler to the next stage as training events arrive."""

    def __init__(self, sampler: StageSampler) -> None:
        self.sampler = sampler

    def on_event(self, event: object) -> None:
        kind = type(event).__name__
        text = getattr(event, "text", "")
        if kind == "RunStarted":
            self.sampler.enter("build the model (a helper process decodes meanwhile)")
        elif kind == "LogMessage" and text.startswith("Built ") and "build" in self.sampler.stages[-1].name:
            self.sampler.enter("the helper's last images, then backbone features")
        elif kind == "PhaseStarted":
            self.sampler.enter("head epochs")
        elif kind == "PhaseEnded":
            self.sampler.enter("evaluate + save")


def child_main(spec_path: Path) -> None:
    """The measured training run (runs in its own process)."""
    sampler = StageSampler()
    spec = json.loads(spec_path.read_text())
    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.data.image_cache import build_image_cache, image_dataset
    from tl_core.data.prep import prepare_dataset, workspace_cache
    from tl_core.data.types import SPLIT_NAMES as SPLITS
    from tl_core.runs.store import RunStore
    from tl_core.training.runner import run_experiment

    sampler.enter("scan + split")
    store = RunStore(spec["workspace"])
    config = RunConfig(
        data=DataConfig(source=spec["source"]),
        model=ModelConfig(backbone=spec["backbone"], weights=spec["weights"], image_size=spec["image_size"]),
        train=TrainConfig(
            mode="feature-extraction",
            epochs=spec["epochs"],
            batch_size=spec["batch_size"],
            early_stopping_patience=None,
        ),
        name="bench memory",
    )
    prepared = prepare_dataset(config.data, store)
    outcome = run_experiment(config, store=store, listener=_StageListener(sampler), prepared=prepared)
    sampler.enter("stream one shuffled epoch of image_dataset (fine-tune input path)")
    train = build_image_cache(prepared.split.examples("train"), spec["image_size"], workspace_cache(store, "images"))
    streamed = 0
    for images, _ in image_dataset(
        train.images, prepared.split.labels("train"), batch_size=spec["batch_size"], shuffle=True, seed=1
    ):
        streamed += int(images.shape[0])
    stages = sampler.finish()
    cache_bytes = sum(path.stat().st_size for path in workspace_cache(store, "images").glob("*.npy"))
    result = {
        "status": outcome.status,
        "error": outcome.error,
        "test_accuracy": outcome.summary.get("test_accuracy"),
        "split_sizes": {name: len(prepared.split.examples(name)) for name in SPLITS},
        "streamed": streamed,
        "image_cache_bytes": cache_bytes,
        "ru_maxrss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "stages": [asdict(stage) for stage in stages],
    }
    Path(spec["result"]).write_text(json.dumps(result))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.base_parser(__doc__.splitlines()[0], images=20000, image_size=224, source_size=160, repeats=1)
    parser.add_argument("--epochs", type=int, default=2, help="head epochs (default 2)")
    parser.add_argument("--limit-gb", type=float, default=3.0, help="the peak-RSS target in GiB (default 3)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_child(spec: dict[str, object], scratch: Path) -> tuple[dict[str, object], int, float]:
    """Start the training subprocess and wait; returns its result, RUSAGE_CHILDREN ru_maxrss (bytes) and wall seconds."""
    spec_path = scratch / "spec.json"
    spec_path.write_text(json.dumps(spec))
    environment = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    )
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--child", str(spec_path)],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"memory benchmark subprocess failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    children_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return json.loads(Path(str(spec["result"])).read_text()), children_maxrss, seconds


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the table and the verdict lines; returns the peaks in GiB."""
    args = parse_args(argv)
    if args.child is not None:
        child_main(args.child)
        return {}
    cache_dir = common.bench_cache_dir(args.cache_dir)
    generated_s, source = common.timed(
        lambda: common.shapes_jpeg_dataset(
            cache_dir, images=args.images, source_size=args.source_size, classes=args.classes
        )
    )
    print(
        f"Memory: feature extraction ({args.epochs} head epochs) with {args.backbone} ({args.weights}) at {args.image_size}px on "
        f"{args.images} JPEGs of {args.source_size}px from {source} (ready in {generated_s:.1f} s)"
    )
    for line in common.device_lines():
        print(line)
    with common.fresh_workspace(cache_dir) as scratch:
        spec = {
            "workspace": str(scratch / "workspace"),
            "source": str(source),
            "backbone": args.backbone,
            "weights": args.weights,
            "image_size": args.image_size,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "result": str(scratch / "result.json"),
        }
        result, children_maxrss, seconds = run_child(spec, scratch)
    if result["status"] != "completed":
        raise RuntimeError(f"the training run ended {result['status']}: {result['error']}")
    count = sum(result["split_sizes"].values())
    side = args.image_size
    print(
        f"split {result['split_sizes']}; subprocess wall time {seconds:.1f} s; test accuracy {result['test_accuracy']}; "
        f"streamed {result['streamed']} training images in the extra epoch"
    )
    print(
        common.format_table(
            [
                "stage (subprocess)",
                "seconds",
                "peak VmRSS GiB",
                "peak RssAnon GiB",
                "peak RssFile GiB",
                "its helper's VmRSS GiB",
            ],
            [
                [
                    s["name"],
                    f"{s['seconds']:.1f}",
                    *(f"{s['peaks'][key] / GIB:.2f}" for key in (*STATUS_FIELDS, HELPERS_FIELD)),
                ]
                for s in result["stages"]
            ],
        )
    )
    peak_rss = result["ru_maxrss_self"] / GIB
    peak_anon = max(s["peaks"]["RssAnon"] for s in result["stages"]) / GIB
    peak_together = max(s["peaks"]["together"] for s in result["stages"]) / GIB
    print(
        f"for scale: the {count} images as float32 in RAM would be {count * side * side * 3 * 4 / GIB:.1f} GiB; "
        f"the uint8 cache on disk is {result['image_cache_bytes'] / GIB:.2f} GiB; getrusage(RUSAGE_CHILDREN).ru_maxrss = {children_maxrss / GIB:.2f} GiB"
    )
    print(
        common.ratio_line(
            f"peak RSS (ru_maxrss) training on {count} images at {side} px",
            peak_rss,
            args.limit_gb,
            at_least=False,
            unit=" GiB",
        )
    )
    print(
        common.ratio_line(
            "peak VmRSS of the run and its decoding helper together (sampled every 50 ms)",
            peak_together,
            args.limit_gb,
            at_least=False,
            unit=" GiB",
        )
    )
    print(
        common.ratio_line(
            "peak anonymous RSS (RssAnon: heap and tensors, excluding mapped cache pages)",
            peak_anon,
            args.limit_gb,
            at_least=False,
            unit=" GiB",
        )
    )
    return {"peak_rss_gib": peak_rss, "peak_anon_gib": peak_anon, "peak_with_helper_gib": peak_together}


if __name__ == "__main__":
    main()
