"""The helper process that decodes a run's images while the run builds its model: same cache, stoppable, optional."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data import decode_helper  # noqa: E402
from tl_core.data.image_cache import build_image_cache, has_image_cache  # noqa: E402
from tl_core.data.image_dataset import scan_dataset, split_dataset  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training import runner

SIZE = 32


@pytest.fixture()
def split(shapes_dataset):
    return split_dataset(scan_dataset(shapes_dataset), val_fraction=0.2, test_fraction=0.2, seed=3)


def _leftovers(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if "partial" in p.name or "decode-helper" in p.name)


def test_the_helper_fills_the_same_cache_the_run_would_and_reports_its_progress(split, tmp_path):
    cache_dir = tmp_path / "images"
    reports: list[tuple[str, int, int]] = []
    logged: list[tuple[str, str]] = []
    callbacks_made: list[str] = []

    def progress(name):
        callbacks_made.append(name)
        return lambda done, total: reports.append((name, done, total))

    with decode_helper.decoding_in_helper(split, SIZE, cache_dir) as helper:
        assert helper is not None and helper.splits == ("train", "val", "test")
        cached = helper.finish(progress, lambda *line: logged.append(line))

    assert cached == {"train", "val", "test"} and logged == []
    assert callbacks_made == [
        "train",
        "val",
        "test",
    ]  # one callback per split: the run's throttle spans the helper's lines
    for name in ("train", "val", "test"):
        assert (name, len(split.examples(name)), len(split.examples(name))) in reports  # each split reported to its end
        reused = build_image_cache(split.examples(name), SIZE, tmp_path / "in-process")  # decoded here, for comparison
        from_helper = build_image_cache(split.examples(name), SIZE, cache_dir)
        assert from_helper.reused  # the run decodes nothing more
        np.testing.assert_array_equal(np.asarray(from_helper.images), np.asarray(reused.images))
    assert _leftovers(cache_dir) == []


def test_no_helper_starts_when_every_split_is_cached_or_it_is_not_wanted(split, tmp_path):
    cache_dir = tmp_path / "images"
    with decode_helper.decoding_in_helper(split, SIZE, cache_dir, enabled=False) as helper:
        assert helper is None
    build_image_cache(split.examples("train"), SIZE, cache_dir)
    with decode_helper.decoding_in_helper(split, SIZE, cache_dir) as helper:
        assert helper is not None and helper.splits == ("val", "test")  # only what is missing
        helper.finish(None, lambda *line: None)
    assert all(has_image_cache(split.examples(name), SIZE, cache_dir) for name in ("train", "val", "test"))
    with decode_helper.decoding_in_helper(split, SIZE, cache_dir) as helper:
        assert helper is None


def test_closing_a_running_helper_stops_it_and_leaves_nothing_half_written(split, tmp_path):
    cache_dir = tmp_path / "images"
    with decode_helper.decoding_in_helper(split, SIZE, cache_dir) as helper:
        assert helper is not None
        process = helper.process
    assert process.poll() is not None  # ended by the block, finished or not
    assert _leftovers(cache_dir) == []


def test_a_stop_while_following_the_helper_ends_it(split, tmp_path):
    class Stop(Exception):
        pass

    def stop_at_first_report(name):
        def report(done, total):
            raise Stop(name)

        return report

    cache_dir = tmp_path / "images"
    with pytest.raises(Stop):
        with decode_helper.decoding_in_helper(split, SIZE, cache_dir) as helper:
            process = helper.process
            helper.finish(stop_at_first_report, lambda *line: None)
    assert process.poll() is not None and _leftovers(cache_dir) == []


def test_the_helper_stops_by_itself_when_the_run_process_is_gone(split, tmp_path):
    """A run killed outright (no `close`) leaves no helper decoding for nobody, and no partial file."""
    cache_dir = tmp_path / "images"
    many = [example for _ in range(60) for example in split.examples("train")]  # seconds of decoding: it is still busy
    spec = tmp_path / "spec.json"
    script = textwrap.dedent(f"""
        import json, os, subprocess, sys
        spec = {{"image_size": 160, "cache_dir": {str(cache_dir)!r},
                 "splits": [["train", json.load(open({str(spec)!r}))]]}}
        json.dump(spec, open({str(spec)!r}, "w"))
        helper = subprocess.Popen([sys.executable, "-m", "tl_core.data.decode_helper", {str(spec)!r}], stdout=subprocess.PIPE, text=True)
        print(helper.pid, helper.stdout.readline().split("\\t")[0], flush=True)  # it has started decoding
        os._exit(0)  # gone without a word, like a killed worker
    """)
    spec.write_text(json.dumps([example.__dict__ for example in many]))
    cache_dir.mkdir()
    started = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(decode_helper.__file__).parent.parent)},
    )
    helper_pid, first_line = started.stdout.split()
    assert first_line == "progress"
    deadline = time.monotonic() + 20
    while (
        time.monotonic() < deadline
        and Path(f"/proc/{helper_pid}").exists()
        and "zombie" not in Path(f"/proc/{helper_pid}/status").read_text()
    ):
        time.sleep(0.05)
    assert not Path(f"/proc/{helper_pid}").exists() or "zombie" in Path(f"/proc/{helper_pid}/status").read_text()
    assert not has_image_cache(many, 160, cache_dir)  # it stopped before the end
    assert _leftovers(cache_dir) == []


def test_the_helper_imports_no_tensorflow():
    """It must start in a fraction of the model build it hides behind."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tl_core.data.decode_helper; print(sorted({'tensorflow', 'keras'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(decode_helper.__file__).parent.parent)},
    )
    assert probe.stdout.strip() == "[]"


def test_a_run_whose_helper_fails_decodes_in_its_own_process_and_says_so(shapes_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(decode_helper.sys, "executable", "/bin/false")  # the helper starts and exits 1 at once
    config = RunConfig(
        data=DataConfig(source=str(shapes_dataset)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=SIZE),
        train=TrainConfig(epochs=1, batch_size=16),
    )
    outcome = runner.run_experiment(config, store=RunStore(tmp_path / "workspace"))
    assert outcome.status == "completed", outcome.error
    log = "\n".join(outcome.log)
    assert (
        "Decoding in a helper process failed (exit 1" in log
        and "decoding train, val, test in this process instead" in log
    )
    assert log.count("images decoded and cached at") == 3 and "by a helper process" not in log


def test_a_run_says_which_splits_its_helper_decoded(shapes_dataset, tmp_path):
    config = RunConfig(
        data=DataConfig(source=str(shapes_dataset)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=SIZE),
        train=TrainConfig(epochs=1, batch_size=16),
    )
    store = RunStore(tmp_path / "workspace")
    first = runner.run_experiment(config, store=store)
    assert first.status == "completed", first.error
    assert sum("images decoded and cached by a helper process" in line for line in first.log) == 3
    assert not any("helper process failed" in line for line in first.log)
