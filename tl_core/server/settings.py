"""How this TransferLab server runs: personal (one user, localhost, no sign-in) or workshop.

Settings come from, lowest precedence first: the defaults of the mode, a TOML config file
(`$TRANSFERLAB_CONFIG`, else `./transferlab.toml` when it exists), then `TRANSFERLAB_*` environment
variables. With nothing set the server behaves exactly as before: personal mode on localhost.

A config file exists to set up a shared server, so its mode defaults to `workshop`; write
`mode = "personal"` in it to keep personal mode. Example `transferlab.toml`:

    mode = "workshop"
    port = 8600
    disk_quota_mb = 2048
    max_upload_mb = 300
    max_image_size = 320
    max_run_minutes = 30
    users_file = "/srv/transferlab/users.json"
    job_backend = "ray"            # jobs on a Ray cluster (default "local": this machine's worker processes)
    ray_address = "10.0.0.5:6379"  # the head node (`ray start --head`), or "auto" on a cluster node
    ray_shared_paths = ["/mnt/datasets"]  # mounted at this path on every node (NFS): datasets there are read in place

Example:
    >>> settings = load_server_settings()
    >>> subprocess.run(["streamlit", "run", "app.py", *streamlit_flags(settings)])
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from tl_core.errors import ServerSettingsError
from tl_core.server.ray_settings import (
    FRACTION_SETTINGS,
    RAY_ENV_VARIABLES,
    JobBackendName,
    check_ray_settings,
    parse_shared_paths,
)

Mode = Literal["personal", "workshop"]
CONFIG_ENV = "TRANSFERLAB_CONFIG"
DEFAULT_CONFIG_FILE = "transferlab.toml"
WORKSPACE_ENV = "TRANSFERLAB_WORKSPACE"  # the same variable ui.state and RunStore read
DEFAULT_WORKSPACE = "workspace"
USERS_FILE_NAME = "users.json"
SERVER_DATASETS_FOLDER = "datasets"
STREAMLIT_DEFAULT_UPLOAD_MB = 200  # Streamlit's own server.maxUploadSize default
WORKSHOP_DISK_QUOTA_MB = 2048
WORKSHOP_MAX_QUEUED_PER_USER = 2
# Run limits (tl_core.server.limits) for a class sharing one machine: every registry backbone fits with a
# modest head, and no run holds a device for more than half an hour.
WORKSHOP_RUN_LIMITS: dict[str, int | float] = {
    "max_model_parameters": 100_000_000,
    "max_image_size": 320,
    "max_epochs": 100,
    "max_run_minutes": 30,
}
SMALLEST_IMAGE_LIMIT = 32  # no backbone takes smaller images
# Setting name -> environment variable. Paths are resolved against the working directory.
ENV_VARIABLES: dict[str, str] = {
    "mode": "TRANSFERLAB_MODE",
    "host": "TRANSFERLAB_HOST",
    "port": "TRANSFERLAB_PORT",
    "workspace": WORKSPACE_ENV,
    "jobs_per_device": "TRANSFERLAB_JOBS_PER_DEVICE",
    "max_queued_per_user": "TRANSFERLAB_MAX_QUEUED_PER_USER",
    "max_upload_mb": "TRANSFERLAB_MAX_UPLOAD_MB",
    "disk_quota_mb": "TRANSFERLAB_DISK_QUOTA_MB",
    "users_file": "TRANSFERLAB_USERS_FILE",
    "server_datasets_dir": "TRANSFERLAB_DATASETS_DIR",
    "warm_workers": "TRANSFERLAB_WARM_WORKERS",
    "max_model_parameters": "TRANSFERLAB_MAX_MODEL_PARAMETERS",
    "max_image_size": "TRANSFERLAB_MAX_IMAGE_SIZE",
    "max_epochs": "TRANSFERLAB_MAX_EPOCHS",
    "max_run_minutes": "TRANSFERLAB_MAX_RUN_MINUTES",
    **RAY_ENV_VARIABLES,
}
_OPTIONAL_LIMITS = ("max_queued_per_user", "disk_quota_mb", *WORKSHOP_RUN_LIMITS)  # 0 or "none" switches these off
_INT_SETTINGS = (
    "port",
    "jobs_per_device",
    "max_queued_per_user",
    "max_upload_mb",
    "disk_quota_mb",
    "max_model_parameters",
    "max_image_size",
    "max_epochs",
    "max_retries",
)
_NUMBER_SETTINGS = ("max_run_minutes",)  # fractions allowed: 0.5 is half a minute
_PATH_SETTINGS = ("workspace", "users_file", "server_datasets_dir")
_BOOL_SETTINGS = ("warm_workers",)
_BOOL_TEXTS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


@dataclass(frozen=True)
class ServerSettings:
    """Validated server settings; build them with `load_server_settings`.

    Args:
        mode: `personal` (one user, localhost, no sign-in) or `workshop` (sign-in, shared server).
        host: address the server binds to; personal mode only binds to a loopback address.
        port: TCP port of the server.
        workspace: root folder; in workshop mode each user gets `<workspace>/users/<name>/`.
        jobs_per_device: training jobs run at once on each device (GPU, or the CPU when there is none).
        max_queued_per_user: most runs one user may have queued or running; None means no limit.
        max_upload_mb: largest single upload in megabytes (Streamlit's `server.maxUploadSize`).
        disk_quota_mb: most disk one user's datasets, caches and runs may use; None means no quota.
        users_file: JSON file of accounts and class codes (workshop mode).
        server_datasets_dir: shared datasets folder, filled by trainers, read-only for students.
        warm_workers: keep a worker that has imported TensorFlow waiting for the next job on each device
            (jobs start ~4-5 s sooner; each waiting worker holds ~0.7 GB of memory).
        max_model_parameters: most parameters a run's model may have, counted whole: the backbone's (frozen
            or not) plus the new head's; None means no limit.
        max_image_size: largest image side in pixels a run may use; None means no limit.
        max_epochs: most epochs one run may plan over all its phases (head + fine-tune, or unfrozen blocks;
            a from-scratch baseline counts twice); None means no limit.
        max_run_minutes: a run still training this long after it started is stopped and ends `failed`
            (its log and best weights kept); None means no limit.
        job_backend: where jobs run: `local` (this machine's worker processes, no Ray process started) or `ray`.
        ray_address: the Ray cluster's head, `HOST:PORT` (or `auto` on a cluster node); None with the `ray`
            backend starts a Ray cluster on this machine (tl_core/jobs/ray_backend.py).
        gpus_per_job: GPUs each Ray job asks for where the cluster has GPUs (0.5 lets two jobs share one).
        cpus_per_job: CPUs each Ray job asks for (on a cluster without GPUs, its only resource).
        max_retries: how often a Ray job whose node was lost starts again from its last checkpoint.
        ray_shared_paths: absolute folders mounted at the same path on the server and every Ray node (NFS); a
            dataset under one is read in place by the node instead of being shipped (tl_core/server/ray_settings.py).
        oidc_configured: Streamlit's `[auth]` secrets are set, so `st.login` can sign users in.
        config_file: the TOML file these settings were read from, if any.
    """

    mode: Mode = "personal"
    host: str = "localhost"
    port: int = 8501
    workspace: Path = Path(DEFAULT_WORKSPACE)
    jobs_per_device: int = 1
    max_queued_per_user: int | None = None
    max_upload_mb: int = STREAMLIT_DEFAULT_UPLOAD_MB
    disk_quota_mb: int | None = None
    users_file: Path = Path(DEFAULT_WORKSPACE) / USERS_FILE_NAME
    server_datasets_dir: Path = Path(DEFAULT_WORKSPACE) / SERVER_DATASETS_FOLDER
    warm_workers: bool = True
    max_model_parameters: int | None = None
    max_image_size: int | None = None
    max_epochs: int | None = None
    max_run_minutes: float | None = None
    job_backend: JobBackendName = "local"
    ray_address: str | None = None
    gpus_per_job: float = 1.0
    cpus_per_job: float = 1.0
    max_retries: int = 2
    ray_shared_paths: tuple[Path, ...] = ()
    oidc_configured: bool = False
    config_file: Path | None = None

    @property
    def sign_in_required(self) -> bool:
        return self.mode == "workshop"

    def __post_init__(self) -> None:
        where = f" (from {self.config_file})" if self.config_file else ""
        if self.mode not in get_args(Mode):
            raise ServerSettingsError(
                f"mode={self.mode!r}{where}: choose 'personal' or 'workshop' (set TRANSFERLAB_MODE or `mode` in the config file)."
            )
        if not self.host.strip():
            raise ServerSettingsError(
                f"host is empty{where}: use 'localhost' (personal) or '0.0.0.0' (workshop, all interfaces)."
            )
        if self.mode == "personal" and not is_loopback_host(self.host):
            raise ServerSettingsError(
                f"host={self.host!r}{where} would open a server without sign-in to the network: personal mode binds to localhost only. "
                "Set TRANSFERLAB_MODE=workshop (sign-in required) to serve other people, or use host 'localhost'."
            )
        if not 1 <= self.port <= 65535:
            raise ServerSettingsError(
                f"port={self.port}{where} must be between 1 and 65535 (8501 is Streamlit's default)."
            )
        for name in ("jobs_per_device", "max_upload_mb"):
            if getattr(self, name) < 1:
                raise ServerSettingsError(f"{name}={getattr(self, name)}{where} must be at least 1.")
        for name in _OPTIONAL_LIMITS:
            value = getattr(self, name)
            if value is not None and (value <= 0 if name in _NUMBER_SETTINGS else value < 1):
                least = "more than 0 (e.g. 30, or 0.5 for half a minute)" if name in _NUMBER_SETTINGS else "at least 1"
                raise ServerSettingsError(
                    f"{name}={value}{where} must be {least}; leave it out (or use 0) for no limit."
                )
        check_ray_settings(
            job_backend=self.job_backend,
            ray_address=self.ray_address,
            fractions={name: getattr(self, name) for name in FRACTION_SETTINGS},
            max_retries=self.max_retries,
            shared_paths=self.ray_shared_paths,
            where=where,
        )
        if self.max_image_size is not None and self.max_image_size < SMALLEST_IMAGE_LIMIT:
            raise ServerSettingsError(
                f"max_image_size={self.max_image_size}{where} is smaller than any backbone takes: use {SMALLEST_IMAGE_LIMIT} px or more "
                "(e.g. 320), or leave it out (or use 0) for no limit."
            )
        if self.users_file.resolve().is_relative_to(
            self.server_datasets_dir.resolve()
        ) or self.users_file.resolve().is_relative_to(self.workspace.resolve() / "users"):
            raise ServerSettingsError(
                f"users_file={self.users_file}{where} lies inside a folder users can read (the shared datasets or the users' workspaces): "
                f"keep it next to them, e.g. {self.workspace / USERS_FILE_NAME}."
            )
        if self.disk_quota_mb is not None and self.max_upload_mb > self.disk_quota_mb:
            raise ServerSettingsError(
                f"max_upload_mb={self.max_upload_mb} is larger than disk_quota_mb={self.disk_quota_mb}{where}: "
                "no upload that size could ever fit. Lower max_upload_mb or raise disk_quota_mb."
            )


def personal_listening_problem(settings: ServerSettings, listening_address: str) -> str | None:
    """Why a personal (no sign-in) app must not serve, given the address Streamlit actually listens on; None when safe.

    `.streamlit/config.toml` makes loopback the default for `streamlit run app.py`, and `serve` passes the settings'
    host, but a `--server.address` flag or `STREAMLIT_SERVER_ADDRESS` still overrides both; Streamlit's empty address
    means every network interface.
    """
    if settings.sign_in_required or (listening_address and is_loopback_host(listening_address)):
        return None
    where = repr(listening_address) if listening_address else "every network interface"
    return (
        f"This TransferLab runs in personal mode (no sign-in) but listens on {where}, so anyone who can reach this "
        "machine could use it and read your files. It serves nothing until it listens on this machine only: stop it "
        "(Ctrl+C) and start it with `make run` or `.venv/bin/python -m tl_core serve`, or drop the `--server.address` "
        "flag / `STREAMLIT_SERVER_ADDRESS`. To let other people in, use workshop mode (TRANSFERLAB_MODE=workshop, with sign-in)."
    )


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1): reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def load_server_settings(environ: Mapping[str, str] | None = None, *, cwd: Path | None = None) -> ServerSettings:
    """The server's settings from the config file and `TRANSFERLAB_*` environment variables.

    Args:
        environ: the environment to read (default `os.environ`); tests pass their own.
        cwd: folder where `transferlab.toml`, `.streamlit/secrets.toml` and relative paths are looked up
            (default: the working directory).

    Returns:
        Validated settings; with nothing configured, personal mode on localhost:8501.

    Raises:
        ServerSettingsError: an unreadable config file, an unknown key, or a value out of range.
    """
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    config_file = _config_file(environ, cwd)
    raw: dict[str, Any] = {}
    if config_file is not None:
        raw = {"mode": "workshop", **_read_config_file(config_file)}
    for name, variable in ENV_VARIABLES.items():
        if environ.get(variable, "").strip():
            raw[name] = environ[variable].strip()
    values = {name: _parse(name, value, config_file) for name, value in raw.items()}
    mode = values.get("mode", "personal")
    workspace = _absolute(values.get("workspace", Path(DEFAULT_WORKSPACE)), cwd)
    defaults: dict[str, Any] = {
        "host": "0.0.0.0" if mode == "workshop" else "localhost",
        "max_queued_per_user": WORKSHOP_MAX_QUEUED_PER_USER if mode == "workshop" else None,
        "disk_quota_mb": WORKSHOP_DISK_QUOTA_MB if mode == "workshop" else None,
        **{name: limit if mode == "workshop" else None for name, limit in WORKSHOP_RUN_LIMITS.items()},
        "users_file": workspace / USERS_FILE_NAME,
        "server_datasets_dir": workspace / SERVER_DATASETS_FOLDER,
    }
    settings = {**defaults, **values, "workspace": workspace}
    for name in ("users_file", "server_datasets_dir"):
        settings[name] = _absolute(settings[name], cwd)
    oidc = oidc_configured(cwd)
    if oidc and mode == "workshop" and importlib.util.find_spec("authlib") is None:
        raise ServerSettingsError(
            "Streamlit's secrets.toml has an [auth] section, but st.login needs Authlib: "
            "`pip install 'Authlib>=1.3.2'`, or remove [auth] to use TransferLab's own accounts."
        )
    return ServerSettings(**settings, oidc_configured=oidc, config_file=config_file)


def _config_file(environ: Mapping[str, str], cwd: Path) -> Path | None:
    named = environ.get(CONFIG_ENV, "").strip()
    if named:
        path = _absolute(Path(named).expanduser(), cwd)
        if not path.is_file():
            raise ServerSettingsError(f"{CONFIG_ENV}={named} names no file ({path}): create it, or unset {CONFIG_ENV}.")
        return path
    default = cwd / DEFAULT_CONFIG_FILE
    return default if default.is_file() else None


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        content = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ServerSettingsError(
            f"{path} is not a readable TOML file ({exc}): fix the line named, or remove the file."
        ) from exc
    known = {f.name for f in dataclasses.fields(ServerSettings)} - {"oidc_configured", "config_file"}
    unknown = sorted(set(content) - known)
    if unknown:
        raise ServerSettingsError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; the known ones are {', '.join(sorted(known))}."
        )
    return content


def _parse(name: str, value: Any, config_file: Path | None) -> Any:
    """A setting's value from TOML (typed) or the environment (text) as the dataclass field's type."""
    where = f"{ENV_VARIABLES[name]} / `{name}` in {config_file}" if config_file else ENV_VARIABLES[name]
    if name in _INT_SETTINGS:
        if name in _OPTIONAL_LIMITS and (value in (0, "0") or str(value).lower() == "none"):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ServerSettingsError(f"{where}={value!r} must be a whole number.")
        try:
            return int(value)
        except ValueError:
            raise ServerSettingsError(
                f"{where}={value!r} must be a whole number, e.g. {ServerSettings.port if name == 'port' else 1}."
            ) from None
    if name == "ray_shared_paths":
        return parse_shared_paths(value, where)
    if name in FRACTION_SETTINGS:
        try:
            return float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            raise ServerSettingsError(f"{where}={value!r} must be a number, e.g. 1 or 0.5.") from None
    if name in _NUMBER_SETTINGS:
        if str(value).strip().lower() == "none":
            return None
        try:
            number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ServerSettingsError(
                f"{where}={value!r} must be a number of minutes, e.g. 30 (or 0.5); use 0 for no limit."
            )
        return number or None
    if name in _BOOL_SETTINGS:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_TEXTS:
            return _BOOL_TEXTS[value.strip().lower()]
        raise ServerSettingsError(f"{where}={value!r} must be true or false (or 1 / 0).")
    if not isinstance(value, str):
        raise ServerSettingsError(f"{where}={value!r} must be text (in TOML, put it in quotes).")
    if name in _PATH_SETTINGS:
        return Path(value).expanduser()
    return value.strip().lower() if name in ("mode", "job_backend") else value.strip()


def _absolute(path: Path, cwd: Path) -> Path:
    return (path if path.is_absolute() else cwd / path).resolve()


def oidc_configured(cwd: Path | None = None, home: Path | None = None) -> bool:
    """Whether Streamlit's secrets hold an `[auth]` section `st.login` can use.

    Streamlit reads `~/.streamlit/secrets.toml` then `<cwd>/.streamlit/secrets.toml`. `st.login` needs
    `redirect_uri` and `cookie_secret` in `[auth]`, plus `client_id`, `client_secret` and
    `server_metadata_url` either in `[auth]` itself or in a provider table such as `[auth.google]`.
    (`st.login` also needs Authlib installed; `load_server_settings` checks that in workshop mode.)
    """
    auth: dict[str, Any] = {}
    for folder in ((Path.home() if home is None else home), (Path.cwd() if cwd is None else cwd)):
        path = folder / ".streamlit" / "secrets.toml"
        try:
            secrets = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # Streamlit itself reports a broken secrets file when the app reads it
        if isinstance(secrets.get("auth"), dict):
            auth.update(secrets["auth"])
    provider_keys = {"client_id", "client_secret", "server_metadata_url"}
    providers = [auth] + [table for table in auth.values() if isinstance(table, dict)]
    return {"redirect_uri", "cookie_secret"} <= auth.keys() and any(
        provider_keys <= table.keys() for table in providers
    )


def streamlit_flags(settings: ServerSettings) -> list[str]:
    """`streamlit run app.py` flags for these settings: address, port, upload limit, and in
    workshop mode no browser, no code reloading and no tracebacks (they show server paths)."""
    flags = [
        "--server.address",
        settings.host,
        "--server.port",
        str(settings.port),
        "--server.maxUploadSize",
        str(settings.max_upload_mb),
        "--browser.gatherUsageStats",
        "false",
    ]
    if settings.mode == "workshop":
        flags += [
            "--server.headless",
            "true",
            "--server.enableXsrfProtection",
            "true",
            "--server.fileWatcherType",
            "none",
            "--client.showErrorDetails",
            "type",
        ]
    return flags
