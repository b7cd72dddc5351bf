"""Model: pick a backbone and how to train it; the result is a RunConfig kept in session state."""

from __future__ import annotations

import streamlit as st

from tl_core.config import MODES, RUN_WEIGHTS_PREFIX, ConfigError, ModelConfig, TrainConfig
from tl_core.errors import TransferLabError
from tl_core.modalities import get_modality
from tl_core.models.registry import get_backbone_spec, list_backbones
from tl_core.runs.records import RunRecord
from tl_core.server.limits import RunLimits
from ui.advisor import (
    CUT_LAYER_WIDGET_KEY,
    show_cut_depth_probe,
    show_mode_advisor,
)
from ui.model_form import AdvancedChoices, advanced_settings, cut_depth, head_and_fine_tuning, setting
from ui.navigation import page_link, run_app_instead
from ui.setting_edits import forget_settings, keep_settings, settings_problem, typed_setting
from ui.settings import (
    BATCH_SIZES,
    DEFAULT_EPOCHS,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SEQUENCE_LENGTH,
    LEARNING_RATES,
    backbone_table,
    default_model_config,
    has_offline_weights,
    mode_label,
    parse_hidden_units,
    recommended_here,
    size_range,
)
from ui.starting_weights import leave_parent_run, starting_weights
from ui.state import (
    MODEL_WIDGET_PREFIX,
    SETTINGS_ERROR_KEY,
    current_dataset,
    current_modality,
    remember_widgets,
    restore_widgets,
    server_settings,
    session_value,
)
from ui.text import escape_markdown, format_parameters, show_error
from ui.text_advisor import show_text_advisor

MODALITY_WIDGET_KEY = "model_for_modality"  # the kind of data the backbone and weights widgets were set for


def follow_modality(modality: str, defaults: ModelConfig) -> None:
    """A dataset of the other kind (images <-> text): start again from that modality's default backbone and weights.

    On a first visit a backbone set elsewhere (the Runs page's "start from this run") is kept when it fits the data.
    """
    previous = st.session_state.get(MODALITY_WIDGET_KEY)
    st.session_state[MODALITY_WIDGET_KEY] = modality
    if previous == modality:
        return
    preset = st.session_state.get("model_backbone")
    if previous is None and (preset is None or get_backbone_spec(preset).modality == modality):
        return
    st.session_state["model_backbone"] = defaults.backbone
    st.session_state["model_weights"] = defaults.weights
    st.session_state.pop(CUT_LAYER_WIDGET_KEY, None)
    st.session_state.pop(SETTINGS_ERROR_KEY, None)


def use_backbone(backbone: str, weights: str) -> None:
    """One click to a backbone that works here (a button callback)."""
    st.session_state["model_backbone"] = backbone
    st.session_state["model_weights"] = weights


def store_settings(
    model_config: ModelConfig, train_config: TrainConfig, modality: str, run_name: str, parent: RunRecord | None
) -> None:
    """Keep the valid settings; with a dataset chosen they become this user's RunConfig."""
    if keep_settings(model_config, train_config, run_name.strip() or None) is None:
        st.info("Settings are valid. Pick a dataset on the Data page, then train.", icon=":material/info:")
        page_link("data", "Choose data", ":material/folder_open:")
        return
    phases = {
        "feature-extraction": f"{train_config.epochs} epochs",
        "progressive": f"head {train_config.epochs} epochs, then {train_config.stage_epochs} per unfrozen block"
        + (f", at most {train_config.max_stages} blocks" if train_config.max_stages else ""),
    }.get(train_config.mode, f"head {train_config.epochs} + fine-tune {train_config.fine_tune_epochs} epochs")
    data_modality = get_modality(modality)
    baselines = (
        "from-scratch and TF-IDF + logistic regression baselines"
        if data_modality.has_classic_baseline
        else "a from-scratch baseline"
    )
    extras = "".join(
        [
            f", cut at {escape_markdown(model_config.cut_layer)}" if model_config.cut_layer else "",
            f", from run {escape_markdown(parent.name)}'s backbone" if parent else "",
            f", plus {baselines}" if train_config.compare_scratch else "",
        ]
    )
    size = (
        f"at {model_config.image_size} px"
        if data_modality.uses_image_size
        else f"reading {model_config.sequence_length} words per document"
    )
    st.success(
        f"Ready: {escape_markdown(model_config.backbone)} {size}, "
        f"{mode_label(train_config.mode, short=True)} ({phases}){extras}.",
        icon=":material/check_circle:",
    )
    page_link("train", "Go to training", ":material/arrow_forward:")


def model_page() -> None:
    """The Model page: backbone, weights, mode and schedule; valid settings become the RunConfig the Train page starts."""
    modality = current_modality()
    data_modality = get_modality(modality)
    defaults = default_model_config(modality)
    st.title("Model")
    st.caption(f"{data_modality.model_intro} Every setting below has a sensible default.")

    limits = RunLimits.from_settings(server_settings())
    if limits.describe():
        st.info(f"This server's limits, set by the trainer: {limits.describe()}.", icon=":material/speed:")

    restore_widgets(MODEL_WIDGET_PREFIX)
    follow_modality(modality, defaults)
    expert = st.toggle("Expert view", key="model_expert", help="Show every backbone and the advanced settings.")
    specs = list_backbones(None, modality=modality) if expert else recommended_here(modality)
    heading = data_modality.backbones_heading
    st.subheader(heading.capitalize() if expert else f"Recommended {heading} (those that work offline here first)")
    st.dataframe(
        backbone_table(specs),
        hide_index=True,
        width="stretch",
        column_config={"parameters (M)": st.column_config.NumberColumn(format="%.2f")},
    )

    names = [spec.name for spec in specs]
    session_value("model_backbone", defaults.backbone)
    if st.session_state["model_backbone"] not in names:  # chosen in the expert view, then switched back
        names.append(st.session_state["model_backbone"])
    left, right = st.columns(2, gap="large")
    with left:
        backbone = setting(
            st.selectbox,
            "Backbone",
            "The pretrained network whose features your classifier builds on.",
            options=names,
            key="model_backbone",
            on_change=leave_parent_run,
            args=(defaults.weights,),
        )
        spec = get_backbone_spec(backbone)
        offline = has_offline_weights(spec)
        size_words = f"default {spec.default_size} {data_modality.size_unit}"
        st.caption(
            escape_markdown(
                f"{spec.display_name}: {format_parameters(spec.parameters)} parameters"
                + (f", {spec.feature_dim}-d features" if spec.feature_dim else "")
                + f", {size_words}. {spec.notes}".strip()
            )
        )

        weights, parent = starting_weights(spec, data_modality)
        # Nothing downloads inside the web server, and Start would only fail: such weights are refused below.
        needs_download = weights == spec.pretrained_weights and not offline

        mode = setting(
            st.radio,
            "Training mode",
            "What gets trained: only the new head, or the backbone's layers too.",
            options=list(MODES),
            key="model_mode",
            format_func=mode_label,
        )

    with right:
        image_size: int | None = None
        sequence_length = DEFAULT_SEQUENCE_LENGTH
        if data_modality.uses_image_size:
            session_value("model_image_size", DEFAULT_IMAGE_SIZE)
            image_size = setting(
                st.number_input,
                "Image size (px)",
                f"Images are resized to this square side; smaller is faster. This backbone takes {size_range(spec)}."
                + (" A run's backbone keeps the size it was trained at." if parent else ""),
                min_value=16,
                max_value=1024,
                step=16,
                **typed_setting("model_image_size"),
                disabled=parent is not None,
            )
        else:
            session_value("model_sequence_length", DEFAULT_SEQUENCE_LENGTH)
            sequence_length = setting(
                st.number_input,
                "Words per document",
                "The model reads this many words from the start of each document and ignores the rest; fewer is faster. "
                f"This backbone takes {size_range(spec)}.",
                min_value=spec.min_size,
                max_value=spec.max_size or 4096,
                step=8,
                **typed_setting("model_sequence_length"),
            )
        examples = f"{data_modality.noun}s"
        session_value("model_epochs", DEFAULT_EPOCHS)
        epochs = setting(
            st.number_input,
            "Epochs (head)",
            f"Passes over the training {examples} while training the head; training stops early when validation stops improving.",
            min_value=1,
            max_value=500,
            **typed_setting("model_epochs"),
        )
        session_value("model_learning_rate", 1e-3)
        learning_rate = setting(
            st.select_slider,
            "Learning rate",
            "Step size of the optimiser: 1e-3 suits a new head; too high makes training unstable.",
            options=list(LEARNING_RATES),
            key="model_learning_rate",
            format_func=lambda v: f"{v:g}",
        )
        session_value("model_batch_size", 32)
        batch_size = setting(
            st.select_slider,
            "Batch size",
            f"{examples.capitalize()} per training step; larger is faster per epoch but needs more memory.",
            options=list(BATCH_SIZES),
            key="model_batch_size",
        )
        augment = False
        if data_modality.has_augmentation:  # flips and rotations are for pictures; there is no text augmentation
            session_value("model_augment", False)
            augment = setting(
                st.toggle,
                "Augmentation",
                "Random flips, rotations, zooms and contrast on training images: helps small datasets, trains slower.",
                key="model_augment",
            )

    head = head_and_fine_tuning(mode)
    # A text backbone has one weighted layer (the word vectors): no depth to cut at.
    cut_layer = cut_depth(backbone, parent) if data_modality.has_cut_depths else None
    advanced = advanced_settings() if expert else AdvancedChoices()

    session_value("model_compare_scratch", False)
    compare_scratch = setting(
        st.checkbox,
        "Compare with a from-scratch baseline",
        "Also trains the same network from random weights with the same budget and split, and flags negative transfer "
        "when it beats the pretrained one (about twice the time). Text runs also get TF-IDF + logistic regression "
        "fitted on the same split (a classic bag of words, seconds), to show whether transfer beats it.",
        key="model_compare_scratch",
        disabled=weights == "none",
    )

    session_value("model_run_name", "")
    run_name = st.text_input(
        "Run name (optional)",
        **typed_setting("model_run_name"),
        placeholder="e.g. lite0 baseline",
        help="Shown in the Runs table; by default backbone, mode and time.",
    )

    remember_widgets(MODEL_WIDGET_PREFIX)
    st.divider()
    try:
        if not weights:
            raise ConfigError(
                "Name the TF Hub model (a handle such as https://tfhub.dev/google/nnlm-en-dim50/2, or a SavedModel folder), "
                "or choose random weights."
            )
        model_config = ModelConfig(
            backbone=backbone,
            weights=weights,
            image_size=int(image_size or DEFAULT_IMAGE_SIZE) if data_modality.uses_image_size else None,
            pooling=advanced.pooling,
            cut_layer=None if parent else cut_layer,
            head_hidden_units=parse_hidden_units(head.hidden_text),
            dropout=head.dropout,
            augment=bool(augment),
            sequence_length=int(sequence_length),
        )
        train_config = TrainConfig(
            mode=mode,
            epochs=int(epochs),
            fine_tune_epochs=head.fine_tune_epochs,
            batch_size=int(batch_size),
            learning_rate=float(learning_rate),
            fine_tune_learning_rate=head.fine_tune_lr,
            fine_tune_layers=head.fine_tune_layers,
            stage_epochs=head.stage_epochs,
            max_stages=head.max_stages or None,
            compare_scratch=bool(compare_scratch) and weights != "none",
            early_stopping_patience=advanced.patience,
            reduce_lr_patience=3 if advanced.patience else None,
            class_weighting=advanced.class_weighting,
            seed=advanced.seed,
        )
        if needs_download:
            raise ConfigError(
                f"{spec.display_name}'s pretrained weights are not installed on this server, and the app does not "
                "download them. Pick a backbone marked 'offline ✓' in the table (the button below switches to one), "
                "or Random starting weights."
            )
        if weights.startswith(RUN_WEIGHTS_PREFIX) and parent is None:
            raise ConfigError(
                f"Run {weights[len(RUN_WEIGHTS_PREFIX) :]} no longer exists: choose other starting weights."
            )
        settings_problem(model_config, train_config)
    except (ConfigError, TransferLabError) as exc:
        forget_settings(str(exc))
        show_error(exc)
        if needs_download:
            offline_choice = get_backbone_spec(data_modality.default_backbone)
            st.button(
                f"Use {offline_choice.display_name} instead (works offline)",
                key="model_use_offline",
                type="primary",
                icon=":material/cloud_done:",
                on_click=use_backbone,
                args=(offline_choice.name, data_modality.default_weights),
            )
    else:
        store_settings(model_config, train_config, modality, run_name, parent)
        if current_dataset():
            st.divider()
            if data_modality.measured_by_advisor:
                show_mode_advisor(current_dataset(), model_config, train_config)
                show_cut_depth_probe(current_dataset(), model_config, train_config.seed)
            elif data_modality.advisor_times_encoders:
                show_text_advisor(current_dataset(), model_config, train_config)


if __name__ == "__main__":  # Streamlit ran this file itself instead of app.py: see ui.navigation.run_app_instead
    run_app_instead()
