"""A 2-D map of a dataset's frozen features, with outliers marked: where each example sits among the others.

PCA first (to at most `PCA_DIMENSIONS` dimensions: t-SNE on 1,280-d features is slow and noisy), then t-SNE
(scikit-learn's `TSNE`, a well-kept implementation; UMAP would add a package for the same picture at this
size). Outliers are flagged by scikit-learn's `LocalOutlierFactor` on the same PCA features: an example far
from its nearest neighbours compared with how close they are to theirs (an odd photo, a wrong crop, a blank
frame), whatever its label. The label review's job computes the map beside the label issues, from the same
feature pass (tl_core/insight/review_job.py), so the page shows issues, outliers and clusters together.

Example:
    >>> xy, outliers = embedding_map(features, seed=42)  # (N, 2) floats in [0, 1], (N,) bools
"""

from __future__ import annotations

import numpy as np

PCA_DIMENSIONS = 50
MIN_EXAMPLES_FOR_TSNE = 10  # below this t-SNE has no neighbourhoods to keep: the map is the first two PCA axes
MAX_NEIGHBOURS = 20


def embedding_map(features: np.ndarray, *, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates (scaled to [0, 1] on each axis) and an outlier flag for each row of `features`.

    Args:
        features: (N, D) frozen features, N >= 2.
        seed: PCA's and t-SNE's random state, so the same data gives the same map.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.neighbors import LocalOutlierFactor

    features = np.asarray(features, dtype=np.float32)
    count = len(features)
    if count < 2:
        raise ValueError(f"An embedding map needs at least 2 examples, got {count}.")
    dimensions = max(1, min(PCA_DIMENSIONS, count - 1, features.shape[1]))
    reduced = PCA(n_components=dimensions, random_state=seed).fit_transform(features)
    if count < MIN_EXAMPLES_FOR_TSNE or dimensions < 2:
        xy = np.pad(reduced[:, :2], ((0, 0), (0, max(0, 2 - reduced.shape[1]))))
    else:
        perplexity = float(min(30.0, (count - 1) / 3))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)
    outliers = np.zeros(count, dtype=bool)
    if count > 2:
        neighbours = min(MAX_NEIGHBOURS, count - 1)
        outliers = LocalOutlierFactor(n_neighbors=neighbours).fit_predict(reduced) == -1
    return _unit_square(xy), outliers


def _unit_square(xy: np.ndarray) -> np.ndarray:
    """Each axis scaled to [0, 1]: t-SNE's units mean nothing, and the page then needs no axis ticks."""
    low, high = xy.min(axis=0), xy.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return ((xy - low) / span).astype(np.float32)
