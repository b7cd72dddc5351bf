"""Benchmark: a job in the app's path, from the click to its result, with and without a warm worker.

The app runs every job in its own worker process (`tl_core.jobs.manager.JobManager` with `ProcessBackend`), so a
job first pays for the worker's start: the interpreter and the imports of TensorFlow, Keras and the
engine. With warm workers (the default) a worker for the next job imports all that while it waits
(tl_core/jobs/warm_workers.py). This measures a second run on the same data and backbone, the case that
target 5 of the performance issue is about, submitted through a `JobManager` exactly as the Train page
does, both ways, interleaved:

* cold: `ProcessBackend(warm_workers=False)`, a fresh worker per job;
* warm: `ProcessBackend()`, the job handed to the worker that waited.

Each side runs a first job on a fresh workspace (it fills the caches), waits `--pause` seconds (a
user reading the result; the warm worker imports meanwhile), then submits the second job and times
it from `submit` to its first recorded epoch and to its completion.

Usage:
    .venv/bin/python -m bench.job_start [--images 600] [--image-size 128] [--repeats 3] [--pause 10]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from bench import _common as common  # first: quiets TensorFlow's start-up logging
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.jobs.manager import JobManager
from tl_core.jobs.worker import ProcessBackend
from tl_core.runs.store import RunStore


@dataclass
class JobTimes:
    first_epoch_s: float  # submit -> the second job's first epoch in the store
    completed_s: float  # submit -> the second job finished (model saved, evaluated)
    in_run_s: float  # the run's own elapsed time (`run_experiment`, from its start)
    status: str


def experiment_config(args: argparse.Namespace, source: Path) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source)),
        model=ModelConfig(backbone=args.backbone, weights=args.weights, image_size=args.image_size),
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size),
        name="bench job start",
    )


def second_job(config: RunConfig, workspace: Path, *, warm: bool, pause_s: float) -> JobTimes:
    """A first job on a fresh workspace, a pause, then the second job timed from its submission."""
    store = RunStore(workspace)
    manager = JobManager(store, slots={"cpu": 1}, backend=ProcessBackend(warm_workers=warm), poll_interval_s=0.02)
    try:
        first = manager.submit(config)
        if manager.wait(first, timeout_s=900).progress.status != "completed":
            raise RuntimeError(f"the first job ended {store.get(first).status}: {store.get(first).error}")
        time.sleep(pause_s)
        started = time.perf_counter()
        second = manager.submit(config)
        first_epoch = None
        while True:
            if first_epoch is None and store.epochs(second):
                first_epoch = time.perf_counter() - started
            status = manager.status(second)
            if status is not None and status.state == "finished":
                break
            time.sleep(0.01)
        completed = time.perf_counter() - started
        record = store.get(second)
        return JobTimes(
            first_epoch if first_epoch is not None else float("nan"),
            completed,
            float(record.metrics.get("elapsed_s", float("nan"))),
            record.status,
        )
    finally:
        manager.shutdown()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.base_parser(__doc__.splitlines()[0], images=600, image_size=128)
    parser.add_argument("--epochs", type=int, default=10, help="head epochs (default 10)")
    parser.add_argument(
        "--pause",
        type=float,
        default=10.0,
        help="seconds between the first job's end and the second's submission (default 10)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the table and the ratio line; returns the ratios."""
    args = parse_args(argv)
    common.quiet_logs()
    source = common.shapes_jpeg_dataset(
        common.bench_cache_dir(args.cache_dir), images=args.images, source_size=args.source_size, classes=args.classes
    )
    config = experiment_config(args, source)
    print(
        f"Job start: {args.backbone} ({args.weights}) at {args.image_size}px, {args.epochs} head epochs, {args.images} JPEGs from {source}; "
        f"second job on the same data, {args.pause:.0f} s after the first"
    )
    for line in common.device_lines():
        print(line)
    times: dict[str, list[JobTimes]] = {"cold": [], "warm": []}
    for repeat in range(args.repeats):
        for side in ("cold", "warm") if repeat % 2 == 0 else ("warm", "cold"):
            with common.fresh_workspace() as workspace:
                times[side].append(second_job(config, workspace, warm=side == "warm", pause_s=args.pause))
    if any(t.status != "completed" for side in times.values() for t in side):
        raise RuntimeError(f"a second job did not complete: {times}")
    print(f"\n{common.noise_note(args.repeats)}")
    rows = []
    for side, label in (("cold", "fresh worker per job (warm_workers=False)"), ("warm", "warm worker (default)")):
        rows.append(
            [
                label,
                common.spread([t.first_epoch_s for t in times[side]]),
                common.spread([t.completed_s for t in times[side]]),
                common.spread([t.in_run_s for t in times[side]]),
            ]
        )
    print(
        common.format_table(
            ["second job", "submit -> first epoch, s", "submit -> completed, s", "inside the run, s"], rows
        )
    )
    cold = common.median([t.completed_s for t in times["cold"]])
    warm = common.median([t.completed_s for t in times["warm"]])
    first_epoch_ratio = common.median([t.first_epoch_s for t in times["cold"]]) / common.median(
        [t.first_epoch_s for t in times["warm"]]
    )
    print()
    print(
        f"second job, submit -> completed: warm worker {warm:.2f} s vs fresh worker {cold:.2f} s: {cold / warm:.1f}x sooner"
    )
    print(f"second job, submit -> first epoch: {first_epoch_ratio:.1f}x sooner with a warm worker")
    return {"completed_speedup": cold / warm, "first_epoch_speedup": first_epoch_ratio}


if __name__ == "__main__":
    main()
