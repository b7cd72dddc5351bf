"""Capacity model for a class: how long students wait for their runs, from per-run times (issue 20).

    .venv/bin/python bench/class_capacity.py [--students 60] [--window-min 5] [--machines 3] [--json]

No training here: arithmetic on per-run times. The model is a first-in-first-out queue with `c` identical slots
(machines x GPUs per machine x jobs per GPU, what `RayBackend.slots()` gives with `gpus_per_job` 1 or 0.5) and a
fixed run time per job (D/D/c: deterministic arrivals and service), simulated job by job:

* arrivals: every student presses Start once, evenly spread over the first `--window-min` minutes (60 students
  in 5 minutes: one every 5 s); `--window-min 0` is everyone at once, the worst case;
* a job takes a slot when one is free (the queue's order is the server's FIFO; the per-user cap does not bite
  with one run each), and holds it for its slot time: the run itself plus the job's start (Ray actor, TensorFlow's
  import; on a GPU also CUDA's start);
* two jobs on one GPU (`gpus_per_job = 0.5`) each take `--shared-slowdown` times as long (they split the GPU).

Per-run times are arguments so the table can be recomputed from newer measurements; the defaults and where they
come from are in bench/README.md ("Capacity model for a class"). CPU times are measured on this 2-core machine;
GPU times are assumptions: designed, not measured (no GPU was lent to this task).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/class_capacity.py` as well as `-m`
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench._common import format_table  # noqa: E402

# Seconds a slot is held per run (see bench/README.md for the sources).
CPU_FEATURE_EXTRACTION_S = 40.0  # measured: 30.5 s in the run (transfer study, digits) + ~10 s job start on Ray
CPU_FINE_TUNE_S = 90.0  # measured: 80.7 s in the run (transfer study, digits) + ~10 s job start on Ray
GPU_FEATURE_EXTRACTION_S = 20.0  # designed, not measured: 224 px, ~500 images, 10 head epochs, ~10 s start
GPU_FINE_TUNE_S = 60.0  # designed, not measured: the same + 5 epochs with the top layers unfrozen
SHARED_SLOWDOWN = 1.6  # designed, not measured: each of two jobs on one GPU runs 1.6x slower (1.25x throughput)


@dataclass(frozen=True)
class QueueOutcome:
    """When the class's runs start and end, in seconds from the first Start; waits are start minus arrival."""

    slots: int
    run_s: float
    last_start_s: float
    last_end_s: float
    mean_wait_s: float
    max_wait_s: float


def fifo_queue(arrivals_s: list[float], slots: int, run_s: float) -> QueueOutcome:
    """Simulate a FIFO queue of `slots` identical slots, each job holding one for `run_s` seconds.

    Args:
        arrivals_s: when each job is submitted (seconds), in any order.
        slots: jobs that run at once.
        run_s: seconds a job holds its slot.

    Returns:
        The last start and end, and the mean and longest wait.

    Example:
        >>> fifo_queue([0, 0, 0], slots=2, run_s=10).last_end_s
        20.0
    """
    if slots < 1 or run_s <= 0 or not arrivals_s:
        raise ValueError("Pass at least one arrival, one slot and a positive run time.")
    free_at = [0.0] * slots  # when each slot is next free (a heap)
    starts, waits = [], []
    for arrival in sorted(arrivals_s):
        start = max(float(arrival), heapq.heappop(free_at))
        heapq.heappush(free_at, start + run_s)
        starts.append(start)
        waits.append(start - arrival)
    return QueueOutcome(
        slots=slots,
        run_s=run_s,
        last_start_s=max(starts),
        last_end_s=max(starts) + run_s,
        mean_wait_s=sum(waits) / len(waits),
        max_wait_s=max(waits),
    )


def even_arrivals(students: int, window_s: float) -> list[float]:
    """One Start per student, evenly spread over `window_s` (all at 0 when it is 0)."""
    step = window_s / students if students else 0.0
    return [index * step for index in range(students)]


@dataclass(frozen=True)
class Scenario:
    hardware: str  # the row's hardware, as the table shows it
    source: str  # "measured" or "designed, not measured"
    machines: int
    slots_per_machine: int  # jobs at once per machine
    feature_extraction_s: float
    fine_tune_s: float


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    """The table's rows: CPU machines like this one, then GPU machines with one and two jobs per GPU."""
    rows = []
    for machines in sorted({1, args.machines}):
        rows.append(Scenario("2-core CPU, 1 job", "measured", machines, 1, args.cpu_fe_s, args.cpu_ft_s))
    for machines in sorted({1, args.machines}):
        per_gpu = args.gpus_per_machine
        rows.append(
            Scenario(
                f"{per_gpu} GPU, gpus_per_job=1",
                "designed, not measured",
                machines,
                per_gpu,
                args.gpu_fe_s,
                args.gpu_ft_s,
            )
        )
        rows.append(
            Scenario(
                f"{per_gpu} GPU, gpus_per_job=0.5",
                "designed, not measured",
                machines,
                2 * per_gpu,
                args.gpu_fe_s * args.shared_slowdown,
                args.gpu_ft_s * args.shared_slowdown,
            )
        )
    return rows


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=60)
    parser.add_argument(
        "--window-min", type=float, default=5.0, help="Starts spread over this many minutes (0: at once)"
    )
    parser.add_argument("--machines", type=int, default=3)
    parser.add_argument("--gpus-per-machine", type=int, default=1)
    parser.add_argument("--cpu-fe-s", type=float, default=CPU_FEATURE_EXTRACTION_S, help="measured slot s, CPU")
    parser.add_argument("--cpu-ft-s", type=float, default=CPU_FINE_TUNE_S, help="measured slot s, CPU fine-tune")
    parser.add_argument("--gpu-fe-s", type=float, default=GPU_FEATURE_EXTRACTION_S, help="assumed slot s, GPU")
    parser.add_argument("--gpu-ft-s", type=float, default=GPU_FINE_TUNE_S, help="assumed slot s, GPU fine-tune")
    parser.add_argument("--shared-slowdown", type=float, default=SHARED_SLOWDOWN, help="per job, two on one GPU")
    parser.add_argument("--json", action="store_true", help="also print every row as one JSON line")
    args = parser.parse_args(argv)
    arrivals = even_arrivals(args.students, args.window_min * 60)
    print(
        f"{args.students} students, one run each, Starts spread evenly over {args.window_min:g} min; FIFO, "
        "fixed slot time per run (D/D/c, simulated); minutes from the first Start"
    )
    rows, records = [], []
    for scenario in scenarios(args):
        slots = scenario.machines * scenario.slots_per_machine
        for mode, run_s in (("feature extraction", scenario.feature_extraction_s), ("fine-tune", scenario.fine_tune_s)):
            outcome = fifo_queue(arrivals, slots, run_s)
            rows.append(
                [
                    f"{scenario.machines} x {scenario.hardware}",
                    scenario.source,
                    slots,
                    mode,
                    f"{run_s:.0f}",
                    minutes(outcome.mean_wait_s),
                    minutes(outcome.max_wait_s),
                    minutes(outcome.last_start_s),
                    minutes(outcome.last_end_s),
                ]
            )
            records.append({**asdict(scenario), "mode": mode, **asdict(outcome)})
    headers = [
        "machines",
        "per-run times",
        "slots",
        "run",
        "slot s a run",
        "mean wait, min",
        "longest wait, min",
        "last start, min",
        "last end, min",
    ]
    print(format_table(headers, rows))
    if args.json:
        print(json.dumps({"students": args.students, "window_min": args.window_min, "rows": records}))
    return records


if __name__ == "__main__":
    main()
