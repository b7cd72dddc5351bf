"""One worker process for the web server's short model work: predict, export, a backbone's cut layers.

Loading TensorFlow and a model costs the process that does it 0.5-2 GB for good (Python does not give
imported libraries' memory back), so the web server never does it: it hands each call to this process
and waits for the answer, as it would wait for a spinner. Training and the advisor are queued jobs
(`tl_core.jobs.manager`); this work is not queued because a user waits on the page for it, and a
student's prediction must not wait behind a classmate's training run.

The process starts at the first call, keeps what it loaded (models are cached by the task functions in
`tl_core.results.model_tasks`), and exits after `idle_seconds()` without a call, giving its memory back;
the next call starts a fresh one. It sees no GPU: the training jobs own the devices, and TensorFlow would
otherwise reserve a GPU's memory in this process too. Calls wait their turn (one process, one call at a time).

Why not `concurrent.futures.ProcessPoolExecutor`: its `spawn` workers first re-run the parent's main
module, and under Streamlit that is app.py (it failed so). This is `python -m tl_core.jobs.model_worker`
started with `subprocess`, talking over a socket pair with `multiprocessing.connection.Connection`
(pickled messages: the function's module and name, its arguments; back, the result or the exception).

Example:
    >>> worker = ModelWorker()
    >>> worker.call(cut_layer_names, "mobilenet_v3_small")
    (('expanded_conv_project_bn', ...), 'activation_17')
"""

from __future__ import annotations

import importlib
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from tl_core.errors import TransferLabError
from tl_core.jobs.warm_workers import idle_seconds

Result = TypeVar("Result")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding tl_core/
_CHECK_S = 1.0
_EXIT_WAIT_S = 10.0


class ModelWorkerError(TransferLabError):
    """The model worker process could not be started, or ended during a call (out of memory, killed)."""


class ModelWorker:
    """The web server's model process: `call(function, *args)` runs `function` there and returns its result.

    `function` must be importable by name (a module-level function of the engine) and its arguments and
    result picklable; its exceptions are raised here.

    Args:
        idle_s: seconds without a call after which the process exits (default: `TRANSFERLAB_WARM_IDLE_S`,
            as a waiting training worker; 0 keeps it for the server's life).
    """

    def __init__(self, idle_s: float | None = None) -> None:
        self.idle_s = idle_seconds() if idle_s is None else max(0.0, idle_s)
        self._lock = threading.Lock()  # held for a whole call: one call at a time
        self._process: subprocess.Popen | None = None
        self._connection: Connection | None = None
        self._last_call_ended = time.monotonic()
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._release_when_idle, name="transferlab-model-worker", daemon=True)
        self._watcher.start()

    def call(self, function: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
        """Run `function(*args, **kwargs)` in the worker process and return its result (or raise its exception)."""
        with self._lock:
            if self._closed.is_set():
                raise ModelWorkerError("The model worker is closed: the server is shutting down.")
            connection = self._connection or self._start()
            try:
                connection.send((function.__module__, function.__qualname__, args, kwargs))
                succeeded, value = connection.recv()
            except (EOFError, OSError) as exc:
                self._stop_process()
                raise ModelWorkerError(
                    "The process that loads models for this page ended unexpectedly (it may have run out of memory): "
                    "try again; if it happens again, try fewer or smaller files."
                ) from exc
            finally:
                self._last_call_ended = time.monotonic()
        if not succeeded:
            raise value
        return value

    @property
    def is_running(self) -> bool:
        """Whether the worker process exists now (it starts at the first call and goes when idle)."""
        process = self._process
        return process is not None and process.poll() is None

    def close(self) -> None:
        """End the worker process (after a call in progress) and refuse further calls."""
        self._closed.set()
        with self._lock:
            self._stop_process()

    def _start(self) -> Connection:
        ours, theirs = socket.socketpair()
        environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tl_core.jobs.model_worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr,  # anything it prints goes to the server's log
                cwd=PACKAGE_ROOT,  # `-m tl_core...` finds the package wherever the server was started from
            )
        except OSError as exc:
            ours.close()
            raise ModelWorkerError(
                f"Could not start the model worker process ({exc}): check the server's memory and processes."
            ) from exc
        finally:
            theirs.close()
        self._connection = Connection(ours.detach())
        return self._connection

    def _stop_process(self) -> None:
        connection, process = self._connection, self._process
        self._connection = self._process = None
        if connection is not None:
            connection.close()  # the worker reads the end of its input and exits
        if process is not None:
            try:
                process.wait(timeout=_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _release_when_idle(self) -> None:
        while not self._closed.wait(_CHECK_S):
            if not self.idle_s or self._process is None or not self._lock.acquire(blocking=False):
                continue
            try:  # not in a call now
                if self._process is not None and time.monotonic() - self._last_call_ended >= self.idle_s:
                    self._stop_process()  # its memory goes back
            finally:
                self._lock.release()


_LIGHT_MODULES = ("builtins", "tl_core.errors", "tl_core.config")


def _light_exception(exc: Exception) -> Exception:
    """The exception as one the server can unpickle without importing TensorFlow (a Keras or TF error would)."""
    if type(exc).__module__ in _LIGHT_MODULES:
        return exc
    if isinstance(exc, TransferLabError):
        return TransferLabError(str(exc))
    return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(connection: Connection) -> None:
    """The worker's loop: run each call it is sent and send back (True, result) or (False, exception)."""
    while True:
        try:
            module, name, args, kwargs = connection.recv()
        except EOFError:
            return  # the server closed its end: idle, shutting down, or gone
        try:
            function = importlib.import_module(module)
            for part in name.split("."):
                function = getattr(function, part)
            answer = (True, function(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the page that asked
            answer = (False, _light_exception(exc))
        try:
            message = pickle.dumps(answer)
        except Exception as exc:  # noqa: BLE001 - an answer that cannot travel still says what happened
            message = pickle.dumps(
                (False, RuntimeError(f"{type(exc).__name__}: {exc}; the answer was {answer[1]!r:.500}"))
            )
        connection.send_bytes(message)


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
