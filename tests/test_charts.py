"""Chart helpers: phase boundaries are ruled and labelled with the phase and the blocks open in it."""

from __future__ import annotations

import pandas as pd

from tl_core.runs.records import EpochRecord, PhaseRecord
from ui.charts import PhaseMark, curve_chart, epochs_to_curves, phase_label
from ui.training import best_phase_sentence, phase_starts


def _layer_data(chart, mark: str) -> list[pd.DataFrame]:
    spec = chart.to_dict()
    return [
        pd.DataFrame(spec["datasets"][layer["data"]["name"]])
        for layer in spec["layer"]
        if layer["mark"]["type"] == mark
    ]


def test_phase_labels_name_the_open_blocks() -> None:
    assert phase_label("head") == "train the head" and phase_label("full") == "full fine-tune"
    assert phase_label("stage-2", ("block6", "block7")) == "stage-2: block6, block7"
    assert (
        phase_label("stage-5", ("block3", "block4", "block5", "block6", "block7"))
        == "stage-5: block3 … block7 (5 blocks)"
    )


def test_each_later_phase_gets_a_rule_and_a_label_that_do_not_overlap() -> None:
    curves = epochs_to_curves(
        [(epoch, {"loss": 1.0 / epoch, "val_loss": 1.2 / epoch}) for epoch in range(1, 6)], "loss"
    )
    marks = [PhaseMark("head", 1), PhaseMark("stage-1", 3, ("block7",)), PhaseMark("stage-2", 4, ("block6", "block7"))]
    chart = curve_chart(curves, "loss", marks)
    rules = _layer_data(chart, "rule")
    assert len(rules) == 1 and list(rules[0]["epoch"]) == [3, 4]
    texts = chart.to_dict()["layer"][3:]
    assert [layer["mark"]["type"] for layer in texts] == ["text", "text"]
    assert texts[0]["mark"]["y"] != texts[1]["mark"]["y"], "neighbouring labels sit at different heights"
    labels = pd.DataFrame(chart.to_dict()["datasets"][texts[0]["data"]["name"]])
    assert list(labels["label"]) == ["stage-1: block7", "stage-2: block6, block7"]
    assert len(curve_chart(curves, "loss", marks[:1]).to_dict()["layer"]) == 2, "a single phase needs no rule"


def test_phase_starts_take_the_blocks_from_the_store_and_fill_in_older_runs() -> None:
    def epoch(number: int, phase: str) -> EpochRecord:
        return EpochRecord("r", phase, number, 1, {"val_loss": 1.0}, 1e-3, 1.0, number == 3)

    epochs = [epoch(1, "head"), epoch(2, "head"), epoch(3, "stage-1"), epoch(4, "stage-2")]
    stored = [PhaseRecord("r", "head", 1, 2, 1e-3, "", ()), PhaseRecord("r", "stage-1", 3, 1, 1e-4, "", ("block7",))]
    assert phase_starts(epochs, None, stored) == [
        PhaseMark("head", 1),
        PhaseMark("stage-1", 3, ("block7",)),
        PhaseMark("stage-2", 4),  # stage-2 only from its epochs
    ]
    assert phase_starts(epochs, None) == [PhaseMark("head", 1), PhaseMark("stage-1", 3), PhaseMark("stage-2", 4)]
    marks = phase_starts(epochs, None, stored)
    assert best_phase_sentence("stage-1", marks) == "Best model found at stage-1: blocks block7 open."
    assert best_phase_sentence("full", [PhaseMark("full", 2)]) == "Best model found in the full fine-tune phase."
    assert best_phase_sentence("head", marks) is None and best_phase_sentence(None, marks) is None
