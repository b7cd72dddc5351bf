"""Per-server objects (one run store, one job manager) and per-user choices (session state).

`st.cache_resource` objects are shared by every browser tab of this server: the store and the
manager are safe to share (the store opens a connection per call; the manager locks its queue).
What one user picked (dataset, run, settings) lives in `st.session_state`, never in a shared object.
"""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from tl_core.runs import RunStore

if TYPE_CHECKING:
    from tl_core.config import ModelConfig, TrainConfig
    from tl_core.jobs import JobManager

WORKSPACE_ENV = "TRANSFERLAB_WORKSPACE"
DATASETS_ENV = "TRANSFERLAB_DATASETS_DIR"

# Session-state keys shared by several pages.
DATASET_KEY = "dataset_path"
RUN_KEY = "run_id"
MODEL_CONFIG_KEY = "model_config"
TRAIN_CONFIG_KEY = "train_config"
RUN_CONFIG_KEY = "run_config"
_SHARED_KEYS = frozenset({DATASET_KEY, RUN_KEY, MODEL_CONFIG_KEY, TRAIN_CONFIG_KEY, RUN_CONFIG_KEY})
_SAVED_WIDGETS_KEY = "saved_widget_values"


def workspace_path() -> Path:
    """The workspace folder: `$TRANSFERLAB_WORKSPACE`, else `./workspace` (resolved, so it can key caches)."""
    return Path(os.environ.get(WORKSPACE_ENV) or "workspace").expanduser().resolve()


def datasets_dir() -> Path:
    """Server-side datasets: `$TRANSFERLAB_DATASETS_DIR`, else `<workspace>/datasets`; created when missing."""
    folder = Path(os.environ.get(DATASETS_ENV) or workspace_path() / "datasets").expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def uploads_dir() -> Path:
    """Where uploaded datasets are saved: always inside the workspace, whatever the datasets dir is."""
    folder = workspace_path() / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@st.cache_resource(show_spinner=False)
def _store_for(workspace: str) -> RunStore:
    # Import TensorFlow in the background now, so the Train page does not wait for it later.
    threading.Thread(target=importlib.import_module, args=("tl_core.jobs",), name="transferlab-warmup", daemon=True).start()
    return RunStore(workspace)


@st.cache_resource(show_spinner=False)
def _manager_for(workspace: str) -> JobManager:
    from tl_core.jobs import JobManager

    return JobManager(_store_for(workspace), max_concurrent=1)


def get_store() -> RunStore:
    """The server's run store for the current workspace."""
    return _store_for(str(workspace_path()))


def get_manager() -> JobManager:
    """The server's job manager: pages submit and stop through it and otherwise only read it."""
    return _manager_for(str(workspace_path()))


DEFAULT_DATASET_ENV = "TRANSFERLAB_DEFAULT_DATASET"
DEFAULT_DEMO_FOLDER = "textures"  # `make run` writes it, so a newcomer can press Train straight away


def current_dataset() -> str | None:
    """The dataset this user picked on the Data page, else the server's default one when it exists."""
    if DATASET_KEY not in st.session_state:
        default = os.environ.get(DEFAULT_DATASET_ENV) or str(datasets_dir() / DEFAULT_DEMO_FOLDER)
        if Path(default).exists():
            st.session_state[DATASET_KEY] = default
    return st.session_state.get(DATASET_KEY)


def set_current_dataset(path: str | Path) -> None:
    st.session_state[DATASET_KEY] = str(path)
    st.session_state.pop(RUN_CONFIG_KEY, None)  # the stored config named the previous dataset


def current_run_id() -> str | None:
    return st.session_state.get(RUN_KEY)


def set_current_run(run_id: str | None) -> None:
    st.session_state[RUN_KEY] = run_id


def chosen_settings() -> tuple[ModelConfig, TrainConfig]:
    """The model and training settings from the Model page, or the defaults when it was skipped."""
    from ui.settings import default_model_config, default_train_config  # imports Keras: only pages that train need it

    model = st.session_state.get(MODEL_CONFIG_KEY) or default_model_config()
    train = st.session_state.get(TRAIN_CONFIG_KEY) or default_train_config()
    return model, train


def restore_widgets(prefix: str) -> None:
    """Give a page's widgets back the values they had when the user last left the page.

    Streamlit forgets a widget's value once a run does not draw it (another page is shown), so a
    page calls `remember_widgets` after drawing its widgets and this before drawing them.
    """
    for key, value in st.session_state.get(_SAVED_WIDGETS_KEY, {}).get(prefix, {}).items():
        if key not in st.session_state:
            st.session_state[key] = value


def remember_widgets(prefix: str) -> None:
    """Save the current values of every widget whose key starts with `prefix` (see `restore_widgets`)."""
    saved = st.session_state.setdefault(_SAVED_WIDGETS_KEY, {})
    saved[prefix] = {
        key: st.session_state[key] for key in st.session_state
        if isinstance(key, str) and key.startswith(prefix) and key not in _SHARED_KEYS
    }


def session_value(key: str, default: Any) -> Any:
    """Seed a widget's value once (widgets then take it from session state, not from `value=`)."""
    if key not in st.session_state:
        st.session_state[key] = default
    return st.session_state[key]
