"""How a run's dataset reaches the Ray nodes: through Ray's object store, or read in place on a shared folder.

With no shared filesystem, a dataset folder is sent as a tar and an archive or text CSV as it is, put once into
the object store per unchanged dataset (its listing: paths, sizes, modification times) and unpacked once per node
(tl_core/jobs/ray_job.py). A dataset under one of the server's `ray_shared_paths` (mounted at the same path on
every node, e.g. NFS) ships nothing: the node reads it at its path.

Example:
    >>> shipper = DatasetShipper(shared_paths=(Path("/mnt/datasets"),))
    >>> dataset, payload = shipper.ship(record.config["data"])
    >>> dataset["kind"]
    'shared'
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from pathlib import Path
from typing import Any

from tl_core.errors import TransferLabError
from tl_core.jobs.ray_job import FILE_DATASET, FOLDER_DATASET, SHARED_DATASET
from tl_core.server.ray_settings import shared_path_of

_IMAGE_LISTS = (".csv", ".tsv", ".txt")  # an image CSV names files elsewhere: nothing a node could read


class DatasetShipper:
    """Puts datasets into Ray's object store once each, unless they lie on a folder every node shares.

    Args:
        shared_paths: folders mounted at the same path on the server and every node.

    Attributes:
        shipped: how many datasets this server has put into the object store.
    """

    def __init__(self, shared_paths: tuple[Path, ...] = ()) -> None:
        self.shared_paths = tuple(shared_paths)
        self.shipped = 0
        self._datasets: dict[str, tuple[dict, Any]] = {}  # listing signature -> (dataset description, ObjectRef)
        self._lock = threading.Lock()

    def ship(self, data: dict) -> tuple[dict, list]:
        """The run's dataset (its config's `data`) as the node gets it: its description and `[ObjectRef]` (or `[]`)."""
        import ray

        source = Path(data["source"]).expanduser().resolve()
        shared = shared_path_of(source, self.shared_paths)
        if shared is not None:
            if not source.exists():
                raise TransferLabError(f"The dataset {source} is gone: pick it again on the Data page.")
            return {"key": "", "name": source.name, "kind": SHARED_DATASET, "path": str(source)}, []
        signature = _listing_signature(source)
        with self._lock:
            if signature in self._datasets:
                dataset, reference = self._datasets[signature]
                return dataset, [reference]
        if source.is_dir():
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as bundle:
                bundle.add(source, arcname=source.name)
            payload, kind = buffer.getvalue(), FOLDER_DATASET
        elif source.is_file():
            if data.get("modality", "image") == "image" and source.suffix.lower() in _IMAGE_LISTS:
                raise TransferLabError(
                    f"{source} lists image files by path, which the Ray nodes cannot read (no shared filesystem): "
                    "put the images in a folder (one sub-folder per class) or a .zip, and train on that, or list "
                    "a folder every node mounts at the same path in ray_shared_paths."
                )
            payload, kind = source.read_bytes(), FILE_DATASET
        else:
            raise TransferLabError(f"The dataset {source} is gone: pick it again on the Data page.")
        dataset = {"key": hashlib.sha256(payload).hexdigest()[:32], "name": source.name, "kind": kind}
        reference = ray.put(payload)
        with self._lock:
            self._datasets[signature] = (dataset, reference)
            self.shipped += 1
        return dataset, [reference]


def _listing_signature(source: Path) -> str:
    """Path, size and modification time of every file: an unchanged signature means the shipped bytes still hold."""
    digest = hashlib.sha256(str(source).encode())
    paths = sorted(source.rglob("*")) if source.is_dir() else [source]
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
