"""Is one run really better than another? Accuracy with its 95% interval, and a paired test on the same test split.

A test split of 30 images moves accuracy by 3.3 points per image, so a leaderboard alone calls noise a win. Each
accuracy gets its Wilson score interval, and two runs tested on the same examples get McNemar's exact test: only
the examples where exactly one run is right carry information, and under "no difference" each such example is
a fair coin. Both come from scipy (`binomtest`), not hand-written formulas.

Example:
    >>> comparison = compare_pair(store, "run-a", "run-b")
    >>> comparison.verdict
    'No real difference: ...'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tl_core.layout import EVALUATION_FILE, SPLIT_FILE
from tl_core.runs.records import RunRecord
from tl_core.runs.store import RunStore

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class RunAccuracy:
    """One run's test accuracy as `correct` of `count` examples, with its 95% Wilson interval."""

    run_id: str
    name: str
    test_accuracy: float
    correct: int
    count: int
    interval: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "test_accuracy": self.test_accuracy,
            "correct": self.correct,
            "count": self.count,
            "interval": list(self.interval),
        }


@dataclass(frozen=True)
class PairedComparison:
    """Two runs' accuracies, whether they were tested on the same examples, and what McNemar's test says.

    Attributes:
        only_first_right / only_second_right: test examples exactly one of the two runs got right (the
            discordant pairs); None when the runs were not tested on the same examples.
        p_value: McNemar's exact two-sided p-value; None when no paired test could be made.
        comparable: False when the runs were tested on different data (the comparison is refused).
    """

    runs: tuple[RunAccuracy, RunAccuracy]
    same_test_split: bool
    p_value: float | None
    verdict: str
    comparable: bool
    only_first_right: int | None = None
    only_second_right: int | None = None

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < SIGNIFICANCE

    def to_dict(self) -> dict[str, Any]:
        """The `compare --json` contract: runs (run_id, test_accuracy, interval, ...), same_test_split, p_value, verdict."""
        return {
            "runs": [run.to_dict() for run in self.runs],
            "same_test_split": self.same_test_split,
            "p_value": self.p_value,
            "verdict": self.verdict,
            "only_first_right": self.only_first_right,
            "only_second_right": self.only_second_right,
        }


def wilson_interval(correct: int, count: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion (good at small counts and near 0 or 1, unlike the normal one)."""
    if count <= 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    interval = binomtest(correct, count).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(interval.low), float(interval.high))


def mcnemar_exact(only_first_right: int, only_second_right: int) -> float:
    """McNemar's exact two-sided p-value from the discordant counts (1.0 when the runs never disagree)."""
    disagreements = only_first_right + only_second_right
    if disagreements == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(only_first_right, disagreements, 0.5).pvalue)


def run_accuracy(store: RunStore, record: RunRecord) -> RunAccuracy | None:
    """The run's test accuracy with its interval, or None when it has no test evaluation."""
    evaluation = _evaluation(store, record)
    accuracy = record.metrics.get("test_accuracy")
    if not isinstance(accuracy, (int, float)):
        return None
    count = evaluation.get("count") if evaluation and evaluation.get("split") == "test" else None
    count = count if isinstance(count, int) else record.metrics.get("evaluation_count")
    if not isinstance(count, (int, float)) or count <= 0:
        return None
    correct = round(float(accuracy) * int(count))
    return RunAccuracy(
        record.id, record.name, float(accuracy), correct, int(count), wilson_interval(correct, int(count))
    )


def accuracy_label(run: RunAccuracy) -> str:
    """For people and tables: `93.3% (78.7-98.2%, 28 of 30)`."""
    low, high = run.interval
    return f"{100 * run.test_accuracy:.1f}% ({100 * low:.1f}-{100 * high:.1f}%, {run.correct} of {run.count})"


def compare_pair(store: RunStore, first_id: str, second_id: str) -> PairedComparison:
    """Compare two runs' test accuracy; refuse (comparable=False) when they were tested on different data.

    Raises:
        RunNotFoundError: a run id that is not in the store.
        TransferLabError: a run without a test accuracy (not finished, or no test split).
    """
    from tl_core.errors import TransferLabError

    records = (store.get(first_id), store.get(second_id))
    accuracies = []
    for record in records:
        accuracy = run_accuracy(store, record)
        if accuracy is None:
            raise TransferLabError(
                f"Run {record.id} ({record.status}) has no test accuracy to compare: only completed runs whose "
                "dataset has a test split have one."
            )
        accuracies.append(accuracy)
    runs = (accuracies[0], accuracies[1])
    evaluations = [_evaluation(store, record) or {} for record in records]
    different = _different_test_data(store, records, evaluations)
    if different:
        return PairedComparison(runs, False, None, f"Not comparable: {different}", comparable=False)
    outcomes = [str(evaluation.get("outcomes") or "") for evaluation in evaluations]
    if not all(len(outcome) == run.count for outcome, run in zip(outcomes, runs)):
        older = next(run for outcome, run in zip(outcomes, runs) if len(outcome) != run.count)
        verdict = (
            f"Both runs were tested on the same {runs[0].count} examples, but run {older.run_id} was evaluated before "
            "TransferLab kept each example's result, so no paired test can be made; the intervals above still apply."
        )
        return PairedComparison(runs, True, None, verdict, comparable=True)
    only_first = sum(a == "1" and b == "0" for a, b in zip(*outcomes))
    only_second = sum(a == "0" and b == "1" for a, b in zip(*outcomes))
    p_value = mcnemar_exact(only_first, only_second)
    verdict = _verdict(runs, only_first, only_second, p_value)
    return PairedComparison(runs, True, p_value, verdict, True, only_first, only_second)


def _verdict(runs: tuple[RunAccuracy, RunAccuracy], only_first: int, only_second: int, p_value: float) -> str:
    first, second = runs
    test = f"McNemar's exact test, p = {p_value:.3g}"
    if p_value < SIGNIFICANCE:
        better, worse = (first, second) if only_first > only_second else (second, first)
        wins, losses = max(only_first, only_second), min(only_first, only_second)
        return (
            f"The difference is real: {better.name} is better. It is right on {wins} test examples that "
            f"{worse.name} gets wrong, against {losses} the other way ({test}); chance alone rarely does that."
        )
    gap = abs(first.test_accuracy - second.test_accuracy) * 100
    return (
        f"No real difference: the runs disagree on {only_first + only_second} of {first.count} test examples "
        f"({only_first} for {first.name}, {only_second} for {second.name}; {test}). The gap of {gap:.1f} points "
        "is within what chance gives on this test split; more test data is needed to tell them apart."
    )


def _different_test_data(
    store: RunStore, records: tuple[RunRecord, RunRecord], evaluations: list[dict[str, Any]]
) -> str | None:
    """Why the two runs were not tested on the same examples, or None when they were."""
    first, second = records
    if first.dataset_fingerprint != second.dataset_fingerprint:
        return (
            f"{first.name} and {second.name} were trained and tested on different datasets (or different versions "
            "of one): compare runs of the same dataset."
        )
    digests = [str(evaluation.get("examples_digest") or "") for evaluation in evaluations]
    if all(digests):
        same = digests[0] == digests[1]
    else:  # evaluated before digests were kept: the split files list the test examples
        splits = [_test_examples(store, record) for record in records]
        same = splits[0] is not None and splits[0] == splits[1]
    if not same:
        return (
            f"{first.name} and {second.name} were tested on different examples of the same dataset (another split "
            "seed or split fractions): compare runs made with the same split."
        )
    return None


def _evaluation(store: RunStore, record: RunRecord) -> dict[str, Any] | None:
    path = store.run_dir(record.id) / EVALUATION_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _test_examples(store: RunStore, record: RunRecord) -> list[str] | None:
    try:
        return json.loads((store.run_dir(record.id) / SPLIT_FILE).read_text()).get("test")
    except (OSError, ValueError, AttributeError):
        return None
