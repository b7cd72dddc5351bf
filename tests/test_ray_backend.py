"""The Ray backend against real Ray clusters started here, on this machine (never any other): a sweep, node loss."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from tl_core.cli.main import main  # noqa: E402
from tl_core.jobs.backends import backend_for  # noqa: E402
from tl_core.jobs.ray_backend import job_runtime_env  # noqa: E402
from tl_core.layout import EVALUATION_FILE, KERAS_FILE, NODE_FILE, SPLIT_FILE, SUMMARY_FILE  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.server.settings import load_server_settings  # noqa: E402


@pytest.fixture()
def local_ray(tmp_path: Path):  # noqa: ANN201
    """A two-CPU Ray cluster on this machine for one test; nodes keep their files in the test's folder."""
    node_env = {"TRANSFERLAB_RAY_NODE_DIR": str(tmp_path / "node")}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", runtime_env=job_runtime_env(node_env))
    yield
    ray.shutdown()


def test_ray_sweep_brings_every_run_and_its_files_back_into_the_store(
    local_ray: None, shapes_dataset: Path, workspace: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(
        [
            "sweep",
            str(shapes_dataset),
            "--backbones",
            "mobilenet_v2_035,efficientnet_lite0",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--weights",
            "none",
            "--backend",
            "ray",
            "--workspace",
            str(workspace),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["backend"] == "ray"
    assert {run["status"] for run in result["runs"]} == {"completed"}
    store = RunStore(workspace)
    fingerprints = set()
    for run in result["runs"]:
        run_dir = store.run_dir(run["run_id"])
        for name in (KERAS_FILE, EVALUATION_FILE, SUMMARY_FILE, SPLIT_FILE, NODE_FILE):
            assert (run_dir / name).is_file(), name
        assert json.loads((run_dir / SUMMARY_FILE).read_text())["run_id"] == run["run_id"]
        assert run["node"] == (run_dir / NODE_FILE).read_text() and "(" in run["node"]  # the Ray node, not a host name
        record = store.get(run["run_id"])
        assert record.status == "completed" and record.metrics["test_accuracy"] == run["test_accuracy"]
        assert [epoch.epoch for epoch in store.epochs(record.id)] == [1]  # epochs replayed into the server's store
        log = store.read_log(record.id)
        assert "epoch 1" in log and "Ray node" in log
        fingerprints.add(record.dataset_fingerprint)
    assert len(fingerprints) == 1
    # The nodes worked in their own folder: the config they trained on named the node's copy, not the workspace.
    logs = " ".join(store.read_log(run["run_id"]) for run in result["runs"])
    assert logs.count("sent to this node") == 1 and "already on this node" in logs  # shipped once


def test_a_bad_ray_address_is_one_message_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_core.jobs.ray_backend import RayConnectionError

    monkeypatch.setenv("TRANSFERLAB_JOB_BACKEND", "ray")
    monkeypatch.setenv("TRANSFERLAB_RAY_ADDRESS", "127.0.0.1:9")  # nothing listens on the discard port
    started = time.monotonic()
    with pytest.raises(RayConnectionError, match="TRANSFERLAB_RAY_ADDRESS") as raised:
        backend_for(load_server_settings(environ=dict(__import__("os").environ)))
    assert time.monotonic() - started < 10 and "ray start --head" in str(raised.value)
    assert not ray.is_initialized()
