"""Helpers for tests that attack or drive a real workshop server: a `python -m tl_core serve` process on
loopback with a trainer and two students, and Debian's Chromium through Playwright.

Used through the `workshop_server` fixture in conftest.py; test files never import each other.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORDS = {"tara": "trainer password", "alice": "alice password", "bob": "bob password"}
ROLES = {"tara": "trainer", "alice": "student", "bob": "student"}


def server_log_path(name: str) -> Path:
    """test-artifacts/NAME-server.log; under pytest-xdist each worker's servers log to their own files (gw0-NAME-...)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return ARTIFACTS / (f"{worker}-{name}-server.log" if worker else f"{name}-server.log")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class WorkshopServer:
    """A running workshop server: its URL, workspace, environment (for the CLI) and log."""

    url: str
    workspace: Path
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def users_file(self) -> Path:
        return self.workspace / "users.json"

    def user_root(self, name: str) -> Path:
        return self.workspace / "users" / name

    def cli(self, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess:
        """`python -m tl_core ARGS` against this server's workspace and settings."""
        return subprocess.run(
            [sys.executable, "-m", "tl_core", *args],
            env=self.env,
            cwd=ROOT,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def train_tiny_run(self, user: str, data: Path) -> subprocess.CompletedProcess:
        """Train `user` a 1-epoch run on `data` with the CLI (a tiny MobileNetV2, random weights, 32 px), in their workspace."""
        return self.cli(
            "train",
            str(data),
            *("--backbone", "mobilenet_v2_035", "--weights", "none", "--epochs", "1", "--image-size", "32"),
            *("--workspace", str(self.user_root(user)), "--json"),
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_healthy(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"the server exited with code {process.returncode}:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"the server did not answer within {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}")


@contextmanager
def workshop_server(
    tmp_path: Path, extra_env: dict[str, str] | None = None, name: str = "workshop"
) -> Iterator[WorkshopServer]:
    """Start `python -m tl_core serve` in workshop mode on 127.0.0.1 with tara (trainer), alice and bob (students)."""
    workspace = tmp_path / "workspace"
    env = {
        **os.environ,
        "TRANSFERLAB_MODE": "workshop",
        "TRANSFERLAB_WORKSPACE": str(workspace),
        "TRANSFERLAB_HOST": "127.0.0.1",
        "TRANSFERLAB_PORT": str(free_port()),
        "TRANSFERLAB_WARM_WORKERS": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **(extra_env or {}),
    }
    for variable in ("TRANSFERLAB_CONFIG", "TRANSFERLAB_DATASETS_DIR", "TRANSFERLAB_USERS_FILE"):
        if variable not in (extra_env or {}):
            env.pop(variable, None)
    for user, password in PASSWORDS.items():
        subprocess.run(
            [sys.executable, "-m", "tl_core", "users", "add", user, "--role", ROLES[user], "--password-stdin"],
            input=password + "\n",
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = server_log_path(name)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tl_core", "serve"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = WorkshopServer(f"http://127.0.0.1:{env['TRANSFERLAB_PORT']}", workspace, env, log_path, process)
    try:
        wait_healthy(server.url, process, log_path)
        yield server
    finally:
        stop_process_group(process)


@contextmanager
def personal_server(workspace: Path, name: str = "personal", extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """Start `python -m tl_core serve` in personal mode (what `make run` runs) on loopback; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "TRANSFERLAB_WORKSPACE": str(workspace),
        "TRANSFERLAB_DATASETS_DIR": str(workspace / "datasets"),
        "TRANSFERLAB_PORT": str(port),
        "TRANSFERLAB_WARM_WORKERS": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **(extra_env or {}),
    }
    for variable in ("TRANSFERLAB_MODE", "TRANSFERLAB_HOST", "TRANSFERLAB_CONFIG", "TRANSFERLAB_USERS_FILE"):
        env.pop(variable, None)
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = server_log_path(name)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tl_core", "serve"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log_path)
        yield url
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the server and every worker it started (one process group), SIGKILL after 20 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def launch_chromium(playwright):  # noqa: ANN001, ANN201 - Playwright's own types
    """Debian's Chromium, headless, with no background traffic (Playwright's browser download is not reachable)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def sign_in(page, url: str, name: str, password: str | None = None) -> None:  # noqa: ANN001
    """Open `url` and sign in with the password form; waits for the app's first page."""
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_label("User name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(password or PASSWORDS[name])
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_text("Signed in as")).to_be_visible(timeout=60_000)
    wait_idle(page)


def wait_idle(page, timeout_ms: int = 60_000) -> None:  # noqa: ANN001
    """Until Streamlit has finished the current script run: the app root's `data-test-script-state`, the hook
    Streamlit's own browser tests read. (Its status widget proves nothing: it appears only once a run has taken
    500 ms, and not at all with the toolbar in "minimal" mode.)"""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=stApp]')?.getAttribute('data-test-script-state') === 'notRunning'",
        timeout=timeout_ms,
    )
