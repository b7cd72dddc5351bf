"""Comparisons you can trust (issue 23, item 4): Wilson intervals, McNemar's exact test on a shared test split,
a refusal for runs tested on different data, and the `compare` CLI contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tl_core.cli.main import main
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.synthetic import make_shapes_dataset
from tl_core.layout import EVALUATION_FILE
from tl_core.results.evaluate import evaluate_probabilities
from tl_core.runs.paired import compare_pair, mcnemar_exact, run_accuracy, wilson_interval
from tl_core.runs.store import RunStore
from tl_core.training.runner import run_experiment


def wilson_by_formula(correct: int, count: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = correct / count
    centre = (p + z * z / (2 * count)) / (1 + z * z / count)
    half = z / (1 + z * z / count) * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count))
    return centre - half, centre + half


@pytest.mark.parametrize(("correct", "count"), [(28, 30), (29, 30), (30, 30), (0, 12), (450, 600)])
def test_wilson_interval_matches_the_formula(correct: int, count: int) -> None:
    assert wilson_interval(correct, count) == pytest.approx(wilson_by_formula(correct, count), abs=1e-9)


def test_mcnemar_exact_is_a_two_sided_binomial_test_on_the_disagreements() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(1, 0) == 1.0  # the analyst's case: one image of 30
    assert mcnemar_exact(10, 0) == pytest.approx(2 * 0.5**10)
    assert mcnemar_exact(3, 7) == pytest.approx(mcnemar_exact(7, 3)) == pytest.approx(0.34375)


def fake_run(store: RunStore, name: str, right: list[bool], *, fingerprint: str = "faces", order=None) -> str:
    """A completed run whose test evaluation gets exactly `right` of its examples right."""
    count = len(right)
    labels = np.arange(count) % 2
    predicted = np.where(right, labels, 1 - labels)
    probabilities = np.eye(2)[predicted] * 0.8 + 0.1
    items = order or [f"img-{i}.png" for i in range(count)]
    evaluation = evaluate_probabilities(probabilities, labels, ("a", "b"), items=items)
    record = store.create_run(
        config={}, backbone=name, weights="imagenet", mode="feature-extraction", name=name,
        dataset_fingerprint=fingerprint,
    )  # fmt: skip
    store.finish_run(record.id, "completed", metrics={"test_accuracy": evaluation.accuracy})
    evaluation.save(store.run_dir(record.id) / EVALUATION_FILE)
    return record.id


def test_one_image_of_thirty_is_called_noise(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    first = fake_run(store, "lite0", [True] * 28 + [False] * 2)
    second = fake_run(store, "lite1", [True] * 29 + [False])
    comparison = compare_pair(store, first, second)
    assert comparison.same_test_split and comparison.comparable
    assert (comparison.only_first_right, comparison.only_second_right) == (0, 1)
    assert comparison.p_value == 1.0 and not comparison.significant
    assert comparison.verdict.startswith("No real difference")
    assert comparison.runs[0].interval == pytest.approx(wilson_by_formula(28, 30))


def test_a_consistent_gap_is_called_real(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    weak = fake_run(store, "weak", [True] * 20 + [False] * 20)
    strong = fake_run(store, "strong", [True] * 38 + [False] * 2)
    comparison = compare_pair(store, weak, strong)
    assert (comparison.only_first_right, comparison.only_second_right) == (0, 18)
    assert comparison.p_value == pytest.approx(2 * 0.5**18)
    assert comparison.verdict.startswith("The difference is real: strong is better")


def test_runs_on_different_datasets_or_splits_are_refused(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    faces = fake_run(store, "faces run", [True] * 10)
    textures = fake_run(store, "textures run", [True] * 10, fingerprint="textures")
    reshuffled = fake_run(store, "other split", [True] * 10, order=[f"img-{i}.png" for i in range(10, 20)])
    for other, reason in ((textures, "different datasets"), (reshuffled, "different examples")):
        comparison = compare_pair(store, faces, other)
        assert not comparison.comparable and not comparison.same_test_split and comparison.p_value is None
        assert comparison.verdict.startswith("Not comparable") and reason in comparison.verdict


def train(source: Path, workspace: Path, learning_rate: float, name: str) -> str:
    config = RunConfig(
        data=DataConfig(source=str(source)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(epochs=2, batch_size=16, learning_rate=learning_rate),
        name=name,
    )
    outcome = run_experiment(config, store=RunStore(workspace))
    assert outcome.status == "completed"
    return outcome.run_id


def test_compare_cli_on_real_runs(shapes_dataset: Path, tmp_path: Path, capsys) -> None:
    workspace = tmp_path / "workspace"
    other_data = make_shapes_dataset(tmp_path / "other", num_classes=2, images_per_class=20, image_size=40, seed=5)
    first = train(shapes_dataset, workspace, 1e-3, "first")
    second = train(shapes_dataset, workspace, 3e-3, "second")
    elsewhere = train(other_data, workspace, 1e-3, "elsewhere")

    assert main(["compare", first, second, "--workspace", str(workspace), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["same_test_split"] is True and set(result) >= {"runs", "p_value", "verdict"}
    store = RunStore(workspace)
    evaluations = [json.loads((store.run_dir(run) / EVALUATION_FILE).read_text()) for run in (first, second)]
    outcomes = [evaluation["outcomes"] for evaluation in evaluations]
    only_first = sum(a > b for a, b in zip(*outcomes))
    only_second = sum(a < b for a, b in zip(*outcomes))
    assert result["p_value"] == pytest.approx(mcnemar_exact(only_first, only_second))
    for shown, run, evaluation in zip(result["runs"], (first, second), evaluations):
        assert shown["run_id"] == run and shown["test_accuracy"] == pytest.approx(evaluation["accuracy"])
        low, high = shown["interval"]
        assert low <= shown["test_accuracy"] <= high
        assert run_accuracy(store, store.get(run)).count == evaluation["count"] == len(evaluation["outcomes"])

    assert main(["compare", first, elsewhere, "--workspace", str(workspace), "--json"]) == 2
    captured = capsys.readouterr()
    refused = json.loads(captured.out.strip().splitlines()[-1])
    assert refused["same_test_split"] is False and refused["p_value"] is None
    assert captured.err.count("\n") == 1 and "different datasets" in captured.err

    assert main(["compare", first, second, "--workspace", str(workspace)]) == 0
    text = capsys.readouterr().out
    assert f"{first}  first: test accuracy" in text and "McNemar" in text
