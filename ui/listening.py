"""Where this server listens, told once in its terminal, and the personal app's refusal to serve the network."""

from __future__ import annotations

import sys

import streamlit as st

from tl_core.server.settings import ServerSettings, personal_listening_problem
from ui.singletons import process_wide


def listening_problem(settings: ServerSettings) -> str | None:
    """Why this server must not serve (personal mode listening beyond loopback); None when it may.

    The first call in the process also says in the terminal where the app listens, for servers started with
    plain `streamlit run app.py` (`python -m tl_core serve` says so itself before Streamlit starts).
    """
    address = str(st.get_option("server.address") or "")
    port = st.get_option("server.port")
    problem = personal_listening_problem(settings, address)
    _announce(settings.mode, address, port, problem)
    return problem


@process_wide
def _announce(mode: str, address: str, port: int, problem: str | None) -> bool:
    if problem:
        print(f"TransferLab: {problem}", file=sys.stderr, flush=True)
    elif mode == "personal":
        print(
            f"TransferLab (personal mode) listens on {address}:{port} only: this machine, nobody else.",
            file=sys.stderr,
            flush=True,
        )
    return True
