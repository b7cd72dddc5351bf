"""Workshop load: N students in real browsers on one workshop server while M training jobs run (issue 8).

Starts `python -m tl_core serve` in workshop mode in a temporary workspace, makes a trainer account and
N class codes with the CLI, then drives N users at once over loopback with Playwright (one chromium,
one browser context per user). Each user redeems a class code, uploads a small folder through the
Data page (every other user picks the shared dataset instead), sets a tiny model on the Model page,
queues a training on the Train page and keeps browsing Runs/Data/Model/Train until every job is done.

Then it checks every user's run store (lost runs: missing, failed, interrupted or never finished;
corrupted: completed without model.keras, summary.json or evaluation.json, or with epochs missing),
the queue (start order against submit order, slots left idle while jobs waited, waiting times), the
errors users saw (exceptions and error messages on pages, browser errors, HTTP errors, timeouts), page
response times (click to the page's title shown and Streamlit idle), and the peak memory of the server
process (VmHWM) and of the worker processes.

Example:
    .venv/bin/python -m bench.workshop_load                      # 20 users, 2 jobs at once
    .venv/bin/python -m bench.workshop_load --users 2 --jobs 1   # a smoke run
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Awaitable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

from bench._common import format_table, ratio_line  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.jobs.queue import JobQueue, QueueEntry, planned_epochs  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TRAINER, TRAINER_PASSWORD, STUDENT_PASSWORD = "tara", "load trainer password", "load student password"
SHARED_DATASET = "shapes-shared"
BROWSE_PAGES = ("Runs", "Data", "Model", "Train")
RUN_NAME = re.compile(
    r"load-user-\d+"
)  # every user's run is named after its user name: a foreign one on a page is a leak
ACTION_TIMEOUT_MS = 180_000  # 20 browsers and 2 trainings share 2 cores: a page may take long, a stuck one fails
RUN_FILES = ("model.keras", "summary.json", "evaluation.json")
LOST_STATUSES = ("failed", "interrupted", "stopped")
UNFINISHED_STATUSES = ("queued", "running")  # at the timeout: not lost, not done either


@dataclass
class UserResult:
    """What one simulated user did and saw."""

    index: int
    dataset: str  # "upload" or "shared"
    username: str | None = None
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds
    navigations: list[tuple[str, float, bool]] = field(default_factory=list)  # (page, seconds, jobs were running)
    errors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    submitted: bool = False
    where: str = "sign in"  # the step or page the user is on (named in HTTP errors)
    finished_runs: int = 0  # whole script runs the server reported finished to this user's page
    unseen_media_404: int = 0
    repeated_clicks: int = 0  # page links clicked again because the first click drew no new page
    repeated_inputs: int = 0  # numbers typed again because the page dropped them

    @property
    def display_name(self) -> str:
        return f"Load User {self.index + 1:02d}"


@dataclass
class Monitor:
    """Samples the queue and the memory of the server and its workers twice a second (from /proc)."""

    server_pid: int
    queue_path: Path
    slots: int
    users: int
    running_jobs: int = 0
    settled_users: int = 0
    server_hwm_kib: int = 0
    worker_hwm_kib: dict[int, int] = field(default_factory=dict)
    peak_workers_kib: int = 0
    peak_workers_count: int = 0
    all_done: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        queue: JobQueue | None = None
        while True:
            self.sample_memory()
            if queue is None and self.queue_path.exists():
                queue = JobQueue(self.queue_path, slots={"cpu": self.slots})
            if queue is not None:
                entries = queue.entries()
                self.running_jobs = sum(entry.state == "running" for entry in entries)
                if self.settled_users >= self.users and all(entry.state == "done" for entry in entries):
                    self.all_done.set()
            elif self.settled_users >= self.users:
                self.all_done.set()  # nobody managed to queue anything
            await asyncio.sleep(0.5)

    def sample_memory(self) -> None:
        self.server_hwm_kib = max(self.server_hwm_kib, proc_status_kib(self.server_pid, "VmHWM"))
        workers = worker_pids(self.server_pid)
        for pid in workers:
            self.worker_hwm_kib[pid] = max(self.worker_hwm_kib.get(pid, 0), proc_status_kib(pid, "VmHWM"))
        rss = sum(proc_status_kib(pid, "VmRSS") for pid in workers)
        if rss > self.peak_workers_kib:
            self.peak_workers_kib, self.peak_workers_count = rss, len(workers)


def proc_status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/PID/status (VmHWM: peak resident set; VmRSS: now); 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def worker_pids(server_pid: int) -> list[int]:
    """Training workers (`python -m tl_core.jobs.worker`) the server started: its children with that command line."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == server_pid and b"tl_core.jobs.worker" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


# -- the server --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prepare_server(root: Path, args: argparse.Namespace) -> tuple[dict[str, str], list[str]]:
    """The server's environment, a trainer account and one class code per user (made with the CLI)."""
    env = {
        **os.environ,
        "TRANSFERLAB_MODE": "workshop",
        "TRANSFERLAB_WORKSPACE": str(root / "workspace"),
        "TRANSFERLAB_HOST": "127.0.0.1",
        "TRANSFERLAB_PORT": str(free_port()),
        "TRANSFERLAB_JOBS_PER_DEVICE": str(args.jobs),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    cli = [sys.executable, "-m", "tl_core"]
    subprocess.run(
        [*cli, "users", "add", TRAINER, "--role", "trainer", "--password-stdin"],
        input=TRAINER_PASSWORD + "\n",
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    made = subprocess.run(
        [*cli, "codes", "new", str(args.users), "--by", TRAINER, "--days", "1", "--json"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    # A trainer put one dataset in the shared folder before class.
    make_shapes_dataset(
        root / "workspace" / "datasets" / SHARED_DATASET,
        num_classes=3,
        images_per_class=args.images_per_class,
        image_size=args.image_size,
        seed=1000,
    )
    return env, json.loads(made.stdout.strip().splitlines()[-1])


def start_server(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """`python -m tl_core serve` (it execs Streamlit, so the pid is the server's); waits for its health check."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tl_core", "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{env['TRANSFERLAB_PORT']}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return process, url
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}: see {log_path}")
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"the server did not answer within 120 s: see {log_path}")


def stop_processes(pids: Sequence[int]) -> None:
    """SIGTERM, then SIGKILL after 15 s, to the given processes (the server and any worker it left running)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 15
    for pid in pids:
        while time.monotonic() < deadline and proc_status_kib(pid, "VmRSS"):  # a zombie has no VmRSS line
            time.sleep(0.2)
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- one user in a browser ---------------------------------------------------------------------------
async def wait_for_run(page, user: UserResult, finished_before: int) -> None:
    """Until a whole script run that finished after `finished_before` has been drawn (no element left faded).

    Runs are counted from the server's `script_finished` messages (see `count_finished_runs`): the page's
    own script-state attribute can skip a short run entirely when the browser is starved of CPU.
    """
    from playwright.async_api import expect

    deadline = time.monotonic() + ACTION_TIMEOUT_MS / 1000
    while user.finished_runs <= finished_before:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no script run finished within {ACTION_TIMEOUT_MS / 1000:.0f} s")
        await asyncio.sleep(0.05)
    await expect(page.locator("[data-stale=true]")).to_have_count(0)


async def rerun_after(page, user: UserResult, action: Awaitable[None]) -> None:
    """Do `action` (a click, an Enter) and wait until the script run it caused has finished and been drawn."""
    before = user.finished_runs
    await action
    await wait_for_run(page, user, before)


def count_finished_runs(user: UserResult, websocket) -> None:
    """Count the whole script runs the server reports finished to this page (fragment runs are not counted)."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    def on_frame(payload: bytes | str) -> None:
        if (
            isinstance(payload, bytes) and len(payload) < 512
        ):  # script_finished is a tiny message: skip parsing the big ones
            try:
                message = ForwardMsg.FromString(payload)
            except Exception:  # noqa: BLE001 - some other small frame
                return
            if (
                message.WhichOneof("type") == "script_finished"
                and message.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY
            ):
                user.finished_runs += 1

    websocket.on("framereceived", on_frame)


def record_response(user: UserResult, response) -> None:
    """HTTP errors are errors, except a 404 for a media file: Streamlit deletes a page's images once the next
    run finishes, so thumbnails still loading when the user clicks away 404 unseen (`check_page` counts the
    broken images a user does see)."""
    if response.status == 404 and "/media/" in response.url:
        user.unseen_media_404 += 1
    elif response.status >= 400:
        user.errors.append(f"{user.where}: HTTP {response.status} {response.url}")


BROKEN_IMAGES = (
    "[...document.querySelectorAll('[data-testid=stMain] img')].filter(i => i.complete && i.naturalWidth === 0).length"
)


async def check_page(page, user: UserResult, where: str) -> None:
    """Record exceptions, error messages and broken images the page shows, and any other user's run named on it."""
    broken = await page.evaluate(BROKEN_IMAGES)
    if broken:
        user.errors.append(f"{where}: {broken} broken image(s) shown")
    for test_id, kind in (("stException", "exception"), ("stAlertContentError", "error message")):
        for text in await page.get_by_test_id(test_id).all_inner_texts():
            user.errors.append(f"{where}: {kind}: {' '.join(text.split())[:200]}")
    text = await page.locator("body").inner_text()
    foreign = sorted(set(RUN_NAME.findall(text)) - {user.username})
    if foreign:
        user.leaks.append(f"{where}: sees {', '.join(foreign)}")


async def record_failure(page, user: UserResult, where: str, exc: Exception, screens: Path) -> None:
    """Note what went wrong with the app's script and connection state; a screenshot goes to `screens` (kept with --keep)."""
    try:
        app = page.get_by_test_id("stApp")
        state = f" [script {await app.get_attribute('data-test-script-state', timeout=5000)}, connection {await app.get_attribute('data-test-connection-state', timeout=5000)}]"
        screens.mkdir(exist_ok=True)
        await page.screenshot(
            path=str(screens / f"{user.index + 1:02d}-{len(user.errors):02d}-{where.replace(' ', '-')}.png"),
            timeout=30_000,
        )
    except Exception:  # noqa: BLE001 - the page itself may be gone; the error is what matters
        state = ""
    user.errors.append(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}{state}")


async def navigate(page, title: str, user: UserResult, monitor: Monitor) -> None:
    """Click a page in the sidebar; the time runs until its title shows and Streamlit is idle."""
    from playwright.async_api import expect

    jobs_running = monitor.running_jobs > 0
    user.where = title
    started, before = time.perf_counter(), user.finished_runs
    link, heading = (
        page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True),
        page.get_by_role("heading", name=title, exact=True).first,
    )
    await link.click()
    finished_seen_at = None
    while True:
        try:
            await expect(heading).to_be_visible(timeout=5_000)
            break
        except AssertionError:
            if time.perf_counter() - started > ACTION_TIMEOUT_MS / 1000:
                raise
            if user.finished_runs > before and finished_seen_at is None:
                finished_seen_at = time.perf_counter()
            # A whole run finished 30 s ago and the page is still not drawn: the run drew another page, the click went nowhere.
            if finished_seen_at is not None and time.perf_counter() - finished_seen_at > 30:
                user.repeated_clicks += 1
                before, finished_seen_at = user.finished_runs, None
                await link.click()
    await wait_for_run(page, user, before)
    user.navigations.append((title, time.perf_counter() - started, jobs_running))
    await check_page(page, user, title)


async def sign_in(page, url: str, code: str, user: UserResult) -> None:
    from playwright.async_api import expect

    before = user.finished_runs
    await page.goto(url)
    await wait_for_run(page, user, before)
    await page.get_by_role("tab", name=re.compile("Class code")).click()
    await page.get_by_label("Class code", exact=True).fill(code)
    await page.get_by_label("Your name", exact=True).fill(user.display_name)
    await page.get_by_label("Choose a password", exact=True).fill(STUDENT_PASSWORD)
    await page.get_by_label("Password again", exact=True).fill(STUDENT_PASSWORD)
    await rerun_after(page, user, page.get_by_role("button", name="Create my account").click())
    welcome = page.get_by_text(re.compile(r"Your user name is [a-z0-9_-]+"))
    await expect(welcome).to_be_visible()
    user.username = re.search(r"Your user name is ([a-z0-9_-]+)", await welcome.inner_text()).group(1)


async def choose_dataset(page, user: UserResult, upload: Path | None) -> None:
    """Upload `upload` with the folder uploader, or (None) pick the shared dataset; wait for the report."""
    from playwright.async_api import expect

    if upload is not None:
        await rerun_after(page, user, page.locator("input[type=file][webkitdirectory]").set_input_files(str(upload)))
        button = page.get_by_role("button", name="Use this folder")
    else:
        await page.get_by_role("tab", name=re.compile("Folder on the server")).click()
        button = page.get_by_role("button", name="Use this dataset")
    await expect(button).to_be_enabled()
    await rerun_after(page, user, button.click())
    await expect(page.get_by_text("The dataset is ready to train on")).to_be_visible()


async def set_number(page, user: UserResult, label: str, value: int, shown: str) -> None:
    """Type a number and press Enter until the Model page's summary shows `shown` (a starved browser may
    redraw the field from an earlier run while it is being typed into, which drops the value)."""
    from playwright.async_api import expect

    box = page.get_by_role("spinbutton", name=label)
    summary = page.get_by_test_id("stAlertContentSuccess").filter(has_text=shown)
    for _attempt in range(3):
        await box.fill(str(value))
        await box.press("Enter")
        try:
            await expect(summary).to_be_visible(timeout=ACTION_TIMEOUT_MS // 3)
            return
        except AssertionError:
            user.repeated_inputs += 1
    raise TimeoutError(f"{label} = {value} never showed in the summary ({shown!r})")


async def choose_model(page, user: UserResult, image_size: int, epochs: int) -> None:
    """The default backbone (EfficientNet-Lite0, offline ImageNet weights) at a tiny size, for a few epochs."""
    from playwright.async_api import expect

    name = page.get_by_label("Run name (optional)", exact=True)
    await name.fill(f"{user.username} run")
    await rerun_after(page, user, name.press("Enter"))
    await set_number(page, user, "Image size (px)", image_size, f"at {image_size} px")
    await set_number(page, user, "Epochs (head)", epochs, f"({epochs} epochs)")
    await expect(
        page.get_by_test_id("stAlertContentSuccess")
        .filter(has_text=f"at {image_size} px")
        .filter(has_text=f"({epochs} epochs)")
    ).to_be_visible()


async def queue_training(page, user: UserResult) -> None:
    """Press Start/Queue training; the run panel (or the reason it was refused) shows."""
    from playwright.async_api import expect

    await rerun_after(page, user, page.get_by_role("button", name=re.compile(r"(Start|Queue) training")).click())
    outcome = page.get_by_role("heading", name="Run", exact=True).or_(page.get_by_test_id("stAlertContentError"))
    await expect(outcome.first).to_be_visible()
    if await page.get_by_test_id("stAlertContentError").count():
        raise RuntimeError(
            "the run was refused: "
            + " ".join((await page.get_by_test_id("stAlertContentError").first.inner_text()).split())
        )


async def simulate_user(
    browser,
    url: str,
    code: str,
    user: UserResult,
    upload: Path | None,
    args: argparse.Namespace,
    monitor: Monitor,
    deadline: float,
) -> None:
    """One student's session from sign-in until every job is done (or the deadline)."""
    from playwright.async_api import expect

    await asyncio.sleep(user.index * args.ramp_s / max(args.users, 1))  # a class arrives over a few seconds
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.on("websocket", lambda websocket: count_finished_runs(user, websocket))
    page.set_default_timeout(ACTION_TIMEOUT_MS)
    expect.set_options(timeout=ACTION_TIMEOUT_MS)
    page.on("pageerror", lambda exc: user.errors.append(f"browser: page error: {exc}"))
    page.on("response", lambda response: record_response(user, response))
    rng = random.Random(user.index)

    async def step(name: str, action: Awaitable[None]) -> None:
        user.where = name
        started = time.perf_counter()
        await action
        user.steps[name] = time.perf_counter() - started
        await check_page(page, user, name)

    current = "sign in"
    try:
        await step("sign in", sign_in(page, url, code, user))
        current = "dataset"
        await step("dataset", choose_dataset(page, user, upload))
        current = "Model"
        await navigate(page, "Model", user, monitor)
        await step("model settings", choose_model(page, user, args.image_size, args.epochs))
        current = "Train"
        await navigate(page, "Train", user, monitor)
        await step("queue training", queue_training(page, user))
        user.submitted = True
    except Exception as exc:  # noqa: BLE001 - a user who cannot go on is an error to report, not a crash of the bench
        await record_failure(page, user, current, exc, args.screens)
    finally:
        monitor.settled_users += 1
    pages = itertools.cycle(BROWSE_PAGES)
    while user.submitted and not monitor.all_done.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(*args.think_s))
        title = next(pages)
        try:
            await navigate(page, title, user, monitor)
        except Exception as exc:  # noqa: BLE001
            await record_failure(page, user, title, exc, args.screens)
    if user.submitted and monitor.all_done.is_set():
        try:  # the user's own view of the end: their run shows completed
            await navigate(page, "Train", user, monitor)
            await expect(page.get_by_text("Completed in")).to_be_visible(timeout=60_000)
        except Exception as exc:  # noqa: BLE001
            await record_failure(page, user, "final Train", exc, args.screens)
    await context.close()


async def drive_users(
    url: str, codes: list[str], uploads: list[Path | None], args: argparse.Namespace, monitor: Monitor
) -> list[UserResult]:
    from playwright.async_api import async_playwright

    users = [UserResult(index, "upload" if upload else "shared") for index, upload in enumerate(uploads)]
    deadline = time.monotonic() + args.timeout
    monitor_task = asyncio.create_task(monitor.run())
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        await asyncio.gather(
            *(
                simulate_user(browser, url, code, user, upload, args, monitor, deadline)
                for user, code, upload in zip(users, codes, uploads)
            )
        )
        await browser.close()
    monitor_task.cancel()
    monitor.sample_memory()
    return users


# -- checking the outcome ----------------------------------------------------------------------------
@dataclass
class RunCheck:
    username: str
    run_id: str | None
    status: str
    verdict: str  # "ok", "lost", "corrupted", or "unfinished" (queued or running at the timeout)
    detail: str = ""
    named: bool = True  # the run carries the name the user typed


def check_runs(workspace: Path, users: list[UserResult]) -> list[RunCheck]:
    """Each user who queued a run: it completed with its model, summary, evaluation and every epoch, in their own store."""
    checks = []
    for user in users:
        if not user.submitted or user.username is None:
            continue
        store = RunStore(workspace / "users" / user.username)
        runs = store.list_runs()
        if len(runs) != 1:
            checks.append(
                RunCheck(user.username, None, "missing", "lost", f"{len(runs)} runs in the store, expected 1")
            )
            continue
        run = runs[0]
        if run.status in LOST_STATUSES + UNFINISHED_STATUSES:
            verdict = "lost" if run.status in LOST_STATUSES else "unfinished"
            checks.append(RunCheck(user.username, run.id, run.status, verdict, (run.error or "")[:160]))
            continue
        problems = [f"{name} missing" for name in RUN_FILES if not (store.run_dir(run.id) / name).is_file()]
        if not problems:
            summary = json.loads((store.run_dir(run.id) / "summary.json").read_text())
            epochs, planned = len(store.epochs(run.id)), planned_epochs(run.config)
            if summary.get("status") != "completed" or summary.get("epochs_run") != planned or epochs != planned:
                problems.append(
                    f"summary {summary.get('status')}, {summary.get('epochs_run')} epochs run, {epochs} recorded, {planned} planned"
                )
            if not zipfile.is_zipfile(store.run_dir(run.id) / "model.keras"):
                problems.append("model.keras is not a Keras archive")
            json.loads((store.run_dir(run.id) / "evaluation.json").read_text())
        if run.owner != user.username:
            problems.append(f"owner {run.owner!r}: not this user's run")
        checks.append(
            RunCheck(
                user.username,
                run.id,
                run.status,
                "corrupted" if problems else "ok",
                "; ".join(problems),
                run.name == f"{user.username} run",
            )
        )
    return checks


@dataclass
class QueueReport:
    entries: list[QueueEntry]
    inversions: int  # pairs started in another order than queued
    idle_slot_s: float  # longest stretch a job waited while a device slot was free


def check_queue(queue_path: Path, slots: int) -> QueueReport:
    """FIFO (start order against submit order) and work conservation (no slot left free while a job waits)."""
    entries = JobQueue(queue_path, slots={"cpu": slots}).entries() if queue_path.exists() else []
    started = [entry for entry in entries if entry.started_at is not None]
    inversions = sum(
        1 for a, b in itertools.combinations(started, 2) if b.started_at < a.started_at
    )  # entries come in seq order
    now, tick = time.time(), 0.05
    times = [
        min((e.enqueued_at for e in entries), default=now) + tick * k
        for k in range(
            int(
                (
                    max((e.started_at or now for e in entries), default=now)
                    - min((e.enqueued_at for e in entries), default=now)
                )
                / tick
            )
        )
    ]
    longest = current = 0.0
    for moment in times:  # the longest stretch with a job waiting and a slot free: how late the dispatcher started it
        waiting = any(e.enqueued_at <= moment < (e.started_at or now) for e in entries)
        running = sum((e.started_at or now) <= moment < (e.finished_at or now) for e in started)
        current = current + tick if waiting and running < slots else 0.0
        longest = max(longest, current)
    return QueueReport(entries, inversions, longest)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p50, p95) of a list of seconds; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def row(label: str, values: Sequence[float]) -> list[str]:
    return [
        label,
        str(len(values)),
        *(f"{percentile(values, q):.2f}" for q in (0.5, 0.95)),
        f"{max(values):.2f}" if values else "-",
    ]


def report(
    args: argparse.Namespace,
    users: list[UserResult],
    runs: list[RunCheck],
    queue: QueueReport,
    monitor: Monitor,
    wall_s: float,
) -> dict[str, float]:
    """Print the tables and verdict lines; returns the figures."""
    mib = 1024.0
    print(
        format_table(
            ["step", "n", "p50 s", "p95 s", "max s"],
            [
                row(name, [u.steps[name] for u in users if name in u.steps])
                for name in ("sign in", "dataset", "model settings", "queue training")
            ],
        )
    )
    print()
    print(
        format_table(
            ["page response (click to idle)", "n", "p50 s", "p95 s", "max s"],
            [
                row(
                    f"{title}, {'while jobs run' if busy else 'no job running'}",
                    [s for u in users for t, s, b in u.navigations if t == title and b == busy],
                )
                for busy in (False, True)
                for title in BROWSE_PAGES
            ],
        )
    )
    print()
    by_user = {check.run_id: check for check in runs}
    rows = []
    for order, entry in enumerate(sorted(queue.entries, key=lambda e: e.started_at or float("inf")), 1):
        check = by_user.get(entry.run_id)
        ran = f"{entry.finished_at - entry.started_at:.1f}" if entry.finished_at and entry.started_at else "-"
        waited = f"{entry.started_at - entry.enqueued_at:.1f}" if entry.started_at else "-"
        rows.append(
            [
                entry.owner,
                entry.seq,
                order if entry.started_at else "-",
                waited,
                ran,
                entry.outcome or entry.state,
                check.verdict + (f" ({check.detail})" if check and check.detail else "") if check else "no user",
            ]
        )
    print(
        format_table(["user", "queued #", "started #", "waited s", "ran s", "outcome", "run check"], rows)
        if rows
        else "No run reached the queue."
    )
    print()
    workers = sorted(monitor.worker_hwm_kib.values())
    print(
        format_table(
            ["process", "peak memory"],
            [
                ["server (Streamlit, VmHWM)", f"{monitor.server_hwm_kib / mib:.0f} MiB"],
                [f"one worker, largest of {len(workers)} (VmHWM)", f"{workers[-1] / mib:.0f} MiB" if workers else "-"],
                [
                    f"all workers at once, peak sum ({monitor.peak_workers_count} running, VmRSS)",
                    f"{monitor.peak_workers_kib / mib:.0f} MiB",
                ],
            ],
        )
    )
    print()
    errors = [f"{u.display_name} ({u.username or 'not signed in'}): {e}" for u in users for e in u.errors]
    leaks = [f"{u.username}: {leak}" for u in users for leak in u.leaks]
    for line in (errors + leaks)[:30]:
        print("  " + line)
    busy = [s for u in users for _, s, b in u.navigations if b]
    waits = [e.started_at - e.enqueued_at for e in queue.entries if e.started_at]
    lost = sum(check.verdict == "lost" for check in runs) + sum(u.submitted and u.username is None for u in users)
    corrupted = sum(check.verdict == "corrupted" for check in runs)
    figures = {
        "errors": len(errors),
        "leaks": len(leaks),
        "lost": lost,
        "corrupted": corrupted,
        "runs_queued": sum(u.submitted for u in users),
        "inversions": queue.inversions,
        "idle_slot_s": queue.idle_slot_s,
        "busy_p50_s": percentile(busy, 0.5),
        "busy_p95_s": percentile(busy, 0.95),
        "server_peak_mib": monitor.server_hwm_kib / mib,
        "worker_peak_mib": (workers[-1] if workers else 0) / mib,
        "workers_peak_sum_mib": monitor.peak_workers_kib / mib,
        "wall_s": wall_s,
        "repeated_clicks": sum(u.repeated_clicks for u in users),
        "unfinished": sum(check.verdict == "unfinished" for check in runs),
    }
    print(
        f"{args.users} users, {figures['runs_queued']} runs queued, {args.jobs} at once; waits {min(waits, default=0):.1f}-{max(waits, default=0):.1f} s "
        f"(spread {max(waits, default=0) - min(waits, default=0):.1f} s, FIFO: the spread is the queue's length); wall time {wall_s:.0f} s; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"media files gone before the browser fetched them (pages already left, not shown): {sum(u.unseen_media_404 for u in users)}"
    )
    print(ratio_line("errors seen by users", len(errors), 0, at_least=False, unit="", digits=0))
    print(
        ratio_line(
            "page links clicked twice (the first click drew no new page)",
            figures["repeated_clicks"],
            0,
            at_least=False,
            unit="",
            digits=0,
        )
    )
    print(
        f"numbers typed again on the Model page (dropped while the page redrew): {sum(u.repeated_inputs for u in users)}; "
        f"runs whose typed name was dropped: {sum(c.verdict != 'unfinished' and c.run_id is not None and not c.named for c in runs)}"
    )
    print(ratio_line("runs queued", figures["runs_queued"], args.users, unit="", digits=0))
    print(ratio_line("lost runs", lost, 0, at_least=False, unit="", digits=0))
    print(ratio_line("corrupted runs", corrupted, 0, at_least=False, unit="", digits=0))
    print(
        ratio_line(
            "runs still queued or training at the timeout", figures["unfinished"], 0, at_least=False, unit="", digits=0
        )
    )
    print(ratio_line("pages showing another user's runs", len(leaks), 0, at_least=False, unit="", digits=0))
    print(
        ratio_line(
            "queue start order vs submit order, inversions", queue.inversions, 0, at_least=False, unit="", digits=0
        )
    )
    print(
        ratio_line(
            "longest stretch with a job waiting and a device slot free",
            queue.idle_slot_s,
            2.0,
            at_least=False,
            unit=" s",
            digits=1,
        )
    )
    print(
        ratio_line(
            "page response p50 while jobs run", figures["busy_p50_s"], args.p50_target, at_least=False, unit=" s"
        )
    )
    print(
        ratio_line(
            "page response p95 while jobs run", figures["busy_p95_s"], args.p95_target, at_least=False, unit=" s"
        )
    )
    print(
        ratio_line(
            "server process peak memory (VmHWM)",
            figures["server_peak_mib"],
            args.server_mib_target,
            at_least=False,
            unit=" MiB",
            digits=0,
        )
    )
    return figures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--users", type=int, default=20, help="simulated students, one browser context each (default 20)"
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="training jobs at once, the server's jobs_per_device (default 2)"
    )
    parser.add_argument("--epochs", type=int, default=1, help="head epochs of each run (default 1)")
    parser.add_argument("--image-size", type=int, default=32, help="model input and image side in px (default 32)")
    parser.add_argument(
        "--images-per-class", type=int, default=12, help="images per class of each 3-class dataset (default 12)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds from the first sign-in until the bench gives up waiting (default 1800)",
    )
    parser.add_argument(
        "--ramp-s", type=float, default=10.0, help="users arrive spread over this many seconds (default 10)"
    )
    parser.add_argument(
        "--think-s",
        type=float,
        nargs=2,
        default=(1.0, 3.0),
        metavar=("MIN", "MAX"),
        help="pause between clicks (default 1-3 s)",
    )
    parser.add_argument(
        "--p50-target", type=float, default=2.0, help="page response p50 target while jobs run, seconds (default 2)"
    )
    parser.add_argument(
        "--p95-target",
        type=float,
        default=10.0,
        help="page response p95 target while jobs run, seconds (default 10: the attention limit)",
    )
    parser.add_argument(
        "--server-mib-target", type=float, default=2048, help="server peak memory target, MiB (default 2048)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace and the server log")
    args = parser.parse_args(argv)
    if args.users < 1 or args.jobs < 1 or args.epochs < 1:
        parser.error("--users, --jobs and --epochs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: `make browser` (or apt-get install -y chromium) installs it.")
    root = Path(tempfile.mkdtemp(prefix="tl-workshop-load-"))
    process = None
    monitor = None
    try:
        args.screens = root / "screenshots"
        env, codes = prepare_server(root, args)
        # Even users upload their own folder; odd users pick the shared dataset.
        uploads = [
            make_shapes_dataset(
                root / "uploads" / f"shapes-{i + 1:02d}",
                num_classes=3,
                images_per_class=args.images_per_class,
                image_size=args.image_size,
                seed=i,
            )
            if i % 2 == 0
            else None
            for i in range(args.users)
        ]
        process, url = start_server(env, root / "server.log")
        workspace = Path(env["TRANSFERLAB_WORKSPACE"])
        print(
            f"Workshop load: {args.users} users, {args.jobs} job(s) at once, efficientnet_lite0 (offline ImageNet) at {args.image_size} px, "
            f"{args.epochs} epoch(s), 3 classes x {args.images_per_class} images; server {url} (pid {process.pid}), workspace {workspace}"
        )
        monitor = Monitor(process.pid, workspace / "queue.sqlite", args.jobs, args.users)
        started = time.monotonic()
        users = asyncio.run(drive_users(url, codes, uploads, args, monitor))
        wall_s = time.monotonic() - started
        return report(
            args,
            users,
            check_runs(workspace, users),
            check_queue(workspace / "queue.sqlite", args.jobs),
            monitor,
            wall_s,
        )
    finally:
        if process is not None:
            leftover = worker_pids(process.pid)  # a timed-out run's worker would outlive the server (own session)
            stop_processes([process.pid, *leftover])
            process.wait(timeout=5)
        if args.keep:
            print(f"kept {root} (server log: {root / 'server.log'})")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
