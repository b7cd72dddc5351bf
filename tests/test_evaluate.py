import numpy as np
import pytest

from tl_core.results.evaluate import Evaluation, evaluate_probabilities


def test_metrics_match_hand_computed_values(tmp_path):
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    labels = np.array([0, 1, 1, 2, 2])
    evaluation = evaluate_probabilities(
        probabilities, labels, ("a", "b", "c"), items=[f"f{i}.png" for i in range(5)], top_k=2
    )
    assert evaluation.accuracy == pytest.approx(3 / 5)
    assert evaluation.top_k_accuracy == pytest.approx(5 / 5)
    assert evaluation.confusion == [[1, 0, 0], [1, 1, 0], [1, 0, 1]]
    by_label = {row.label: row for row in evaluation.per_class}
    assert by_label["a"].precision == pytest.approx(1 / 3) and by_label["a"].recall == 1.0
    assert by_label["b"].precision == 1.0 and by_label["b"].recall == pytest.approx(0.5)
    assert by_label["c"].f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert [e.item for e in evaluation.misclassified] == ["f2.png", "f4.png"]  # most confident mistake first
    assert evaluation.highest_loss[0].item == "f2.png"  # lowest probability on the true class (0.3)
    assert evaluation.examples_in_cell("b", "a")[0].item == "f2.png"
    assert [e.item for e in evaluation.examples_in_cell("c", "c")] == ["f3.png"]
    assert [e.item for e in evaluation.correct] == ["f0.png", "f1.png", "f3.png"]
    evaluation.save(tmp_path / "e.json")
    assert Evaluation.load(tmp_path / "e.json") == evaluation
    assert "accuracy 0.600" in evaluation.format_text()


def test_diagonal_cells_list_the_least_confident_correct_examples():
    confidences = np.linspace(0.55, 0.95, 20)
    probabilities = np.stack([confidences, 1 - confidences], axis=1)
    evaluation = evaluate_probabilities(
        probabilities, np.zeros(20, np.int64), ("a", "b"), items=[f"f{i}" for i in range(20)]
    )
    listed = evaluation.examples_in_cell("a", "a")
    assert [e.item for e in listed] == [f"f{i}" for i in range(12)]  # capped, least confident first
    assert evaluation.examples_in_cell("b", "b") == []


def test_an_evaluation_saved_before_correct_examples_existed_still_loads(tmp_path):
    evaluation = evaluate_probabilities(np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([0, 1]), ("a", "b"))
    raw = evaluation.to_dict()
    del raw["correct"]
    assert Evaluation.from_dict(raw).correct == []
