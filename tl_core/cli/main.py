"""Command line: `python -m tl_core COMMAND ...`. Other tools rely on this contract; keep it stable.

    scan DATA [--modality auto|image|text] [--json]
    train DATA --backbone NAME --weights imagenet|none|PATH --mode feature-extraction|fine-tune|full|progressive
          --epochs N [--fine-tune-epochs N] [--stage-epochs N] [--max-stages K] [--compare-scratch]
          [--image-size S] [--batch-size B] [--workspace DIR] [--json]
          [--modality auto|image|text] [--sequence-length T]   (text: default backbone glove_6b_50d, weights glove)
    advise DATA --backbone NAME [--json]
    runs [--json]            evaluate RUN_ID [--json]        export RUN_ID --out DIR
    compare RUN_A RUN_B [--json]   (test accuracy with 95% intervals, McNemar's test; see tl_core.cli.compare)
    predict RUN_ID IMAGE... [--top K] [--json]       predict RUN_ID --text TEXT [--text ...] (text runs; FILE... works too)
    predict --pretrained NAME IMAGE... [--top K] [--json]
    backbones [--all] [--modality image|text] [--json]          demo-data DIR [--name NAME]          delete RUN_ID
    users add|list|passwd|remove ...    codes new|list|revoke ...            serve   (see tl_core.cli.accounts)

With `--json` the LAST line on stdout is one JSON object (or list). Progress goes to stderr.
Bad input exits with status 2 and one line on stderr, never a traceback. `predict RUN_ID FILE...` with files that
cannot be read still predicts the others: each such file gets an empty list in the JSON, a line `error: FILE: ...`
on stderr, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tl_core.cli.accounts import add_account_commands  # noqa: E402
from tl_core.cli.compare import add_compare_command  # noqa: E402
from tl_core.config import MODES, ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.errors import TransferLabError  # noqa: E402

DEFAULT_BACKBONE = ModelConfig().backbone
EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


class ProgressPrinter:
    """A one-line progress bar on stderr (redrawn in place on a terminal), plus a line per epoch."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self.phase_epochs = 0
        self.phase_started = time.perf_counter()

    def on_event(self, event: Any) -> None:
        from tl_core import events

        if isinstance(event, events.PhaseStarted):
            self.phase_epochs, self.phase_started = event.epochs, time.perf_counter()
            self._line(f"[{event.phase}] {event.description}; {event.epochs} epochs at lr {event.learning_rate:g}")
        elif isinstance(event, events.BatchProgress) and self.interactive and event.batches_per_epoch:
            done = event.batch / event.batches_per_epoch
            bar = "#" * int(done * 24)
            self.stream.write(
                f"\r  epoch {event.epoch} [{bar:<24}] {done:4.0%} loss {event.metrics.get('loss', float('nan')):.4f}"
            )
            self.stream.flush()
        elif isinstance(event, events.PreparationProgress) and self.interactive:
            done = event.done / max(event.total, 1)
            what = events.PREPARATION_STEP_NAMES.get(event.step, event.step)
            self.stream.write(
                f"\r\x1b[K  {what}, {event.split} [{'#' * int(done * 24):<24}] {event.done:,}/{event.total:,}"
            )
            if event.done >= event.total:
                self.stream.write("\r\x1b[K")  # the runner's log line for the split follows
            self.stream.flush()
        elif isinstance(event, events.EpochEnded):
            elapsed = time.perf_counter() - self.phase_started
            remaining = (self.phase_epochs - event.phase_epoch) * elapsed / max(event.phase_epoch, 1)
            metrics = "  ".join(
                f"{k} {v:.4f}"
                for k, v in event.metrics.items()
                if k in ("loss", "accuracy", "val_loss", "val_accuracy")
            )
            self._line(
                f"  epoch {event.epoch} ({event.phase} {event.phase_epoch}/{self.phase_epochs})  {metrics}  {'*best' if event.is_best else '     '}  ETA {remaining:.0f}s"
            )
        elif isinstance(event, events.LogMessage) and event.level != "info":
            self._line(f"  {event.level}: {event.text.splitlines()[0]}")
        elif isinstance(event, events.RunFinished):
            self._line(f"run {event.run_id} {event.status} after {event.epochs_run} epochs in {event.elapsed_s:.1f}s")

    def _line(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.interactive else "") + text + "\n")
        self.stream.flush()


def _print_json(value: Any) -> None:
    print(json.dumps(value, default=str))


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _store(args: argparse.Namespace) -> Any:
    from tl_core.runs.store import RunStore

    return RunStore(args.workspace)


def cmd_scan(args: argparse.Namespace) -> int:
    from tl_core.modalities import get_modality, resolve_modality
    from tl_core.runs.store import DEFAULT_WORKSPACE, WORKSPACE_ENV

    workspace = args.workspace or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
    modality = get_modality(resolve_modality(args.data, args.modality))
    report = modality.scan(args.data, extract_root=Path(workspace) / "cache" / "extracted")
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.format_text())
    return 0


def _modality_and_backbone(args: argparse.Namespace) -> tuple[str, str, str]:
    """The data's modality (`--modality`, else detected) and the backbone and weights, defaulting per modality."""
    from tl_core.modalities import get_modality, resolve_modality

    modality = get_modality(resolve_modality(args.data, args.modality))
    return modality.name, args.backbone or modality.default_backbone, args.weights or modality.default_weights


def cmd_train(args: argparse.Namespace) -> int:
    from tl_core.training.runner import run_experiment

    modality, backbone, weights = _modality_and_backbone(args)
    config = RunConfig(
        data=DataConfig(
            source=args.data,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            seed=args.seed,
            modality=modality,
        ),
        model=ModelConfig(
            backbone=backbone,
            weights=weights,
            image_size=args.image_size,
            pooling=args.pooling,
            cut_layer=args.cut_layer,
            head_hidden_units=tuple(args.hidden_units),
            dropout=args.dropout,
            augment=args.augment,
            sequence_length=args.sequence_length,
        ),
        train=TrainConfig(
            mode=args.mode,
            epochs=args.epochs,
            fine_tune_epochs=args.fine_tune_epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            fine_tune_learning_rate=args.fine_tune_learning_rate,
            fine_tune_layers=args.fine_tune_layers,
            stage_epochs=args.stage_epochs,
            max_stages=args.max_stages,
            compare_scratch=args.compare_scratch,
            use_feature_cache=not args.no_feature_cache,
            mixed_precision=args.mixed_precision,
            seed=args.seed,
        ),
        name=args.name,
    )
    outcome = run_experiment(config, store=_store(args), listener=ProgressPrinter())
    summary = outcome.summary
    if args.json:
        _print_json(summary)
    else:
        test = summary["test_accuracy"]
        print(
            f"run {summary['run_id']}: {summary['status']}, {summary['epochs_run']} epochs, "
            f"val accuracy {summary['val_accuracy'] if summary['val_accuracy'] is not None else 'n/a'}, "
            f"test accuracy {test if test is not None else 'n/a'}, {summary['elapsed_s']:.1f}s"
        )
        if outcome.evaluation:
            print(outcome.evaluation.format_text())
        if summary.get("best_phase") and summary["best_phase"] != "head":
            print(f"best model found in phase {summary['best_phase']} (epoch {summary['best_epoch']})")
        if summary.get("transfer_verdict"):
            print(summary["transfer_verdict"])
    if outcome.status == "failed":
        print(f"error: run {outcome.run_id} failed: {(outcome.error or '').splitlines()[0]}", file=sys.stderr)
        return EXIT_RUN_FAILED
    return 0


def cmd_advise(args: argparse.Namespace) -> int:
    from tl_core.advisor.mode_advice import advise, format_advice
    from tl_core.advisor.probe import AdvisorSteps, probe_cut_depths
    from tl_core.data.prep import prepare_dataset

    store = _store(args)
    model = ModelConfig(
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        pooling=args.pooling,
        cut_layer=args.cut_layer,
    )
    train = TrainConfig(
        epochs=args.epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_layers=args.fine_tune_layers,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    prepared = prepare_dataset(
        DataConfig(source=args.data, val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed),
        store,
    )
    cache = store.workspace / "cache"  # shared with the runner, so a later run reuses the advisor's features
    advice = advise(
        prepared.report,
        prepared.split,
        model,
        train,
        cache_dir=cache,
        max_probe_images=args.max_probe_images,
        measure_throughput=not args.no_timing,
        time_budget_s=args.budget_minutes * 60 if args.budget_minutes else None,
        steps=AdvisorSteps(progress=lambda text: print(f"advise: {text}...", file=sys.stderr)),
    )
    depths = probe_cut_depths(prepared.split, model, cache_dir=cache, seed=args.seed) if args.cut_depths else []
    if args.json:
        _print_json({**advice.to_dict(), "cut_depths": [{"layer": n, "probe_accuracy": a} for n, a in depths]})
        return 0
    print(format_advice(advice))
    if depths:
        print("\nLinear probe accuracy by cut depth (pass --cut-layer NAME to train on one):")
        for name, accuracy in depths:
            print(f"  {name:<28} {accuracy:.3f}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    records = _store(args).list_runs()
    if args.json:
        _print_json(
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tl_core.errors import RunNotFoundError
    from tl_core.layout import EVALUATION_FILE
    from tl_core.results.evaluate import Evaluation

    store = _store(args)
    record = store.get(args.run_id)
    path = store.run_dir(record.id) / EVALUATION_FILE
    if not path.is_file():
        raise RunNotFoundError(
            f"Run {record.id} ({record.status}) has no evaluation: only finished runs with validation or test images have one."
        )
    evaluation = Evaluation.load(path)
    if args.json:
        _print_json({"run_id": record.id, **evaluation.to_dict()})
    else:
        print(evaluation.format_text())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    targets, refused = list(args.targets), False
    if args.pretrained:
        from tl_core.models.weights.pretrained import predict_pretrained

        images = [Path(p) for p in targets]
        _check_images(images)
        results = [
            [{"label": label, "probability": p} for label, p in row]
            for row in predict_pretrained(args.pretrained, images, top_k=args.top)
        ]
    elif args.text:
        from tl_core.results.predict import load_run_classifier, predict_texts

        if len(targets) != 1:
            raise ConfigError(
                'predict --text takes exactly one RUN_ID: `predict RUN_ID --text "some text" [--text ...]`.'
            )
        classifier = load_run_classifier(_store(args), targets[0])
        if classifier.modality != "text":
            raise ConfigError(f"Run {targets[0]} classifies images: pass image files instead of --text.")
        images = [
            text if len(text) <= 40 else text[:37] + "..." for text in args.text
        ]  # how each is named in the output
        results = [
            [{"label": p.label, "probability": p.probability} for p in row]
            for row in predict_texts(classifier, args.text, top_k=args.top)
        ]
    else:
        from tl_core.results.predict import load_run_classifier, predict_each_file

        if len(targets) < 2:
            raise ConfigError(
                "predict needs a RUN_ID and at least one IMAGE or text FILE (or --pretrained NAME IMAGE..., or RUN_ID --text TEXT)."
            )
        run_id, images = targets[0], [Path(p) for p in targets[1:]]
        _check_images(images)
        classifier = load_run_classifier(_store(args), run_id)
        per_file = predict_each_file(classifier, images, top_k=args.top)
        for result in per_file:
            if result.problem:  # the others are still predicted; this file's row stays empty
                print(f"error: {result.path}: {result.problem}", file=sys.stderr)
        results = [
            [{"label": p.label, "probability": p.probability} for p in result.predictions] for result in per_file
        ]
        refused = any(result.problem for result in per_file)
    if args.json:
        _print_json(results)
    else:
        for image, row in zip(images, results):
            if row:
                print(f"{image}: " + ", ".join(f"{item['label']} {item['probability']:.3f}" for item in row))
    return EXIT_BAD_INPUT if refused else 0


def _check_images(images: list[Path]) -> None:
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise ConfigError(
            f"Image file not found: {missing[0]}. Check the path (relative paths start from {Path.cwd()})."
        )


def cmd_export(args: argparse.Namespace) -> int:
    from tl_core.results.bundle import export_run

    bundle = export_run(_store(args), args.run_id, Path(args.out))
    for path in bundle.files():
        print(path)
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from tl_core.models.registry import list_backbones
    from tl_core.models.text_backbones import has_packaged_weights
    from tl_core.models.weights import OFFLINE_WEIGHTS

    specs = list_backbones(None if args.all else "recommended", modality=args.modality)
    rows = [
        {
            "name": s.name,
            "family": s.family,
            "parameters": s.parameters,
            "default_size": s.default_size,
            "feature_dim": s.feature_dim,
            "preprocessing": s.preprocessing,
            "offline_weights": has_packaged_weights(s)
            if s.modality == "text"
            else bool(s.offline_weights and OFFLINE_WEIGHTS[s.offline_weights].is_installed()),
            "provenance": s.weights_provenance,
            "license": s.license,
            "tier": s.tier,
            "modality": s.modality,
        }
        for s in specs
    ]
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'name':<24} {'params':>9} {'size':>5} {'feat':>5}  {'pretrained weights':<18} provenance")
    for row in rows:
        weights = (
            "offline (packaged)"
            if row["offline_weights"]
            else "download (imagenet)"
            if row["modality"] == "image"
            else "folder or handle"
        )
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
    store = _store(args)
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

    train = sub.add_parser("train", parents=[common], help="train a model on a dataset")
    train.add_argument("data")
    train.add_argument(
        "--modality",
        choices=("auto", "image", "text"),
        default="auto",
        help="image or text; default: detected from the files",
    )
    train.add_argument(
        "--backbone",
        default=None,
        help=f"registry name (default {DEFAULT_BACKBONE}, for text glove_6b_50d); see `backbones --all`",
    )
    train.add_argument(
        "--weights",
        default=None,
        help="imagenet (text: glove) | none | weights file | SavedModel folder or TF Hub handle | run:RUN_ID",
    )
    train.add_argument(
        "--sequence-length", type=int, default=ModelConfig().sequence_length, help="text: word tokens read per document"
    )
    train.add_argument("--mode", default="feature-extraction", choices=MODES)
    train.add_argument("--epochs", type=int, default=10, help="head epochs")
    train.add_argument("--fine-tune-epochs", type=int, default=5)
    train.add_argument(
        "--fine-tune-layers", type=int, default=20, help="top backbone layers to unfreeze (fine-tune mode)"
    )
    train.add_argument("--stage-epochs", type=int, default=2, help="epochs per unfrozen block (progressive mode)")
    train.add_argument("--max-stages", type=int, default=None, help="most blocks to unfreeze (progressive mode)")
    train.add_argument(
        "--compare-scratch", action="store_true", help="also train from random weights and flag negative transfer"
    )
    train.add_argument("--image-size", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--fine-tune-learning-rate", type=float, default=None, help="default: learning rate / 10")
    train.add_argument("--pooling", choices=("avg", "max"), default="avg")
    train.add_argument("--cut-layer", default=None, help="take features from this backbone layer")
    train.add_argument(
        "--hidden-units", type=int, nargs="*", default=[], help="hidden Dense layers in the head, e.g. 128"
    )
    train.add_argument("--dropout", type=float, default=0.2)
    train.add_argument("--augment", action="store_true", help="random flips, rotations, zoom, contrast, shifts")
    train.add_argument("--no-feature-cache", action="store_true", help="re-run the frozen backbone every epoch")
    train.add_argument("--mixed-precision", action="store_true", help="float16 compute on a GPU")
    train.add_argument("--val-fraction", type=float, default=0.15)
    train.add_argument("--test-fraction", type=float, default=0.15)
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--name", default=None)
    train.set_defaults(handler=cmd_train)

    adv = sub.add_parser(
        "advise", parents=[common], help="recommend feature extraction or fine-tuning, with reasons and time estimates"
    )
    adv.add_argument("data")
    adv.add_argument("--backbone", default=DEFAULT_BACKBONE)
    adv.add_argument("--weights", default="imagenet")
    adv.add_argument("--image-size", type=int, default=None)
    adv.add_argument("--pooling", choices=("avg", "max"), default="avg")
    adv.add_argument("--cut-layer", default=None)
    adv.add_argument("--epochs", type=int, default=10, help="head epochs the time estimate assumes")
    adv.add_argument("--fine-tune-epochs", type=int, default=5)
    adv.add_argument("--fine-tune-layers", type=int, default=20)
    adv.add_argument("--batch-size", type=int, default=32)
    adv.add_argument("--budget-minutes", type=float, default=None, help="step down to a mode estimated to fit")
    adv.add_argument("--max-probe-images", type=int, default=600)
    adv.add_argument("--no-timing", action="store_true", help="skip timing this machine (no time estimates)")
    adv.add_argument("--cut-depths", action="store_true", help="also compare the linear probe at a few cut layers")
    adv.add_argument("--val-fraction", type=float, default=0.15)
    adv.add_argument("--test-fraction", type=float, default=0.15)
    adv.add_argument("--seed", type=int, default=42)
    adv.set_defaults(handler=cmd_advise)

    runs = sub.add_parser("runs", parents=[common], help="list runs")
    runs.set_defaults(handler=cmd_runs)

    evaluate = sub.add_parser("evaluate", parents=[common], help="show a run's evaluation")
    evaluate.add_argument("run_id")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = sub.add_parser("predict", parents=[common], help="top-k labels for images")
    predict.add_argument(
        "targets", nargs="+", metavar="RUN_ID IMAGE", help="RUN_ID then images, or only images with --pretrained"
    )
    predict.add_argument(
        "--pretrained", default=None, metavar="NAME", help="use a pretrained backbone's ImageNet head as-is"
    )
    predict.add_argument("--top", type=int, default=3)
    predict.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="TEXT",
        help="a document to classify with a text run (repeatable)",
    )
    predict.set_defaults(handler=cmd_predict)

    export = sub.add_parser("export", parents=[common], help="write the export bundle of a run")
    export.add_argument("run_id")
    export.add_argument("--out", required=True)
    export.set_defaults(handler=cmd_export)

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
