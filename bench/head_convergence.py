"""Head convergence: a default feature-extraction run at a small epoch budget against scikit-learn on its features.

    python -m bench.head_convergence [--epochs 5] [--quick]

For each dataset (two image sets through EfficientNet-Lite0's offline ImageNet weights, two real text sets through
GloVe), one feature-extraction run with the engine's defaults and `--epochs` head epochs, then scikit-learn's
logistic regression (standardised, C=1, run to convergence) fitted on the same cached training features and
scored on the same test split: the reference a converged, regularised linear head should reach (issue 21).
Prints one Markdown row per dataset: test accuracy of the run, of the reference, the gap, the run's best epoch
(its last epoch means the head was still learning) and the seconds the run took.

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


def measure(demo: str, root: Path, epochs: int, quick: bool) -> str:
    name, modality, model, options = DATASETS[demo]
    if quick and demo == "digits":
        name, options = "digits (images, 30 a class)", {"images_per_class": 30}
    source = write_demo_dataset(root / demo, demo, **options)
    store = RunStore(root / "workspace")
    config = RunConfig(
        data=DataConfig(source=str(source), modality=modality),
        model=model,
        train=TrainConfig(mode="feature-extraction", epochs=epochs),
    )
    started = time.perf_counter()
    outcome = run_experiment(config, store=store)
    seconds = time.perf_counter() - started
    if outcome.status != "completed":
        return f"| {name} | failed: {outcome.error} | | | | |"
    accuracy = outcome.summary["test_accuracy"]
    reference = reference_accuracy(config, store, int(outcome.summary["image_size"]))
    best, run = outcome.summary["best_epoch"], outcome.summary["epochs_run"]
    return (
        f"| {name} | {accuracy:.3f} | {reference:.3f} | {accuracy - reference:+.3f} | {best} of {run} | {seconds:.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="head epochs (the issue's smallest budget: 5)")
    parser.add_argument("--quick", action="store_true", help="30 digits a class instead of 100 (a smoke run)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated demo datasets")
    args = parser.parse_args(argv)
    print("| dataset | head test acc | scikit-learn LR | gap | best epoch | seconds |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="head-convergence-") as folder:
        for demo in args.datasets.split(","):
            print(measure(demo, Path(folder), args.epochs, args.quick), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
