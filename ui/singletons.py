"""Objects shared by every session of this server process that no client can reset.

`st.cache_resource` would share them too, but Streamlit 1.67 lets any client clear every cache with one
websocket message (`BackMsg.clear_cache`: no sign-in, cookie or XSRF token needed), and has no setting to
refuse it. Security state (sign-in throttles, sessions) and the one job manager would then be reset or
doubled, so they live here instead: a plain module-level table, filled once per argument tuple under a lock.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

Factory = TypeVar("Factory", bound=Callable[..., Any])


def process_wide(factory: Factory) -> Factory:
    """Call `factory` once per distinct (hashable) arguments in this process and return that object ever after.

    Example:
        >>> @process_wide
        ... def job_manager(root: str) -> JobManager: ...
    """
    made: dict[tuple[Any, ...], Any] = {}
    lock = threading.Lock()

    @functools.wraps(factory)
    def shared(*args: Any) -> Any:
        with lock:  # two sessions asking at once must not make two managers
            if args not in made:
                made[args] = factory(*args)
            return made[args]

    return shared  # type: ignore[return-value]
