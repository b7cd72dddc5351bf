"""One experiment end to end: data -> run record -> model -> training -> evaluation -> saved artefacts.

The CLI and the app's background worker both call `run_experiment`; nothing here prints or draws.
What the run reports about itself (summary.json, final metrics, dataset stats) is built in `tl_core.training.summary`.
Input problems found before the run starts raise `TransferLabError`; anything going wrong after the
run exists is recorded in the run (status `failed`, the error, the log, the last checkpoint) and returned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tl_core.config import RUN_WEIGHTS_PREFIX, RunConfig
from tl_core.data.prep import PreparedDataset, prepare_dataset
from tl_core.data.types import SPLIT_NAMES as SPLITS
from tl_core.data.types import DatasetSplit, TrainingData
from tl_core.errors import BackboneError, TransferLabError
from tl_core.events import ListenerGroup, LogMessage, RunFinished, RunStarted, RunStatus, TrainingListener
from tl_core.layout import CHECKPOINT_FILE, EVALUATION_FILE, KERAS_FILE, LABELS_FILE, SPLIT_FILE, SUMMARY_FILE
from tl_core.modalities import DataModality, get_modality
from tl_core.models import keras_files
from tl_core.models.registry import backbone_for_data
from tl_core.models.transfer_model import TransferModel, backbone_from_saved_classifier, inference_model
from tl_core.results.evaluate import Evaluation, evaluate_probabilities
from tl_core.results.export import write_labels
from tl_core.runs.recorder import RunRecorder
from tl_core.runs.store import RunStore
from tl_core.stopping import StopToken
from tl_core.tracking import tracking_listeners
from tl_core.training.classic_baseline import classic_baseline_entries
from tl_core.training.collector import freeze_startup_objects
from tl_core.training.feature_extraction import (
    evaluation_split,
    feature_provider,
    load_examples_and_build,
    run_feature_extraction,
)
from tl_core.training.loop import TrainResult, train_model
from tl_core.training.preparation import PreparationReporter, PreparationStopped
from tl_core.training.summary import VERDICT_KEYS, dataset_stats, experiment_summary, final_metrics, phase_throughput


@dataclass
class ExperimentOutcome:
    run_id: str
    status: RunStatus
    summary: dict[str, Any]
    result: TrainResult | None = None
    evaluation: Evaluation | None = None
    error: str | None = None
    log: list[str] = field(default_factory=list)


def choose_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over all GPUs when more than one is visible, else the default strategy."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
    return tf.distribute.get_strategy()


@contextlib.contextmanager
def precision_policy(mixed: bool) -> Iterator[None]:
    """float16 compute on a GPU when asked; restores the global policy afterwards."""
    previous = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


class _LogCollector:
    """Keeps log lines in memory so the outcome can show them without re-reading the store."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def on_event(self, event: Any) -> None:
        if isinstance(event, LogMessage):
            self.lines.append(f"{event.level}: {event.text}")


def _with_store_kept_open(run: Callable[..., ExperimentOutcome]) -> Callable[..., ExperimentOutcome]:
    """A run writes many short records (its events): its store's database stays open throughout (see `sqlite_store.kept_open`)."""

    @functools.wraps(run)
    def run_keeping_store_open(config: RunConfig, *, store: RunStore, **options: Any) -> ExperimentOutcome:
        with store.kept_open():
            return run(config, store=store, **options)

    return run_keeping_store_open


@_with_store_kept_open
def run_experiment(
    config: RunConfig,
    *,
    store: RunStore,
    listener: TrainingListener | None = None,
    stop: StopToken | None = None,
    prepared: PreparedDataset | None = None,
    run_id: str | None = None,
    weights_cache_dir: Path | None = None,
    strategy: tf.distribute.Strategy | None = None,
    initial_weights: Path | None = None,
) -> ExperimentOutcome:
    """Train and evaluate one model as described by `config`, recording everything in `store`.

    Args:
        config: the whole run configuration.
        store: the run store (workspace) to record into.
        listener: receives typed events besides the store's recorder.
        stop: cooperative stop token.
        prepared: an already scanned and split dataset (skips scanning again).
        run_id: an existing queued run to execute (created here when None).
        weights_cache_dir: where converted offline weights are cached.
        strategy: a `tf.distribute` strategy; by default mirrored over several GPUs when present.
        initial_weights: a checkpoint of an interrupted run with this config (`checkpoint.weights.h5`):
            training starts from it (a warm start; every epoch still runs).

    Returns:
        The outcome; `status` is `completed`, `stopped` or `failed`.
    """
    started = time.perf_counter()
    freeze_startup_objects()  # full collections during the run then skip the imported modules (tl_core/training/collector.py)
    stop = stop or StopToken()
    prepared = prepared or prepare_dataset(config.data, store)
    report, split = prepared.report, prepared.split

    parent_run_id = None
    parent_backbone = None
    if config.model.weights.startswith(RUN_WEIGHTS_PREFIX):
        parent = store.get(config.model.weights[len(RUN_WEIGHTS_PREFIX) :])
        if parent.status != "completed":
            raise BackboneError(
                f"Run {parent.id} is {parent.status}; only a completed run's backbone can start a new run."
            )
        if config.model.cut_layer:
            raise BackboneError(
                f"A cut layer ({config.model.cut_layer}) cannot be applied to run {parent.id}'s trained backbone: "
                "start from its backbone without a cut, or cut the pretrained backbone (weights imagenet) instead."
            )
        parent_run_id = parent.id
        parent_backbone = backbone_from_saved_classifier(store.run_dir(parent.id) / KERAS_FILE)
        # The parent's backbone fixes the architecture and input size.
        fixed: dict[str, Any] = {"backbone": parent.backbone}
        if parent_backbone.inputs[0].dtype != "string":
            fixed["image_size"] = int(parent_backbone.input.shape[1])
        config = config.replace(model=dataclasses.replace(config.model, **fixed))
    modality = get_modality(config.data.modality)
    spec = backbone_for_data(config.model.backbone, modality.name, modality.default_backbone)
    image_size = modality.input_size(config.model)

    if run_id is None:
        record = store.create_run(
            config=config.to_dict(),
            backbone=config.model.backbone,
            weights=config.model.weights,
            mode=config.train.mode,
            name=config.name,
            dataset_fingerprint=report.fingerprint,
            dataset_stats=dataset_stats(report, split),
            parent_run_id=parent_run_id,
        )
        run_id = record.id
    else:
        store.update_dataset(run_id, report.fingerprint, dataset_stats(report, split))
    run_dir = store.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    collector = _LogCollector()
    events = ListenerGroup(
        RunRecorder(store, run_id),
        collector,
        *(listener and [listener] or []),
        *tracking_listeners(run_id, run_dir),  # TensorBoard files; MLflow when TRANSFERLAB_MLFLOW_URI is set
        on_error=lambda message: store.append_log(run_id, f"warning: {message}"),
    )

    def log(level: str, text: str) -> None:
        events.on_event(LogMessage(run_id, level=level, text=text))

    preparation = PreparationReporter(events, run_id, stop)

    result: TrainResult | None = None
    evaluation: Evaluation | None = None
    status: RunStatus = "failed"
    error: str | None = None
    try:
        events.on_event(
            RunStarted(run_id, class_names=tuple(split.class_names), split_sizes=split.sizes(), config=config.to_dict())
        )
        for problem in report.problems:
            log("warning" if problem.severity != "info" else "info", problem.message)
        for message in split.coverage_problems(modality.noun):
            log("warning", message)
        (run_dir / SPLIT_FILE).write_text(
            json.dumps({name: [e.relpath for e in split.examples(name)] for name in SPLITS})
        )
        keras.utils.set_random_seed(config.train.seed)
        on_gpu = bool(tf.config.list_physical_devices("GPU"))
        if config.train.jit_compile and not on_gpu:
            log("info", "XLA (jit_compile) is off: it is 5-10x slower on CPU. It is used on a GPU.")
        if config.train.mixed_precision and not on_gpu:
            log("info", "Mixed precision is off: it only speeds up GPUs.")
        strategy = strategy or choose_strategy()
        use_cache = config.train.use_feature_cache and not config.model.augment
        if config.train.use_feature_cache and config.model.augment:
            log(
                "info",
                "Augmentation is on: the frozen backbone must see each augmented image, so the head trains end to end instead of on cached features.",
            )
        jit_compile = config.train.jit_compile and on_gpu
        with precision_policy(config.train.mixed_precision and on_gpu), strategy.scope():

            def build() -> TransferModel:
                built = modality.build(
                    config.model,
                    len(split.class_names),
                    cache_dir=weights_cache_dir,
                    backbone=parent_backbone,
                    augmentation_seed=config.train.seed,
                )
                size = modality.describe_input_size(built.image_size)
                log(
                    "info",
                    f"Built {spec.display_name} ({config.model.weights} weights) at {size}, {built.feature_dim}-d features.",
                )
                if initial_weights is not None:
                    _load_checkpoint(built, initial_weights, log)
                return built

            saved_during_evaluation = use_cache and config.train.mode == "feature-extraction"
            if saved_during_evaluation:
                transfer_model, result, evaluation = run_feature_extraction(
                    config,
                    modality,
                    split,
                    image_size,
                    store,
                    build,
                    log,
                    lambda built: save_classifier(built, run_dir),
                    preparation=preparation,
                    initial_weights=initial_weights,
                    run_id=run_id,
                    listener=events,
                    stop=stop,
                    checkpoint_path=run_dir / CHECKPOINT_FILE,
                    jit_compile=jit_compile,
                )
            else:
                data, transfer_model = load_examples_and_build(
                    modality, split, image_size, store, log, build, preparation
                )
                provider = (
                    feature_provider(transfer_model, config, split, data, store, log, preparation)
                    if use_cache
                    else None
                )
                result = train_model(
                    transfer_model,
                    data,
                    config.train,
                    run_id=run_id,
                    listener=events,
                    stop=stop,
                    checkpoint_path=run_dir / CHECKPOINT_FILE,
                    feature_provider=provider,
                    use_feature_cache=use_cache,
                    jit_compile=jit_compile,
                )
                for phase, rate in phase_throughput(result, len(data.labels["train"])).items():
                    log("info", f"{phase}: trained at {rate:.1f} {modality.noun}s/s.")
                evaluation = _evaluate(modality, transfer_model, data, split, config.train.batch_size)
        status = result.status
        if status == "stopped" and not result.epochs_run:  # an untrained head's "accuracy" would mislead
            evaluation = None
            log("info", "Stopped before the first epoch: nothing was trained, so no evaluation was saved.")
        else:
            if not saved_during_evaluation:
                save_classifier(transfer_model, run_dir)
            write_labels(split.class_names, run_dir / LABELS_FILE)
            if evaluation is not None:
                evaluation.save(run_dir / EVALUATION_FILE)
    except KeyboardInterrupt:
        status, error = "stopped", "Interrupted (Ctrl-C)."
        raise
    except PreparationStopped as stopped:  # before any epoch: no weights to keep
        status = "stopped"
        log(
            "info",
            f"{stopped}: nothing was trained yet, so no model was saved. "
            "Splits finished before the stop stay cached, so a new run on this data starts after them.",
        )
    except Exception as exc:  # noqa: BLE001 - any failure is recorded in the run, logs and checkpoint kept
        status = "failed"
        error = str(exc) if isinstance(exc, TransferLabError) else f"{type(exc).__name__}: {exc}"
        log("error", f"Training failed: {error}\n{traceback.format_exc()}")
    finally:
        summary = experiment_summary(
            run_id, config, image_size, status, started, result, evaluation, split, report, error
        )
        summary["listener_errors"] = len(events.listener_errors)
        # the review's decisions this run trained with (tl_core/data/label_overrides.py); the fingerprint says which
        summary["label_overrides"] = {
            "relabelled": prepared.overrides.relabelled,
            "excluded": prepared.overrides.excluded,
        }
        (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
        events.on_event(
            RunFinished(
                run_id,
                status=status,
                epochs_run=summary["epochs_run"],
                final_metrics=final_metrics(summary, evaluation),
                elapsed_s=summary["elapsed_s"],
                error=error,
            )
        )
    outcome = ExperimentOutcome(run_id, status, summary, result, evaluation, error, collector.lines)
    if config.train.compare_scratch and status == "completed" and not stop.should_stop():
        _compare_with_scratch(
            outcome, config, store=store, prepared=prepared, listener=listener, stop=stop, strategy=strategy
        )
    return outcome


NEGATIVE_TRANSFER_ADVICE = "try another backbone, cut features from an earlier layer (--cut-layer), or fine-tune deeper (--mode full or progressive)"


def scratch_baseline_config(config: RunConfig) -> RunConfig:
    """Same architecture, data, split and epoch budget, random weights, every layer training from the start."""
    total_epochs = config.train.epochs + (
        config.train.fine_tune_epochs if config.train.mode != "feature-extraction" else 0
    )
    return config.replace(
        model=dataclasses.replace(config.model, weights="none"),
        train=dataclasses.replace(
            config.train,
            mode="full",
            epochs=1,
            fine_tune_epochs=max(total_epochs - 1, 1),
            fine_tune_learning_rate=config.train.learning_rate,
            compare_scratch=False,
        ),
        name=f"{config.name or config.model.backbone} (scratch baseline)",
    )


def _compare_with_scratch(outcome: ExperimentOutcome, config: RunConfig, **kwargs: Any) -> None:
    store: RunStore = kwargs["store"]
    scratch = run_experiment(scratch_baseline_config(config), **kwargs)
    pretrained_accuracy = outcome.summary.get("evaluation_accuracy")
    scratch_accuracy = scratch.summary.get("evaluation_accuracy")
    comparison: dict[str, Any] = {
        "scratch_run_id": scratch.run_id,
        "scratch_test_accuracy": scratch.summary.get("test_accuracy"),
        "negative_transfer": None,
    }
    if scratch.status == "completed" and pretrained_accuracy is not None and scratch_accuracy is not None:
        margin = scratch_accuracy - pretrained_accuracy
        comparison.update(negative_transfer=margin > 0, negative_transfer_margin=round(margin, 4))
        if margin > 0:
            message = (
                f"Negative transfer: the from-scratch baseline beats the pretrained model by {margin:.1%} "
                f"({scratch_accuracy:.3f} vs {pretrained_accuracy:.3f}); {NEGATIVE_TRANSFER_ADVICE}."
            )
        else:
            message = f"Pretrained weights help: {pretrained_accuracy:.3f} vs {scratch_accuracy:.3f} from scratch (+{-margin:.1%})."
        comparison["transfer_verdict"] = message
        store.append_log(outcome.run_id, message)
    if get_modality(config.data.modality).has_classic_baseline:  # after the scratch run: a stop during it skips this
        entries, line = classic_baseline_entries(
            kwargs["prepared"].split, outcome.summary, seed=config.train.seed, stop=kwargs["stop"]
        )
        comparison.update(entries)
        store.append_log(outcome.run_id, line)
    outcome.summary.update(comparison)
    store.update_metrics(outcome.run_id, {k: v for k, v in comparison.items() if k not in VERDICT_KEYS})
    (store.run_dir(outcome.run_id) / SUMMARY_FILE).write_text(json.dumps(outcome.summary, indent=1))


def _evaluate(
    modality: DataModality, transfer_model: Any, data: TrainingData, split: DatasetSplit, batch_size: int
) -> Evaluation | None:
    name = evaluation_split(split)
    if name is None:
        return None
    batches = modality.dataset(data.images[name], data.labels[name], batch_size=batch_size, shuffle=False)
    probabilities = transfer_model.model.predict(batches, verbose=0)
    examples = split.examples(name)
    return evaluate_probabilities(
        probabilities,
        data.labels[name],
        split.class_names,
        items=[e.path for e in examples],
        identities=[e.relpath for e in examples],
        split=name,
    )


def _load_checkpoint(transfer_model: TransferModel, path: Path, log: Any) -> None:
    """Load an interrupted run's checkpoint: the whole model's weights, or the head's (feature extraction saves only those)."""
    for target, what in ((transfer_model.model, "every layer"), (transfer_model.head, "the head")):
        try:
            with warnings.catch_warnings():  # a head-only file read as a whole model warns per layer before it fails
                warnings.simplefilter("ignore")
                keras_files.load_weights(target, path)
        except (ValueError, KeyError, OSError):
            continue
        log("info", f"Starting from the interrupted run's checkpoint ({what}).")
        return
    raise TransferLabError(
        f"The checkpoint {path} does not fit this model (another backbone or classes?): start a new run instead."
    )


def save_classifier(transfer_model: TransferModel, run_dir: Path) -> None:
    """The run's `model.keras`: the classifier as predict and export load it (without augmentation layers)."""
    keras_files.save_model(inference_model(transfer_model.model), run_dir / KERAS_FILE)
