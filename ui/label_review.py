"""The Data page's label review: likely label errors with keep / relabel / exclude, and near-duplicates by embedding.

Finding them runs the backbone over every example, so the button queues a `label-review` job (the same queue and
Stop as the advisor, tl_core/insight/review_job.py): it runs in a worker, never in this script thread, and the web
server never imports TensorFlow. Each decision is written at once to the workspace's labels-override file
(tl_core/data/label_overrides.py); the user's files are never touched, and the next run trains on the decisions.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.label_overrides import LabelDecision, load_decisions, overrides_path, save_decision
from tl_core.errors import TransferLabError
from tl_core.insight.review_result import ReviewIssue, ReviewResult
from tl_core.jobs.advisory import AdvisoryStore
from tl_core.jobs.backend import LABEL_REVIEW_JOB
from tl_core.modalities import get_modality
from ui.advisor import completed_result, settings_key
from ui.dataset import DatasetView, document_excerpts
from ui.embedding_map import show_embedding_map
from ui.images import thumbnail
from ui.state import chosen_settings, get_manager, workspace_path
from ui.text import escape_markdown, safe_label, show_error

SHOWN_ISSUES = 40  # the most likely ones; a longer grid is not reviewed anyway
EXCERPT_CHARACTERS = 300


def decision_text(decision: LabelDecision | None) -> str:
    if decision is None:
        return "no decision yet"
    return {"keep": "kept as labelled", "exclude": "excluded"}.get(decision.action) or f"relabelled to {decision.label}"


def _save(source: str, relpath: str, decision: LabelDecision | None) -> None:
    try:
        save_decision(workspace_path(), source, relpath, decision)
    except (TransferLabError, OSError) as exc:  # a damaged file: the message says how to fix it
        st.session_state["data_review_error"] = str(exc)


def _relabel(source: str, relpath: str, widget_key: str) -> None:
    _save(source, relpath, LabelDecision("relabel", st.session_state[widget_key]))


def show_label_review(view: DatasetView, source: str) -> None:
    """The review section: the button, the job's progress, then the flagged examples and near-duplicates."""
    st.header("Review likely label errors")
    modality = get_modality(view.modality)
    chosen, _ = chosen_settings()  # the Model page's backbone (its default when skipped or set for other data)
    model = ModelConfig(
        backbone=chosen.backbone, weights=chosen.weights, image_size=chosen.image_size, cut_layer=chosen.cut_layer
    )
    st.caption(
        f"Finds {modality.noun}s whose label the other {modality.noun}s do not support (out-of-fold predictions of "
        f"the frozen {model.backbone} features (the Model page's backbone), ranked by cleanlab), and near-duplicates by embedding. "
        "Runs in the job queue, like training. Your decisions are kept in your workspace, never in your files."
    )
    if error := st.session_state.pop("data_review_error", None):
        st.error(escape_markdown(error), icon=":material/error:")
    try:
        decisions = load_decisions(workspace_path(), source)
    except TransferLabError as exc:
        show_error(exc)
        return
    changing = sum(1 for d in decisions.values() if d.action != "keep")
    st.info(
        f"{len(decisions)} decision(s) saved ({changing} relabel or exclude) in "
        f"{escape_markdown(overrides_path(workspace_path()).name)} in your workspace: the next run uses them.",
        icon=":material/fact_check:",
    )
    key = settings_key(source, model.backbone, model.weights, model.image_size, model.cut_layer)
    records = AdvisoryStore(workspace_path())
    record = records.latest(LABEL_REVIEW_JOB, key)
    busy = record is not None and record.is_active
    if st.button("Review likely label errors", key="data_review_run", icon=":material/rule:", disabled=busy):
        config = RunConfig(DataConfig(source=source, modality=view.modality), model, TrainConfig())
        try:
            get_manager().submit_advisory(LABEL_REVIEW_JOB, config, key=key, options={})
        except TransferLabError as exc:
            show_error(exc)
        else:
            st.rerun()
    if (found := completed_result(record, "Label review", "data_review_stop")) is None:
        return
    result = ReviewResult.from_dict(found)
    show_issues(result, decisions, source, view.modality)
    show_embedding_map(result, view.modality)
    show_near_duplicates(result)


def show_issues(result: ReviewResult, decisions: dict[str, LabelDecision], source: str, modality: str) -> None:
    """One row per flagged example: the example, its given and suggested label and score, and the three actions."""
    notes = "".join(f" {note}" for note in result.notes)
    if not result.issues:
        st.success(f"Checked {result.checked} examples ({result.folds}-fold): no likely label errors.{notes}")
        return
    st.markdown(
        f"Checked {result.checked} examples ({result.folds}-fold): **{len(result.issues)} likely label errors**, most "
        f"likely first. Score: the out-of-fold probability of the given label (lower: more likely wrong).{notes}"
    )
    shown = result.issues[:SHOWN_ISSUES]
    excerpts = (
        document_excerpts([(issue.path, issue.relpath, issue.given_label) for issue in shown], EXCERPT_CHARACTERS)
        if modality == "text"
        else None
    )
    for index, issue in enumerate(shown):
        with st.container(border=True):
            example, about, actions = st.columns([2, 3, 4], vertical_alignment="center")
            with example:
                if excerpts is not None:
                    st.text(safe_label(excerpts[index].beginning))
                elif (image := thumbnail(issue.path)) is not None:
                    st.image(image, width=96)
                else:
                    st.caption("(image moved or unreadable)")
            about.markdown(_about(issue, decisions.get(issue.relpath)))
            _actions(actions, index, issue, result.class_names, decisions.get(issue.relpath), source)
    if len(result.issues) > SHOWN_ISSUES:
        st.caption(f"… and {len(result.issues) - SHOWN_ISSUES} more with higher scores (less likely wrong).")


def _about(issue: ReviewIssue, decision: LabelDecision | None) -> str:
    path = issue.relpath.replace("`", "'")  # shown literally in a code span: nothing to escape but its backticks
    return (
        f"`{path}`  \ngiven **{escape_markdown(issue.given_label)}** · suggested "
        f"**{escape_markdown(issue.suggested_label)}** · score {issue.score:.3f}  \n*{escape_markdown(decision_text(decision))}*"
    )


def _actions(
    column, index: int, issue: ReviewIssue, classes: tuple[str, ...], decision: LabelDecision | None, source: str
) -> None:  # noqa: ANN001 - a Streamlit column
    # Two rows, so no label is cut short: Keep / Exclude (/ Undo), then the class to relabel to and Relabel.
    keep, exclude, undo = column.columns(3)
    target, relabel = column.columns([3, 2], vertical_alignment="bottom")
    keep.button(
        "Keep",
        key=f"data_review_keep_{index}",
        on_click=_save,
        args=(source, issue.relpath, LabelDecision("keep")),
        width="stretch",
    )
    exclude.button(
        "Exclude",
        key=f"data_review_exclude_{index}",
        on_click=_save,
        args=(source, issue.relpath, LabelDecision("exclude")),
        width="stretch",
    )
    if decision is not None:
        undo.button(
            "Undo", key=f"data_review_undo_{index}", on_click=_save, args=(source, issue.relpath, None), width="stretch"
        )
    others = [name for name in classes if name != issue.given_label]
    widget_key = f"data_review_class_{index}"
    target.selectbox(
        "Relabel to",
        others,
        index=others.index(issue.suggested_label) if issue.suggested_label in others else 0,
        key=widget_key,
        format_func=safe_label,
        label_visibility="collapsed",
    )
    relabel.button(
        "Relabel",
        key=f"data_review_relabel_{index}",
        on_click=_relabel,
        args=(source, issue.relpath, widget_key),
        width="stretch",
    )


def show_near_duplicates(result: ReviewResult) -> None:
    """Pairs of examples whose features are nearly the same, different labels first."""
    st.subheader("Near-duplicates by embedding")
    st.caption(
        f"Pairs whose frozen features have a centred cosine similarity of {result.similarity:.2f} or more: resized or "
        "re-encoded copies, which inflate test results when one copy trains and the other is tested, or confuse "
        "training when their labels differ. Byte-identical copies are already in the report's duplicate problems."
    )
    if not result.near_duplicates:
        st.caption("No near-duplicates found.")
        return
    frame = pd.DataFrame(
        [
            {
                "first": safe_label(pair.first),
                "second": safe_label(pair.second),
                "labels": "different" if not pair.same_label else "same",
                "first label": safe_label(pair.first_label),
                "second label": safe_label(pair.second_label),
                "similarity": pair.similarity,
            }
            for pair in result.near_duplicates
        ]
    )
    st.dataframe(
        frame.sort_values(["labels", "similarity"], ascending=[True, False]),
        hide_index=True,
        key="data_near_duplicates",
    )
