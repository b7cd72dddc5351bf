"""The embedding map: clusters stay apart on the 2-D map, an odd example is flagged, and the result round-trips."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from tl_core.insight.embedding_map import embedding_map
from tl_core.insight.review_result import MapPoint, ReviewIssue, ReviewResult
from ui.embedding_map import map_chart, map_frame


def blobs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three classes, 40 points each, around far-apart centres in 300 dimensions; one extra point far from all."""
    centres = rng.normal(0, 10, size=(3, 300))
    labels = np.repeat(np.arange(3), 40)
    features = centres[labels] + rng.normal(0, 1, size=(120, 300))
    odd = rng.normal(0, 1, size=(1, 300)) + 60  # nowhere near any class
    return np.vstack([features, odd]).astype(np.float32), np.append(labels, -1)


def test_classes_stay_apart_on_the_map_and_the_odd_example_is_an_outlier() -> None:
    features, labels = blobs(np.random.default_rng(0))

    xy, outliers = embedding_map(features, seed=0)

    assert xy.shape == (121, 2) and xy.min() >= 0 and xy.max() <= 1
    known = labels >= 0
    # Neighbours on the map share the class: a 5-NN on the 2-D points, scored leave-one-out style on halves.
    knn = KNeighborsClassifier(5).fit(xy[known][::2], labels[known][::2])
    assert knn.score(xy[known][1::2], labels[known][1::2]) >= 0.95
    assert outliers[-1], "the example far from every class must be flagged"
    assert outliers[known].mean() < 0.1  # ordinary members of a cluster are not
    again, _ = embedding_map(features, seed=0)
    np.testing.assert_allclose(again, xy, atol=1e-5)  # the same data gives the same map


def test_tiny_datasets_get_a_pca_map() -> None:
    xy, outliers = embedding_map(np.random.default_rng(1).normal(size=(4, 8)), seed=0)
    assert xy.shape == (4, 2) and outliers.shape == (4,)


def test_the_map_survives_the_job_record_and_marks_issues_and_outliers() -> None:
    points = (
        MapPoint("a/1.png", "/d/a/1.png", "a", 0.1, 0.2, False),
        MapPoint("a/2.png", "/d/a/2.png", "a", 0.9, 0.8, True),
        MapPoint("b/<b>3</b>.png", "/d/b/3.png", "b", 0.5, 0.5, False),
    )
    issue = ReviewIssue("b/<b>3</b>.png", "/d/b/3.png", "b", "a", 0.01)
    result = ReviewResult(3, 2, ("a", "b"), (issue,), (), 0.97, paths={}, points=points)

    restored = ReviewResult.from_dict(result.to_dict())

    assert restored == result
    frame = map_frame(restored)
    assert list(frame["flag"]) == ["", "outlier", "likely label error"]
    spec = map_chart(frame).to_dict()
    assert spec["mark"]["type"] == "point" and spec["params"][0]["name"] == "point"
    assert ReviewResult.from_dict({**result.to_dict(), "points": None}).points == ()  # a review from before the map
