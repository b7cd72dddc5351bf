"""Model: pick a backbone and how to train it; the result is a RunConfig kept in session state."""

from __future__ import annotations

import streamlit as st

from tl_core.backbones import get_backbone_spec, list_backbones, resolve_image_size
from tl_core.config import MODES, ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import TransferLabError
from ui.settings import (
    BATCH_SIZES, DEFAULT_BACKBONE, DEFAULT_EPOCHS, DEFAULT_IMAGE_SIZE, DEFAULT_WEIGHTS, LEARNING_RATES,
    backbone_table, has_offline_weights, mode_label, parse_hidden_units, size_range,
)
from ui.state import (
    MODEL_CONFIG_KEY, RUN_CONFIG_KEY, TRAIN_CONFIG_KEY, current_dataset, get_store, remember_widgets, restore_widgets, session_value,
)
from ui.text import escape_markdown, format_parameters, show_error

SETTINGS_ERROR_KEY = "settings_error"
WIDGET_PREFIX = "model_"


def setting(widget, label: str, explanation: str, **kwargs):
    """Draw one setting with its explanation both as a tooltip and as a one-line caption below it."""
    value = widget(label, help=explanation, **kwargs)
    st.caption(explanation)
    return value


st.title("Model")
st.caption("Transfer learning reuses a network trained on millions of photos (the backbone) and trains a small new "
           "head for your classes. Every setting below has a sensible default.")

restore_widgets(WIDGET_PREFIX)
expert = st.toggle("Expert view", key="model_expert", help="Show every backbone and the advanced settings.")
specs = list_backbones(None if expert else "recommended")
st.subheader("Backbones" if expert else "Recommended backbones")
st.dataframe(backbone_table(specs), hide_index=True, width="stretch",
             column_config={"parameters (M)": st.column_config.NumberColumn(format="%.2f")})

names = [spec.name for spec in specs]
session_value("model_backbone", DEFAULT_BACKBONE)
if st.session_state["model_backbone"] not in names:  # chosen in the expert view, then switched back
    names.append(st.session_state["model_backbone"])
left, right = st.columns(2, gap="large")
with left:
    backbone = setting(st.selectbox, "Backbone", "The pretrained network whose features your classifier builds on.",
                       options=names, key="model_backbone")
    spec = get_backbone_spec(backbone)
    offline = has_offline_weights(spec)
    st.caption(escape_markdown(f"{spec.display_name}: {format_parameters(spec.parameters)} parameters, {spec.feature_dim}-d features, "
                               f"default {spec.default_size} px. {spec.notes}".strip()))

    weight_options = ["imagenet", "none"]
    if expert:
        weight_options += [f"run:{record.id}" for record in get_store().list_runs(status="completed")]
    session_value("model_weights", DEFAULT_WEIGHTS)
    if st.session_state["model_weights"] not in weight_options:
        st.session_state["model_weights"] = DEFAULT_WEIGHTS
    weight_labels = {
        "imagenet": "Pretrained on ImageNet" + (" (available offline)" if offline else " (needs a download)"),
        "none": "Random (train from scratch — needs much more data)",
    }
    weights = setting(st.radio, "Starting weights", "Pretrained weights are what makes transfer learning work.",
                      options=weight_options, key="model_weights", format_func=lambda w: weight_labels.get(w, f"Backbone of run {w[4:]}"))
    if weights == "imagenet" and not offline:
        st.warning("This backbone's ImageNet weights are not installed and this server may be offline: "
                   "pick a backbone marked 'offline ✓', or random weights.", icon=":material/cloud_off:")

    mode = setting(st.radio, "Training mode", "What gets trained: only the new head, or the backbone's layers too.",
                   options=list(MODES), key="model_mode", format_func=mode_label)

with right:
    session_value("model_image_size", DEFAULT_IMAGE_SIZE)
    image_size = setting(st.number_input, "Image size (px)",
                         f"Images are resized to this square side; smaller is faster. This backbone takes {size_range(spec)}.",
                         min_value=16, max_value=1024, step=16, key="model_image_size")
    session_value("model_epochs", DEFAULT_EPOCHS)
    epochs = setting(st.number_input, "Epochs (head)", "Passes over the training images while training the head; training stops early when validation stops improving.",
                     min_value=1, max_value=500, key="model_epochs")
    session_value("model_learning_rate", 1e-3)
    learning_rate = setting(st.select_slider, "Learning rate", "Step size of the optimiser: 1e-3 suits a new head; too high makes training unstable.",
                            options=list(LEARNING_RATES), key="model_learning_rate", format_func=lambda v: f"{v:g}")
    session_value("model_batch_size", 32)
    batch_size = setting(st.select_slider, "Batch size", "Images per training step; larger is faster per epoch but needs more memory.",
                         options=list(BATCH_SIZES), key="model_batch_size")
    session_value("model_augment", False)
    augment = setting(st.toggle, "Augmentation", "Random flips, rotations, zooms and contrast on training images: helps small datasets, trains slower.",
                      key="model_augment")

st.subheader("Head and fine-tuning")
head_col, tune_col = st.columns(2, gap="large")
with head_col:
    session_value("model_dropout", 0.2)
    dropout = setting(st.slider, "Dropout", "Share of features randomly dropped while training the head: fights overfitting.",
                      min_value=0.0, max_value=0.8, step=0.05, key="model_dropout")
    session_value("model_hidden_units", "")
    hidden_text = setting(st.text_input, "Hidden units", "Sizes of extra dense layers in the head, e.g. 128 or 256, 128; empty for a single linear layer.",
                          key="model_hidden_units", placeholder="none")
with tune_col:
    fine_tuning = mode in ("fine-tune", "full")
    session_value("model_fine_tune_epochs", 5)
    fine_tune_epochs = setting(st.number_input, "Fine-tune epochs", "Epochs of the second phase, after the head has converged.",
                               min_value=0, max_value=500, key="model_fine_tune_epochs", disabled=not fine_tuning)
    session_value("model_stage_epochs", 2)
    stage_epochs = setting(st.number_input, "Epochs per block", "Progressive mode: epochs after unfreezing each further block.",
                           min_value=1, max_value=100, key="model_stage_epochs", disabled=mode != "progressive")
    session_value("model_fine_tune_lr", 1e-4)
    fine_tune_lr = setting(st.select_slider, "Fine-tune learning rate", "Much lower than the head's so the pretrained features are not destroyed.",
                           options=list(LEARNING_RATES), key="model_fine_tune_lr", format_func=lambda v: f"{v:g}", disabled=mode == "feature-extraction")
    session_value("model_fine_tune_layers", 20)
    fine_tune_layers = setting(st.number_input, "Layers to unfreeze", "How many of the backbone's top layers train in fine-tune mode.",
                               min_value=1, max_value=1000, key="model_fine_tune_layers", disabled=mode != "fine-tune")

patience: int | None = 5
class_weighting, pooling, seed, compare_scratch = "auto", "avg", 42, False
if expert:
    st.subheader("Advanced")
    a, b, c, d = st.columns(4)
    with a:
        session_value("model_patience", 5)
        patience = setting(st.number_input, "Early-stopping patience", "Epochs without validation improvement before stopping; 0 never stops early.",
                           min_value=0, max_value=100, key="model_patience") or None
    with b:
        session_value("model_class_weighting", "auto")
        class_weighting = setting(st.selectbox, "Class weighting", "Weigh rare classes up: auto does it when the classes are imbalanced.",
                                  options=["auto", "on", "off"], key="model_class_weighting")
    with c:
        session_value("model_pooling", "avg")
        pooling = setting(st.selectbox, "Pooling", "How the backbone's feature map becomes one vector.", options=["avg", "max"], key="model_pooling")
    with d:
        session_value("model_seed", 42)
        seed = setting(st.number_input, "Seed", "The same seed and data give the same split and initial head.", min_value=0, max_value=2**31 - 1, key="model_seed")
    session_value("model_compare_scratch", False)
    compare_scratch = setting(st.toggle, "Also train from scratch", "Trains the same network from random weights with the same budget to check that transfer helps (twice the time).",
                              key="model_compare_scratch")

session_value("model_run_name", "")
run_name = st.text_input("Run name (optional)", key="model_run_name", placeholder="e.g. lite0 baseline",
                         help="Shown in the Runs table; by default backbone, mode and time.")

def store_settings(model_config: ModelConfig, train_config: TrainConfig) -> None:
    """Keep the valid settings; with a dataset chosen they become this user's RunConfig."""
    st.session_state.pop(SETTINGS_ERROR_KEY, None)
    st.session_state[MODEL_CONFIG_KEY] = model_config
    st.session_state[TRAIN_CONFIG_KEY] = train_config
    dataset = current_dataset()
    if not dataset:
        st.session_state.pop(RUN_CONFIG_KEY, None)
        st.info("Settings are valid. Pick a dataset on the Data page, then train.", icon=":material/info:")
        st.page_link("pages/data.py", label="Choose data", icon=":material/folder_open:")
        return
    st.session_state[RUN_CONFIG_KEY] = RunConfig(data=DataConfig(source=dataset), model=model_config, train=train_config,
                                                 name=run_name.strip() or None)
    phases = {"feature-extraction": f"{train_config.epochs} epochs",
              "progressive": f"head {train_config.epochs} epochs, then {train_config.stage_epochs} per unfrozen block"}.get(
        train_config.mode, f"head {train_config.epochs} + fine-tune {train_config.fine_tune_epochs} epochs")
    st.success(f"Ready: {escape_markdown(model_config.backbone)} at {model_config.image_size} px, "
               f"{mode_label(train_config.mode, short=True)} ({phases}).", icon=":material/check_circle:")
    st.page_link("pages/train.py", label="Go to training", icon=":material/arrow_forward:")


remember_widgets(WIDGET_PREFIX)
st.divider()
try:
    model_config = ModelConfig(
        backbone=backbone, weights=weights, image_size=int(image_size), pooling=pooling,
        head_hidden_units=parse_hidden_units(hidden_text), dropout=float(dropout), augment=bool(augment),
    )
    resolve_image_size(spec, model_config.image_size)
    train_config = TrainConfig(
        mode=mode, epochs=int(epochs), fine_tune_epochs=int(fine_tune_epochs), batch_size=int(batch_size),
        learning_rate=float(learning_rate), fine_tune_learning_rate=float(fine_tune_lr), fine_tune_layers=int(fine_tune_layers),
        stage_epochs=int(stage_epochs), compare_scratch=bool(compare_scratch),
        early_stopping_patience=patience, reduce_lr_patience=3 if patience else None, class_weighting=class_weighting, seed=int(seed),
    )
    if fine_tuning and train_config.fine_tune_epochs == 0:
        raise ConfigError(f"Mode {mode!r} with 0 fine-tune epochs only trains the head: set fine-tune epochs to 1 or more, or choose feature extraction.")
except (ConfigError, TransferLabError) as exc:
    st.session_state[SETTINGS_ERROR_KEY] = str(exc)
    for key in (MODEL_CONFIG_KEY, TRAIN_CONFIG_KEY, RUN_CONFIG_KEY):
        st.session_state.pop(key, None)
    show_error(exc)
else:
    store_settings(model_config, train_config)
