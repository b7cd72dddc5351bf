"""Near-duplicates by embedding: pairs of examples whose frozen backbone features point the same way.

The scan's duplicate check (`tl_core.data.checks.remove_duplicates`) finds identical bytes only. A resized,
re-encoded or lightly cropped copy has other bytes but almost the same features, and it inflates results as much
when one copy lands in training and the other in the test split, or confuses training when the copies carry
different labels. So every pair of examples is compared by the cosine similarity of their features, after
subtracting the dataset's mean feature: pooled ReLU features are all positive, so raw cosines of unrelated images
reach 0.98 on the demo data, while centred ones measure how an example differs from the typical one.

`NEAR_DUPLICATE_SIMILARITY` (0.97, centred cosine) was measured with efficientnet_lite0 (ImageNet) at 64 px on the
synthetic shapes at 128 px: copies resized to 75-90% and re-saved score 0.998-0.999 against their original, while
the most similar distinct images (same class, same shape and colour) reach 0.95. A copy shrunk to half of a 64-px
image is no longer found (0.5-0.6): too little of it is left. It is a parameter: lower it to see more look-alikes.

Example:
    >>> pairs = find_near_duplicates(features, examples)
    >>> pairs[0].to_dict()["similarity"]
    0.991
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tl_core.data.types import Example

NEAR_DUPLICATE_SIMILARITY = 0.97
MAX_PAIRS = 200  # the most similar ones; more would bury the first in a list nobody reads
_ROWS_PER_BLOCK = 1024  # similarities are computed a block of rows at a time: 1024 x N floats, not N x N


@dataclass(frozen=True)
class NearDuplicate:
    """Two examples whose features are nearly the same; `first` sorts before `second` by relative path."""

    first: str  # relpath
    second: str
    first_label: str
    second_label: str
    similarity: float  # centred cosine similarity, 0-1 for near-duplicates

    @property
    def same_label(self) -> bool:
        return self.first_label == self.second_label

    def to_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "second": self.second,
            "first_label": self.first_label,
            "second_label": self.second_label,
            "similarity": self.similarity,
        }

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> NearDuplicate:
        return cls(**{name: fields[name] for name in ("first", "second", "first_label", "second_label", "similarity")})


def find_near_duplicates(
    features: np.ndarray,
    examples: Sequence[Example],
    *,
    threshold: float = NEAR_DUPLICATE_SIMILARITY,
    limit: int = MAX_PAIRS,
) -> list[NearDuplicate]:
    """Every pair of examples whose centred cosine similarity is at least `threshold`, most similar first.

    Args:
        features: float (N, feature_dim), row i the features of `examples[i]`.
        examples: the examples (their `relpath` and `label` name the pair).
        threshold: the smallest similarity reported.
        limit: at most this many pairs (the most similar).

    Returns:
        The pairs, most similar first; different-label pairs before same-label ones at equal similarity.
    """
    if len(examples) < 2:
        return []
    centred = np.asarray(features, np.float64)
    centred = centred - centred.mean(axis=0)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    unit = centred / np.where(norms > 0, norms, 1.0)
    found: list[tuple[float, int, int]] = []
    for start in range(0, len(unit), _ROWS_PER_BLOCK):
        block = unit[start : start + _ROWS_PER_BLOCK] @ unit.T
        rows, columns = np.nonzero(block >= threshold)
        for row, column in zip(rows.tolist(), columns.tolist()):
            i = start + row
            if i < column:  # each pair once, never an example with itself
                found.append((float(block[row, column]), i, column))
    pairs = [_pair(examples[i], examples[j], similarity) for similarity, i, j in found]
    pairs.sort(key=lambda p: (-p.similarity, p.same_label, p.first, p.second))
    return pairs[:limit]


def _pair(one: Example, other: Example, similarity: float) -> NearDuplicate:
    first, second = sorted((one, other), key=lambda e: e.relpath)
    return NearDuplicate(first.relpath, second.relpath, first.label, second.label, round(min(similarity, 1.0), 4))
