"""Whether a recorded process still runs: the pid, and on Linux its start time, so a reused pid is not mistaken for it.

The run store marks a run `interrupted` when its worker died, and the job manager tells live workers from
dead ones, both from a pid and a start token recorded when the process started.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_start_token(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux `/proc`), so a reused pid is told apart; None elsewhere."""
    fields = _proc_stat_fields(pid)
    return fields[19] if fields else None


def process_is_alive(pid: int, start_token: str | None) -> bool:
    """True while `pid` runs and, when `start_token` is known, is still the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    fields = _proc_stat_fields(pid)
    if fields is None:
        return True  # no /proc (macOS, Windows): the signal check is all we have
    if fields[0] in ("Z", "X"):  # a zombie has finished running; only its exit status is left
        return False
    return start_token is None or fields[19] == start_token


def _proc_stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields after the last ")" start at field 3.
    return text.rsplit(")", 1)[1].split()
