"""Evaluate: how a finished run does on held-out images or documents, class by class, and where it goes wrong."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from tl_core.modalities import get_modality
from tl_core.results.evaluate import Evaluation, ExampleOutcome
from tl_core.runs.store import RunStore
from ui.charts import CELL_SELECTION, confusion_chart
from ui.evaluation import (
    dataset_root,
    document_frame,
    evaluated_run_ids,
    example_tiles,
    load_evaluation,
    per_class_frame,
    worst_cell,
)
from ui.explanations import heatmap_controls, show_heatmap_tiles
from ui.images import show_tiles
from ui.navigation import page_link, run_app_instead
from ui.state import current_run_id, get_store, set_current_run
from ui.text import escape_markdown, format_percent, safe_label

MAX_CELL_EXAMPLES = 24


def show_example_tiles(examples: list[ExampleOutcome], root: str | None, empty_message: str) -> None:
    """Thumbnails captioned with the prediction."""
    show_tiles(example_tiles(examples, root), width=112, empty_message=empty_message)


def show_example_documents(examples: list[ExampleOutcome], root: str | None, empty_message: str) -> None:
    """A table of document beginnings with the prediction (cells are plain text, never Markdown)."""
    if not examples:
        st.caption(empty_message)
        return
    st.dataframe(
        document_frame(examples, root),
        hide_index=True,
        width="stretch",
        column_config={
            "confidence": st.column_config.NumberColumn("confidence", format="percent"),
            "document": st.column_config.TextColumn("document", width="large"),
        },
    )


ExampleView = Callable[[list[ExampleOutcome], str | None, str], None]
EXAMPLE_VIEWS: dict[str, ExampleView] = {
    "thumbnails": show_example_tiles,
    "excerpts": show_example_documents,
}  # by `DataModality.preview`


def heatmap_view(store: RunStore, run_id: str) -> ExampleView:
    """With "Show heatmaps" on, examples drawn as Grad-CAM overlays of their predicted class; else as thumbnails."""
    if not st.toggle(
        "Show heatmaps",
        value=False,
        key="eval_show_heatmaps",
        help="Grad-CAM, for the examples below: where in each image the model found the evidence for its prediction.",
    ):
        return show_example_tiles
    alpha, _ = heatmap_controls("eval")

    def show(examples: list[ExampleOutcome], root: str | None, empty_message: str) -> None:
        tiles = example_tiles(examples, root)
        show_heatmap_tiles(store, run_id, tiles, alpha, width=112, empty_message=empty_message)

    return show


def pick_cell(run_id: str, evaluation: Evaluation, clicked: list[dict] | None) -> None:
    """Point the two cell dropdowns at a clicked cell (once per click), or at the worst cell of a newly shown run."""
    classes = evaluation.class_names
    if st.session_state.get("eval_cell_run") != run_id:  # another run: its own worst cell, not the last run's pick
        st.session_state["eval_cell_run"] = run_id
        st.session_state.pop("eval_true", None)
        st.session_state.pop("eval_cell_clicked", None)
    if clicked and clicked != st.session_state.get("eval_cell_clicked"):
        st.session_state["eval_cell_clicked"] = clicked
        point = clicked[0]
        st.session_state["eval_true"] = classes[int(point["true_index"])]
        st.session_state["eval_pred"] = classes[int(point["predicted_index"])]
    if st.session_state.get("eval_true") not in classes or st.session_state.get("eval_pred") not in classes:
        st.session_state["eval_true"], st.session_state["eval_pred"] = worst_cell(evaluation)


def show_evaluation(store: RunStore, run_ids: list[str]) -> None:
    """Metrics, per-class table, confusion matrix, one cell's examples and the highest-loss examples."""
    names = {
        record.id: f"{safe_label(record.name)} ({record.id[-6:]})"
        for record in store.list_runs()
        if record.id in run_ids
    }
    if st.session_state.get("eval_run") not in run_ids:
        st.session_state["eval_run"] = current_run_id() if current_run_id() in run_ids else run_ids[0]
    run_id = st.selectbox(
        "Run", run_ids, key="eval_run", format_func=names.get, help="Runs that finished and saved an evaluation."
    )
    set_current_run(run_id)
    evaluation = load_evaluation(store, run_id)
    root = dataset_root(store, run_id)
    data_modality = get_modality(store.get(run_id).modality)
    noun = data_modality.noun
    show_examples = EXAMPLE_VIEWS[data_modality.preview]

    split_name = "test" if evaluation.split == "test" else "validation"
    st.caption(f"Measured on the {split_name} split: {evaluation.count} {noun}s the model never trained on.")
    show_top_k = evaluation.top_k < len(evaluation.class_names)  # top-k of k or fewer classes is always 100%
    cols = iter(st.columns(4 if show_top_k else 3))
    next(cols).metric("Accuracy", format_percent(evaluation.accuracy))
    if show_top_k:
        next(cols).metric(f"Top-{evaluation.top_k} accuracy", format_percent(evaluation.top_k_accuracy))
    next(cols).metric("Macro F1", f"{evaluation.macro_f1:.3f}")
    next(cols).metric("Loss", f"{evaluation.loss:.4f}")

    table_col, matrix_col = st.columns([2, 3], gap="large")
    with table_col:
        st.subheader("Per class")
        st.caption(
            f"Precision: of the {noun}s predicted as this class, the share that are. Recall: of this class's {noun}s, the share found."
        )
        st.dataframe(
            per_class_frame(evaluation),
            hide_index=True,
            width="stretch",
            column_config={
                name: st.column_config.NumberColumn(name, format="percent") for name in ("precision", "recall", "F1")
            },
        )
    with matrix_col:
        st.subheader("Confusion matrix")
        st.caption(
            "Rows are the true class, columns the prediction; the diagonal holds the correct ones. "
            "Click a cell to see its examples below."
        )
        clicked = st.altair_chart(
            confusion_chart(evaluation.confusion, evaluation.class_names, clickable=True),
            width="content",
            on_select="rerun",
            selection_mode=CELL_SELECTION,
            key=f"eval_matrix_{run_id}",  # another run: a fresh selection, not the last run's cell
        )

    st.subheader("Look inside a cell")
    show_examples = heatmap_view(store, run_id) if data_modality.preview == "thumbnails" else show_examples
    classes = evaluation.class_names
    pick_cell(run_id, evaluation, clicked.selection.get(CELL_SELECTION) if clicked else None)
    true_col, pred_col = st.columns(2)
    true_label = true_col.selectbox("True class", classes, key="eval_true", format_func=safe_label)
    predicted_label = pred_col.selectbox("Predicted class", classes, key="eval_pred", format_func=safe_label)
    count = evaluation.confusion[classes.index(true_label)][classes.index(predicted_label)]
    examples = evaluation.examples_in_cell(true_label, predicted_label)
    if true_label == predicted_label:
        st.caption(
            f"{count} {noun}(s) of {escape_markdown(true_label)} predicted correctly"
            + (
                f"; showing the {min(len(examples), MAX_CELL_EXAMPLES)} the model was least sure about."
                if examples
                else "."
            )
        )
    else:
        st.caption(
            f"{count} {noun}(s) of {escape_markdown(true_label)} predicted as {escape_markdown(predicted_label)}"
            + (f"; showing {min(len(examples), MAX_CELL_EXAMPLES)}." if examples else ".")
        )
    show_examples(examples[:MAX_CELL_EXAMPLES], root, f"No {noun}s in this cell.")

    st.subheader("Highest-loss examples")
    st.caption(
        f"The {noun}s the model was most wrong or least sure about: often mislabelled or unusual "
        + data_modality.everyday_plural
        + " worth checking."
    )
    show_examples(evaluation.highest_loss[:12], root, "No examples recorded.")


def evaluate_page() -> None:
    """The Evaluate page: a finished run's evaluation, or a pointer to the Train page."""
    st.title("Evaluate")
    store = get_store()
    run_ids = evaluated_run_ids(store)
    if not run_ids:
        st.info(
            "No evaluated run yet: train one on the Train page (the run is evaluated when it finishes).",
            icon=":material/info:",
        )
        page_link("train", "Train a model", ":material/monitoring:")
    else:
        show_evaluation(store, run_ids)


if __name__ == "__main__":  # Streamlit ran this file itself instead of app.py: see ui.navigation.run_app_instead
    run_app_instead()
