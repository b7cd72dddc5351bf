"""Altair charts shared by the pages; each function takes plain data and returns a chart.

Colours stay the same across pages: training is blue, validation is orange. Class and run names come from
users: every chart shows them through `safe_label`, so a bidi control cannot reverse an axis label or tooltip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import altair as alt
import pandas as pd

from ui.text import safe_label

SPLIT_COLOURS = alt.Scale(domain=["training", "validation"], range=["#2563eb", "#f97316"])
PHASE_LABELS = {"head": "train the head", "fine-tune": "fine-tune", "full": "full fine-tune"}
MAX_BLOCKS_NAMED = 3  # deeper progressive stages name the first and last open block and count the rest


@dataclass(frozen=True)
class PhaseMark:
    """Where a phase begins on the epoch axis and, for a progressive stage, which backbone blocks train in it."""

    phase: str
    first_epoch: int
    open_blocks: tuple[str, ...] = ()


def phase_label(phase: str, open_blocks: Sequence[str] = ()) -> str:
    """`full fine-tune`, `stage-2: block6, block7`, `stage-5: block3 … block7 (5 blocks)`."""
    label = PHASE_LABELS.get(phase, phase)
    if not open_blocks:
        return label
    if len(open_blocks) <= MAX_BLOCKS_NAMED:
        return f"{label}: {', '.join(open_blocks)}"
    return f"{label}: {open_blocks[0]} … {open_blocks[-1]} ({len(open_blocks)} blocks)"


def class_counts_chart(class_counts: Mapping[str, int]) -> alt.Chart:
    """Horizontal bars, one per class, largest first, with the count at the end of each bar."""
    frame = pd.DataFrame({"class": [safe_label(name) for name in class_counts], "images": list(class_counts.values())})
    base = alt.Chart(frame).encode(
        y=alt.Y("class:N", sort="-x", title=None, axis=alt.Axis(labelLimit=220)),
        x=alt.X("images:Q", title="images", axis=alt.Axis(tickMinStep=1, format="d")),
        tooltip=["class:N", "images:Q"],
    )
    bars = base.mark_bar(color="#2563eb", cornerRadiusEnd=3)
    labels = base.mark_text(align="left", dx=4, color="#374151").encode(text="images:Q")
    return (bars + labels).properties(height=alt.Step(28))  # a fixed band per class: readable for 2 or 200 classes


def epochs_to_curves(epoch_metrics: Sequence[tuple[int, Mapping[str, float]]], metric: str) -> pd.DataFrame:
    """Long frame (epoch, split, value) of `metric` (training) and `val_<metric>` (validation)."""
    rows = []
    for epoch, metrics in epoch_metrics:
        for split, key in (("training", metric), ("validation", f"val_{metric}")):
            value = metrics.get(key)
            if isinstance(value, (int, float)):
                rows.append((epoch, split, float(value)))
    return pd.DataFrame(rows, columns=["epoch", "split", "value"])


def curve_chart(
    curves: pd.DataFrame,
    title: str,
    phase_starts: Sequence[PhaseMark] = (),
    *,
    percent: bool = False,
    max_epoch: int | None = None,
) -> alt.LayerChart:
    """Training vs validation curve over epochs, with a dashed rule where each later phase begins.

    Args:
        curves: columns epoch, split, value (from `epochs_to_curves`).
        title: chart title (a metric name; never user text).
        phase_starts: every phase in order; each later one gets a rule labelled with its name and open blocks.
        percent: format the y axis as a percentage (accuracy).
        max_epoch: fix the x axis to the planned number of epochs so the curve grows into it.
    """
    upper = max(int(curves["epoch"].max()) if len(curves) else 1, max_epoch or 1)
    x = alt.X(
        "epoch:Q", title="epoch", scale=alt.Scale(domain=[1, max(upper, 2)]), axis=alt.Axis(tickMinStep=1, format="d")
    )
    y = alt.Y(
        "value:Q", title=None, axis=alt.Axis(format=".0%" if percent else "~g"), scale=alt.Scale(zero=False, padding=10)
    )
    colour = alt.Color("split:N", scale=SPLIT_COLOURS, legend=alt.Legend(title=None, orient="bottom"))
    tooltip = [
        alt.Tooltip("epoch:Q"),
        alt.Tooltip("split:N"),
        alt.Tooltip("value:Q", format=".1%" if percent else ".4f"),
    ]
    base = alt.Chart(curves).encode(x=x, y=y, color=colour, tooltip=tooltip)
    layers: list[alt.Chart] = [base.mark_line(strokeWidth=2.5), base.mark_point(filled=True, size=45)]
    # Labels alternate between two heights (pixels from the top) so labels of short neighbouring stages do not overlap.
    later_phases = pd.DataFrame(
        [
            (mark.first_epoch, phase_label(mark.phase, mark.open_blocks), 4 + 16 * (index % 2))
            for index, mark in enumerate(list(phase_starts)[1:])
        ],
        columns=["epoch", "label", "row"],
    )
    if len(later_phases):
        rule = alt.Chart(later_phases).encode(x=alt.X("epoch:Q"))
        layers.append(rule.mark_rule(color="#6b7280", strokeDash=[5, 4], strokeWidth=1.5))
        for row in sorted(set(later_phases["row"])):
            labels = (
                alt.Chart(later_phases)
                .transform_filter(alt.datum.row == row)
                .encode(x=alt.X("epoch:Q"), text="label:N")
            )
            layers.append(
                labels.mark_text(align="left", baseline="top", dx=5, y=int(row), color="#374151", fontWeight="bold")
            )
    return alt.layer(*layers).properties(title=title, height=300)


def overlay_chart(frame: pd.DataFrame, metric: str, *, percent: bool) -> alt.Chart:
    """One line per run for `metric` (frame from `run_comparison.epochs_frame`)."""
    data = frame[frame["metric"] == metric].assign(run_name=lambda rows: rows["run_name"].map(safe_label))
    return (
        alt.Chart(data)
        .mark_line(point=True, strokeWidth=2)
        .encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y(
                "value:Q", title=metric, axis=alt.Axis(format=".0%" if percent else "~g"), scale=alt.Scale(zero=False)
            ),
            color=alt.Color("run_name:N", title="run", legend=alt.Legend(orient="bottom", columns=2, labelLimit=320)),
            tooltip=["run_name:N", "phase:N", "epoch:Q", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(height=300, title=metric)
    )


CELL_SELECTION = "cell"  # the confusion matrix's click selection: fields true_index and predicted_index


def confusion_chart(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], *, clickable: bool = False
) -> alt.LayerChart:
    """Heatmap of counts (rows true, columns predicted), shaded by the share of each true class.

    `clickable`: a click selects one cell (selection `CELL_SELECTION`, by class indices: names shown through
    `safe_label` need not be unique), for `st.altair_chart(..., on_select="rerun")`.
    """
    rows = []
    for true_index, row in enumerate(confusion):
        total = sum(row) or 1
        for predicted_index, count in enumerate(row):
            rows.append(
                (
                    safe_label(class_names[true_index]),
                    safe_label(class_names[predicted_index]),
                    int(count),
                    count / total,
                    true_index,
                    predicted_index,
                )
            )
    frame = pd.DataFrame(rows, columns=["true", "predicted", "count", "share", "true_index", "predicted_index"])
    order = [safe_label(name) for name in class_names]
    cell = max(26, min(72, 600 // max(1, len(order))))  # square cells that fit ~600 px, readable up to ~20 classes
    base = alt.Chart(frame).encode(
        x=alt.X(
            "predicted:N",
            sort=order,
            title="predicted",
            axis=alt.Axis(labelAngle=-45, labelLimit=140, labelOverlap=False),
        ),
        y=alt.Y("true:N", sort=order, title="true", axis=alt.Axis(labelLimit=140)),
    )
    cells = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color(
            "share:Q",
            scale=alt.Scale(scheme="blues", domain=[0, 1]),
            legend=alt.Legend(title="share of row", format=".0%"),
        ),
        tooltip=["true:N", "predicted:N", "count:Q", alt.Tooltip("share:Q", format=".0%")],
    )
    if clickable:
        picked = alt.selection_point(name=CELL_SELECTION, fields=["true_index", "predicted_index"], on="click")
        cells = cells.add_params(picked).encode(
            strokeWidth=alt.condition(picked, alt.value(3), alt.value(1)),
            stroke=alt.condition(picked, alt.value("#f59e0b"), alt.value("white")),
        )
    text = base.mark_text(fontSize=12).encode(
        text="count:Q",
        color=alt.condition("datum.share > 0.55", alt.value("white"), alt.value("#111827")),
    )
    return (cells + text).properties(width=alt.Step(cell), height=alt.Step(cell))


def probability_bars(predictions: Sequence[tuple[str, float]], *, height_per_bar: int = 26) -> alt.LayerChart:
    """Top-k predictions as horizontal bars, best first, labelled with the probability."""
    frame = pd.DataFrame(
        [(safe_label(label), probability) for label, probability in predictions], columns=["label", "probability"]
    )
    frame["rank"] = range(len(frame))
    base = alt.Chart(frame).encode(
        y=alt.Y("label:N", sort=alt.EncodingSortField("rank"), title=None, axis=alt.Axis(labelLimit=200)),
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%"), title=None),
        tooltip=["label:N", alt.Tooltip("probability:Q", format=".1%")],
    )
    bars = base.mark_bar(color="#2563eb", cornerRadiusEnd=3)
    labels = base.mark_text(align="left", dx=4, color="#374151").encode(text=alt.Text("probability:Q", format=".1%"))
    return (bars + labels).properties(height=alt.Step(height_per_bar))
