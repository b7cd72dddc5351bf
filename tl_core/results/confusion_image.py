"""A confusion matrix as a PNG image, for tools that show pictures rather than our Evaluate page (MLflow).

Example:
    >>> write_confusion_matrix_png(Evaluation.load(run_dir / EVALUATION_FILE), out_dir / "confusion_matrix.png")
"""

from __future__ import annotations

from pathlib import Path

from tl_core.results.evaluate import Evaluation

MAX_ANNOTATED_CLASSES = 25  # beyond this the counts overlap; the colours still show the pattern


def write_confusion_matrix_png(evaluation: Evaluation, path: Path) -> Path:
    """Draw `evaluation`'s confusion matrix (rows: true class, columns: predicted) with its counts into `path`.

    Args:
        evaluation: a run's evaluation (`evaluation.json`).
        path: the PNG file to write.

    Returns:
        `path`.
    """
    # Imported here: only a run logging to MLflow draws, and importing matplotlib takes ~0.8 s.
    # `Figure` without pyplot: no global state, safe in a worker thread.
    from matplotlib.figure import Figure

    names = evaluation.class_names
    side = min(4 + 0.45 * len(names), 30)
    figure = Figure(figsize=(side, side * 0.9), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(evaluation.confusion, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xticks(range(len(names)), names, rotation=90)
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"{evaluation.split} split: {evaluation.count} examples, accuracy {evaluation.accuracy:.3f}")
    if len(names) <= MAX_ANNOTATED_CLASSES:
        largest = max((max(row) for row in evaluation.confusion), default=0)
        for true_index, row in enumerate(evaluation.confusion):
            for predicted_index, count in enumerate(row):
                colour = "white" if count > largest / 2 else "black"
                axes.text(predicted_index, true_index, str(count), ha="center", va="center", color=colour)
    figure.savefig(path, format="png", dpi=100)
    return path
