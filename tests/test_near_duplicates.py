"""Near-duplicates by embedding (`tl_core.insight.near_duplicates`): a resized copy is found beside its original,
distinct images of one class are not."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tl_core.config import DataConfig, ModelConfig  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.data.types import Example  # noqa: E402
from tl_core.insight.label_issues import dataset_features  # noqa: E402
from tl_core.insight.near_duplicates import find_near_duplicates  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402


def test_resized_copies_are_found_with_their_labels(tmp_path: Path) -> None:
    root = make_shapes_dataset(tmp_path / "shapes", num_classes=3, images_per_class=12, image_size=128, seed=2)
    classes = sorted(p.name for p in root.iterdir())
    same = sorted((root / classes[0]).iterdir())[3]
    Image.open(same).resize((96, 96)).save(root / classes[0] / "copy_same.png")
    other = sorted((root / classes[1]).iterdir())[5]
    Image.open(other).resize((112, 112)).save(root / classes[2] / "copy_other.png")  # a copy filed under another class
    found = dataset_features(
        DataConfig(str(root), modality="image"), ModelConfig("efficientnet_lite0", "imagenet", 64), RunStore(tmp_path)
    )
    pairs = find_near_duplicates(found.features, found.examples)
    named = {(pair.first, pair.second): pair for pair in pairs}
    assert set(named) == {
        (same.relative_to(root).as_posix(), f"{classes[0]}/copy_same.png"),
        (other.relative_to(root).as_posix(), f"{classes[2]}/copy_other.png"),
    }
    assert pairs[0].similarity >= pairs[-1].similarity >= 0.97
    assert not named[(other.relative_to(root).as_posix(), f"{classes[2]}/copy_other.png")].same_label


def test_pairs_come_once_most_similar_first_and_respect_the_limit() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 16))
    features[3] = features[0] + rng.normal(scale=0.01, size=16)
    features[5] = features[1] + rng.normal(scale=0.05, size=16)
    examples = [Example(f"/d/{i}.png", f"{'ab'[i % 2]}/{i}.png", "ab"[i % 2], f"h{i}", None, 8, 8) for i in range(6)]
    pairs = find_near_duplicates(features, examples, threshold=0.9)
    assert [(p.first, p.second) for p in pairs] == [("a/0.png", "b/3.png"), ("b/1.png", "b/5.png")]
    assert not pairs[0].same_label and pairs[1].same_label
    assert len(find_near_duplicates(features, examples, threshold=0.9, limit=1)) == 1
    assert find_near_duplicates(features[:1], examples[:1]) == []
