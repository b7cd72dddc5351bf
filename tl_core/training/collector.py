"""Keeps Python's cyclic garbage collector off the objects a process holds when its first run starts.

Importing TensorFlow and Keras leaves ~430,000 objects that the collector tracks, and they live as long
as the process. A run makes many new objects (building a backbone makes a few hundred layers and
variables), so about every other 600-image run triggered a full collection, and a full collection walks
every tracked object: 0.28-0.38 s of a ~4 s run (bench/README.md finding 25). `gc.freeze()` moves the
objects alive now into a permanent generation that collections skip, the use CPython documents for
long-lived start-up state; whatever is made afterwards is collected as before. Full collections during a
run then walk only the run's own objects (0.03-0.16 s, most of it freeing the garbage they find).

Once per process: in a run's own worker process, the first run starts right after the imports, so
what is frozen is start-up state. A long-lived process (a notebook, the tests) freezes what it holds at
its first run, and nothing later, so garbage made afterwards is never kept.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_frozen = False


def freeze_startup_objects() -> bool:
    """Move every object tracked now out of the collector's reach, the first time this is called in a process.

    Returns:
        True if this call froze them; False if an earlier call already did (then nothing changes).
    """
    global _frozen
    with _lock:
        if _frozen:
            return False
        gc.freeze()
        _frozen = True
        return True
