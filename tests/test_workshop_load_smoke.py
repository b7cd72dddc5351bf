"""Smoke run of bench/workshop_load.py: two students in a real browser on a workshop server, one job at a time.

Checks that the benchmark runs end to end and prints its verdict lines, and the facts that do not
depend on speed: no errors, every queued run completed and whole, the queue kept its order. Page
response times and memory are printed, never asserted.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import re  # noqa: E402

import pytest  # noqa: E402

pytestmark = pytest.mark.slow

VERDICT_LABELS = (
    "errors seen by users",
    "page links clicked twice (the first click drew no new page)",
    "runs queued",
    "lost runs",
    "corrupted runs",
    "runs still queued or training at the timeout",
    "pages showing another user's runs",
    "queue start order vs submit order, inversions",
    "longest stretch with a job waiting and a device slot free",
    "page response p50 while jobs run",
    "page response p95 while jobs run",
    "server process peak memory (VmHWM)",
)


def test_two_users_one_job_print_verdicts_without_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import workshop_load

    figures = workshop_load.main(["--users", "2", "--jobs", "1", "--epochs", "1", "--ramp-s", "0", "--timeout", "600"])
    output = capsys.readouterr().out
    for label in VERDICT_LABELS:
        assert re.search(rf"^{re.escape(label)}: .* (PASS|FAIL)$", output, re.MULTILINE), (
            f"no verdict line for {label!r}:\n{output}"
        )
    assert figures["errors"] == 0, output
    assert figures["runs_queued"] == 2, output
    assert figures["lost"] == 0 and figures["corrupted"] == 0 and figures["unfinished"] == 0, output
    assert figures["leaks"] == 0 and figures["inversions"] == 0, output
    assert figures["server_peak_mib"] > 0 and figures["worker_peak_mib"] > 0, output
