"""The Model page's lower sections as functions: head and fine-tuning, where to cut the backbone, the expert-only
advanced settings. Each draws its widgets (keys `model_*`, kept across pages by `ui.state.remember_widgets`) and
returns what the user chose; the page turns the choices into a ModelConfig and TrainConfig."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from tl_core.runs.records import RunRecord
from ui.advisor import (
    CUT_LAYER_WIDGET_KEY,
    cut_layer_label,
    cut_layer_options,
    cut_layers_if_listed,
)
from ui.setting_edits import typed_setting
from ui.settings import LEARNING_RATES
from ui.state import session_value


def setting(widget, label: str, explanation: str, **kwargs):
    """Draw one setting with its explanation both as a tooltip and as a one-line caption below it."""
    value = widget(label, help=explanation, **kwargs)
    st.caption(explanation)
    return value


@dataclass(frozen=True)
class HeadChoices:
    """The head and the fine-tuning schedule as the user set them."""

    dropout: float
    hidden_text: str
    fine_tuning: bool
    fine_tune_epochs: int
    stage_epochs: int
    max_stages: int
    fine_tune_lr: float
    fine_tune_layers: int


@dataclass(frozen=True)
class AdvancedChoices:
    """Expert settings; their defaults apply in the beginner view."""

    patience: int | None = 5
    class_weighting: str = "auto"
    pooling: str = "avg"
    seed: int = 42


def head_and_fine_tuning(mode: str) -> HeadChoices:
    """Dropout and hidden units of the head; the fine-tuning schedule (settings that do not apply to `mode` greyed out)."""
    st.subheader("Head and fine-tuning")
    head_col, tune_col = st.columns(2, gap="large")
    with head_col:
        session_value("model_dropout", 0.2)
        dropout = setting(
            st.slider,
            "Dropout",
            "Share of features randomly dropped while training the head: fights overfitting.",
            min_value=0.0,
            max_value=0.8,
            step=0.05,
            key="model_dropout",
        )
        session_value("model_hidden_units", "")
        hidden_text = setting(
            st.text_input,
            "Hidden units",
            "Sizes of extra dense layers in the head, e.g. 128 or 256, 128; empty for a single linear layer.",
            **typed_setting("model_hidden_units"),
            placeholder="none",
        )
    with tune_col:
        fine_tuning = mode in ("fine-tune", "full")
        session_value("model_fine_tune_epochs", 5)
        fine_tune_epochs = setting(
            st.number_input,
            "Fine-tune epochs",
            "Epochs of the second phase, after the head has converged.",
            min_value=0,
            max_value=500,
            **typed_setting("model_fine_tune_epochs"),
            disabled=not fine_tuning,
        )
        session_value("model_stage_epochs", 2)
        stage_epochs = setting(
            st.number_input,
            "Epochs per block",
            "Progressive mode: epochs after unfreezing each further block.",
            min_value=1,
            max_value=100,
            **typed_setting("model_stage_epochs"),
            disabled=mode != "progressive",
        )
        session_value("model_max_stages", 0)
        max_stages = setting(
            st.number_input,
            "Most blocks to unfreeze",
            "Progressive mode: stop after unfreezing this many blocks from the top (0: go down until validation stops improving).",
            min_value=0,
            max_value=100,
            **typed_setting("model_max_stages"),
            disabled=mode != "progressive",
        )
        session_value("model_fine_tune_lr", 1e-4)
        fine_tune_lr = setting(
            st.select_slider,
            "Fine-tune learning rate",
            "Much lower than the head's so the pretrained features are not destroyed.",
            options=list(LEARNING_RATES),
            key="model_fine_tune_lr",
            format_func=lambda v: f"{v:g}",
            disabled=mode == "feature-extraction",
        )
        session_value("model_fine_tune_layers", 20)
        fine_tune_layers = setting(
            st.number_input,
            "Layers to unfreeze",
            "How many of the backbone's top layers train in fine-tune mode.",
            min_value=1,
            max_value=1000,
            **typed_setting("model_fine_tune_layers"),
            disabled=mode != "fine-tune",
        )

    return HeadChoices(
        float(dropout),
        hidden_text,
        fine_tuning,
        int(fine_tune_epochs),
        int(stage_epochs),
        int(max_stages),
        float(fine_tune_lr),
        int(fine_tune_layers),
    )


def cut_depth(backbone: str, parent: RunRecord | None) -> str | None:
    """The cut layer: None for the backbone's last layer (and always for a run's backbone, used whole)."""
    st.subheader("Where to cut the backbone")
    session_value(CUT_LAYER_WIDGET_KEY, None)
    layers = cut_layers_if_listed(backbone)
    if layers is None:
        # No timer to redraw the page when they arrive: a rerun in flight while the user types and clicks a page
        # link can lose both (Streamlit's frontend), so the list appears with the user's next change.
        chosen = None if parent else st.session_state[CUT_LAYER_WIDGET_KEY]  # a depth chosen before stays chosen
        st.caption(
            ("Features come from the backbone's last layer. " if chosen is None else f"Cut at {chosen}, as chosen. ")
            + "Its blocks are being listed (the model process is starting): they can be chosen here after your next "
            "change on this page."
        )
        return chosen
    cut_options = cut_layer_options(layers)
    if st.session_state[CUT_LAYER_WIDGET_KEY] not in cut_options:  # chosen for another backbone
        st.session_state[CUT_LAYER_WIDGET_KEY] = None
    return setting(
        st.selectbox,
        "Cut depth",
        "Take features from an earlier block instead of the backbone's last layer: more general, less ImageNet-specific "
        "features. 'Compare cut depths' below measures each depth on your data."
        + (" A run's backbone is used whole." if parent else ""),
        options=cut_options,
        key=CUT_LAYER_WIDGET_KEY,
        format_func=cut_layer_label,
        disabled=parent is not None,
    )


def advanced_settings() -> AdvancedChoices:
    """The expert view's early stopping, class weighting, pooling and seed."""
    st.subheader("Advanced")
    a, b, c, d = st.columns(4)
    with a:
        session_value("model_patience", 5)
        patience = (
            setting(
                st.number_input,
                "Early-stopping patience",
                "Epochs without validation improvement before stopping; 0 never stops early.",
                min_value=0,
                max_value=100,
                **typed_setting("model_patience"),
            )
            or None
        )
    with b:
        session_value("model_class_weighting", "auto")
        class_weighting = setting(
            st.selectbox,
            "Class weighting",
            "Weigh rare classes up: auto does it when the classes are imbalanced.",
            options=["auto", "on", "off"],
            key="model_class_weighting",
        )
    with c:
        session_value("model_pooling", "avg")
        pooling = setting(
            st.selectbox,
            "Pooling",
            "How the backbone's feature map becomes one vector.",
            options=["avg", "max"],
            key="model_pooling",
        )
    with d:
        session_value("model_seed", 42)
        seed = setting(
            st.number_input,
            "Seed",
            "The same seed and data give the same split and initial head.",
            min_value=0,
            max_value=2**31 - 1,
            **typed_setting("model_seed"),
        )

    return AdvancedChoices(patience, class_weighting, pooling, int(seed))
