"""Read PyTorch `.pth` state dicts with numpy only, through a pickle reader that can run no code.

PyTorch checkpoints are pickles. A plain `pickle.load` (or `torch.load(weights_only=False)`)
of a hostile file runs whatever the file names (`os.system`, `builtins.eval` ...). Here every
global the pickle asks for goes through `_RestrictedUnpickler.find_class`, which hands out
numpy-backed stand-ins for the handful of names a tensor state dict needs and refuses the rest.

Two container formats exist:
- legacy (torch < 1.6, `_use_new_zipfile_serialization=False`): five pickles in a row (magic
  number, protocol version, system info, the state dict, the storage keys), then each storage's
  raw bytes, each preceded by its element count as a little-endian int64.
- zip (torch >= 1.6): `<root>/data.pkl` plus one raw file per storage at `<root>/data/<key>`.

Example:
    >>> state = load_torch_state_dict(Path("efficientnet-lite0-57934424.pth"))
    >>> state["_conv_stem.weight"].shape
    (32, 3, 3, 3)
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from tl_core.errors import WeightsUnavailableError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


class UnsafePickleError(WeightsUnavailableError):
    """The weights file's pickle asks for something a plain tensor state dict never needs."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for `torch.FloatStorage` and friends: only the element dtype matters."""

    torch_name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by the pickle; its bytes are read after the pickle (legacy) or from the zip."""

    key: str
    dtype: np.dtype
    element_offset: int = 0


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as `_rebuild_tensor_v2` describes it, turned into an array once storages are read."""

    storage: _StorageRef
    storage_offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self, storages: dict[str, np.ndarray]) -> np.ndarray:
        flat = storages[self.storage.key][self.storage.element_offset + self.storage_offset :]
        if not self.size:
            return flat[:1].reshape(()).copy()
        needed = 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=flat.dtype)
        if flat.size < needed:
            raise WeightsUnavailableError(
                f"Tensor of shape {self.size} runs past the end of storage {self.storage.key}: the file is truncated."
            )
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(flat, shape=self.size, strides=tuple(s * item for s in self.stride))
        return np.array(view)  # copy: detach from the shared storage buffer


def _rebuild_tensor_v2(
    storage: _StorageRef,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    return _TensorRef(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: _TensorRef, requires_grad: bool = False, backward_hooks: Any = None) -> _TensorRef:
    return data


# bfloat16 has no numpy dtype: read its bits as uint16 and widen to float32 afterwards.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals; storages come back as `_StorageRef`s."""

    def __init__(self, file: IO[bytes], source: Path) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"{self.source}: the pickle asks for `{module}.{name}`, which a tensor state dict never needs. "
                "The file may be malicious or is not a plain state dict; it was not loaded. Use the weights file "
                "shipped by the package (reinstall it) or a checkpoint saved with `torch.save(model.state_dict())`."
            )
        return allowed

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(
                f"{self.source}: unexpected persistent id {pid!r} (not a tensor storage); the file was not loaded."
            )
        storage_type, key = pid[1], str(pid[2])
        view_metadata = pid[5] if len(pid) > 5 else None
        if view_metadata is not None:  # legacy storage views: (view_key, element offset, size) into `key`
            return _StorageRef(key, storage_type.dtype, int(view_metadata[1]))
        return _StorageRef(key, storage_type.dtype)


def _restricted_load(file: IO[bytes], source: Path) -> Any:
    try:
        return _RestrictedUnpickler(file, source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise WeightsUnavailableError(
            f"{source}: not a readable PyTorch weights file ({exc}). Reinstall the package that ships it."
        ) from exc


def _read_legacy(file: IO[bytes], source: Path) -> tuple[Any, dict[str, np.ndarray]]:
    if _restricted_load(file, source) != LEGACY_MAGIC_NUMBER:
        raise WeightsUnavailableError(f"{source}: not a PyTorch weights file (wrong magic number).")
    protocol = _restricted_load(file, source)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise WeightsUnavailableError(
            f"{source}: unsupported legacy PyTorch protocol version {protocol!r} (expected {LEGACY_PROTOCOL_VERSION})."
        )
    sys_info = _restricted_load(file, source)
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
        raise WeightsUnavailableError(f"{source}: saved on a big-endian machine, which this reader does not support.")
    result = _restricted_load(file, source)
    storage_keys = _restricted_load(file, source)
    if not isinstance(storage_keys, list):
        raise WeightsUnavailableError(f"{source}: the storage key list is missing; the file is damaged.")
    dtypes = {ref.storage.key: ref.storage.dtype for ref in _tensor_refs(result)}
    storages: dict[str, np.ndarray] = {}
    for key in storage_keys:
        header = file.read(8)
        if len(header) != 8:
            raise WeightsUnavailableError(f"{source}: storage {key} is missing; the file is truncated.")
        numel = int(np.frombuffer(header, dtype="<i8")[0])
        dtype = dtypes.get(str(key), np.dtype("u1"))
        raw = file.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise WeightsUnavailableError(f"{source}: storage {key} is cut short; the file is truncated.")
        storages[str(key)] = np.frombuffer(raw, dtype=dtype)
    return result, storages


def _read_zip(source: Path) -> tuple[Any, dict[str, np.ndarray]]:
    with zipfile.ZipFile(source) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise WeightsUnavailableError(f"{source}: a zip but not a PyTorch checkpoint (no single data.pkl inside).")
        root = pickles[0][: -len("data.pkl")]
        if f"{root}byteorder" in archive.namelist() and archive.read(f"{root}byteorder").strip() != b"little":
            raise WeightsUnavailableError(f"{source}: saved big-endian, which this reader does not support.")
        result = _restricted_load(io.BytesIO(archive.read(pickles[0])), source)
        storages: dict[str, np.ndarray] = {}
        for ref in _tensor_refs(result):
            key = ref.storage.key
            if key not in storages:
                try:
                    raw = archive.read(f"{root}data/{key}")
                except KeyError as exc:
                    raise WeightsUnavailableError(f"{source}: storage data/{key} is missing from the archive.") from exc
                storages[key] = np.frombuffer(raw, dtype=ref.storage.dtype)
    return result, storages


def _tensor_refs(obj: Any) -> list[_TensorRef]:
    if isinstance(obj, _TensorRef):
        return [obj]
    if isinstance(obj, dict):
        return [ref for value in obj.values() for ref in _tensor_refs(value)]
    if isinstance(obj, (list, tuple)):
        return [ref for value in obj for ref in _tensor_refs(value)]
    return []


def _as_float_if_bfloat16(array: np.ndarray, ref: _TensorRef) -> np.ndarray:
    if ref.storage.dtype == _STORAGE_DTYPES["BFloat16Storage"]:
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array


def load_torch_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict (legacy or zip format) into numpy arrays, running no code from the file.

    Args:
        path: a `.pth`/`.pt` file holding a state dict (optionally wrapped as `{"state_dict": ...}`).

    Returns:
        Parameter and buffer names mapped to arrays with the tensors' shapes and dtypes
        (bfloat16 widened to float32).

    Raises:
        UnsafePickleError: the pickle references anything besides tensors and ordered dicts.
        WeightsUnavailableError: the file is missing, truncated, or not a PyTorch state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"Weights file not found: {path}. Reinstall the package that ships it.")
    if zipfile.is_zipfile(path):
        result, storages = _read_zip(path)
    else:
        with path.open("rb") as file:
            result, storages = _read_legacy(file, path)
    if isinstance(result, dict) and isinstance(result.get("state_dict"), dict):
        result = result["state_dict"]
    if not isinstance(result, dict):
        raise WeightsUnavailableError(f"{path}: holds a {type(result).__name__}, not a state dict of tensors.")
    arrays = {
        str(name): _as_float_if_bfloat16(ref.to_numpy(storages), ref)
        for name, ref in result.items()
        if isinstance(ref, _TensorRef)
    }
    if not arrays:
        raise WeightsUnavailableError(f"{path}: contains no tensors.")
    return arrays
