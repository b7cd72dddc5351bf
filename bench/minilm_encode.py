"""How long all-MiniLM-L6-v2 takes to encode 2,000 documents of 256 word pieces (issue 21: default if under a minute).

Runs the feature-extraction path a run uses (`tl_core.training.feature_cache.extract_features`, batch 64, two
streams) over generated English-like documents that each fill the 256 word pieces, and prints documents per
second. Run by hand: `.venv/bin/python -m bench.minilm_encode [COUNT]`.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bench import _common  # noqa: F401 - first: quiets TensorFlow start-up logging
from tl_core.models.registry import get_backbone_spec
from tl_core.models.text_backbones import build_text_backbone
from tl_core.training.feature_cache import extract_features

WORDS = "the market rose as investors weighed election results football scores and new film releases".split()


def main(count: int = 2000) -> None:
    rng = np.random.default_rng(0)
    documents = np.array([" ".join(rng.choice(WORDS, 300)) for _ in range(count)], dtype=object)
    backbone = build_text_backbone(get_backbone_spec("all_minilm_l6_v2"), "pretrained", 256)
    extract_features(backbone, documents[:64], batch_size=64)  # traces the graph, as a run's first batch does
    started = time.perf_counter()
    extract_features(backbone, documents, batch_size=64)
    spent = time.perf_counter() - started
    print(f"all-MiniLM-L6-v2: {count} documents x 256 word pieces in {spent:.1f} s ({count / spent:.1f} documents/s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
