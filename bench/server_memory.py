"""Benchmark (issue 23, item 11): the web server's memory after a user's session of browse, predict and export.

Starts the personal app as `make run` does (`python -m tl_core serve`, loopback), with one finished
EfficientNet-Lite0 run (offline weights, 224 px) in its workspace, and drives it in Chromium as a user
would: every page; the Model page (whose cut-depth list is built from the backbone); Predict with a
trained run and with ImageNet as-is; an export bundle built and downloaded. After each step it reads
VmRSS (now) and VmHWM (peak) of the server process (the one listening on the port, found with `ss -ltnp`)
and of its model worker (`python -m tl_core.jobs.model_worker`). Then it waits past the worker's idle time
(`TRANSFERLAB_WARM_IDLE_S`, 20 s here) and checks that the worker is gone. A screenshot of each step goes
to test-artifacts/server-memory-NN.png.

Target: the server under 600 MB after the session (it was 2.97 GB when it loaded TensorFlow and models itself).

Usage:
    .venv/bin/python -m bench.server_memory [--images-per-class 12] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from bench import _common as common  # noqa: F401 - first: quiets TensorFlow's start-up logging
from tests.workshop_server import ARTIFACTS, launch_chromium, personal_server, wait_idle
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.synthetic import make_shapes_dataset
from tl_core.runs.store import RunStore
from tl_core.training.runner import run_experiment

MB = 1e6
IDLE_S = 20
TARGET_MB = 600


def status_bytes(pid: int, key: str) -> int:
    """A `kB` field of /proc/PID/status in bytes (VmRSS: now, VmHWM: peak); 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def listening_pid(port: int) -> int:
    """The pid of the process listening on `port` (the Streamlit server), from `ss -ltnp`."""
    shown = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"pid=(\d+)", shown)
    if not found:
        raise RuntimeError(f"No process listens on port {port}: {shown!r}")
    return int(found.group(1))


def model_worker_pids(server: int) -> list[int]:
    """The server's own model worker (a child of the server: other servers' workers are not counted)."""
    shown = subprocess.run(
        ["pgrep", "-P", str(server), "-f", "tl_core.jobs.model_worker"], capture_output=True, text=True
    ).stdout
    return [int(pid) for pid in shown.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images-per-class", type=int, default=12)
    parser.add_argument("--json", action="store_true", help="print the samples as one JSON line at the end")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    root = Path(tempfile.mkdtemp(prefix="server-memory-"))
    workspace = root / "workspace"
    data = make_shapes_dataset(
        workspace / "datasets" / "shapes", num_classes=3, images_per_class=args.images_per_class, image_size=96
    )
    config = RunConfig(
        data=DataConfig(source=str(data)),
        model=ModelConfig(backbone="efficientnet_lite0", weights="imagenet"),
        train=TrainConfig(epochs=1, batch_size=16),
        name="memory session",
    )
    outcome = run_experiment(config, store=RunStore(workspace))
    assert outcome.status == "completed", outcome
    images = sorted(str(path) for path in data.rglob("*.png"))[:3]
    samples: list[dict] = []

    ARTIFACTS.mkdir(exist_ok=True)
    page = None  # the Chromium page, set below; `sample` screenshots it as each step ends

    with personal_server(workspace, "server-memory", {"TRANSFERLAB_WARM_IDLE_S": str(IDLE_S)}) as url:
        server = listening_pid(int(url.rsplit(":", 1)[1]))

        def sample(step: str) -> None:
            page.screenshot(path=str(ARTIFACTS / f"server-memory-{len(samples):02d}.png"), full_page=True)
            workers = model_worker_pids(server)
            row = {
                "step": step,
                "server_rss_mb": round(status_bytes(server, "VmRSS") / MB),
                "server_peak_mb": round(status_bytes(server, "VmHWM") / MB),
                "model_worker_rss_mb": round(sum(status_bytes(pid, "VmRSS") for pid in workers) / MB),
                "model_workers": len(workers),
            }
            samples.append(row)
            print(json.dumps(row), flush=True)

        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(180_000)
            expect.set_options(timeout=180_000)

            def go(title: str) -> None:
                page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
                expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible()
                wait_idle(page)

            page.goto(url)
            expect(page.get_by_role("heading", name="Data", exact=True)).to_be_visible()
            wait_idle(page)
            sample("first page (Data)")
            for title in ("Model", "Train", "Runs", "Evaluate"):
                go(title)
                sample(title)
            go("Predict & export")
            page.locator("input[type=file]").first.set_input_files(images)
            expect(page.locator("[data-testid=stMain] [data-testid=stVegaLiteChart]").first).to_be_visible()
            wait_idle(page)
            sample("Predict with the trained run (3 images)")
            page.get_by_role("tab", name="ImageNet as-is").click()
            page.get_by_role("button", name="Classify with ImageNet classes").click()
            wait_idle(page)
            expect(page.get_by_role("tabpanel").get_by_test_id("stVegaLiteChart").first).to_be_visible()
            sample("Predict with ImageNet as-is")
            page.get_by_role("tab", name="Export").click()
            page.get_by_role("button", name="Build the export bundle").click()
            download_button = page.get_by_role("button", name="Download the bundle (.zip)")
            expect(download_button).to_be_visible()
            with page.expect_download() as download:
                download_button.click()
            saved = root / "bundle.zip"
            download.value.save_as(saved)
            wait_idle(page)
            sample(f"Export built and downloaded ({saved.stat().st_size / MB:.1f} MB)")
            for title in ("Data", "Model", "Runs", "Predict & export"):
                go(title)
            sample("pages again")
            time.sleep(IDLE_S + 5)
            sample(f"{IDLE_S + 5} s idle")
            browser.close()

    end = samples[-1]
    verdict = "PASS" if max(row["server_rss_mb"] for row in samples) < TARGET_MB else "FAIL"
    print(
        f"server VmRSS at most {max(row['server_rss_mb'] for row in samples)} MB (peak VmHWM {end['server_peak_mb']} MB; "
        f"target < {TARGET_MB} MB: {verdict}); model worker at most {max(r['model_worker_rss_mb'] for r in samples)} MB, "
        f"{end['model_workers']} left after {IDLE_S + 5} s idle"
    )
    if args.json:
        print(json.dumps({"samples": samples, "target_mb": TARGET_MB, "verdict": verdict}))


if __name__ == "__main__":
    main()
