"""The Model page's advisor for text: which backbone and mode to start with, and how long each takes here.

Like the image advisor (ui/advisor.py), a button queues an advice job; for text the worker times GloVe and MiniLM
on a sample of the user's documents (tl_core/advisor/text_advice.py) and the panel shows the recommendation, its
reasons and each recipe's estimated time, with one click to take it.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from tl_core.advisor.results import TextAdvice
from tl_core.config import ModelConfig, TrainConfig
from tl_core.jobs.backend import ADVICE_JOB
from ui.advisor import (
    MODE_WIDGET_KEY,
    advisory_records,
    completed_result,
    settings_key,
    submit_advisory_job,
)
from ui.text import escape_markdown, format_duration

BACKBONE_WIDGET_KEY = "model_backbone"
WEIGHTS_WIDGET_KEY = "model_weights"


def recipe_table(advice: TextAdvice) -> pd.DataFrame:
    """One row per recipe: estimated time, encoding speed, and which one is recommended."""
    rows = [
        {
            "recipe": recipe.label,
            "estimated time": format_duration(recipe.estimated_seconds),
            "documents/s": round(recipe.documents_per_second, 1) if recipe.documents_per_second else None,
            "timed on your documents": "✓" if recipe.timed_here else "",
            "recommended": "✓" if recipe == advice.recommended else "",
        }
        for recipe in advice.recipes
    ]
    return pd.DataFrame(
        rows, columns=["recipe", "estimated time", "documents/s", "timed on your documents", "recommended"]
    )


def _use_recipe(backbone: str, weights: str, mode: str) -> None:
    # A callback runs before the page redraws, so the backbone, weights and mode widgets take these values.
    st.session_state[BACKBONE_WIDGET_KEY] = backbone
    st.session_state[WEIGHTS_WIDGET_KEY] = weights
    st.session_state[MODE_WIDGET_KEY] = mode


def show_text_advisor(source: str, model_config: ModelConfig, train_config: TrainConfig) -> None:
    """Button-queued recommendation of a text backbone and mode, followed live, then its reasons and times."""
    st.subheader("Which backbone? Ask the advisor")
    st.caption(
        "Times GloVe and MiniLM on a sample of your documents at this sequence length and estimates each recipe's "
        "time for your whole dataset. Runs in the job queue, like training: usually under a minute once it starts."
    )
    key = settings_key(source, "text", model_config.sequence_length, train_config.fine_tune_epochs, train_config.seed)
    record = advisory_records().latest(ADVICE_JOB, key)
    busy = record is not None and record.is_active
    clicked = st.button(
        "Recommend a backbone",
        key="text_advisor_run",
        icon=":material/psychology:",
        disabled=busy,
        help="Queues a timing of the offline text backbones on a sample of your documents.",
    )
    if (
        clicked
        and not busy
        and submit_advisory_job(ADVICE_JOB, source, model_config, train_config, key, {"measure_throughput": True})
    ):
        st.rerun()  # drawn again with the job's panel and the button disabled
    if (result := completed_result(record, "Advisor", "text_advisor_stop")) is None:
        return
    advice = TextAdvice.from_dict(result)
    chosen = advice.recommended
    st.success(f"Recommended: **{escape_markdown(chosen.label)}**", icon=":material/recommend:")
    st.markdown("\n".join(f"- {escape_markdown(reason)}" for reason in advice.reasons))
    st.dataframe(recipe_table(advice), hide_index=True)
    taken = (
        st.session_state.get(BACKBONE_WIDGET_KEY) == chosen.backbone
        and st.session_state.get(WEIGHTS_WIDGET_KEY) == chosen.weights
        and st.session_state.get(MODE_WIDGET_KEY) == chosen.mode
    )
    st.button(
        f"Use {chosen.label}",
        key="text_advisor_use",
        on_click=_use_recipe,
        args=(chosen.backbone, chosen.weights, chosen.mode),
        disabled=taken,
        help="Already chosen." if taken else "Sets the backbone, its weights and the training mode above.",
    )
