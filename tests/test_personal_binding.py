"""Personal mode (no sign-in) listens on loopback however it is started (issue 23, item 1).

The listening sockets are read from the kernel (/proc/net/tcp and tcp6, what `ss -ltn` shows); the tests send
traffic only to 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

from tests.workshop_server import ARTIFACTS, ROOT, free_port, stop_process_group, wait_healthy

LISTEN = "0A"


def listening_addresses(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses of the TCP sockets listening on `port`, from /proc/net/tcp and /proc/net/tcp6."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != LISTEN or int(port_hex, 16) != port:
                continue
            # The kernel writes each 32-bit word of the address in host (little-endian) byte order.
            words = [bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, width, 8)]
            found.append(ipaddress.ip_address(b"".join(words)))
    return found


def start_and_read_sockets(command: list[str], tmp_path: Path, name: str) -> tuple[list, str]:
    """Start a personal-mode app with `command` (+ port), wait until it answers on loopback, read its sockets."""
    port = free_port()
    env = {**os.environ, "TRANSFERLAB_WORKSPACE": str(tmp_path / "workspace"), "TRANSFERLAB_PORT": str(port)}
    for variable in ("TRANSFERLAB_MODE", "TRANSFERLAB_HOST", "TRANSFERLAB_CONFIG", "STREAMLIT_SERVER_ADDRESS"):
        env.pop(variable, None)
    if command[-1] == "app.py":
        command = [*command, "--server.port", str(port)]
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"{name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, log_path, timeout_s=90)
        return listening_addresses(port), log_path.read_text()
    finally:
        stop_process_group(process)


def test_the_kernel_table_reader_sees_a_wildcard_socket() -> None:
    """The check below can fail: a socket on every interface reads as 0.0.0.0, not as loopback."""
    import socket

    with socket.socket() as wildcard:
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        addresses = listening_addresses(wildcard.getsockname()[1])
    assert addresses == [ipaddress.ip_address("0.0.0.0")]


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, "-m", "streamlit", "run", "app.py"], id="streamlit-run-app"),
        pytest.param([sys.executable, "-m", "tl_core", "serve"], id="make-run"),  # what `make run` runs
    ],
)
def test_personal_mode_listens_on_loopback_only(command: list[str], tmp_path: Path) -> None:
    addresses, log = start_and_read_sockets(command, tmp_path, f"personal-{command[-1].replace('.', '-')}")
    assert addresses, f"nothing listens on the port:\n{log}"
    assert all(address.is_loopback for address in addresses), (addresses, log)


def test_personal_app_refuses_to_serve_when_told_to_listen_everywhere(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    for variable in ("TRANSFERLAB_MODE", "TRANSFERLAB_HOST", "TRANSFERLAB_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    before = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", "0.0.0.0")
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    finally:
        streamlit_config.set_option("server.address", before)
    assert not at.exception
    assert "listens on '0.0.0.0'" in at.error[0].value and "make run" in at.error[0].value
    assert not at.title and not at.button and not at.selectbox and not at.sidebar.children  # no page, not even Data
