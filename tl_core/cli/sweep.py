"""`python -m tl_core sweep DATA --backbones A,B[,C...] [--modes M1,M2] [--epochs N] [--image-size S]
[--backend local|ray] [--ray-address ADDR] [--workspace DIR] [--json]`: compare backbones on one split.

One run per backbone x mode, all queued at once (tl_core/jobs/sweep.py); a leaderboard is printed as each run ends
(on stderr with `--json`). With `--json` the last stdout line is `{"sweep_id", "backend", "runs": [{"run_id",
"backbone", "mode", "status", "test_accuracy", "val_accuracy", "elapsed_s", "node"}], "best_run_id", "elapsed_s"}`.
Unknown backbones or modes exit with status 2 before anything trains, naming each bad entry and its flag. The exit
status is 1 when no run completed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tl_core.cli.common import EXIT_RUN_FAILED, open_store, print_json


def cmd_sweep(args: argparse.Namespace) -> int:
    from tl_core.jobs.backends import backend_for
    from tl_core.jobs.manager import JobManager
    from tl_core.jobs.sweep import (
        SweepPlan,
        best_against_runner_up,
        format_leaderboard,
        new_sweep_id,
        parse_list,
        run_sweep,
        test_intervals,
        validate_plan,
    )
    from tl_core.jobs.sweep_record import sweep_folder
    from tl_core.layout import QUEUE_FILE
    from tl_core.server.settings import load_server_settings

    plan = SweepPlan(
        source=args.data,
        backbones=parse_list(args.backbones, "--backbones"),
        modes=parse_list(args.modes, "--modes"),
        epochs=args.epochs,
        image_size=args.image_size,
        weights=args.weights,
        seed=args.seed,
    )
    validate_plan(plan)  # before any backend starts (or any Ray connection is made)
    out = sys.stderr if args.json else sys.stdout
    store = open_store(args)
    backend, slots = backend_for(load_server_settings(), name=args.backend, ray_address=args.ray_address)
    sweep_id = new_sweep_id()
    # The sweep's own queue: a server sharing this workspace neither starts nor counts these jobs.
    manager = JobManager(
        store, slots=slots, backend=backend, queue_path=sweep_folder(store, sweep_id) / QUEUE_FILE, poll_interval_s=0.2
    )
    print(f"sweep {sweep_id} on the {args.backend} backend ({sum(slots.values())} at once)", file=out, flush=True)

    def on_finish(run: Any, runs: list) -> None:
        done = sum(r.status not in ("queued", "running") for r in runs)
        print(f"\n{run.backbone} ({run.mode}) {run.status} [{done}/{len(runs)}]", file=out)
        print(format_leaderboard(runs, test_intervals(store, runs)), file=out, flush=True)

    try:
        result = run_sweep(plan, store, manager, backend=args.backend, sweep_id=sweep_id, on_finish=on_finish)
    finally:
        manager.shutdown(stop_jobs=True)
    for problem in result.problems:
        print(f"warning: {problem}", file=sys.stderr)
    verdict = best_against_runner_up(store, result.runs)
    if verdict:
        print(f"\nbest against the runner-up: {verdict}", file=out, flush=True)
    if args.json:
        print_json(result.to_dict())
    else:
        best = result.best_run_id
        print(f"\nbest run: {best or 'none completed'}; sweep {result.sweep_id} took {result.elapsed_s:.1f}s")
    if result.best_run_id is None:
        print(f"error: no run of sweep {result.sweep_id} completed; see each run's log", file=sys.stderr)
        return EXIT_RUN_FAILED
    return 0


def add_sweep_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `sweep` on the CLI's sub-parsers (`common` brings --workspace and --json)."""
    sweep = sub.add_parser(
        "sweep", parents=[common], help="train one run per backbone x mode on one split, in parallel, and rank them"
    )
    sweep.add_argument("data", metavar="DATA")
    sweep.add_argument("--backbones", required=True, help="comma-separated registry names, e.g. mobilenet_v2,resnet50")
    sweep.add_argument(
        "--modes", default="feature-extraction", help="comma-separated, e.g. feature-extraction,fine-tune"
    )
    sweep.add_argument("--epochs", type=int, default=5, help="head epochs of every run")
    sweep.add_argument("--image-size", type=int, default=None, help="default: each backbone's own")
    sweep.add_argument("--backend", choices=("local", "ray"), default="local")
    sweep.add_argument(
        "--ray-address", default=None, help="HOST:PORT or auto (default: ray_address setting; none: a local cluster)"
    )
    sweep.add_argument("--weights", default=None, help="default: each backbone's pretrained weights (none: random)")
    sweep.add_argument("--seed", type=int, default=42)
    sweep.set_defaults(handler=cmd_sweep)
