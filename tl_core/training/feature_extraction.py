"""A feature-extraction run's steps: decode and build, the backbone's one pass per split, the head, evaluation.

`run_experiment` (tl_core/training/runner.py) records the run and its events; this module does the work that
makes feature extraction fast: each split's features are computed once (or read from the workspace
cache) and the head trains on them, and when every split is cached no image is read at all.
`feature_provider` also serves the head phase of fine-tuning runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tl_core.config import RunConfig
from tl_core.data.decode_helper import decoding_in_helper
from tl_core.data.image_cache import check_image_cache_room
from tl_core.data.prep import workspace_cache
from tl_core.data.types import SPLIT_NAMES as SPLITS
from tl_core.data.types import DatasetSplit, TrainingData
from tl_core.modalities import DataModality, get_modality
from tl_core.models import keras_files
from tl_core.models.transfer_model import TransferModel, build_head, copy_head_weights
from tl_core.results.evaluate import Evaluation, evaluate_probabilities
from tl_core.runs.store import RunStore
from tl_core.training.feature_cache import SharedPredictor, cached_features, examples_feature_key, load_cached_features
from tl_core.training.loop import TrainResult, train_head
from tl_core.training.preparation import PreparationReporter


def load_examples_and_build(
    modality: DataModality,
    split: DatasetSplit,
    input_size: int,
    store: RunStore,
    log: Any,
    build: Callable[[], TransferModel],
    preparation: PreparationReporter,
) -> tuple[TrainingData, TransferModel]:
    """Load the examples (decode images, read documents) and build the model.

    Images not cached yet are decoded in a helper process while this one builds the model, the one
    single-threaded step of a run (tl_core/data/decode_helper.py); then they are loaded from the cache.
    In two threads of this process the two did not overlap (1.3-1.8 s against 0.9-1.4 s in turn for
    600 JPEGs and EfficientNet-Lite0: the build holds the GIL, the decoders wait for it), and both parse
    numpy headers with `ast`, which CPython 3.11 does not guard across threads (gh-106905).
    """
    cache_dir = workspace_cache(store, "images")
    if modality.decodes_to_cache:  # a run whose caches cannot fit in the disk quota ends now, before any decoding
        check_image_cache_room([split.examples(name) for name in SPLITS], input_size, cache_dir)

    def progress(name: str) -> Callable[[int, int], None]:
        return preparation.callback("decode", name)

    with decoding_in_helper(split, input_size, cache_dir, enabled=modality.decodes_to_cache) as helper:
        transfer_model = build()
        decoded_by_helper = helper.finish(progress, log) if helper is not None else frozenset()
    return modality.load(
        split, input_size, cache_dir, log, progress, decoded_elsewhere=decoded_by_helper
    ), transfer_model


def feature_provider(
    transfer_model: Any,
    config: RunConfig,
    split: DatasetSplit,
    data: TrainingData,
    store: RunStore,
    log: Any,
    preparation: PreparationReporter,
    known: dict[str, np.ndarray] | None = None,
) -> Callable[[str], np.ndarray]:
    """A split name -> its backbone features, computed once per split (or read from the workspace cache) and kept.

    `known`: splits whose features the caller has already read from the cache.
    """
    cache_dir = workspace_cache(store, "features")
    features: dict[str, np.ndarray] = dict(known or {})
    # One traced graph for every split; each split's features are made once and kept, before any fine-tuning.
    predict = SharedPredictor(transfer_model.feature_extractor)
    noun = get_modality(data.modality).noun

    def provide(name: str) -> np.ndarray:
        if name not in features:
            key = examples_feature_key(
                split.examples(name),
                config.model,
                transfer_model.image_size,
                cut_layer=config.model.cut_layer,
                seed=config.train.seed,
            )
            # Training needs train and val first; the test split's features come after training, which a stop then keeps.
            progress = preparation.callback("features", name, stoppable=name in ("train", "val"))
            started = time.perf_counter()
            feature_set = cached_features(
                transfer_model.feature_extractor,
                data.images[name],
                cache_dir=cache_dir,
                key=key,
                batch_size=max(32, config.train.batch_size),
                progress=progress,
                predict=predict,
            )
            spent = time.perf_counter() - started
            speed = f" in {spent:.1f} s ({len(feature_set.features) / spent:.1f} {noun}s/s)" if spent > 0 else ""
            log(
                "info",
                f"{name}: {'reused cached' if feature_set.reused else 'computed'} backbone features {tuple(feature_set.features.shape)}"
                f"{'' if feature_set.reused else speed}.",
            )
            features[name] = feature_set.features
        return features[name]

    return provide


def evaluation_split(split: DatasetSplit) -> str | None:
    """The split a run is evaluated on: test, else validation, else none."""
    sizes = split.sizes()
    return "test" if sizes.get("test") else "val" if sizes.get("val") else None


def predict_head(head: keras.Model, features: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The head's probabilities for in-memory features: direct calls (no `predict` set-up or tracing, ~0.3 s)."""
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(head(features[start : start + chunk], training=False))
            for start in range(0, len(features), chunk)
        ]
    )


def split_features(
    config: RunConfig,
    modality: DataModality,
    split: DatasetSplit,
    image_size: int,
    store: RunStore,
    build: Callable[[], TransferModel],
    log: Any,
    preparation: PreparationReporter,
) -> tuple[Callable[[str], np.ndarray], TransferModel | None]:
    """A split name -> its frozen backbone features, from the workspace cache or one backbone pass per split.

    The cache keys need only the config and the split, so when every split's features are cached nothing
    is decoded and the backbone is not built (the model returned is then None). Otherwise the examples are
    loaded and the model built, and each split's features are computed when first asked for, then kept.
    Runs and `tl_core.insight.label_issues` share this, so either reuses the other's features.
    """
    cache_dir = workspace_cache(store, "features")
    names = [name for name in SPLITS if split.examples(name)]
    keys = {
        name: examples_feature_key(
            split.examples(name), config.model, image_size, cut_layer=config.model.cut_layer, seed=config.train.seed
        )
        for name in names
    }
    cached = {
        name: found
        for name in names
        if (found := load_cached_features(cache_dir, keys[name], len(split.examples(name)))) is not None
    }
    every_split_cached = len(cached) == len(names)
    for name in cached:
        log(
            "info",
            f"{name}: reused cached backbone features {tuple(cached[name].shape)}{f'; no {modality.noun} read' if every_split_cached else ''}.",
        )
    if every_split_cached:
        return cached.__getitem__, None
    data, transfer_model = load_examples_and_build(modality, split, image_size, store, log, build, preparation)
    return feature_provider(transfer_model, config, split, data, store, log, preparation, known=cached), transfer_model


def run_feature_extraction(
    config: RunConfig,
    modality: DataModality,
    split: DatasetSplit,
    image_size: int,
    store: RunStore,
    build: Callable[[], TransferModel],
    log: Any,
    save: Callable[[TransferModel], None],
    *,
    preparation: PreparationReporter,
    initial_weights: Path | None = None,
    **training: Any,
) -> tuple[TransferModel, TrainResult, Evaluation | None]:
    """Feature extraction on cached features: the head trains alone, the backbone is built only when needed.

    When every split's features are in the workspace cache (their keys need only the config and the
    split), the head trains before the backbone is even built, and no image is read: the backbone is
    built afterwards only to assemble the classifier that is saved. Otherwise the images are decoded
    and the backbone computes the features first. Both paths train the same head from the same seed; the head
    standardises its features with the training split's mean and variance (`train_head` adapts it), and the
    classifier that is saved carries that head, so it standardises raw examples' features the same way.

    `save` writes the trained classifier in a helper thread while the evaluation split's features are
    computed: saving is Python-bound Keras serialisation (0.25-0.33 s for EfficientNet-Lite0), the features
    are TensorFlow kernels that release the GIL, so the two overlap while a core would otherwise be idle.
    """
    names = [name for name in SPLITS if split.examples(name)]
    features, transfer_model = split_features(config, modality, split, image_size, store, build, log, preparation)
    if transfer_model is not None:
        for name in ("train", "val"):  # what training needs, now; the test split's features only after training
            if name in names:
                features(name)
    labels = {name: split.labels(name) for name in names}
    keras.utils.set_random_seed(
        config.train.seed
    )  # the same head, dropout and shuffling with or without the backbone built first
    head = build_head(
        features("train").shape[1], len(split.class_names), config.model.head_hidden_units, config.model.dropout
    )
    if initial_weights is not None:
        keras_files.load_weights(head, initial_weights)  # a feature-extraction checkpoint holds the head's weights
        log("info", "Starting from the interrupted run's checkpoint (the head).")
    result = train_head(head, features, labels, config.train, num_classes=len(split.class_names), **training)
    if transfer_model is None:  # seeded as a run that computes the features builds it: random weights are the same
        keras.utils.set_random_seed(config.train.seed)
        transfer_model = build()
    copy_head_weights(head, transfer_model.head)  # its normalisation's mean and variance included
    name = evaluation_split(split)
    with ThreadPoolExecutor(1, thread_name_prefix="save-classifier") as saver:
        saving = saver.submit(save, transfer_model)
        evaluation = None
        if name is not None:
            probabilities = predict_head(head, features(name))
            evaluation = evaluate_probabilities(
                probabilities, labels[name], split.class_names, items=[e.path for e in split.examples(name)], split=name
            )
        saving.result()  # its exception, if any, fails the run like any other
    return transfer_model, result, evaluation
