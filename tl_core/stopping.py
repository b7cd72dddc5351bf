"""Cooperative stopping, shared by the training loop and the job backends (no TensorFlow import)."""

from __future__ import annotations

import threading


class StopToken:
    """Cooperative stop: training finishes the current batch, then keeps the best weights."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request_stop(self) -> None:
        self._event.set()

    def should_stop(self) -> bool:
        return self._event.is_set()
