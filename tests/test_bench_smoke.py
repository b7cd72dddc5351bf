"""Smoke runs of the benchmarks with tiny arguments: they run and print their verdict lines.

No timing is asserted (the machines are shared and noisy); only facts that do not depend on speed,
such as the second run reusing its caches, are.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import re  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from bench import _common as common  # noqa: E402

TINY = [
    "--images",
    "30",
    "--image-size",
    "32",
    "--source-size",
    "48",
    "--backbone",
    "mobilenet_v2_035",
    "--weights",
    "none",
    "--repeats",
    "1",
]
VERDICT = r"(PASS|FAIL)$"


@pytest.fixture(scope="module")
def bench_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated-dataset cache shared by the smoke runs (generation is what it is there to save)."""
    return tmp_path_factory.mktemp("bench-cache")


def _verdict_lines(output: str, label: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(label) and re.search(VERDICT, line)]


def test_ratio_line_verdicts() -> None:
    assert common.ratio_line("speed-up", 7.31, 5.0, digits=1) == "speed-up: 7.3x (target >= 5x) PASS"
    assert (
        common.ratio_line("share", 12.0, 10, at_least=False, unit="%", digits=1) == "share: 12.0% (target <= 10%) FAIL"
    )


def test_steady_throughput_leaves_out_the_first_epoch() -> None:
    # Epoch ends at 10 s (tracing), 12 s and 14 s: two steady epochs of 100 images in 4 s.
    assert common.steady_throughput([10.0, 12.0, 14.0], 100) == pytest.approx(50.0)


def test_shapes_dataset_is_generated_once(bench_cache: Path) -> None:
    root = common.shapes_jpeg_dataset(bench_cache, images=12, source_size=40, classes=3)
    files = sorted(root.rglob("*.jpg"))
    assert len(files) == 12 and len({f.parent.name for f in files}) == 3
    stamp = files[0].stat().st_mtime_ns
    assert common.shapes_jpeg_dataset(bench_cache, images=12, source_size=40, classes=3) == root
    assert files[0].stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_feature_extraction_prints_verdicts(bench_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import feature_extraction

    feature_extraction.main([*TINY, "--epochs", "2", "--cache-dir", str(bench_cache)])
    output = capsys.readouterr().out
    for label in (
        "feature extraction speed-up vs plain model.fit",
        "test accuracy, ours minus plain model.fit",
        "feature extraction end to end vs forward-pass floor",
        "second run on the same data, time to trained head",
    ):
        assert _verdict_lines(output, label), f"missing verdict line {label!r} in:\n{output}"
    assert "features reused: True, images reused or not needed: True" in output
    assert "device:" in output and "mixed_precision" in output


@pytest.mark.slow
def test_fine_tune_overhead_prints_verdict(bench_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import fine_tune_overhead

    fine_tune_overhead.main([*TINY, "--epochs", "2", "--fine-tune-layers", "2", "--cache-dir", str(bench_cache)])
    output = capsys.readouterr().out
    assert _verdict_lines(output, "fine-tune throughput vs bare model.fit"), output


def test_pipeline_prints_verdicts_and_reuses_the_cache(bench_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import pipeline

    pipeline.main([*TINY, "--backbone-images", "8", "--cache-dir", str(bench_cache)])
    output = capsys.readouterr().out
    assert _verdict_lines(output, "decode + resize (build_image_cache) vs backbone consumption"), output
    (second,) = _verdict_lines(output, "second build on the same data")
    assert "reused=True, images decoded=0" in second and second.endswith("PASS")


@pytest.mark.slow
def test_memory_prints_verdicts(bench_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import memory

    memory.main([*TINY, "--epochs", "1", "--cache-dir", str(bench_cache)])
    output = capsys.readouterr().out
    assert _verdict_lines(output, "peak RSS (ru_maxrss) training on 30 images at 32 px"), output
    assert _verdict_lines(output, "peak anonymous RSS"), output
    assert _verdict_lines(output, "peak VmRSS of the run and its decoding helper together"), output
    assert "stream one shuffled epoch" in output


@pytest.mark.slow
def test_job_start_times_a_second_job_with_and_without_a_warm_worker(
    bench_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import job_start

    # A 1 s pause: the warm worker is usually still importing when its job arrives, and the job waits for that import.
    ratios = job_start.main([*TINY, "--epochs", "1", "--pause", "1", "--cache-dir", str(bench_cache)])
    output = capsys.readouterr().out
    assert "second job, submit -> completed: warm worker" in output and "sooner with a warm worker" in output, output
    assert set(ratios) == {"completed_speedup", "first_epoch_speedup"}
