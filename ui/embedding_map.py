"""The Data page's embedding map: every example of the reviewed dataset as a point, coloured by class.

Suspected label errors and outliers are drawn larger and in their own shape, so a mislabelled image shows
up as a point of one colour inside another class's cluster. Clicking a point shows its image (or the start
of its document) below the chart. The points come from the label review's job (`ReviewResult.points`).
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from tl_core.insight.review_result import ReviewResult
from ui.dataset import document_excerpts
from ui.images import thumbnail
from ui.text import safe_label

POINT_SELECTION = "point"
MARKS = {"likely label error": "cross", "outlier": "triangle-up", "": "circle"}


def map_frame(result: ReviewResult) -> pd.DataFrame:
    """One row per point: position, class, and what the review made of it (label error first, then outlier)."""
    flagged = {issue.relpath for issue in result.issues}
    return pd.DataFrame(
        [
            {
                "index": index,
                "x": point.x,
                "y": point.y,
                "class": safe_label(point.label),
                "file": safe_label(point.relpath),
                "flag": "likely label error" if point.relpath in flagged else "outlier" if point.outlier else "",
            }
            for index, point in enumerate(result.points)
        ]
    )


def map_chart(frame: pd.DataFrame) -> alt.Chart:
    """An Altair scatter without axes (t-SNE's units mean nothing), flagged points larger; click selects one."""
    picked = alt.selection_point(name=POINT_SELECTION, fields=["index"], on="click")
    return (
        alt.Chart(frame)
        .mark_point(filled=True, opacity=0.8)
        .encode(
            x=alt.X("x:Q", axis=None),
            y=alt.Y("y:Q", axis=None),
            color=alt.Color("class:N", title="class"),
            shape=alt.Shape(
                "flag:N",
                title="review",
                scale=alt.Scale(domain=list(MARKS), range=list(MARKS.values())),
                legend=alt.Legend(labelExpr="datum.label || 'fits its class'"),
            ),
            size=alt.condition("datum.flag != ''", alt.value(160), alt.value(40)),
            tooltip=["file:N", "class:N", "flag:N"],
        )
        .add_params(picked)
        .properties(height=420)
    )


def show_embedding_map(result: ReviewResult, modality: str) -> None:
    """The map, a count of what is marked, and the clicked example."""
    st.subheader("Embedding map")
    if not result.points:
        st.caption("Run the review again to see the map: this review was recorded before the map existed.")
        return
    frame = map_frame(result)
    outliers = int((frame["flag"] == "outlier").sum())
    st.caption(
        f"Each point is one {'document' if modality == 'text' else 'image'}, placed by t-SNE on its frozen features: "
        f"close points look alike to the backbone. Crosses are the likely label errors above, triangles the "
        f"{outliers} outlier(s) (far from their nearest neighbours, whatever their label). Click a point to see it."
    )
    clicked = st.altair_chart(
        map_chart(frame), on_select="rerun", selection_mode=POINT_SELECTION, key="data_embedding_map"
    )
    chosen = (clicked.selection.get(POINT_SELECTION) or []) if clicked else []
    if not chosen:
        return
    point = result.points[int(chosen[0]["index"])]
    st.caption(f"{safe_label(point.relpath)} · class {safe_label(point.label)}")
    if modality == "text":  # a CSV row's document too: read as the review grid reads it
        st.text(safe_label(document_excerpts([(point.path, point.relpath, point.label)], 600)[0].beginning))
    elif (image := thumbnail(point.path, 240)) is not None:
        st.image(image, width=240)
    else:
        st.caption("(image moved or unreadable)")
