"""End-to-end runs through the store: completed, failed (logs and checkpoint kept), chained backbones, GPU paths on CPU."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data import image_dataset  # noqa: E402
from tl_core.data.images import load_image_array  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.results.predict import load_run_classifier  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training import feature_extraction as feature_extraction_run
from tl_core.training import runner

TINY_MODEL = ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=48)


def _config(source, **train):
    return RunConfig(
        data=DataConfig(source=str(source)), model=TINY_MODEL, train=TrainConfig(epochs=2, batch_size=16, **train)
    )


def test_completed_run_is_stored_with_artefacts_and_reuses_features(shapes_dataset, workspace):
    store = RunStore(workspace)
    first = runner.run_experiment(_config(shapes_dataset), store=store)
    assert first.status == "completed", first.error
    record = store.get(first.run_id)
    assert record.status == "completed"
    assert record.metrics["test_accuracy"] == first.summary["test_accuracy"]
    folder = store.run_dir(first.run_id)
    for name in ("model.keras", "labels.txt", "evaluation.json", "summary.json", "log.txt", "split.json"):
        assert (folder / name).is_file(), name
    assert [e.epoch for e in store.epochs(first.run_id)] == [1, 2]

    second = runner.run_experiment(_config(shapes_dataset), store=store)
    second_log = "\n".join(second.log)
    assert "reused cached backbone features" in second_log and "no image read" in second_log
    assert "decoded and cached" not in second_log and "decoded-image cache" not in second_log
    # The cached features were found before the backbone was built (it is built only to assemble the classifier).
    assert second_log.index("reused cached backbone features") < second_log.index("Built ")
    assert second.summary["test_accuracy"] == pytest.approx(first.summary["test_accuracy"])
    # Both saved classifiers hold the trained head: the same probabilities, and the recorded test accuracy.
    paths = [shapes_dataset / p for p in json.loads((folder / "split.json").read_text())["test"]]
    outputs = []
    for outcome in (first, second):
        classifier = load_run_classifier(store, outcome.run_id)
        outputs.append(
            keras.ops.convert_to_numpy(
                classifier.model(np.stack([load_image_array(p, 48) for p in paths]), training=False)
            )
        )
        labels = [classifier.class_names.index(p.parent.name) for p in paths]
        accuracy = float(np.mean(outputs[-1].argmax(1) == labels))
        assert accuracy == pytest.approx(outcome.summary["test_accuracy"])
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)


@pytest.mark.parametrize(
    ("module", "broken_step"), [(feature_extraction_run, "evaluate_probabilities"), (runner, "save_classifier")]
)  # the save runs in a helper thread
def test_a_failing_run_keeps_its_log_and_checkpoint(shapes_dataset, workspace, monkeypatch, module, broken_step):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(module, broken_step, broken)
    store = RunStore(workspace)
    outcome = runner.run_experiment(_config(shapes_dataset), store=store)
    assert outcome.status == "failed"
    record = store.get(outcome.run_id)
    assert record.status == "failed" and "disk on fire" in record.error
    folder = store.run_dir(outcome.run_id)
    assert (folder / "checkpoint.weights.h5").is_file()
    assert "disk on fire" in store.read_log(outcome.run_id)
    assert len(store.epochs(outcome.run_id)) == 2


def test_a_finished_run_becomes_the_backbone_of_the_next(shapes_dataset, workspace):
    store = RunStore(workspace)
    parent = runner.run_experiment(
        _config(shapes_dataset, mode="fine-tune", fine_tune_epochs=1, fine_tune_layers=3), store=store
    )
    assert parent.status == "completed", parent.error
    child_config = RunConfig(
        data=DataConfig(source=str(shapes_dataset)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights=f"run:{parent.run_id}"),
        train=TrainConfig(epochs=1, batch_size=16),
    )
    child = runner.run_experiment(child_config, store=store)
    assert child.status == "completed", child.error
    assert store.get(child.run_id).parent_run_id == parent.run_id
    assert child.summary["image_size"] == 48


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tl_core.training import runner
    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.runs.store import RunStore
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    config = RunConfig(data=DataConfig(source=sys.argv[1]), model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
                       train=TrainConfig(mode="fine-tune", epochs=1, fine_tune_epochs=1, batch_size=8, mixed_precision=True))
    outcome = runner.run_experiment(config, store=RunStore(sys.argv[2]), strategy=strategy)
    # Feature extraction under the strategy: the head trains with `fit` (HeadFitter's variables are not mirrored).
    extraction = runner.run_experiment(config.replace(train=TrainConfig(epochs=2, batch_size=8)), store=RunStore(sys.argv[2]), strategy=strategy)
    print(json.dumps({"status": outcome.status, "replicas": strategy.num_replicas_in_sync, "error": outcome.error,
                      "extraction": [extraction.status, extraction.error, extraction.summary["test_accuracy"] is not None]}))
    """
)


def test_mirrored_strategy_path_on_two_logical_cpus(shapes_dataset, workspace):
    completed = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(shapes_dataset), str(workspace)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result == {"status": "completed", "replicas": 2, "error": None, "extraction": ["completed", None, True]}


def test_compare_scratch_records_the_baseline_and_the_verdict(shapes_dataset, workspace):
    store = RunStore(workspace)
    config = RunConfig(
        data=DataConfig(source=str(shapes_dataset)),
        model=ModelConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=32),
        train=TrainConfig(epochs=3, batch_size=16, compare_scratch=True),
    )
    outcome = runner.run_experiment(config, store=store)
    assert outcome.status == "completed", outcome.error
    summary = outcome.summary
    scratch = store.get(summary["scratch_run_id"])
    assert scratch.weights == "none" and scratch.mode == "full" and scratch.status == "completed"
    assert scratch.metrics["epochs_run"] <= 3  # same epoch budget
    assert isinstance(summary["negative_transfer"], bool)
    assert summary["negative_transfer"] == (summary["negative_transfer_margin"] > 0)
    assert store.get(outcome.run_id).metrics["scratch_test_accuracy"] == summary["scratch_test_accuracy"]
    assert summary["transfer_verdict"] in store.read_log(outcome.run_id)


def test_a_second_scan_of_an_unchanged_folder_is_reused_and_a_changed_file_rescans(
    shapes_dataset, workspace, tmp_path, monkeypatch
):
    source = tmp_path / "data"
    shutil.copytree(shapes_dataset, source)
    store = RunStore(workspace)
    config = DataConfig(source=str(source))
    first = runner.prepare_dataset(config, store)
    scans = []
    real_scan = image_dataset.scan_dataset
    monkeypatch.setattr(
        image_dataset, "scan_dataset", lambda *args, **kwargs: scans.append(args) or real_scan(*args, **kwargs)
    )

    again = runner.prepare_dataset(config, store)
    assert scans == []  # nothing changed: the earlier report is reused
    assert again.report == first.report
    assert again.split.sizes() == first.split.sizes() and again.split.examples("test") == first.split.examples("test")

    changed = next(source.rglob("*.png"))
    changed.write_bytes(next(p for p in source.rglob("*.png") if p != changed).read_bytes() + b"\0")
    rescanned = runner.prepare_dataset(config, store)
    assert len(scans) == 1
    assert rescanned.report.fingerprint != first.report.fingerprint


@pytest.mark.parametrize("mode", ["feature-extraction", "fine-tune"])
def test_a_run_can_start_from_an_interrupted_runs_checkpoint(shapes_dataset, tmp_path, mode):
    store = RunStore(tmp_path / "ws")
    config = _config(shapes_dataset, mode=mode, fine_tune_epochs=1)
    first = runner.run_experiment(config, store=store)
    checkpoint = store.run_dir(first.run_id) / runner.CHECKPOINT_FILE
    assert first.status == "completed" and checkpoint.is_file()
    resumed = runner.run_experiment(config, store=store, initial_weights=checkpoint)
    assert resumed.status == "completed", resumed.error
    assert any("Starting from the interrupted run's checkpoint" in line for line in resumed.log)

    other_classes = make_shapes_dataset(tmp_path / "two", num_classes=2, images_per_class=8, image_size=48)
    refused = runner.run_experiment(
        _config(other_classes, mode=mode, fine_tune_epochs=1), store=store, initial_weights=checkpoint
    )
    assert refused.status == "failed" and refused.error


def test_a_cut_layer_on_a_finished_runs_backbone_is_refused(shapes_dataset, tmp_path):
    import dataclasses

    from tl_core.errors import BackboneError

    store = RunStore(tmp_path / "ws")
    parent = runner.run_experiment(_config(shapes_dataset), store=store)
    config = _config(shapes_dataset)
    config = config.replace(
        model=dataclasses.replace(config.model, weights=f"run:{parent.run_id}", cut_layer="block_6_expand")
    )
    with pytest.raises(BackboneError, match="cut layer"):
        runner.run_experiment(config, store=store)
    assert len(store.list_runs()) == 1  # refused before a run was recorded


class _StopOnPreparation:
    """Records every event and requests a stop at the first progress report of one preparation step."""

    def __init__(self, step, stop):
        self.step, self.stop, self.events = step, stop, []

    def on_event(self, event):
        self.events.append(event)
        if type(event).__name__ == "PreparationProgress" and event.step == self.step:
            self.stop.request_stop()


@pytest.mark.parametrize(
    ("mode", "step", "sentence"),
    [
        ("feature-extraction", "decode", "Stopped while decoding images (train: "),
        ("feature-extraction", "features", "Stopped while computing backbone features (train: 32 of "),
        (
            "fine-tune",
            "features",
            "Stopped while computing backbone features (train: 32 of ",
        ),  # the head phase's features, inside train_model
    ],
)
def test_a_stop_during_decoding_or_feature_extraction_ends_the_run_soon_and_keeps_finished_splits(
    shapes_dataset, workspace, mode, step, sentence
):
    from tl_core.events import PreparationProgress
    from tl_core.stopping import StopToken

    store = RunStore(workspace)
    config = _config(shapes_dataset, mode=mode, fine_tune_epochs=1)
    stop = StopToken()
    listener = _StopOnPreparation(step, stop)
    outcome = runner.run_experiment(config, store=store, listener=listener, stop=stop)
    assert outcome.status == "stopped" and outcome.error is None
    assert store.get(outcome.run_id).status == "stopped"
    log = store.read_log(outcome.run_id)
    assert sentence in log and "nothing was trained yet" in log
    assert store.epochs(outcome.run_id) == [] and not (store.run_dir(outcome.run_id) / "model.keras").exists()
    progress = [e for e in listener.events if isinstance(e, PreparationProgress)]
    assert progress[-1].step == step and progress[-1].split == "train" and progress[-1].done < progress[-1].total
    if step == "features":  # every split was decoded first, each reported up to its last image
        decoded = {e.split: e for e in progress if e.step == "decode"}
        assert sorted(decoded) == ["test", "train", "val"] and all(e.done == e.total for e in decoded.values())
    leftovers = [p.name for p in (workspace / "cache").rglob("*") if "partial" in p.name or "decode-helper" in p.name]
    assert leftovers == []  # nothing half-written is left behind
    finished_features = {
        e.split for e in progress if e.step == "features" and e.done == e.total
    }  # fine-tune reads val first
    assert len(list((workspace / "cache").rglob("features/*.npy"))) == len(finished_features)  # not the stopped split's
    # The decoding helper may have finished splits before its progress was read and the stop seen: those are kept whole.
    kept_image_caches = list((workspace / "cache").rglob("images/*.npy"))
    if step == "features":
        assert len(kept_image_caches) == 3

    again = runner.run_experiment(config, store=store)
    assert again.status == "completed", again.error
    reused = [line for line in again.log if "from the decoded-image cache" in line]
    assert len(reused) == len(kept_image_caches)  # decoded splits are kept for the next run


def test_a_partly_cached_feature_extraction_reads_each_cached_split_once_and_computes_the_rest(
    shapes_dataset, workspace, monkeypatch
):
    from tl_core.training import feature_cache as features

    store = RunStore(workspace)
    first = runner.run_experiment(_config(shapes_dataset), store=store)
    cached_files = sorted((workspace / "cache" / "features").glob("*.npy"))
    assert first.status == "completed" and len(cached_files) == 3
    cached_files[0].unlink()
    loads = []
    real_load = features.load_cached_features
    monkeypatch.setattr(features, "load_cached_features", lambda *args: loads.append(args[1]) or real_load(*args))
    monkeypatch.setattr(feature_extraction_run, "load_cached_features", features.load_cached_features)

    second = runner.run_experiment(_config(shapes_dataset), store=store)
    assert second.status == "completed", second.error
    lines = [line for line in second.log if "backbone features" in line]
    assert sum("reused cached" in line for line in lines) == 2 and sum("computed" in line for line in lines) == 1
    missing = cached_files[0].stem
    assert (
        sorted(loads) == sorted([*set(loads), missing]) and len(set(loads)) == 3
    )  # cached splits read once; the missing one checked twice
    assert second.summary["test_accuracy"] == pytest.approx(first.summary["test_accuracy"])


def test_a_failing_listener_is_logged_and_counted_and_the_run_still_completes(shapes_dataset, workspace):
    class BrokenListener:
        def on_event(self, event):
            raise OSError("disk full")

    store = RunStore(workspace)
    outcome = runner.run_experiment(_config(shapes_dataset), store=store, listener=BrokenListener())

    assert outcome.status == "completed"
    log = (store.run_dir(outcome.run_id) / "log.txt").read_text()
    assert "BrokenListener failed on RunStarted: OSError: disk full" in log
    summary = json.loads((store.run_dir(outcome.run_id) / "summary.json").read_text())
    assert summary["listener_errors"] >= 3  # at least RunStarted, an epoch and RunFinished


class _StopAfterLastFeatures:
    """Requests a stop when the last split's features are done: after every stoppable step, before any epoch."""

    def __init__(self, stop) -> None:
        self.stop = stop

    def on_event(self, event) -> None:
        from tl_core.events import PreparationProgress

        if isinstance(event, PreparationProgress) and event.step == "features" and event.done == event.total:
            if event.split == "val":  # the last split training needs (the test split's come after training)
                self.stop.request_stop()


def test_a_stop_after_the_features_but_before_the_first_epoch_ends_stopped_not_completed(shapes_dataset, workspace):
    from tl_core.stopping import StopToken

    store = RunStore(workspace)
    stop = StopToken()
    outcome = runner.run_experiment(
        _config(shapes_dataset), store=store, listener=_StopAfterLastFeatures(stop), stop=stop
    )
    assert outcome.status == "stopped", "an untrained head is not a completed run"
    assert store.get(outcome.run_id).status == "stopped" and store.epochs(outcome.run_id) == []
    assert not (store.run_dir(outcome.run_id) / "evaluation.json").exists()
    assert "nothing was trained" in store.read_log(outcome.run_id)
