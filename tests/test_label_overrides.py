"""The labels-override file (`tl_core.data.label_overrides`): saved at once and atomically, refused with a fix when
damaged, and applied by dataset preparation: relabel and exclude change what a run trains on and the fingerprint,
keep changes neither."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.label_overrides import (  # noqa: E402
    LabelDecision,
    load_decisions,
    overrides_path,
    save_decision,
)
from tl_core.data.prep import prepare_dataset  # noqa: E402
from tl_core.data.types import SPLIT_NAMES  # noqa: E402
from tl_core.errors import DataError  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402


def _labels(prepared) -> dict[str, str]:
    """relpath -> label over every split of a prepared dataset."""
    return {e.relpath: e.label for name in SPLIT_NAMES for e in prepared.split.examples(name)}


def test_decisions_round_trip_per_dataset_and_can_be_undone(tmp_path: Path) -> None:
    workspace, first, second = tmp_path / "ws", tmp_path / "a", tmp_path / "b"
    save_decision(workspace, first, "cat/1.png", LabelDecision("relabel", "dog"))
    save_decision(workspace, first, "cat/2.png", LabelDecision("exclude"))
    save_decision(workspace, str(first) + "/", "dog/3.png", LabelDecision("keep"))  # the same dataset, named otherwise
    save_decision(workspace, second, "x/1.png", LabelDecision("exclude"))
    assert load_decisions(workspace, first) == {
        "cat/1.png": LabelDecision("relabel", "dog"),
        "cat/2.png": LabelDecision("exclude"),
        "dog/3.png": LabelDecision("keep"),
    }
    assert load_decisions(workspace, second) == {"x/1.png": LabelDecision("exclude")}
    assert save_decision(workspace, second, "x/1.png", None) == {}
    raw = json.loads(overrides_path(workspace).read_text())
    assert raw["version"] == 1 and list(raw["datasets"]) == [str(first.resolve())]
    assert not list(workspace.glob(".label_overrides.json.*"))  # no temporary file left behind
    with pytest.raises(ValueError, match="relabel needs the new class"):
        LabelDecision("relabel")


@pytest.mark.parametrize(
    "content", ["{not json", json.dumps([1, 2]), json.dumps({"version": 1, "datasets": {"/d": {"a.png": {"x": 1}}}})]
)
def test_a_damaged_file_is_refused_naming_it_and_the_fix(tmp_path: Path, content: str) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    overrides_path(workspace).write_text(content)
    for attempt in (
        lambda: load_decisions(workspace, "/d"),
        lambda: save_decision(workspace, "/d", "b.png", LabelDecision("exclude")),
    ):
        with pytest.raises(DataError) as caught:
            attempt()
        assert str(overrides_path(workspace)) in str(caught.value)
        assert "delete it" in str(caught.value) and "never changed" in str(caught.value)
    assert overrides_path(workspace).read_text() == content  # a damaged file is never overwritten


def test_relabel_and_exclude_change_what_a_run_trains_on_and_the_fingerprint(shapes_dataset: Path, tmp_path) -> None:
    store = RunStore(tmp_path / "ws")
    config = DataConfig(source=str(shapes_dataset))
    before = prepare_dataset(config, store)
    relpaths = sorted(_labels(before))
    relabelled, excluded, kept = relpaths[0], relpaths[1], relpaths[2]
    new_class = next(name for name in before.split.class_names if name != _labels(before)[relabelled])

    save_decision(store.workspace, shapes_dataset, kept, LabelDecision("keep"))
    only_kept = prepare_dataset(config, store)
    assert only_kept.report.fingerprint == before.report.fingerprint
    assert _labels(only_kept) == _labels(before) and only_kept.overrides.kept == 1

    save_decision(store.workspace, shapes_dataset, relabelled, LabelDecision("relabel", new_class))
    save_decision(store.workspace, shapes_dataset, excluded, LabelDecision("exclude"))
    after = prepare_dataset(config, store)
    labels = _labels(after)
    assert labels[relabelled] == new_class and excluded not in labels
    assert {k: v for k, v in labels.items() if k != relabelled} == {
        k: v for k, v in _labels(before).items() if k not in (relabelled, excluded)
    }
    assert after.report.fingerprint != before.report.fingerprint
    assert (after.overrides.relabelled, after.overrides.excluded, after.overrides.kept) == (1, 1, 1)
    assert sum(after.report.class_counts.values()) == sum(before.report.class_counts.values()) - 1
    for name in SPLIT_NAMES:  # every example stays in its split, so test results compare across the review
        assert {e.relpath for e in after.split.examples(name)} <= {e.relpath for e in before.split.examples(name)}
    applied = [p for p in after.report.problems if p.kind == "label-overrides"]
    assert applied and "1 relabelled, 1 excluded, 1 kept" in applied[0].message

    save_decision(store.workspace, shapes_dataset, relabelled, None)
    save_decision(store.workspace, shapes_dataset, excluded, None)
    assert prepare_dataset(config, store).report.fingerprint == before.report.fingerprint


def test_a_relabel_to_an_unknown_class_is_ignored_with_a_warning(shapes_dataset: Path, tmp_path) -> None:
    store = RunStore(tmp_path / "ws")
    config = DataConfig(source=str(shapes_dataset))
    before = prepare_dataset(config, store)
    relpath = sorted(_labels(before))[0]
    save_decision(store.workspace, shapes_dataset, relpath, LabelDecision("relabel", "no_such_class"))
    after = prepare_dataset(config, store)
    assert after.report.fingerprint == before.report.fingerprint
    assert any("no such class" in p.message and p.severity == "warning" for p in after.report.problems)


def test_emptying_classes_by_decisions_says_which_decisions_to_undo(shapes_dataset: Path, tmp_path) -> None:
    store = RunStore(tmp_path / "ws")
    config = DataConfig(source=str(shapes_dataset))
    before = prepare_dataset(config, store)
    first, *_ = before.split.class_names
    for example in before.report.examples:
        if example.label != first:
            save_decision(store.workspace, shapes_dataset, example.relpath, LabelDecision("exclude"))
    with pytest.raises(DataError, match="fewer than 2 classes.*undo some relabel or exclude"):
        prepare_dataset(config, store)


def test_the_next_run_trains_on_the_decisions_and_logs_them(shapes_dataset: Path, tmp_path) -> None:
    from tl_core.training.runner import run_experiment

    store = RunStore(tmp_path / "ws")
    config = RunConfig(
        data=DataConfig(source=str(shapes_dataset)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(epochs=1, batch_size=16),
    )
    first = run_experiment(config, store=store)
    split = json.loads((store.run_dir(first.run_id) / "split.json").read_text())
    relabelled, excluded = split["train"][0], split["val"][0]
    new_class = next(name for name in first.summary["class_names"] if not relabelled.startswith(name + "/"))
    save_decision(store.workspace, shapes_dataset, relabelled, LabelDecision("relabel", new_class))
    save_decision(store.workspace, shapes_dataset, excluded, LabelDecision("exclude"))
    second = run_experiment(config, store=store)
    assert second.status == "completed", second.error
    assert excluded not in json.loads((store.run_dir(second.run_id) / "split.json").read_text())["val"]
    assert store.get(second.run_id).dataset_fingerprint != store.get(first.run_id).dataset_fingerprint
    assert first.summary["label_overrides"] == {"relabelled": 0, "excluded": 0}
    assert second.summary["label_overrides"] == {"relabelled": 1, "excluded": 1}
    log = store.read_log(second.run_id)
    assert "Label decisions applied" in log and "1 relabelled, 1 excluded" in log
    # Features depend on the images only: the relabel keeps the training split's cached features, the exclusion
    # changes which images the validation split holds.
    assert "train: reused cached backbone features" in log and "val: reused" not in log
