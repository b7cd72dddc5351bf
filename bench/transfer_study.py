"""Transfer study: test accuracy and time of each mode, on a dataset close to ImageNet photos and one far from it.

    python bench/transfer_study.py [--backbone efficientnet_lite0] [--image-size 96] [--images-per-class 40]

Rows: feature extraction, fine-tune, progressive and full training from scratch with the offline
pretrained backbone, plus feature extraction on the same architecture with random weights (does
pretraining matter?). Everything runs in one fresh workspace so the modes share decoded images.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.demo import DEMO_DATASETS, write_demo_dataset  # noqa: E402
from tl_core.data.prep import prepare_dataset
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.runner import run_experiment, scratch_baseline_config


@dataclass(frozen=True)
class Row:
    dataset: str
    recipe: str
    test_accuracy: float | None
    seconds: float
    epochs: int
    note: str


def recipes(
    backbone: str, image_size: int, epochs: int, fine_tune_epochs: int
) -> dict[str, tuple[ModelConfig, TrainConfig]]:
    pretrained = ModelConfig(backbone=backbone, weights="imagenet", image_size=image_size)
    random_init = ModelConfig(backbone=backbone, weights="none", image_size=image_size)
    return {
        "feature extraction": (pretrained, TrainConfig(mode="feature-extraction", epochs=epochs)),
        "fine-tune (top 20 layers)": (
            pretrained,
            TrainConfig(mode="fine-tune", epochs=epochs, fine_tune_epochs=fine_tune_epochs),
        ),
        "progressive (block by block)": (
            pretrained,
            TrainConfig(mode="progressive", epochs=epochs, stage_epochs=2, max_stages=4),
        ),
        "feature extraction, random weights": (random_init, TrainConfig(mode="feature-extraction", epochs=epochs)),
    }


def study(dataset_name: str, root: Path, store: RunStore, args: argparse.Namespace) -> list[Row]:
    rows = []
    prepared = None
    for recipe, (model_config, train_config) in recipes(
        args.backbone, args.image_size, args.epochs, args.fine_tune_epochs
    ).items():
        config = RunConfig(
            data=DataConfig(source=str(root)), model=model_config, train=train_config, name=f"{dataset_name}: {recipe}"
        )
        prepared = prepared or prepare_dataset(config.data, store)
        started = time.perf_counter()
        outcome = run_experiment(config, store=store, prepared=prepared)
        rows.append(
            Row(
                dataset_name,
                recipe,
                outcome.summary["test_accuracy"],
                time.perf_counter() - started,
                outcome.summary["epochs_run"],
                outcome.summary.get("best_phase") or "",
            )
        )
        print(_format_row(rows[-1]), flush=True)
    # Scratch: same architecture, random weights, all layers training, same epoch budget as fine-tune.
    scratch = scratch_baseline_config(
        RunConfig(
            data=DataConfig(source=str(root)),
            model=ModelConfig(backbone=args.backbone, weights="imagenet", image_size=args.image_size),
            train=TrainConfig(mode="fine-tune", epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs),
        )
    )
    started = time.perf_counter()
    outcome = run_experiment(scratch, store=store, prepared=prepared)
    rows.append(
        Row(
            dataset_name,
            "scratch (all layers, random init)",
            outcome.summary["test_accuracy"],
            time.perf_counter() - started,
            outcome.summary["epochs_run"],
            "",
        )
    )
    print(_format_row(rows[-1]), flush=True)
    return rows


def _format_row(row: Row) -> str:
    accuracy = "n/a" if row.test_accuracy is None else f"{row.test_accuracy:.3f}"
    return f"| {row.dataset} | {row.recipe} | {accuracy} | {row.seconds:.1f} | {row.epochs} | {row.note} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--images-per-class", type=int, default=40, help="per class, for each demo dataset")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--datasets", nargs="+", default=["textures", "digits"], choices=sorted(DEMO_DATASETS))
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="transfer-study-"))
    store = RunStore(workdir / "workspace")
    print(f"backbone {args.backbone} @ {args.image_size}px, {args.epochs} head epochs, workspace {workdir}")
    print("| dataset | recipe | test accuracy | seconds | epochs | best phase |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name in args.datasets:
        demo = DEMO_DATASETS[name]
        count = min(args.images_per_class, demo.images_per_class)
        root = write_demo_dataset(workdir / "data" / name, name, images_per_class=count)
        label = f"{name} ({'close to' if demo.close_to_imagenet else 'far from'} ImageNet, {count}/class)"
        rows.extend(study(label, root, store, args))
    by_dataset: dict[str, dict[str, Row]] = {}
    for row in rows:
        by_dataset.setdefault(row.dataset, {})[row.recipe] = row
    for dataset, table in by_dataset.items():
        pretrained, random_init = table["feature extraction"], table["feature extraction, random weights"]
        if pretrained.test_accuracy is not None and random_init.test_accuracy is not None:
            print(
                f"{dataset}: pretrained features {pretrained.test_accuracy:.3f} vs random features {random_init.test_accuracy:.3f} "
                f"(+{pretrained.test_accuracy - random_init.test_accuracy:.3f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
