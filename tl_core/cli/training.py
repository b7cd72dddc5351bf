"""Training commands of `python -m tl_core` (registered by `tl_core.cli.main.build_parser`):

    train DATA [--backbone NAME] [--weights ...] [--mode ...] [--epochs N] ...   train a model, progress on stderr
    advise DATA [--backbone NAME] [--budget-minutes M] [--cut-depths] ...         recommend a training mode
                                                                                   (text: a backbone and mode)

The flags, output lines and exit statuses are part of the contract in `tl_core.cli.main`.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from tl_core.cli.common import EXIT_RUN_FAILED, modality_and_backbone, open_store, print_json
from tl_core.config import MODES, DataConfig, ModelConfig, RunConfig, TrainConfig

if TYPE_CHECKING:
    from tl_core.runs.store import RunStore

DEFAULT_BACKBONE = ModelConfig().backbone


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


def cmd_train(args: argparse.Namespace) -> int:
    from tl_core.training.runner import run_experiment
    from tl_core.training.summary import VERDICT_KEYS

    modality, backbone, weights = modality_and_backbone(args)
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
    outcome = run_experiment(config, store=open_store(args), listener=ProgressPrinter())
    summary = outcome.summary
    if args.json:
        print_json(summary)
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
        for verdict in VERDICT_KEYS:  # the from-scratch baseline's, then (text) the classic baseline's
            if summary.get(verdict):
                print(summary[verdict])
    if outcome.status == "failed":
        print(f"error: run {outcome.run_id} failed: {(outcome.error or '').splitlines()[0]}", file=sys.stderr)
        return EXIT_RUN_FAILED
    return 0


def cmd_advise(args: argparse.Namespace) -> int:
    from tl_core.advisor.mode_advice import advise, format_advice
    from tl_core.advisor.probe import AdvisorSteps, probe_cut_depths
    from tl_core.data.prep import prepare_dataset
    from tl_core.modalities import get_modality

    store = open_store(args)
    modality, backbone, weights = modality_and_backbone(args)
    if get_modality(modality).advisor_times_encoders:
        return _advise_text(args, store, modality)
    model = ModelConfig(
        backbone=backbone,
        weights=weights,
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
        print_json({**advice.to_dict(), "cut_depths": [{"layer": n, "probe_accuracy": a} for n, a in depths]})
        return 0
    print(format_advice(advice))
    if depths:
        print("\nLinear probe accuracy by cut depth (pass --cut-layer NAME to train on one):")
        for name, accuracy in depths:
            print(f"  {name:<28} {accuracy:.3f}")
    return 0


def _advise_text(args: argparse.Namespace, store: RunStore, modality: str) -> int:
    """`advise` on text: time the offline encoders on a sample of the documents and recommend a backbone and mode."""
    from tl_core.advisor.budget import format_duration
    from tl_core.advisor.probe import AdvisorSteps
    from tl_core.advisor.text_advice import advise_text
    from tl_core.data.prep import prepare_dataset
    from tl_core.modalities import get_modality

    data = DataConfig(
        source=args.data,
        modality=modality,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    advice = advise_text(
        prepare_dataset(data, store).split,
        ModelConfig(backbone=get_modality(modality).default_backbone, sequence_length=args.sequence_length),
        TrainConfig(fine_tune_epochs=args.fine_tune_epochs, seed=args.seed),
        cache_dir=store.workspace / "cache",
        measure_throughput=not args.no_timing,
        steps=AdvisorSteps(progress=lambda text: print(f"advise: {text}...", file=sys.stderr)),
    )
    if args.json:
        print_json(advice.to_dict())
        return 0
    chosen = advice.recommended
    print(f"Recommended: {chosen.label} (--modality text --backbone {chosen.backbone} --mode {chosen.mode})")
    print("\n".join(f"- {reason}" for reason in advice.reasons))
    for recipe in advice.recipes:
        rate = f"{recipe.documents_per_second:,.1f} documents/s" if recipe.documents_per_second else ""
        print(f"  {recipe.label:<20} {format_duration(recipe.estimated_seconds or 0):>10}  {rate}")
    return 0


def add_training_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `train` and `advise` on the CLI's sub-parsers (`common` brings --workspace and --json)."""
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
        "--compare-scratch",
        action="store_true",
        help="also train from random weights and flag negative transfer; text runs also fit TF-IDF + logistic "
        "regression on the same split (classic_baseline_accuracy in the summary)",
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
    adv.add_argument(
        "--modality",
        choices=("auto", "image", "text"),
        default="auto",
        help="image or text (text: which backbone to start with, timed on your documents); default: detected",
    )
    adv.add_argument("--backbone", default=None, help=f"image backbone to advise on (default {DEFAULT_BACKBONE})")
    adv.add_argument("--weights", default=None, help="default: the backbone's pretrained weights")
    adv.add_argument("--sequence-length", type=int, default=ModelConfig().sequence_length, help="text: tokens read")
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
