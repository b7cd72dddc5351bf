"""The server's Ray settings (`job_backend = "ray"`): how they are checked, and the shared-paths list.

`ray_shared_paths` names folders mounted at the same path on the server and on every Ray node (NFS): a dataset
under one of them is read in place by the node instead of being shipped through Ray's object store. In
`transferlab.toml` it is a list of absolute folders; in `TRANSFERLAB_RAY_SHARED_PATHS`, folders separated by
`os.pathsep` (`:` on Linux).

Example:
    >>> parse_shared_paths("/mnt/datasets:/srv/shared", "TRANSFERLAB_RAY_SHARED_PATHS")
    (PosixPath('/mnt/datasets'), PosixPath('/srv/shared'))
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

from tl_core.errors import ServerSettingsError

JobBackendName = Literal["local", "ray"]
RAY_ADDRESS_PATTERN = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-]+:[0-9]{1,5})$")
RAY_ENV_VARIABLES: dict[str, str] = {
    "job_backend": "TRANSFERLAB_JOB_BACKEND",
    "ray_address": "TRANSFERLAB_RAY_ADDRESS",
    "gpus_per_job": "TRANSFERLAB_GPUS_PER_JOB",
    "cpus_per_job": "TRANSFERLAB_CPUS_PER_JOB",
    "max_retries": "TRANSFERLAB_MAX_RETRIES",
    "ray_shared_paths": "TRANSFERLAB_RAY_SHARED_PATHS",
}
FRACTION_SETTINGS = ("gpus_per_job", "cpus_per_job")  # Ray resources: 0.5 shares a GPU between two jobs


def check_ray_settings(
    *,
    job_backend: str,
    ray_address: str | None,
    fractions: dict[str, float],
    max_retries: int,
    shared_paths: tuple[Path, ...],
    where: str,
) -> None:
    """Refuse Ray settings that cannot work, naming the setting and how to fix it.

    Raises:
        ServerSettingsError: an unknown backend, a malformed address, a resource of 0 or less, negative retries,
            or a shared path that is not an absolute folder on this server.
    """
    if job_backend not in get_args(JobBackendName):
        raise ServerSettingsError(
            f"job_backend={job_backend!r}{where}: choose 'local' (this machine) or 'ray' (a Ray cluster); "
            f"set {RAY_ENV_VARIABLES['job_backend']} or `job_backend` in the config file."
        )
    if ray_address is not None and not RAY_ADDRESS_PATTERN.match(ray_address):
        raise ServerSettingsError(
            f"ray_address={ray_address!r}{where} is not a Ray address: use HOST:PORT of the head node "
            f"(e.g. 10.0.0.5:6379, the address `ray start --head` prints) or 'auto' on a cluster node; "
            f"set {RAY_ENV_VARIABLES['ray_address']} or `ray_address` in the config file."
        )
    for name, value in fractions.items():
        if not value > 0:
            raise ServerSettingsError(f"{name}={value}{where} must be more than 0, e.g. 1 or 0.5.")
    if max_retries < 0:
        raise ServerSettingsError(f"max_retries={max_retries}{where} must be 0 or more, e.g. 2.")
    for path in shared_paths:
        if not path.is_absolute() or not path.is_dir():
            problem = "is not an absolute path" if not path.is_absolute() else "is not a folder on this server"
            raise ServerSettingsError(
                f"ray_shared_paths entry {str(path)!r}{where} {problem}: list folders mounted at the same absolute "
                f"path on the server and every Ray node (e.g. /mnt/datasets), in {RAY_ENV_VARIABLES['ray_shared_paths']} "
                "separated by ':' or as a list in the config file; leave it out when nothing is shared."
            )


def parse_shared_paths(value: Any, where: str) -> tuple[Path, ...]:
    """The shared folders from TOML (a list of text) or the environment (`os.pathsep`-separated text)."""
    if isinstance(value, str):
        value = value.split(os.pathsep)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ServerSettingsError(
            f'{where}={value!r} must be a list of folders, e.g. ["/mnt/datasets"] (in the environment: /mnt/a:/mnt/b).'
        )
    return tuple(Path(item.strip()).expanduser() for item in value if item.strip())


def shared_path_of(source: Path, shared_paths: tuple[Path, ...]) -> Path | None:
    """The shared folder `source` lies in (after resolving links), or None when it lies in none."""
    resolved = source.resolve()
    return next((folder for folder in shared_paths if resolved.is_relative_to(folder.resolve())), None)
