"""Head convergence: a default feature-extraction run at a small epoch budget against scikit-learn on its features.

    python -m bench.head_convergence [--epochs 5] [--quick]

For each dataset (two image sets through EfficientNet-Lite0's offline ImageNet weights, two real text sets through
GloVe), one feature-extraction run with the engine's defaults and `--epochs` head epochs, then scikit-learn's
logistic regression (standardised, C=1, run to convergence) fitted on the same cached training features and
scored on the same test split: the reference a converged, regularised linear head should reach (issue 21).
Each dataset is trained with `--seeds` training seeds on one split (the seed moves the head's dropout and shuffling,
not the split or the features): on a test split of a few hundred examples one run's accuracy swings by points
from seed to seed, so the gap to the reference is reported for the default seed and for the mean. Prints one
Markdown row per dataset: the default seed's test accuracy, the mean (min-max) over seeds, the reference, both gaps,
each run's best epoch (its last epoch means the head was still learning) and the median seconds of a run.

The script only uses the engine's public pieces, so the same file can be run from an older checkout (a git
worktree) to measure the engine before a change on the same machine in the same hour.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.environ.get("TRANSFERLAB_ROOT", str(Path(__file__).resolve().parents[1])))

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.demo import write_demo_dataset  # noqa: E402
from tl_core.data.prep import prepare_dataset, workspace_cache  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.feature_cache import examples_feature_key, load_cached_features  # noqa: E402
from tl_core.training.runner import run_experiment  # noqa: E402

IMAGE = ModelConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=96)
TEXT = ModelConfig(backbone="glove_6b_50d", weights="glove")
FIRST_SEED = 42  # TrainConfig's default: the seed a user's run gets
# demo dataset: (the row's name, modality, model, demo-data keyword arguments)
DATASETS = {
    "textures": ("textures (images)", "image", IMAGE, {}),
    "digits": ("digits (images, 100 a class)", "image", IMAGE, {"images_per_class": 100}),
    "bbc-news": ("BBC News (text, 386 a class)", "text", TEXT, {}),
    "movie-reviews": ("movie reviews (text, 1,000 a class)", "text", TEXT, {}),
}


def reference_accuracy(config: RunConfig, store: RunStore, input_size: int) -> float:
    """scikit-learn's logistic regression on the run's own cached train features, scored on its test features."""
    split = prepare_dataset(config.data, store).split
    features, labels = {}, {}
    for name in ("train", "test"):
        examples = split.examples(name)
        key = examples_feature_key(examples, config.model, input_size, cut_layer=None, seed=config.train.seed)
        features[name] = load_cached_features(workspace_cache(store, "features"), key, len(examples))
        labels[name] = np.asarray(split.labels(name))
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    return float(reference.fit(features["train"], labels["train"]).score(features["test"], labels["test"]))


def measure(demo: str, root: Path, epochs: int, quick: bool, seeds: int) -> str:
    """One Markdown row: the head's test accuracy over `seeds` training seeds (one split) against the reference."""
    name, modality, model, options = DATASETS[demo]
    if quick and demo == "digits":
        name, options = "digits (images, 30 a class)", {"images_per_class": 30}
    source = write_demo_dataset(root / demo, demo, **options)
    store = RunStore(root / "workspace")
    accuracies, best_epochs, seconds = [], [], []
    for seed in range(FIRST_SEED, FIRST_SEED + seeds):
        # The split's seed stays the data config's; only the head's start, dropout and shuffling change.
        config = RunConfig(
            data=DataConfig(source=str(source), modality=modality),
            model=model,
            train=TrainConfig(mode="feature-extraction", epochs=epochs, seed=seed),
        )
        started = time.perf_counter()
        outcome = run_experiment(config, store=store)
        seconds.append(time.perf_counter() - started)
        if outcome.status != "completed":
            return f"| {name} | failed: {outcome.error} | | | | | |"
        accuracies.append(outcome.summary["test_accuracy"])
        best_epochs.append(str(outcome.summary["best_epoch"]))
    reference = reference_accuracy(config, store, int(outcome.summary["image_size"]))
    mean, low, high = float(np.mean(accuracies)), min(accuracies), max(accuracies)
    return (
        f"| {name} | {accuracies[0]:.3f} | {mean:.3f} ({low:.3f}-{high:.3f}) | {reference:.3f} | "
        f"{accuracies[0] - reference:+.3f} / {mean - reference:+.3f} | {', '.join(best_epochs)} of {epochs} | "
        f"{np.median(seconds):.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="head epochs (the issue's smallest budget: 5)")
    parser.add_argument("--quick", action="store_true", help="30 digits a class instead of 100 (a smoke run)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated demo datasets")
    parser.add_argument("--seeds", type=int, default=5, help="training seeds per dataset (42, 43, ...), one split")
    args = parser.parse_args(argv)
    print(
        f"| dataset | head test acc, seed {FIRST_SEED} | mean over {args.seeds} seeds (min-max) | scikit-learn LR "
        "| gap: seed 42 / mean | best epoch per seed | median seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="head-convergence-") as folder:
        for demo in args.datasets.split(","):
            print(measure(demo, Path(folder), args.epochs, args.quick, args.seeds), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
