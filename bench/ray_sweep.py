"""Benchmark: the makespan of one sweep on a one-node Ray cluster against the same sweep on two such nodes (issue 20).

    .venv/bin/python bench/ray_sweep.py [--sweep mixed|same] [--runs 8] [--epochs 2] [--repeats 1] [--quick]

One process starts, on this machine only, a Ray cluster (`ray.cluster_utils.Cluster`: a head without CPUs, then
worker nodes of `--cpus-per-node` CPUs each), connects a `RayBackend` and a `JobManager` to it as the server does,
runs one sweep (`tl_core.jobs.sweep.run_sweep`) and shuts the cluster down; first with one node, then with two.
Each job asks for one node's CPUs (`cpus_per_job`), so one node trains one run at a time and two nodes two.

So that a node is one core, as a one-CPU machine would be, every Ray worker process (the runs and the decoding
helper they start) is pinned to its node's core (a Ray `worker_process_setup_hook`, `os.sched_setaffinity`), and
TensorFlow is held to one intra-op and one inter-op thread (`TF_NUM_INTRAOP_THREADS`, `TF_NUM_INTEROP_THREADS`,
`OMP_NUM_THREADS` in the jobs' runtime env); nothing in tl_core is changed for it. The driver (the server's
side: queue, polling, replaying events) and Ray's head processes are not pinned: they share the machine's cores.

Sweeps (random weights, so nothing is downloaded), on a small shapes dataset shipped through Ray's object store:
* `mixed` (default): backbones x modes, `mobilenet_v2_035, mobilenet_v3_small, efficientnet_lite0,
  mobilenet_v3_small_075` x `feature-extraction, fine-tune` (runs of unequal length, as a real sweep);
* `same`: `--runs` runs of `mobilenet_v2_035` in `--mode` (default fine-tune): equal runs, no packing losses.

Prints each side's runs (node; when the queue handed the run to Ray and when it was back, seconds from the
sweep's start; seconds inside the run), the makespans, their ratio (target >= 1.8x, near 2x), the ratio a
perfect packing of the same runs on two nodes would give, and, last, one JSON line. With `--repeats N` the pair
runs N times, the order flipping each time (the machine's load drifts), and medians are reported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/ray_sweep.py` as well as `-m`

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from bench import _common as common  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402

BACKBONES = ("mobilenet_v2_035", "mobilenet_v3_small", "efficientnet_lite0", "mobilenet_v3_small_075")
MODES = ("feature-extraction", "fine-tune")
SAME_BACKBONE = "mobilenet_v2_035"
CORE_ENV = "TRANSFERLAB_BENCH_CORE"  # the core a node's worker processes are pinned to (set per node)
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
TARGET_RATIO = 1.8


@dataclass
class RunTiming:
    """One run of a side's sweep, times in seconds from the sweep's start."""

    backbone: str
    mode: str
    status: str
    node: str
    dispatched_s: float  # the queue handed it to Ray (its actor starts, then TensorFlow is imported)
    ended_s: float  # its files and records were back in the server's store
    in_run_s: float  # the run's own elapsed time on its node

    @property
    def slot_s(self) -> float:
        return self.ended_s - self.dispatched_s


@dataclass
class SideResult:
    """One sweep on one cluster shape."""

    nodes: int
    cluster_start_s: float
    makespan_s: float
    runs: list[RunTiming]

    @property
    def mean_run_s(self) -> float:
        return sum(run.slot_s for run in self.runs) / len(self.runs)

    @property
    def mean_in_run_s(self) -> float:
        return sum(run.in_run_s for run in self.runs) / len(self.runs)


def pin_to_node_core() -> None:
    """Ray's worker setup hook: keep this worker (and the processes it starts) on its node's core."""
    core = os.environ.get(CORE_ENV)
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(core)})


def sweep_plan(args: argparse.Namespace, source: Path):  # noqa: ANN201 - a SweepPlan (imported late: Ray's deps)
    from tl_core.jobs.sweep import SweepPlan

    # A backbone named twice gives two runs of the same config (two run ids): more runs than backbones.
    if args.sweep == "same":
        backbones, modes = (SAME_BACKBONE,) * args.runs, (args.mode,)
    elif args.runs % len(MODES):
        raise SystemExit(f"--runs {args.runs}: pass a multiple of {len(MODES)} (one run per backbone x mode).")
    else:
        backbones = tuple(BACKBONES[index % len(BACKBONES)] for index in range(args.runs // len(MODES)))
        modes = MODES
    return SweepPlan(
        source=str(source),
        backbones=backbones,
        modes=modes,
        epochs=args.epochs,
        fine_tune_epochs=args.epochs,
        image_size=args.image_size,
        weights="none",
        batch_size=16,
    )


def run_on_cluster(args: argparse.Namespace, source: Path, nodes: int, scratch: Path) -> SideResult:
    """Start a cluster of `nodes` nodes here, run the sweep on it, and always shut the cluster down."""
    import ray
    from ray.cluster_utils import Cluster

    from tl_core.jobs.manager import JobManager
    from tl_core.jobs.ray_backend import RayBackend, job_runtime_env
    from tl_core.jobs.sweep import new_sweep_id, run_sweep, sweep_folder
    from tl_core.layout import QUEUE_FILE
    from tl_core.runs.store import RunStore

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    started = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    manager = None
    try:
        for index in range(nodes):
            env = {"TRANSFERLAB_RAY_NODE_DIR": str(scratch / f"{nodes}-nodes" / f"node{index}")}
            if cores and not args.no_pin and args.cpus_per_node == 1:  # a one-CPU node is one core
                env[CORE_ENV] = str(cores[index % len(cores)])
            cluster.add_node(num_cpus=args.cpus_per_node, env_vars=env)
        runtime_env = job_runtime_env(ONE_THREAD if args.cpus_per_node == 1 else None)
        runtime_env["worker_process_setup_hook"] = pin_to_node_core
        # The nodes' TensorFlow start-up chatter stays in Ray's log files; each run's log is in the store.
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False, runtime_env=runtime_env)
        cluster.wait_for_nodes()
        backend = RayBackend.connect(None, cpus_per_job=args.cpus_per_node, max_retries=0)
        cluster_start_s = time.perf_counter() - started
        store = RunStore(scratch / f"{nodes}-nodes" / "workspace")
        sweep_id = new_sweep_id()
        manager = JobManager(
            store,
            slots=backend.slots(),
            backend=backend,
            queue_path=sweep_folder(store, sweep_id) / QUEUE_FILE,
            poll_interval_s=0.2,
        )
        print(
            f"\n{nodes} node(s) of {args.cpus_per_node} CPU: cluster up in {cluster_start_s:.1f} s, slots {backend.slots()}"
        )
        sweep_started = time.time()
        result = run_sweep(
            sweep_plan(args, source), store, manager, backend="ray", sweep_id=sweep_id, poll_interval_s=0.2
        )
        makespan_s = result.elapsed_s
        runs = []
        for run in result.runs:
            entry = manager.queue.get(run.run_id)
            # The sweep can see the run's record end a moment before the queue notes its end: take the record's.
            ended = entry.finished_at or store.get(run.run_id).finished_at or time.time()
            runs.append(
                RunTiming(
                    backbone=run.backbone,
                    mode=run.mode,
                    status=run.status,
                    node=run.node or "-",
                    dispatched_s=(entry.started_at or sweep_started) - sweep_started,
                    ended_s=ended - sweep_started,
                    in_run_s=run.elapsed_s or 0.0,
                )
            )
        return SideResult(nodes, cluster_start_s, makespan_s, sorted(runs, key=lambda run: run.dispatched_s))
    finally:
        if manager is not None:
            manager.shutdown(stop_jobs=True)  # before Ray goes: its dispatcher polls the cluster
        ray.shutdown()
        cluster.shutdown()


def perfect_two_node_makespan(one_node: SideResult) -> float:
    """The one-node sweep's makespan had its runs been split over two slots as evenly as they can be.

    The time outside any run (the scan before the first, gaps between runs) is kept; the runs' slot times are
    split into the two halves whose longer one is shortest (every subset tried: a sweep has a few runs).
    """
    spans = [run.slot_s for run in one_node.runs]
    outside = one_node.makespan_s - sum(spans)
    total = sum(spans)
    longer = total
    for mask in range(1 << (len(spans) - 1)) if len(spans) <= 20 else ():
        half = sum(span for index, span in enumerate(spans) if mask >> index & 1)
        longer = min(longer, max(half, total - half))
    return outside + (longer if len(spans) <= 20 else max(total / 2, max(spans)))


def node_labels(side: SideResult) -> dict[str, str]:
    """'node A', 'node B' ... for the nodes' `ip (id)` names, in order of first use (every node has this machine's ip)."""
    labels: dict[str, str] = {}
    for run in side.runs:
        labels.setdefault(run.node, f"node {chr(ord('A') + len(labels))}")
    return labels


def print_side(side: SideResult) -> None:
    labels = node_labels(side)
    rows = [
        [
            run.backbone,
            run.mode,
            run.status,
            f"{labels[run.node]} {run.node.split(' ')[-1]}",
            f"{run.dispatched_s:.1f}",
            f"{run.ended_s:.1f}",
            f"{run.in_run_s:.1f}",
        ]
        for run in side.runs
    ]
    print(
        common.format_table(["backbone", "mode", "status", "node", "to Ray, s", "back, s", "inside the run, s"], rows)
    )
    print(
        f"makespan {side.makespan_s:.1f} s (cluster start {side.cluster_start_s:.1f} s not counted); per run "
        f"{side.mean_run_s:.1f} s on average from the queue handing it to Ray to its files being back, "
        f"{side.mean_in_run_s:.1f} s of it inside the run (the rest: the Ray actor's start, TensorFlow's import, "
        "data and files shipped)"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", choices=("mixed", "same"), default="mixed", help="backbones x modes, or equal runs")
    parser.add_argument("--mode", default="fine-tune", help="the mode of the `same` sweep's runs (default fine-tune)")
    parser.add_argument("--runs", type=int, default=8, help="runs in the sweep; mixed: a multiple of 2 (default 8)")
    parser.add_argument("--epochs", type=int, default=2, help="head epochs, and fine-tune epochs (default 2)")
    parser.add_argument("--image-size", type=int, default=32, help="model input side in px (default 32)")
    parser.add_argument("--images-per-class", type=int, default=24, help="3 shape classes (default 24 each)")
    parser.add_argument(
        "--cpus-per-node",
        type=int,
        default=1,
        help="CPUs of each node and job (default 1; over 1: not pinned, TF's threads not limited)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="pairs of sweeps, order flipped each (default 1)")
    parser.add_argument("--no-pin", action="store_true", help="leave the nodes' workers free to use every core")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="4 equal feature-extraction runs, 1 epoch, 12 images a class (a smoke run, ~2-3 min)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sweep, args.mode, args.runs, args.epochs, args.images_per_class = "same", "feature-extraction", 4, 1, 12
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"Ray sweep ({args.sweep if args.sweep == 'mixed' else f'same, {args.mode}'}): {args.runs} runs, {args.epochs} epoch(s), {args.image_size} px, 3 x {args.images_per_class} images; "
        f"1 node vs 2 nodes of {args.cpus_per_node} CPU; this machine: {cores} cores, load average {load:.1f}; "
        f"nodes {'free on every core' if args.no_pin else 'pinned to one core each'}"
    )
    shapes: dict[int, list[SideResult]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="tl-bench-ray-") as folder:
        scratch = Path(folder)
        source = make_shapes_dataset(
            scratch / "shapes", num_classes=3, images_per_class=args.images_per_class, image_size=48
        )
        for repeat in range(args.repeats):
            for nodes in (1, 2) if repeat % 2 == 0 else (2, 1):  # the order flips: the machine's load drifts
                side = run_on_cluster(args, source, nodes, scratch / f"repeat{repeat}")
                print(f"\nrepeat {repeat + 1}, {nodes} node(s):")
                print_side(side)
                shapes[nodes].append(side)
    ones, twos = shapes[1], shapes[2]
    failed = [run for side in ones + twos for run in side.runs if run.status != "completed"]
    one_s = common.median([side.makespan_s for side in ones])
    two_s = common.median([side.makespan_s for side in twos])
    ratio = one_s / two_s
    bound = common.median([side.makespan_s / perfect_two_node_makespan(side) for side in ones])
    print(f"\n{common.noise_note(args.repeats)}")
    print(
        f"makespan, 1 node: {common.spread([side.makespan_s for side in ones])} s; "
        f"2 nodes: {common.spread([side.makespan_s for side in twos])} s"
    )
    print(common.ratio_line("makespan, 1 node / 2 nodes", ratio, TARGET_RATIO))
    print(
        f"the one-node runs packed perfectly on two nodes would give {bound:.2f}x "
        "(their measured slot times split into the two most even halves; the time outside any run kept)"
    )
    nodes_used = len({run.node for run in twos[-1].runs})
    print(f"two-node sweep: runs landed on {nodes_used} node(s); {len(failed)} run(s) did not complete")

    def mean_of(sides: list[SideResult], value: str) -> float:
        return round(sum(getattr(side, value) for side in sides) / len(sides), 2)

    summary = {
        "bench": "ray_sweep",
        "sweep": args.sweep if args.sweep == "mixed" else f"same {args.mode}",
        "runs": args.runs,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "images_per_class": args.images_per_class,
        "cpus_per_node": args.cpus_per_node,
        "pinned": not args.no_pin,
        "repeats": args.repeats,
        "makespan_1_node_s": round(one_s, 2),
        "makespan_2_nodes_s": round(two_s, 2),
        "ratio": round(ratio, 3),
        "ratio_per_repeat": [round(one.makespan_s / two.makespan_s, 3) for one, two in zip(ones, twos)],
        "perfect_packing_ratio": round(bound, 3),
        "mean_run_s_1_node": mean_of(ones, "mean_run_s"),
        "mean_run_s_2_nodes": mean_of(twos, "mean_run_s"),
        "mean_in_run_s_1_node": mean_of(ones, "mean_in_run_s"),
        "mean_in_run_s_2_nodes": mean_of(twos, "mean_in_run_s"),
        "cluster_start_s": {"1_node": mean_of(ones, "cluster_start_s"), "2_nodes": mean_of(twos, "cluster_start_s")},
        "runs_per_node_2_nodes": [
            {label: sum(run.node == node for run in two.runs) for node, label in node_labels(two).items()}
            for two in twos
        ],
        "not_completed": len(failed),
        "load_average_at_start": round(load, 2),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
