"""Slows password guessing per account *and* client, with exponential backoff, so no one can lock anyone else out.

A global lock per account name (five wrong passwords, then a minute for everyone) lets any visitor keep a
trainer out of their own class. Here wrong passwords count per (account, client): the first
`FREE_FAILURES` cost nothing, then each one doubles the wait, from `BASE_DELAY_S` up to `MAX_DELAY_S`.
A client is the browser's device value when it has one for that account (a browser that signed in as
it before; see `SessionStore.device_value`), else its network address. So a guesser slows only
themselves, and the account's own browsers keep working even behind one shared address.

Kept in process memory by the server (not in a cache a client could clear); a restart forgets it,
which costs a guesser nothing they could not get by waiting.

Example:
    >>> throttle = SignInThrottle()
    >>> throttle.record_failure("tara", "ip:10.0.0.7")
    >>> throttle.wait_s("tara", "ip:10.0.0.7"), throttle.wait_s("tara", "device:tara")
    (0.0, 0.0)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FREE_FAILURES = 5
BASE_DELAY_S = 30.0
MAX_DELAY_S = 600.0
FORGET_AFTER_S = 3600.0  # an hour without a wrong password starts the count again
MAX_TRACKED = 100_000  # (account, client) pairs kept; the oldest are forgotten first


@dataclass
class _Failures:
    count: int
    last: float


class SignInThrottle:
    """Wrong passwords per (account, client) and the wait they earn; thread-safe.

    Args:
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def wait_s(self, account: str, client: str) -> float:
        """Seconds before `client` may try `account` again (0 when it may now)."""
        with self._lock:
            entry = self._current(account, client)
            if entry is None or entry.count < FREE_FAILURES:
                return 0.0
            return max(0.0, entry.last + self.delay_after(entry.count) - self._clock())

    def record_failure(self, account: str, client: str) -> None:
        with self._lock:
            key = (account.strip().lower(), client)
            entry = self._current(account, client) or _Failures(0, 0.0)
            self._failures[key] = _Failures(entry.count + 1, self._clock())
            self._failures.move_to_end(key)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)

    def record_success(self, account: str, client: str) -> None:
        with self._lock:
            self._failures.pop((account.strip().lower(), client), None)

    @staticmethod
    def delay_after(count: int) -> float:
        """The wait after `count` wrong passwords in a row."""
        if count < FREE_FAILURES:
            return 0.0
        return min(MAX_DELAY_S, BASE_DELAY_S * 2 ** (count - FREE_FAILURES))

    def _current(self, account: str, client: str) -> _Failures | None:
        key = (account.strip().lower(), client)
        entry = self._failures.get(key)
        if entry is not None and self._clock() - entry.last > FORGET_AFTER_S:
            del self._failures[key]
            return None
        return entry
