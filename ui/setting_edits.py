"""A typed setting takes effect when it is committed, even if the Model page does not run again to store it.

A number or text box commits its value when it loses focus. Type in one and click another page in the sidebar, and
Streamlit's frontend asks for the new page and sends the value in two requests, in either order (see
`ui.navigation.follow_interrupted_navigation`): the Model page may never run with the new value, and the Train page
would start a run with the old epochs (seen in Chromium: type 5 epochs, click Train, and the caption said 10).
Streamlit calls a widget's `on_change` before whichever page runs next, so `apply_typed_setting` folds the one
changed value into the stored ModelConfig, TrainConfig and RunConfig (the defaults the Train page would use, if the
Model page never stored any), and into the widget values the Model page gives back on the next visit. The Model
page, when it runs, still rebuilds all three from every widget, as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import streamlit as st

from tl_core.config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import TransferLabError
from tl_core.models.registry import get_backbone_spec, resolve_image_size
from tl_core.server.limits import RunLimitError, RunLimits, check_run_limits
from ui.navigation import note_typed_commit
from ui.settings import parse_hidden_units
from ui.state import (
    MODEL_CONFIG_KEY,
    MODEL_WIDGET_PREFIX,
    RUN_CONFIG_KEY,
    SAVED_WIDGETS_KEY,
    SETTINGS_ERROR_KEY,
    TRAIN_CONFIG_KEY,
    chosen_settings,
    current_dataset,
    current_modality,
    server_settings,
)

FieldEdit = Callable[[Any], dict[str, Any]]

# Each typed (number or text) box of the Model page, and the config fields its value sets, as the page sets them.
TRAIN_EDITS: dict[str, FieldEdit] = {
    "model_epochs": lambda value: {"epochs": int(value)},
    "model_fine_tune_epochs": lambda value: {"fine_tune_epochs": int(value)},
    "model_stage_epochs": lambda value: {"stage_epochs": int(value)},
    "model_max_stages": lambda value: {"max_stages": int(value) or None},
    "model_fine_tune_layers": lambda value: {"fine_tune_layers": int(value)},
    "model_patience": lambda value: {
        "early_stopping_patience": int(value) or None,
        "reduce_lr_patience": 3 if value else None,
    },
    "model_seed": lambda value: {"seed": int(value)},
}
MODEL_EDITS: dict[str, FieldEdit] = {
    "model_image_size": lambda value: {"image_size": int(value)},
    "model_sequence_length": lambda value: {"sequence_length": int(value)},
    "model_hidden_units": lambda value: {"head_hidden_units": parse_hidden_units(str(value))},
}
RUN_NAME_KEY = "model_run_name"
TYPED_SETTINGS = frozenset({*TRAIN_EDITS, *MODEL_EDITS, RUN_NAME_KEY})


def settings_problem(model: ModelConfig, train: TrainConfig) -> None:
    """Raise what makes valid-looking settings unusable: an image size the backbone cannot take, fine-tuning with no
    fine-tune epochs, or a run over the server's limits."""
    if model.image_size is not None:
        resolve_image_size(get_backbone_spec(model.backbone), model.image_size)
    if train.mode in ("fine-tune", "full") and train.fine_tune_epochs == 0:
        raise ConfigError(
            f"Mode {train.mode!r} with 0 fine-tune epochs only trains the head: set fine-tune epochs to 1 or more, "
            "or choose feature extraction."
        )
    if over_limits := check_run_limits(model, train, RunLimits.from_settings(server_settings())):
        raise RunLimitError(over_limits)


def keep_settings(model: ModelConfig, train: TrainConfig, name: str | None) -> RunConfig | None:
    """Keep valid settings; with a dataset chosen they become the RunConfig that Start queues (returned)."""
    st.session_state.pop(SETTINGS_ERROR_KEY, None)
    st.session_state[MODEL_CONFIG_KEY], st.session_state[TRAIN_CONFIG_KEY] = model, train
    dataset = current_dataset()
    if not dataset:
        st.session_state.pop(RUN_CONFIG_KEY, None)
        return None
    run = RunConfig(data=DataConfig(source=dataset, modality=current_modality()), model=model, train=train, name=name)
    st.session_state[RUN_CONFIG_KEY] = run
    return run


def forget_settings(reason: str) -> None:
    """Drop settings that are invalid, keeping why (the Train page shows it and links to the Model page)."""
    st.session_state[SETTINGS_ERROR_KEY] = reason
    for key in (MODEL_CONFIG_KEY, TRAIN_CONFIG_KEY, RUN_CONFIG_KEY):
        st.session_state.pop(key, None)


def apply_typed_setting(key: str) -> None:
    """`on_change` of a typed box: its new value into the stored settings (see the module docstring)."""
    value = st.session_state.get(key)
    note_typed_commit()  # this run may be the box's commit racing a click on another page: app.py follows the click
    saved = st.session_state.setdefault(SAVED_WIDGETS_KEY, {}).setdefault(MODEL_WIDGET_PREFIX, {})
    saved[key] = value  # what the Model page's widgets start from on its next visit
    if SETTINGS_ERROR_KEY in st.session_state:
        return  # invalid for another reason too, perhaps: the Model page rebuilds them (and says why) when it runs
    model, train = chosen_settings()  # the stored ones, or the defaults the Train page would use
    run = st.session_state.get(RUN_CONFIG_KEY)
    name = run.name if isinstance(run, RunConfig) else None
    try:
        if key in TRAIN_EDITS:
            train = dataclasses.replace(train, **TRAIN_EDITS[key](value))
        elif key in MODEL_EDITS:
            if key == "model_image_size" and model.image_size is None:
                return  # text: the box is not this modality's
            model = dataclasses.replace(model, **MODEL_EDITS[key](value))
        elif key == RUN_NAME_KEY:
            name = str(value).strip() or None
        settings_problem(model, train)
    except (ConfigError, TransferLabError, TypeError, ValueError) as exc:
        forget_settings(str(exc))
        return
    keep_settings(model, train, name)


def typed_setting(key: str) -> dict[str, Any]:
    """The widget arguments that make a typed box apply itself: `st.number_input(..., **typed_setting(key))`."""
    if key not in TYPED_SETTINGS:
        raise KeyError(f"{key} is not one of the Model page's typed settings ({', '.join(sorted(TYPED_SETTINGS))})")
    return {"key": key, "on_change": apply_typed_setting, "args": (key,)}
