"""Command line: `python -m tl_core COMMAND ...`. Other tools rely on this contract; keep it stable.

    scan DATA [--modality auto|image|text] [--json]
    train DATA --backbone NAME --weights imagenet|none|PATH --mode feature-extraction|fine-tune|full|progressive
          --epochs N [--fine-tune-epochs N] [--stage-epochs N] [--max-stages K] [--compare-scratch]
          [--image-size S] [--batch-size B] [--workspace DIR] [--json]
          [--modality auto|image|text] [--sequence-length T]   (text: default backbone glove_6b_50d, weights glove)
    advise DATA [--backbone NAME] [--modality text] [--json]
    runs [--json]            evaluate RUN_ID [--json]        export RUN_ID --out DIR
    compare RUN_A RUN_B [--json]   (test accuracy with 95% intervals, McNemar's test; see tl_core.cli.compare)
    sweep DATA --backbones A,B[,C...] [--modes feature-extraction,fine-tune] [--epochs N] [--image-size S]
          [--backend local|ray] [--ray-address ADDR] [--json]   (one run per backbone x mode; see tl_core.cli.sweep)
    label-issues DATA [--backbone NAME] [--image-size S] [--json]   (likely label errors; see tl_core.cli.insight)
    predict RUN_ID IMAGE... [--top K] [--json]       predict RUN_ID --text TEXT [--text ...] (text runs; FILE... works too)
    predict --pretrained NAME IMAGE... [--top K] [--json]
    explain RUN_ID FILE... [--class NAME] --out DIR [--alpha A] [--json]   Grad-CAM overlays (see tl_core.cli.explain)
    backbones [--all] [--modality image|text] [--json]          demo-data DIR [--name NAME]          delete RUN_ID
    users add|list|passwd|remove ...    codes new|list|revoke ...            serve   (see tl_core.cli.accounts)

With `--json` the LAST line on stdout is one JSON object (or list). Progress goes to stderr.
Bad input exits with status 2 and one line on stderr, never a traceback. `predict RUN_ID FILE...` with files that
cannot be read still predicts the others: each such file gets an empty list in the JSON, a line `error: FILE: ...`
on stderr, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tl_core.cli.accounts import add_account_commands  # noqa: E402
from tl_core.cli.common import EXIT_BAD_INPUT, EXIT_RUN_FAILED, open_store, print_json  # noqa: E402
from tl_core.cli.compare import add_compare_command  # noqa: E402
from tl_core.cli.explain import add_explain_command  # noqa: E402
from tl_core.cli.insight import add_insight_commands  # noqa: E402
from tl_core.cli.results import add_results_commands  # noqa: E402
from tl_core.cli.sweep import add_sweep_command  # noqa: E402
from tl_core.cli.training import add_training_commands  # noqa: E402
from tl_core.config import ConfigError  # noqa: E402
from tl_core.errors import TransferLabError  # noqa: E402


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def cmd_scan(args: argparse.Namespace) -> int:
    from tl_core.modalities import get_modality, resolve_modality
    from tl_core.runs.store import DEFAULT_WORKSPACE, WORKSPACE_ENV

    workspace = args.workspace or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
    modality = get_modality(resolve_modality(args.data, args.modality))
    report = modality.scan(args.data, extract_root=Path(workspace) / "cache" / "extracted")
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.format_text())
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    records = open_store(args).list_runs()
    if args.json:
        print_json(
            [
                {
                    "run_id": r.id,
                    "name": r.name,
                    "status": r.status,
                    "backbone": r.backbone,
                    "weights": r.weights,
                    "mode": r.mode,
                    "created_at": r.created_at,
                    "elapsed_s": r.elapsed_s,
                    "metrics": r.metrics,
                    "parent_run_id": r.parent_run_id,
                }
                for r in records
            ]
        )
        return 0
    if not records:
        print("No runs yet: `python -m tl_core train DATA` starts one.")
        return 0
    print(f"{'run id':<22} {'status':<11} {'backbone':<20} {'mode':<18} {'val acc':>7} {'test acc':>8}")
    for r in records:
        val, test = (_fraction(r.metrics.get(key)) for key in ("val_accuracy", "test_accuracy"))
        print(f"{r.id:<22} {r.status:<11} {r.backbone:<20} {r.mode:<18} {val:>7} {test:>8}")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from tl_core.modalities import get_modality
    from tl_core.models.registry import list_backbones

    specs = list_backbones(None if args.all else "recommended", modality=args.modality)
    rows = [
        {
            "name": s.name,
            "family": s.family,
            "parameters": s.parameters,
            "default_size": s.default_size,
            "feature_dim": s.feature_dim,
            "preprocessing": s.preprocessing,
            "offline_weights": get_modality(s.modality).has_offline_weights(s),
            "provenance": s.weights_provenance,
            "license": s.license,
            "tier": s.tier,
            "modality": s.modality,
        }
        for s in specs
    ]
    if args.json:
        print_json(rows)
        return 0
    print(f"{'name':<24} {'params':>9} {'size':>5} {'feat':>5}  {'pretrained weights':<18} provenance")
    for row in rows:
        weights = "offline (packaged)" if row["offline_weights"] else get_modality(row["modality"]).weights_elsewhere
        print(
            f"{row['name']:<24} {row['parameters'] / 1e6:8.1f}M {row['default_size']:>5} {row['feature_dim']:>5}  {weights:<18} {row['provenance']}"
        )
    if not args.all:
        print("(recommended backbones; --all lists every one)")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from tl_core.data.demo import write_demo_dataset

    root = write_demo_dataset(Path(args.dir), args.name, images_per_class=args.images_per_class)
    print(root)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    store = open_store(args)
    record = store.get(args.run_id)
    store.delete(record.id)
    print(f"deleted run {record.id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tl_core", description="TransferLab: transfer learning from a labelled folder."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workspace", default=None, help="run store folder (default ./workspace or $TRANSFERLAB_WORKSPACE)"
    )
    common.add_argument("--json", action="store_true", help="print JSON (the last stdout line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scan = sub.add_parser("scan", parents=[common], help="validate a dataset and print the report")
    scan.add_argument("data", help="folder, .zip/.tar/.tar.gz or CSV of path,label (text: CSV/TSV of text,label)")
    scan.add_argument(
        "--modality", choices=("auto", "image", "text"), default="auto", help="default: detected from the files"
    )
    scan.set_defaults(handler=cmd_scan)

    add_training_commands(sub, common)

    runs = sub.add_parser("runs", parents=[common], help="list runs")
    runs.set_defaults(handler=cmd_runs)

    add_results_commands(sub, common)
    add_explain_command(sub, common)
    add_insight_commands(sub, common)

    backbones = sub.add_parser("backbones", parents=[common], help="list backbones")
    backbones.add_argument("--all", action="store_true")
    backbones.add_argument("--modality", choices=("image", "text"), default="image")
    backbones.set_defaults(handler=cmd_backbones)

    demo = sub.add_parser("demo-data", parents=[common], help="write a demo dataset folder")
    demo.add_argument("dir")
    demo.add_argument("--name", default="digits")
    demo.add_argument("--images-per-class", type=int, default=None)
    demo.set_defaults(handler=cmd_demo_data)

    delete = sub.add_parser("delete", parents=[common], help="delete a run and its files")
    delete.add_argument("run_id")
    delete.set_defaults(handler=cmd_delete)

    add_account_commands(sub)
    add_compare_command(sub, common)
    add_sweep_command(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (TransferLabError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the contract is one line, never a traceback
        if os.environ.get("TRANSFERLAB_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (set TRANSFERLAB_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_RUN_FAILED
