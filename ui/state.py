"""Per-server objects (settings, workspaces, run stores, job managers) and per-user choices (session state).

Process-wide objects (`ui.singletons`, not `st.cache_resource`, which any client can clear) are shared by
every browser tab of this server: the settings, the workspaces, the stores and the one job manager are
safe to share (a store opens a connection per call; a manager locks its queue). Who is signed in and what they picked (dataset, run, settings) lives in
`st.session_state`, never in a shared object. Every path a page uses comes from the signed-in user's
workspace, so one user's pages never name another user's files.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from tl_core.errors import TransferLabError
from tl_core.jobs.model_worker import ModelWorker
from tl_core.runs.store import RunStore
from tl_core.server.accounts import User
from tl_core.server.limits import RunLimitError, RunLimits, check_run_limits
from tl_core.server.settings import CONFIG_ENV, ENV_VARIABLES, ServerSettings, load_server_settings
from tl_core.server.shown_paths import Area, shown_path
from tl_core.server.workspaces import LOCAL_USER, UserWorkspace, Workspaces
from ui.sessions import end_session, resume_user, start_session
from ui.singletons import process_wide

if TYPE_CHECKING:
    from tl_core.config import ModelConfig, TrainConfig
    from tl_core.jobs.manager import JobManager

WORKSPACE_ENV = "TRANSFERLAB_WORKSPACE"
DATASETS_ENV = "TRANSFERLAB_DATASETS_DIR"

# Session-state keys shared by several pages (the signed-in user's is ui.sessions.USER_KEY).
DATASET_KEY = "dataset_path"
REFUSED_DATASET_KEY = "refused_dataset"
MODALITY_KEY = "dataset_modalities"  # {dataset path: "image" | "text"}, detected once per chosen dataset
RUN_KEY = "run_id"
MODEL_CONFIG_KEY = "model_config"
TRAIN_CONFIG_KEY = "train_config"
RUN_CONFIG_KEY = "run_config"
SWEEP_KEY = "sweep_id"  # the backbone sweep last started or picked on the Runs page
_SHARED_KEYS = frozenset({DATASET_KEY, RUN_KEY, MODEL_CONFIG_KEY, TRAIN_CONFIG_KEY, RUN_CONFIG_KEY, SWEEP_KEY})
SAVED_WIDGETS_KEY = "saved_widget_values"
MODEL_WIDGET_PREFIX = "model_"  # every Model page widget's key starts with it
SETTINGS_ERROR_KEY = "settings_error"  # why the Model page's settings are invalid (the Train page shows it)


@process_wide
def _server_for(environment: tuple[tuple[str, str], ...], cwd: str) -> tuple[ServerSettings, Workspaces]:
    settings = load_server_settings(dict(environment), cwd=Path(cwd))
    personal = not settings.sign_in_required
    spaces = Workspaces(
        settings.workspace,
        single_user=personal,
        server_datasets_dir=settings.server_datasets_dir,
        # Personal mode keeps today's behaviour: Streamlit's own upload limit, no disk quota.
        disk_quota_mb=settings.disk_quota_mb,
        max_upload_mb=None if personal else settings.max_upload_mb,
    )
    if not personal:
        spaces.publish_quotas()
    return settings, spaces


def _server() -> tuple[ServerSettings, Workspaces]:
    # Keyed by the variables the settings read, so a changed environment (tests) gets fresh settings.
    names = (*ENV_VARIABLES.values(), CONFIG_ENV)
    return _server_for(tuple((name, os.environ[name]) for name in names if name in os.environ), str(Path.cwd()))


def server_settings() -> ServerSettings:
    """The server's settings (personal or workshop); raises ServerSettingsError when they are invalid."""
    return _server()[0]


def workspaces() -> Workspaces:
    """Every user's workspace with its path checks and quotas (personal mode: one, the workspace itself)."""
    return _server()[1]


def signed_in_user() -> User | None:
    """Who is signed in in this browser (checked again on every run); always `LOCAL_USER` in personal mode."""
    settings = server_settings()
    if not settings.sign_in_required:
        return LOCAL_USER
    return resume_user(settings)


def current_user() -> User:
    """The signed-in user. Pages run only after sign-in; should one run without, it stops there."""
    user = signed_in_user()
    if user is None:
        st.error("Sign in first.", icon=":material/lock:")
        st.stop()  # never fall back to a shared identity on a workshop server
    return user


def sign_in(user: User) -> None:
    """Start this session as `user` (kept across reloads and tabs), forgetting anything a previous user of this tab picked."""
    start_session(server_settings(), user)


def sign_out() -> None:
    end_session(server_settings())


def is_workshop() -> bool:
    return server_settings().sign_in_required


def user_workspace() -> UserWorkspace:
    """The signed-in user's own folder (datasets, cache, runs and run store)."""
    return workspaces().workspace_for(current_user())


def workspace_path() -> Path:
    """The signed-in user's workspace folder (personal mode: `$TRANSFERLAB_WORKSPACE`, else `./workspace`)."""
    return user_workspace().root


def datasets_dir() -> Path:
    """Shared datasets: `$TRANSFERLAB_DATASETS_DIR`, else `<workspace>/datasets`; created when missing.

    On a workshop server only trainers write there; students read it.
    """
    folder = workspaces().server_datasets
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def uploads_dir() -> Path:
    """Where this user's uploaded datasets are saved: inside their own workspace."""
    folder = user_workspace().datasets
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def roots_for(spaces: Workspaces, user: User) -> tuple[str, ...]:
    """The folders `user`'s datasets may name files in (none in personal mode: any file)."""
    return () if spaces.single_user else tuple(str(folder.resolve()) for folder in spaces.readable_roots(user))


def dataset_roots() -> tuple[str, ...]:
    """The folders the signed-in user's datasets may name files in: their area and the shared datasets (personal: any)."""
    return roots_for(workspaces(), current_user())


def readable_path(path: str | Path) -> Path:
    """`path` resolved when the signed-in user may read it (their workspace or the shared datasets).

    In personal mode the one user owns the machine, so any path is theirs to read.

    Raises:
        UnsafePathError: on a workshop server, a path in another user's workspace or anywhere else.
    """
    if not is_workshop():
        return Path(path).expanduser().resolve()
    return workspaces().check_readable(current_user(), path)


def path_areas() -> list[Area] | None:
    """The folders server paths are shown relative to: a student's workspace and the shared datasets.

    None where paths are shown in full (personal mode, trainers); no area at all before sign-in, so every
    absolute path is cut to its last part.
    """
    if not is_workshop():
        return None
    user = signed_in_user()
    if user is None:
        return []
    if user.is_trainer:
        return None
    return [
        Area(workspaces().workspace_for(user).root, "your workspace"),
        Area(workspaces().server_datasets, "shared datasets"),
    ]


def display_path(path: str | Path) -> str:
    """How a dataset path is shown: in full in personal mode and to trainers, else relative to its folder."""
    areas = path_areas()
    return str(path) if areas is None else shown_path(path, areas)


@process_wide
def _store_for(workspace: str) -> RunStore:
    return RunStore(workspace)  # TensorFlow is never imported here: model work runs in worker processes


@process_wide
def _manager_for(root: str, settings: ServerSettings, limits: RunLimits) -> JobManager:
    """One manager and one queue per server: the device slots and the fair queue span every user.

    The backend is the settings' `job_backend`: worker processes on this machine (the default, no Ray process
    started), or a Ray cluster at `ray_address` (`tl_core.jobs.backends.backend_for`; `serve` checks it at start).
    """
    from tl_core.jobs.backends import backend_for
    from tl_core.jobs.manager import JobManager

    backend, slots = backend_for(settings)
    return JobManager(
        _store_for(root),
        slots=slots,
        per_user_cap=settings.max_queued_per_user,
        backend=backend,
        limits=limits,
    )


class UserJobs:
    """The server's job manager as one user sees it: submits go to their store, under their name."""

    def __init__(self, manager: JobManager, store: RunStore, user: User, spaces: Workspaces) -> None:
        self.manager = manager
        self.store = store
        self.user = user
        self.owner = user.name
        self._spaces = spaces

    def submit(self, config: Any) -> str:
        """Queue a run; refuses when the data or weights are not the user's to read (UnsafePathError) or
        when the user's disk or queue share is full (QuotaExceededError, QueueFullError)."""
        return self.manager.submit(self._checked(config), owner=self.owner, store=self.store)

    def submit_advisory(self, kind: str, config: Any, *, key: str, options: dict[str, Any]) -> str:
        """Queue the mode advisor (`advice`) or the cut-depth probe (`cut-probe`) on the planned run `config`; refused as `submit` is."""
        return self.manager.submit_advisory(
            kind, self._checked(config), key=key, options=options, owner=self.owner, store=self.store
        )

    def check_batch(self, configs: list[Any]) -> None:
        """Refuse a batch of runs (a sweep) before any is queued: each as `submit` would, every run over the server's
        limits named (RunLimitError), and whether all of them fit the user's share of the queue (QueueFullError)."""
        from tl_core.jobs.queue import QueueFullError

        problems = []
        for config in configs:
            self._checked(config)
            for problem in check_run_limits(config.model, config.train, self.manager.limits):
                problems.append(f"{config.model.backbone} ({config.train.mode}): {problem}")
        if problems:
            raise RunLimitError(problems)
        cap = self.manager.queue.per_user_cap
        active = sum(self._owns(job_id) for job_id in self.manager.active_job_ids())
        if cap is not None and active + len(configs) > cap:
            raise QueueFullError(
                f"These {len(configs)} runs do not fit your share of the queue: you have {active} queued or training "
                f"and may have {cap} at once. Pick fewer backbones or modes, or wait until some finish."
            )

    def readable_roots(self) -> tuple[str, ...]:
        """The folders this user's datasets may name files in (none in personal mode: any)."""
        return roots_for(self._spaces, self.user)

    def _checked(self, config: Any) -> Any:
        self._spaces.check_readable(self.user, config.data.source)
        self._spaces.check_weights_source(self.user, config.model.weights)
        self._spaces.check_disk(self.owner)
        # The worker checks every file the dataset names (CSV rows, links) against the same folders.
        return dataclasses.replace(config, data=dataclasses.replace(config.data, readable_roots=self.readable_roots()))

    def resume(self, run_id: str) -> str:
        self._spaces.check_disk(self.owner)
        return self.manager.resume(run_id, owner=self.owner, store=self.store)

    def stop(self, run_id: str) -> bool:
        """Stop one of this user's jobs; another user's (an id from a shared link) is left alone: False."""
        return self._owns(run_id) and self.manager.stop(run_id)

    def status(self, run_id: str) -> Any:
        return self.manager.status(run_id)

    def active_run_ids(self) -> list[str]:
        """This user's queued and running jobs (a trainer's own too; the Trainer page shows everyone's).

        A job whose run has recorded its outcome is over for the user, though its process may take a moment more
        to exit and free its slot: counting it showed "1 queued" and "Queue training" beside a completed run.
        """
        return [
            run_id
            for run_id in self.manager.active_run_ids()
            if (status := self.manager.status(run_id)) is not None
            and status.owner == self.owner
            and status.state != "finished"
        ]

    def wait(self, run_id: str, timeout_s: float = 600.0) -> Any:
        return self.manager.wait(run_id, timeout_s)

    def _owns(self, run_id: str) -> bool:
        status = self.manager.status(run_id)
        return status is not None and status.owner == self.owner


def get_store() -> RunStore:
    """The signed-in user's run store (each user has their own, so no query returns another user's runs)."""
    return _store_for(str(workspace_path()))


def get_manager() -> UserJobs:
    """The server's job manager, bound to the signed-in user: pages submit and stop through it and otherwise only read it."""
    settings, spaces = _server()
    manager = _manager_for(str(spaces.root), settings, RunLimits.from_settings(settings))
    return UserJobs(manager, get_store(), current_user(), spaces)


@process_wide
def model_worker() -> ModelWorker:
    """The server's one model process (predict, export, cut layers): TensorFlow never loads in the web server."""
    return ModelWorker()


DEFAULT_DATASET_ENV = "TRANSFERLAB_DEFAULT_DATASET"
DEFAULT_DEMO_FOLDER = "textures"  # `make run` writes it, so a newcomer can press Train straight away


def current_dataset() -> str | None:
    """The dataset this user picked on the Data page, else the server's default one when it exists.

    A stored path the user may not read (another user's folder) is forgotten, and the reason kept
    under `REFUSED_DATASET_KEY` for the Data page to show.
    """
    if DATASET_KEY not in st.session_state:
        default = os.environ.get(DEFAULT_DATASET_ENV) or str(datasets_dir() / DEFAULT_DEMO_FOLDER)
        if Path(default).exists() and _may_read(default):
            st.session_state[DATASET_KEY] = default
    chosen = st.session_state.get(DATASET_KEY)
    if chosen is not None:
        try:
            readable_path(chosen)
        except TransferLabError:
            st.session_state.pop(DATASET_KEY)
            # Only the name: the full path would show students where other users' folders are.
            st.session_state[REFUSED_DATASET_KEY] = (
                f"{Path(chosen).name} is not one of your datasets or a shared one: pick or upload a dataset again."
            )
            return None
    return chosen


def _may_read(path: str | Path) -> bool:
    try:
        readable_path(path)
    except TransferLabError:
        return False
    return True


def set_current_dataset(path: str | Path) -> None:
    st.session_state[DATASET_KEY] = str(path)
    st.session_state.pop(RUN_CONFIG_KEY, None)  # the stored config named the previous dataset
    st.session_state.get(MODALITY_KEY, {}).pop(str(path), None)  # a re-picked path may hold new files: detect again


def current_modality() -> str:
    """What the chosen dataset holds, "image" or "text" (detected from its files once, then remembered); "image" without one."""
    dataset = current_dataset()
    if not dataset:
        return "image"
    remembered: dict[str, str] = st.session_state.setdefault(MODALITY_KEY, {})
    if dataset not in remembered:
        from tl_core.modalities import resolve_modality

        try:
            remembered[dataset] = resolve_modality(dataset)
        except (TransferLabError, OSError):
            return "image"  # a missing dataset: the Data page says why; nothing to remember
    return remembered[dataset]


def current_run_id() -> str | None:
    return st.session_state.get(RUN_KEY)


def set_current_run(run_id: str | None) -> None:
    st.session_state[RUN_KEY] = run_id


def chosen_settings() -> tuple[ModelConfig, TrainConfig]:
    """The model and training settings from the Model page, or the defaults when it was skipped."""
    from ui.settings import default_model_config, default_train_config  # imports Keras: only pages that train need it

    modality = current_modality()
    model = st.session_state.get(MODEL_CONFIG_KEY)
    if model is None or _backbone_modality(model.backbone) != modality:  # settings made for the other kind of data
        model = default_model_config(modality)
    train = st.session_state.get(TRAIN_CONFIG_KEY) or default_train_config()
    return model, train


def _backbone_modality(backbone: str) -> str | None:
    from tl_core.models.registry import get_backbone_spec

    try:
        return get_backbone_spec(backbone).modality
    except TransferLabError:
        return None


def restore_widgets(prefix: str) -> None:
    """Give a page's widgets back the values they had when the user last left the page.

    Streamlit forgets a widget's value once a run does not draw it (another page is shown), so a
    page calls `remember_widgets` after drawing its widgets and this before drawing them.
    """
    for key, value in st.session_state.get(SAVED_WIDGETS_KEY, {}).get(prefix, {}).items():
        if key not in st.session_state:
            st.session_state[key] = value


def remember_widgets(prefix: str) -> None:
    """Save the current values of every widget whose key starts with `prefix` (see `restore_widgets`)."""
    saved = st.session_state.setdefault(SAVED_WIDGETS_KEY, {})
    saved[prefix] = {
        key: st.session_state[key]
        for key in st.session_state
        if isinstance(key, str) and key.startswith(prefix) and key not in _SHARED_KEYS
    }


def session_value(key: str, default: Any) -> Any:
    """Seed a widget's value once (widgets then take it from session state, not from `value=`)."""
    if key not in st.session_state:
        st.session_state[key] = default
    return st.session_state[key]
