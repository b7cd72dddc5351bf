"""The Ray backend against real Ray clusters started here, on this machine (never any other): a sweep, node loss,
a server restart, advisory jobs beside Ray runs, shared dataset folders."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray  # pinned in requirements.txt: a missing Ray is a failure here, not a skip

from tl_core.cli.main import main  # noqa: E402
from tl_core.jobs.backends import backend_for  # noqa: E402
from tl_core.jobs.ray_backend import job_runtime_env  # noqa: E402
from tl_core.layout import EVALUATION_FILE, KERAS_FILE, NODE_FILE, SPLIT_FILE, SUMMARY_FILE  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.server.settings import load_server_settings  # noqa: E402


@pytest.fixture()
def two_nodes(tmp_path: Path):  # noqa: ANN201 - yields the node folders
    """A Ray cluster on this machine: a head without CPUs and two one-CPU nodes, each with its own folder."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    folders = [tmp_path / f"node{index}" for index in range(2)]
    try:
        for folder in folders:
            cluster.add_node(num_cpus=1, env_vars={"TRANSFERLAB_RAY_NODE_DIR": str(folder)})
        ray.init(address=cluster.address, logging_level="ERROR", runtime_env=job_runtime_env())
        cluster.wait_for_nodes()
        yield folders
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_three_run_sweep_on_two_nodes_brings_every_run_and_its_files_back(
    two_nodes: list[Path], shapes_dataset: Path, workspace: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(
        [
            "sweep",
            str(shapes_dataset),
            "--backbones",
            "mobilenet_v2_035,efficientnet_lite0,mobilenet_v3_small",
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
    assert result["backend"] == "ray" and len(result["runs"]) == 3
    assert {run["status"] for run in result["runs"]} == {"completed"}
    assert len({run["node"] for run in result["runs"]}) == 2  # both nodes trained
    store = RunStore(workspace)
    fingerprints = set()
    for run in result["runs"]:
        run_dir = store.run_dir(run["run_id"])
        for name in (KERAS_FILE, EVALUATION_FILE, SUMMARY_FILE, SPLIT_FILE, NODE_FILE):
            assert (run_dir / name).is_file(), name
        assert json.loads((run_dir / SUMMARY_FILE).read_text())["run_id"] == run["run_id"]
        assert run["node"] == (run_dir / NODE_FILE).read_text()
        record = store.get(run["run_id"])
        assert record.status == "completed" and record.metrics["test_accuracy"] == run["test_accuracy"]
        assert [epoch.epoch for epoch in store.epochs(record.id)] == [1]  # epochs replayed into the server's store
        assert "epoch 1" in store.read_log(record.id) and "Ray node" in store.read_log(record.id)
        fingerprints.add(record.dataset_fingerprint)
    assert len(fingerprints) == 1
    logs = " ".join(store.read_log(run["run_id"]) for run in result["runs"])
    assert logs.count("sent to this node") == 2 and logs.count("already on this node") == 1  # once per node
    # Each node trained in its own folder on its own copy of the data, never in the server's workspace.
    for folder in two_nodes:
        (job,) = [RunStore(path) for path in (folder / "jobs").iterdir()][:1]
        source = job.list_runs()[0].config["data"]["source"]
        assert source.startswith(str(folder / "datasets")) and str(workspace) not in source


def test_stop_reaches_the_run_on_its_node_and_its_progress_streams_back(
    two_nodes: list[Path], shapes_dataset: Path, workspace: Path, managers
) -> None:
    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.jobs.ray_backend import RayBackend

    backend = RayBackend.connect(None)
    store = RunStore(workspace)
    manager = managers(store, slots=backend.slots(), backend=backend, poll_interval_s=0.1)
    config = RunConfig(
        data=DataConfig(source=str(shapes_dataset)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(epochs=500, batch_size=16, use_feature_cache=False, early_stopping_patience=None),
    )
    run_id = manager.submit(config)
    deadline = time.monotonic() + 120
    while (manager.status(run_id).progress.epoch or 0) < 2:  # live progress from the node
        assert time.monotonic() < deadline, store.read_log(run_id)
        time.sleep(0.2)
    assert store.get(run_id).status == "running" and len(store.epochs(run_id)) >= 1
    assert manager.stop(run_id)
    status = manager.wait(run_id, timeout_s=60)
    manager.shutdown()
    record = store.get(run_id)
    assert status.state == "finished" and record.status == "stopped", store.read_log(run_id)
    assert 2 <= len(store.epochs(run_id)) < 500 and (store.run_dir(run_id) / KERAS_FILE).is_file()


def test_the_app_s_job_manager_runs_on_the_cluster_its_settings_name(
    two_nodes: list[Path], shapes_dataset: Path, workspace: Path, tmp_path: Path
) -> None:
    """`job_backend = "ray"` in transferlab.toml: the web server's one manager (ui/state.py) sends runs to Ray,
    reads a dataset on a shared folder in place, and runs an advisory job on the server machine."""
    from tl_core.advisor.results import CutDepths
    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.jobs.advisory import AdvisoryStore
    from tl_core.jobs.backend import CUT_PROBE_JOB
    from tl_core.jobs.ray_backend import RayBackend
    from tl_core.jobs.split_backend import SplitBackend
    from tl_core.server.limits import RunLimits
    from ui.state import _manager_for

    address = ray.get_runtime_context().gcs_address
    (tmp_path / "transferlab.toml").write_text(
        f'job_backend = "ray"\nray_address = "{address}"\nray_shared_paths = ["{shapes_dataset.parent}"]\n'
    )
    settings = load_server_settings(environ={}, cwd=tmp_path)
    manager = _manager_for(str(workspace), settings, RunLimits.from_settings(settings))
    try:
        assert isinstance(manager.backend, SplitBackend) and isinstance(manager.backend.runs, RayBackend)
        assert manager.slots == {"ray": 2}
        store = RunStore(workspace)
        config = RunConfig(
            data=DataConfig(source=str(shapes_dataset)),
            model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
            train=TrainConfig(epochs=1, batch_size=16),
        )
        run_id = manager.submit(config, owner="alice", store=store)
        probe_id = manager.submit_advisory(CUT_PROBE_JOB, config, key="k", options={"layers": ["out_relu"]})
        status = manager.wait(run_id, timeout_s=180)
        record = store.get(run_id)
        log = store.read_log(run_id)
        assert status.state == "finished" and record.status == "completed", log
        assert (store.run_dir(run_id) / NODE_FILE).read_text().strip() and "Ray node" in log
        # The dataset lies in a shared folder: the node read it there, nothing went into the object store.
        assert f"read in place from the shared path {shapes_dataset}" in log
        assert manager.backend.runs.datasets.shipped == 0
        for node in two_nodes:
            assert not (node / "datasets").exists()
        # The advisory job ran in a worker process on this machine, not on a Ray node.
        assert manager.wait(probe_id, timeout_s=300).progress.status == "completed"
        assert manager.queue.get(probe_id).worker.startswith("process:")
        (measured,) = CutDepths.from_dict(AdvisoryStore(workspace).get(probe_id).result).measured
        assert measured[0] == "out_relu"
    finally:
        manager.shutdown(stop_jobs=True)


def test_a_bad_ray_address_is_one_message_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_core.jobs.ray_backend import RayConnectionError

    monkeypatch.setenv("TRANSFERLAB_JOB_BACKEND", "ray")
    monkeypatch.setenv("TRANSFERLAB_RAY_ADDRESS", "127.0.0.1:9")  # nothing listens on the discard port
    started = time.monotonic()
    with pytest.raises(RayConnectionError, match="TRANSFERLAB_RAY_ADDRESS") as raised:
        backend_for(load_server_settings(environ=dict(__import__("os").environ)))
    assert time.monotonic() - started < 10 and "ray start --head" in str(raised.value)
    assert not ray.is_initialized()


@pytest.mark.slow  # two Ray nodes, TensorFlow imported twice, 10 epochs trained twice: 35-65 s measured on 2 shared cores
def test_a_node_lost_mid_run_resumes_from_its_checkpoint_on_the_other_node(
    tmp_path: Path, shapes_dataset: Path, workspace: Path, managers
) -> None:
    from ray.cluster_utils import Cluster

    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.jobs.ray_backend import RayBackend

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        node_env = {"TRANSFERLAB_RAY_NODE_DIR": str(tmp_path / "node")}
        ray.init(address=cluster.address, logging_level="ERROR", runtime_env=job_runtime_env(node_env))
        cluster.wait_for_nodes()
        backend = RayBackend.connect(None, max_retries=2)
        assert backend.slots() == {"ray": 2}
        store = RunStore(workspace)
        manager = managers(store, slots=backend.slots(), backend=backend, poll_interval_s=0.1)
        config = RunConfig(
            data=DataConfig(source=str(shapes_dataset)),
            model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
            train=TrainConfig(
                epochs=10, batch_size=16, use_feature_cache=False, early_stopping_patience=None, reduce_lr_patience=None
            ),
        )
        run_id = manager.submit(config)
        run_dir = store.run_dir(run_id)
        deadline = time.monotonic() + 120
        while not ((run_dir / "checkpoint.weights.h5").is_file() and len(store.epochs(run_id)) >= 2):
            assert time.monotonic() < deadline, store.read_log(run_id)
            time.sleep(0.2)
        first_node = backend.node_of(run_id)
        cluster.remove_node(next(node for node in nodes if node.node_id == first_node), allow_graceful=False)

        status = manager.wait(run_id, timeout_s=240)
        record = store.get(run_id)
        log = store.read_log(run_id)
        assert status.state == "finished" and record.status == "completed", log
        assert "was lost; retry 1 of 2" in log and "Same run id" in log
        assert "Starting from the interrupted run's checkpoint" in log  # the runner loaded the shipped checkpoint
        assert first_node[:8] not in (run_dir / NODE_FILE).read_text()  # finished on the other node
        assert (run_dir / KERAS_FILE).is_file() and len(store.list_runs()) == 1
    finally:
        if "manager" in locals():
            manager.shutdown(stop_jobs=True)  # before Ray goes: its dispatcher polls the cluster
        ray.shutdown()
        cluster.shutdown()


FIRST_SERVER = """
import sys, time
import ray
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.jobs.manager import JobManager
from tl_core.jobs.ray_backend import RayBackend, job_runtime_env
from tl_core.runs.store import RunStore

address, workspace, dataset = sys.argv[1:]
ray.init(address=address, logging_level="ERROR", runtime_env=job_runtime_env())
backend = RayBackend.connect(None)
manager = JobManager(RunStore(workspace), slots=backend.slots(), backend=backend, poll_interval_s=0.1)
config = RunConfig(
    data=DataConfig(source=dataset),
    model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
    train=TrainConfig(
        epochs=6, batch_size=16, use_feature_cache=False, early_stopping_patience=None, reduce_lr_patience=None
    ),
)
print("RUNS", manager.submit(config), manager.submit(config), flush=True)
time.sleep(600)
"""


@pytest.mark.slow  # a server process and its two runs on two Ray nodes, then a resumed run: ~60-120 s on 2 cores
def test_a_restarted_server_follows_a_run_still_on_the_cluster_and_interrupts_one_whose_actor_is_gone(
    two_nodes: list[Path], shapes_dataset: Path, workspace: Path, managers
) -> None:
    from tl_core.jobs.ray_backend import RAY_NAMESPACE, RayBackend, actor_name
    from tl_core.layout import CHECKPOINT_FILE, RAY_EVENTS_FILE

    address = ray.get_runtime_context().gcs_address
    server = subprocess.Popen(
        [sys.executable, "-c", FIRST_SERVER, address, str(workspace), str(shapes_dataset)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    store = RunStore(workspace)
    try:
        line = next(line for line in server.stdout if line.startswith("RUNS "))
        followed, orphaned = line.split()[1:]
        deadline = time.monotonic() + 180
        while not all(
            store.epochs(run_id) and (store.run_dir(run_id) / CHECKPOINT_FILE).is_file()
            for run_id in (followed, orphaned)
        ):
            assert time.monotonic() < deadline, store.read_log(followed) + store.read_log(orphaned)
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGKILL)  # the first server is gone at once: no shutdown, no goodbye
        server.wait(30)
    # One run's actor dies while no server runs (as with a node restarted meanwhile); the other trains on.
    ray.kill(ray.get_actor(actor_name(workspace, orphaned, 1), namespace=RAY_NAMESPACE), no_restart=True)
    assert ray.get_actor(actor_name(workspace, followed, 1), namespace=RAY_NAMESPACE)

    backend = RayBackend.connect(None)
    manager = managers(store, slots=backend.slots(), backend=backend, poll_interval_s=0.1)
    assert manager.recovered == [orphaned]
    status = manager.wait(followed, timeout_s=240)
    record, log = store.get(followed), store.read_log(followed)
    assert status.state == "finished" and record.status == "completed", log
    assert "the server restarted while this run trained on the Ray cluster" in log and "same run id" in log
    assert "stopped unexpectedly" not in log
    assert [epoch.epoch for epoch in store.epochs(followed)] == list(range(1, 7))
    assert log.count("epoch 1 (") == 1 and log.count("run started") == 1  # nothing recorded twice
    run_dir = store.run_dir(followed)
    assert (run_dir / KERAS_FILE).is_file() and not (run_dir / RAY_EVENTS_FILE).exists()
    deadline = time.monotonic() + 30
    while _actor_alive(actor_name(workspace, followed, 1)):  # ended once its outcome was back: nothing leaks
        assert time.monotonic() < deadline
        time.sleep(0.2)

    interrupted = store.get(orphaned)
    assert interrupted.status == "interrupted" and "Resume it" in (interrupted.error or ""), interrupted.error
    assert "its Ray actor is gone" in store.read_log(orphaned)
    resumed = manager.resume(orphaned)
    assert manager.wait(resumed, timeout_s=240).state == "finished"
    assert store.get(resumed).status == "completed", store.read_log(resumed)
    assert "Starting from the interrupted run's checkpoint" in store.read_log(resumed)


def test_a_finished_actor_nobody_collects_ends_itself_and_a_node_without_the_shared_mount_says_so(
    two_nodes: list[Path], tmp_path: Path
) -> None:
    from ray.exceptions import RayTaskError

    from tl_core.jobs.ray_backend import RAY_NAMESPACE
    from tl_core.jobs.ray_job import SHARED_DATASET, RunOnNode

    actor_class = ray.remote(max_concurrency=6, max_restarts=0)(RunOnNode)
    actor = actor_class.options(num_cpus=1, name="orphan", namespace=RAY_NAMESPACE, lifetime="detached").remote()
    missing = tmp_path / "not-mounted"
    dataset = {"key": "", "name": missing.name, "kind": SHARED_DATASET, "path": str(missing)}
    request = {"run_id": "r", "config": {}, "dataset": dataset, "initial_weights": None, "attempt": 1}
    with pytest.raises(RayTaskError, match="mount the folders listed in ray_shared_paths"):
        ray.get(actor.run.remote({**request, "keep_outcome_s": 1.0}, []), timeout=120)
    deadline = time.monotonic() + 30
    while _actor_alive("orphan"):  # its server never asked for the outcome: it let its CPU go by itself
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _actor_alive(name: str) -> bool:
    from tl_core.jobs.ray_backend import RAY_NAMESPACE

    try:
        ray.get_actor(name, namespace=RAY_NAMESPACE)
    except ValueError:
        return False
    return True
