"""A user's choices in the app (dataset, model and training settings, the run and sweep in view, the Model page's widgets)
kept in their workspace, so a reload or a new tab starts where they left off.

Streamlit's session state lives and dies with one browser tab's websocket; this file outlives it. Each session
reads it on its first run and writes it at the end of any run that changed a choice (last writer wins between
tabs; a tab that only watches never overwrites). Values that do not load (a file from an older version, settings
no longer valid) are skipped, never fatal.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import streamlit as st

from tl_core.config import ConfigError, ModelConfig, RunConfig, TrainConfig
from tl_core.layout import UI_CHOICES_FILE
from ui.state import (
    DATASET_KEY,
    MODEL_CONFIG_KEY,
    RUN_CONFIG_KEY,
    RUN_KEY,
    SAVED_WIDGETS_KEY,
    SWEEP_KEY,
    TRAIN_CONFIG_KEY,
    workspace_path,
)

_LOADED_KEY = "_choices_loaded"
_WRITTEN_KEY = "_choices_written"  # the JSON this session last read or wrote: unchanged choices are not rewritten
_CONFIG_TYPES = {MODEL_CONFIG_KEY: ModelConfig, TRAIN_CONFIG_KEY: TrainConfig}
_PLAIN = (str, int, float, bool, type(None))


def restore_choices() -> None:
    """On a session's first run, put the user's saved choices back into session state (keys not set already)."""
    if st.session_state.get(_LOADED_KEY):
        return
    st.session_state[_LOADED_KEY] = True
    try:
        text = _path().read_text(encoding="utf-8")
        saved = json.loads(text)
    except (OSError, ValueError):
        return
    st.session_state[_WRITTEN_KEY] = text
    for key, value in _decoded(saved if isinstance(saved, dict) else {}).items():
        if key not in st.session_state:
            st.session_state[key] = value


def save_choices() -> None:
    """Write the user's current choices when they differ from what this session last read or wrote."""
    if not st.session_state.get(_LOADED_KEY):
        return
    text = json.dumps(_encoded(), sort_keys=True)
    if text == st.session_state.get(_WRITTEN_KEY):
        return
    path = _path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)  # atomic: another tab never reads half a file
    except OSError:
        return  # a full disk or a read-only workspace: the choices live in this tab only, as before
    st.session_state[_WRITTEN_KEY] = text


def _path() -> Path:
    return workspace_path() / UI_CHOICES_FILE


def _encoded() -> dict[str, Any]:
    state = st.session_state
    choices: dict[str, Any] = {
        "dataset": state.get(DATASET_KEY),
        "run_id": state.get(RUN_KEY),
        "sweep_id": state.get(SWEEP_KEY),
    }
    for key in _CONFIG_TYPES:
        value = state.get(key)
        choices[key] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else None
    run_config = state.get(RUN_CONFIG_KEY)
    choices[RUN_CONFIG_KEY] = run_config.to_dict() if isinstance(run_config, RunConfig) else None
    widgets = state.get(SAVED_WIDGETS_KEY, {})
    choices["widgets"] = {
        prefix: {key: value for key, value in values.items() if _is_plain(value)}
        for prefix, values in widgets.items()
        if isinstance(values, dict)
    }
    return choices


def _decoded(saved: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if isinstance(saved.get("dataset"), str):
        state[DATASET_KEY] = saved["dataset"]
    if isinstance(saved.get("run_id"), str):
        state[RUN_KEY] = saved["run_id"]
    if isinstance(saved.get("sweep_id"), str):
        state[SWEEP_KEY] = saved["sweep_id"]
    for key, kind in _CONFIG_TYPES.items():
        if isinstance(saved.get(key), dict) and (config := _config(kind, saved[key])) is not None:
            state[key] = config
    if isinstance(saved.get(RUN_CONFIG_KEY), dict):
        try:
            state[RUN_CONFIG_KEY] = RunConfig.from_dict(saved[RUN_CONFIG_KEY])
        except (ConfigError, TypeError, ValueError):
            pass
    if isinstance(saved.get("widgets"), dict):
        state[SAVED_WIDGETS_KEY] = {
            prefix: values for prefix, values in saved["widgets"].items() if isinstance(values, dict)
        }
    return state


def _config(kind: type, values: dict[str, Any]) -> Any:
    known = {field.name for field in dataclasses.fields(kind)}
    try:
        return kind(**{key: _tuples(value) for key, value in values.items() if key in known})
    except (ConfigError, TypeError, ValueError):
        return None


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the frozen configs hold."""
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def _is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(item, _PLAIN) for item in value)
    return isinstance(value, _PLAIN)
