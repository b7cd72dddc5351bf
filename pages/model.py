"""Model: pick a backbone and how to train it; the result is a RunConfig kept in session state."""

from __future__ import annotations

import streamlit as st

from tl_core.config import MODES, RUN_WEIGHTS_PREFIX, ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import RunNotFoundError, TransferLabError
from tl_core.models.registry import get_backbone_spec, list_backbones, resolve_image_size
from tl_core.runs.store import RunRecord
from tl_core.server.limits import RunLimitError, RunLimits, check_run_limits
from ui.advisor import (
    CUT_LAYER_WIDGET_KEY,
    cut_layer_label,
    cut_layer_options,
    parent_image_size,
    show_cut_depth_probe,
    show_mode_advisor,
)
from ui.navigation import page_link, run_app_instead
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
    size_range,
)
from ui.state import (
    MODEL_CONFIG_KEY,
    RUN_CONFIG_KEY,
    TRAIN_CONFIG_KEY,
    current_dataset,
    current_modality,
    get_store,
    remember_widgets,
    restore_widgets,
    server_settings,
    session_value,
)
from ui.text import escape_markdown, format_parameters, show_error

SETTINGS_ERROR_KEY = "settings_error"
WIDGET_PREFIX = "model_"
RUN_WEIGHT_CHOICES = 8  # the newest completed runs offered as starting backbones (plus the one chosen)
MODALITY_WIDGET_KEY = "model_for_modality"  # the kind of data the backbone and weights widgets were set for
HUB_WEIGHTS_KEY = "model_hub_weights"


def setting(widget, label: str, explanation: str, **kwargs):
    """Draw one setting with its explanation both as a tooltip and as a one-line caption below it."""
    value = widget(label, help=explanation, **kwargs)
    st.caption(explanation)
    return value


def parent_run(weights: str) -> RunRecord | None:
    """The finished run whose backbone `weights` (`run:ID`) names; None for other weights or a deleted run."""
    if not weights.startswith(RUN_WEIGHTS_PREFIX):
        return None
    try:
        return get_store().get(weights[len(RUN_WEIGHTS_PREFIX) :])
    except RunNotFoundError:
        return None


def follow_parent_run() -> None:
    """Starting from a run's backbone fixes the architecture and input size: show them in the widgets."""
    parent = parent_run(st.session_state.get("model_weights", ""))
    if parent is None:
        return
    st.session_state["model_backbone"] = parent.backbone
    if run_modality(parent) == "text":
        return  # a text backbone reads any number of words: the sequence length stays the user's choice
    size = parent_image_size(get_store().run_dir(parent.id), parent.config)
    if size:
        st.session_state["model_image_size"] = size
    st.session_state[CUT_LAYER_WIDGET_KEY] = None


def leave_parent_run(pretrained_weights: str) -> None:
    """Another backbone than the parent run's: its weights no longer fit, so go back to the modality's pretrained ones."""
    parent = parent_run(st.session_state.get("model_weights", ""))
    if parent is not None and parent.backbone != st.session_state.get("model_backbone"):
        st.session_state["model_weights"] = pretrained_weights


def run_modality(record: RunRecord) -> str:
    """What a run was trained on: its DataConfig's modality (runs from before text existed are image runs)."""
    return str((record.config.get("data") or {}).get("modality", "image"))


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


def store_settings(
    model_config: ModelConfig, train_config: TrainConfig, modality: str, run_name: str, parent: RunRecord | None
) -> None:
    """Keep the valid settings; with a dataset chosen they become this user's RunConfig."""
    text = modality == "text"
    st.session_state.pop(SETTINGS_ERROR_KEY, None)
    st.session_state[MODEL_CONFIG_KEY] = model_config
    st.session_state[TRAIN_CONFIG_KEY] = train_config
    dataset = current_dataset()
    if not dataset:
        st.session_state.pop(RUN_CONFIG_KEY, None)
        st.info("Settings are valid. Pick a dataset on the Data page, then train.", icon=":material/info:")
        page_link("data", "Choose data", ":material/folder_open:")
        return
    st.session_state[RUN_CONFIG_KEY] = RunConfig(
        data=DataConfig(source=dataset, modality=modality),
        model=model_config,
        train=train_config,
        name=run_name.strip() or None,
    )
    phases = {
        "feature-extraction": f"{train_config.epochs} epochs",
        "progressive": f"head {train_config.epochs} epochs, then {train_config.stage_epochs} per unfrozen block"
        + (f", at most {train_config.max_stages} blocks" if train_config.max_stages else ""),
    }.get(train_config.mode, f"head {train_config.epochs} + fine-tune {train_config.fine_tune_epochs} epochs")
    extras = "".join(
        [
            f", cut at {escape_markdown(model_config.cut_layer)}" if model_config.cut_layer else "",
            f", from run {escape_markdown(parent.name)}'s backbone" if parent else "",
            ", plus a from-scratch baseline" if train_config.compare_scratch else "",
        ]
    )
    size = f"reading {model_config.sequence_length} words per document" if text else f"at {model_config.image_size} px"
    st.success(
        f"Ready: {escape_markdown(model_config.backbone)} {size}, "
        f"{mode_label(train_config.mode, short=True)} ({phases}){extras}.",
        icon=":material/check_circle:",
    )
    page_link("train", "Go to training", ":material/arrow_forward:")


def model_page() -> None:
    """The Model page: backbone, weights, mode and schedule; valid settings become the RunConfig the Train page starts."""
    modality = current_modality()
    text = modality == "text"
    defaults = default_model_config(modality)
    st.title("Model")
    if text:
        st.caption(
            "Your dataset holds text. Transfer learning reuses word vectors learned from billions of words (the backbone) "
            "and trains a small new head for your classes. Every setting below has a sensible default."
        )
    else:
        st.caption(
            "Transfer learning reuses a network trained on millions of photos (the backbone) and trains a small new "
            "head for your classes. Every setting below has a sensible default."
        )

    limits = RunLimits.from_settings(server_settings())
    if limits.describe():
        st.info(f"This server's limits, set by the trainer: {limits.describe()}.", icon=":material/speed:")

    restore_widgets(WIDGET_PREFIX)
    follow_modality(modality, defaults)
    expert = st.toggle("Expert view", key="model_expert", help="Show every backbone and the advanced settings.")
    specs = list_backbones(None if expert else "recommended", modality=modality)
    st.subheader(
        ("Text backbones" if text else "Backbones")
        if expert
        else ("Recommended text backbones" if text else "Recommended backbones")
    )
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
        size_words = f"default {spec.default_size} words" if text else f"default {spec.default_size} px"
        st.caption(
            escape_markdown(
                f"{spec.display_name}: {format_parameters(spec.parameters)} parameters"
                + (f", {spec.feature_dim}-d features" if spec.feature_dim else "")
                + f", {size_words}. {spec.notes}".strip()
            )
        )

        hub_model = text and not spec.feature_dim  # a TF Hub text embedding: the user names the model as its weights
        pretrained = "hub" if hub_model else "glove" if text else "imagenet"
        session_value("model_weights", defaults.weights)
        finished_runs = [
            record for record in get_store().list_runs(status="completed") if run_modality(record) == modality
        ]
        chosen_weights = st.session_state["model_weights"]
        offered_runs = finished_runs[:RUN_WEIGHT_CHOICES] + [
            r for r in finished_runs[RUN_WEIGHT_CHOICES:] if f"{RUN_WEIGHTS_PREFIX}{r.id}" == chosen_weights
        ]
        weight_options = [pretrained, "none", *(f"{RUN_WEIGHTS_PREFIX}{record.id}" for record in offered_runs)]
        if chosen_weights not in weight_options:  # the run was deleted, or the backbone takes other pretrained weights
            st.session_state["model_weights"] = pretrained
        weight_labels = {
            "imagenet": "Pretrained on ImageNet" + (" (available offline)" if offline else " (needs a download)"),
            "glove": "Pretrained GloVe word vectors"
            + (" (available offline)" if offline else " (package not installed)"),
            "hub": "A pretrained TF Hub model (name it below)",
            "none": "Random (train from scratch — needs much more data)",
            **{
                f"{RUN_WEIGHTS_PREFIX}{r.id}": escape_markdown(f"Backbone of run {r.name} ({r.backbone}, {r.id[-6:]})")
                for r in offered_runs
            },
        }
        weights = setting(
            st.radio,
            "Starting weights",
            "Pretrained weights are what makes transfer learning work. A finished run's backbone carries what it learned "
            "on its data (domain-specific weights) into a new run; it fixes the backbone"
            + ("." if text else " and image size."),
            options=weight_options,
            key="model_weights",
            format_func=weight_labels.get,
            on_change=follow_parent_run,
        )
        if weights == "hub":
            session_value(HUB_WEIGHTS_KEY, "")
            weights = setting(
                st.text_input,
                "TF Hub model",
                "A TF Hub handle (needs internet once, or the TF Hub cache) or a SavedModel folder "
                "on this server that turns strings into one vector each.",
                key=HUB_WEIGHTS_KEY,
                placeholder="https://tfhub.dev/google/nnlm-en-dim50/2",
            ).strip()
        parent = parent_run(weights)
        if parent is not None:
            st.caption(
                f"Starts from the backbone trained in run **{escape_markdown(parent.name)}** ({escape_markdown(parent.id)}): "
                f"{escape_markdown(parent.backbone)}; the new run records it as its parent."
            )
        if weights in ("imagenet", "glove") and not offline:
            st.warning(
                "This backbone's pretrained weights are not installed and this server may be offline: "
                "pick a backbone marked 'offline ✓', or random weights.",
                icon=":material/cloud_off:",
            )

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
        if text:
            session_value("model_sequence_length", DEFAULT_SEQUENCE_LENGTH)
            sequence_length = setting(
                st.number_input,
                "Words per document",
                "The model reads this many words from the start of each document and ignores the rest; fewer is faster. "
                f"This backbone takes {size_range(spec)}.",
                min_value=spec.min_size,
                max_value=spec.max_size or 4096,
                step=8,
                key="model_sequence_length",
            )
        else:
            session_value("model_image_size", DEFAULT_IMAGE_SIZE)
            image_size = setting(
                st.number_input,
                "Image size (px)",
                f"Images are resized to this square side; smaller is faster. This backbone takes {size_range(spec)}."
                + (" A run's backbone keeps the size it was trained at." if parent else ""),
                min_value=16,
                max_value=1024,
                step=16,
                key="model_image_size",
                disabled=parent is not None,
            )
        examples = "documents" if text else "images"
        session_value("model_epochs", DEFAULT_EPOCHS)
        epochs = setting(
            st.number_input,
            "Epochs (head)",
            f"Passes over the training {examples} while training the head; training stops early when validation stops improving.",
            min_value=1,
            max_value=500,
            key="model_epochs",
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
        if not text:  # flips and rotations are for pictures; there is no text augmentation
            session_value("model_augment", False)
            augment = setting(
                st.toggle,
                "Augmentation",
                "Random flips, rotations, zooms and contrast on training images: helps small datasets, trains slower.",
                key="model_augment",
            )

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
            key="model_hidden_units",
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
            key="model_fine_tune_epochs",
            disabled=not fine_tuning,
        )
        session_value("model_stage_epochs", 2)
        stage_epochs = setting(
            st.number_input,
            "Epochs per block",
            "Progressive mode: epochs after unfreezing each further block.",
            min_value=1,
            max_value=100,
            key="model_stage_epochs",
            disabled=mode != "progressive",
        )
        session_value("model_max_stages", 0)
        max_stages = setting(
            st.number_input,
            "Most blocks to unfreeze",
            "Progressive mode: stop after unfreezing this many blocks from the top (0: go down until validation stops improving).",
            min_value=0,
            max_value=100,
            key="model_max_stages",
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
            key="model_fine_tune_layers",
            disabled=mode != "fine-tune",
        )

    cut_layer: str | None = None
    if not text:  # a text backbone has one weighted layer (the word vectors): there is no depth to cut at
        st.subheader("Where to cut the backbone")
        cut_options = cut_layer_options(backbone)
        session_value(CUT_LAYER_WIDGET_KEY, None)
        if st.session_state[CUT_LAYER_WIDGET_KEY] not in cut_options:  # chosen for another backbone
            st.session_state[CUT_LAYER_WIDGET_KEY] = None
        cut_layer = setting(
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

    patience: int | None = 5
    class_weighting, pooling, seed = "auto", "avg", 42
    if expert:
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
                    key="model_patience",
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
                key="model_seed",
            )

    session_value("model_compare_scratch", False)
    compare_scratch = setting(
        st.checkbox,
        "Compare with a from-scratch baseline",
        "Also trains the same network from random weights with the same budget and split, and flags negative transfer "
        "when it beats the pretrained one (about twice the time).",
        key="model_compare_scratch",
        disabled=weights == "none",
    )

    session_value("model_run_name", "")
    run_name = st.text_input(
        "Run name (optional)",
        key="model_run_name",
        placeholder="e.g. lite0 baseline",
        help="Shown in the Runs table; by default backbone, mode and time.",
    )

    remember_widgets(WIDGET_PREFIX)
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
            image_size=None if text else int(image_size or DEFAULT_IMAGE_SIZE),
            pooling=pooling,
            cut_layer=None if parent else cut_layer,
            head_hidden_units=parse_hidden_units(hidden_text),
            dropout=float(dropout),
            augment=bool(augment),
            sequence_length=int(sequence_length),
        )
        if not text:
            resolve_image_size(spec, model_config.image_size)
        train_config = TrainConfig(
            mode=mode,
            epochs=int(epochs),
            fine_tune_epochs=int(fine_tune_epochs),
            batch_size=int(batch_size),
            learning_rate=float(learning_rate),
            fine_tune_learning_rate=float(fine_tune_lr),
            fine_tune_layers=int(fine_tune_layers),
            stage_epochs=int(stage_epochs),
            max_stages=int(max_stages) or None,
            compare_scratch=bool(compare_scratch) and weights != "none",
            early_stopping_patience=patience,
            reduce_lr_patience=3 if patience else None,
            class_weighting=class_weighting,
            seed=int(seed),
        )
        if weights.startswith(RUN_WEIGHTS_PREFIX) and parent is None:
            raise ConfigError(
                f"Run {weights[len(RUN_WEIGHTS_PREFIX) :]} no longer exists: choose other starting weights."
            )
        if fine_tuning and train_config.fine_tune_epochs == 0:
            raise ConfigError(
                f"Mode {mode!r} with 0 fine-tune epochs only trains the head: set fine-tune epochs to 1 or more, or choose feature extraction."
            )
        if over_limits := check_run_limits(model_config, train_config, limits):
            raise RunLimitError(over_limits)
    except (ConfigError, TransferLabError) as exc:
        st.session_state[SETTINGS_ERROR_KEY] = str(exc)
        for key in (MODEL_CONFIG_KEY, TRAIN_CONFIG_KEY, RUN_CONFIG_KEY):
            st.session_state.pop(key, None)
        show_error(exc)
    else:
        store_settings(model_config, train_config, modality, run_name, parent)
        if current_dataset():
            st.divider()
            if text:
                st.caption(
                    "The mode advisor and the cut-depth comparison measure image backbones only; for text, start with "
                    "feature extraction, then try fine-tuning the word vectors if validation accuracy stalls."
                )
            else:
                show_mode_advisor(current_dataset(), model_config, train_config)
                show_cut_depth_probe(current_dataset(), model_config, train_config.seed)


if __name__ == "__main__":  # Streamlit ran this file itself instead of app.py: see ui.navigation.run_app_instead
    run_app_instead()
