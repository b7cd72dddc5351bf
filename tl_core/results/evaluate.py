"""Metrics for a trained classifier: accuracy, top-k, per-class P/R/F1, confusion matrix, worst examples.

Works from predicted probabilities, so the same code serves the full model, the head on cached
features, and any future modality.

Example:
    >>> evaluation = evaluate_probabilities(probs, labels, ("cat", "dog"), items=["a.jpg", "b.jpg"])
    >>> evaluation.accuracy
    0.5
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

MAX_LISTED_EXAMPLES = 200
# Correct predictions kept per class: the least confident ones, which show where the model hesitates.
MAX_CORRECT_PER_CLASS = 12


@dataclass(frozen=True)
class ClassMetrics:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ExampleOutcome:
    """One evaluated example: `item` is its file (relative path) or text snippet."""

    item: str
    true_label: str
    predicted_label: str
    confidence: float
    loss: float


@dataclass
class Evaluation:
    split: str
    count: int
    accuracy: float
    top_k: int
    top_k_accuracy: float
    loss: float
    macro_f1: float
    class_names: list[str]
    per_class: list[ClassMetrics]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    misclassified: list[ExampleOutcome] = field(default_factory=list)
    highest_loss: list[ExampleOutcome] = field(default_factory=list)
    correct: list[ExampleOutcome] = field(default_factory=list)  # least confident correct ones, per class
    # Per example, in the split's order: "1" right, "0" wrong. Two runs with the same `examples_digest` were tested
    # on the same examples, so their outcomes pair up for McNemar's test (tl_core/runs/paired.py). Empty before Dec 2026.
    outcomes: str = ""
    examples_digest: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Evaluation:
        raw = dict(raw)
        raw["per_class"] = [ClassMetrics(**row) for row in raw["per_class"]]
        raw["misclassified"] = [ExampleOutcome(**row) for row in raw["misclassified"]]
        raw["highest_loss"] = [ExampleOutcome(**row) for row in raw["highest_loss"]]
        raw["correct"] = [ExampleOutcome(**row) for row in raw.get("correct", [])]  # absent before Nov 2026
        raw = {key: value for key, value in raw.items() if key in _FIELD_NAMES}  # fields of a newer version: ignored
        return cls(**raw)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Evaluation:
        return cls.from_dict(json.loads(path.read_text()))

    def examples_in_cell(self, true_label: str, predicted_label: str) -> list[ExampleOutcome]:
        """Listed examples in one confusion-matrix cell (for the Evaluate page).

        Off the diagonal: the misclassified ones, most confident first. On it: the least confident
        correct ones (up to `MAX_CORRECT_PER_CLASS`).
        """
        listed = self.correct if true_label == predicted_label else self.misclassified
        return [e for e in listed if e.true_label == true_label and e.predicted_label == predicted_label]

    def format_text(self) -> str:
        width = max(len(name) for name in self.class_names + ["class"])
        lines = [
            f"{self.split} split: {self.count} examples, accuracy {self.accuracy:.3f}, "
            f"top-{self.top_k} {self.top_k_accuracy:.3f}, loss {self.loss:.4f}, macro F1 {self.macro_f1:.3f}",
            f"{'class'.ljust(width)}  precision  recall     f1  support",
        ]
        for row in self.per_class:
            lines.append(
                f"{row.label.ljust(width)}  {row.precision:9.3f}  {row.recall:6.3f}  {row.f1:5.3f}  {row.support:7d}"
            )
        if self.misclassified:
            lines.append(f"misclassified ({len(self.misclassified)} listed):")
            for example in self.misclassified[:10]:
                lines.append(
                    f"  {example.item}: true {example.true_label}, predicted {example.predicted_label} ({example.confidence:.2f})"
                )
        return "\n".join(lines)


_FIELD_NAMES = {item.name for item in fields(Evaluation)}


def examples_digest(identities: list[str], labels: np.ndarray) -> str:
    """A fingerprint of which examples a split holds, in order, with their true labels (paths relative to the
    dataset, so the same data uploaded twice matches)."""
    digest = hashlib.sha256()
    for identity, label in zip(identities, np.asarray(labels).tolist(), strict=True):
        digest.update(f"{identity}\t{label}\n".encode())
    return digest.hexdigest()


def _safe_ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def evaluate_probabilities(
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    *,
    items: list[str] | None = None,
    identities: list[str] | None = None,
    split: str = "test",
    top_k: int = 3,
) -> Evaluation:
    """Compute every metric from an (N, C) probability matrix and the true labels.

    Args:
        probabilities: softmax outputs, one row per example.
        labels: true class indices.
        class_names: index -> label.
        items: one display name per example (file path); defaults to the row index.
        identities: what names each example within its dataset (its relative path) for `examples_digest`;
            defaults to `items`.
        split: which split these examples come from ("test" or "val").
        top_k: k for top-k accuracy (capped at the number of classes).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    class_names = list(class_names)
    num_classes = len(class_names)
    count = len(labels)
    items = items if items is not None else [str(i) for i in range(count)]
    top_k = max(1, min(top_k, num_classes))
    predicted = probabilities.argmax(axis=1) if count else np.zeros(0, np.int64)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_probability = probabilities[np.arange(count), labels] if count else np.zeros(0)
    losses = -np.log(np.clip(true_probability, 1e-12, 1.0))
    top_k_hits = (
        (np.argsort(-probabilities, axis=1)[:, :top_k] == labels[:, None]).any(axis=1) if count else np.zeros(0)
    )

    per_class = []
    for index, name in enumerate(class_names):
        true_positive = confusion[index, index]
        precision = _safe_ratio(true_positive, confusion[:, index].sum())
        recall = _safe_ratio(true_positive, confusion[index, :].sum())
        f1 = _safe_ratio(2 * precision * recall, precision + recall)
        per_class.append(ClassMetrics(name, precision, recall, f1, int(confusion[index, :].sum())))

    def outcome(i: int) -> ExampleOutcome:
        return ExampleOutcome(
            items[i],
            class_names[labels[i]],
            class_names[predicted[i]],
            float(probabilities[i, predicted[i]]),
            float(losses[i]),
        )

    wrong = [i for i in np.argsort(-probabilities[np.arange(count), predicted]) if predicted[i] != labels[i]]
    least_confident_first = np.argsort(probabilities[np.arange(count), predicted]) if count else np.zeros(0, np.int64)
    correct: list[int] = []
    for index in range(num_classes):
        right = [i for i in least_confident_first if labels[i] == index and predicted[i] == index]
        correct.extend(right[:MAX_CORRECT_PER_CLASS])
    return Evaluation(
        split=split,
        count=count,
        accuracy=_safe_ratio(int((predicted == labels).sum()), count),
        top_k=top_k,
        top_k_accuracy=_safe_ratio(int(top_k_hits.sum()), count),
        loss=float(losses.mean()) if count else 0.0,
        macro_f1=float(np.mean([row.f1 for row in per_class])) if per_class else 0.0,
        class_names=class_names,
        per_class=per_class,
        confusion=confusion.tolist(),
        misclassified=[outcome(i) for i in wrong[:MAX_LISTED_EXAMPLES]],
        highest_loss=[outcome(i) for i in np.argsort(-losses)[: min(20, count)]],
        correct=[outcome(i) for i in correct],
        outcomes="".join("1" if right else "0" for right in (predicted == labels).tolist()),
        examples_digest=examples_digest(identities if identities is not None else items, labels),
    )
