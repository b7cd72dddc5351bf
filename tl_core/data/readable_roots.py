"""Which folders a dataset's files may come from: on a workshop server, the user's own area and the shared datasets.

A dataset names files in two ways a user controls: a CSV's `path,label` rows, and (less directly) links inside
a folder. Every such file is resolved, links followed, and used only when it lies inside one of the allowed
folders; anything else is refused with one message that does not say whether the file exists, so a dataset
can neither read nor probe another user's files. No folders (personal mode) allows every path.

Example:
    >>> roots = (Path("/srv/tl/users/bob"), Path("/srv/tl/datasets"))
    >>> is_allowed(Path("/srv/tl/users/alice/datasets/cats/1.jpg"), roots)
    False
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

OUTSIDE_FIX = "lies outside your workspace and the shared datasets, so it was not used: put the file inside the dataset you upload"


def is_allowed(path: str | Path, roots: Sequence[str | Path]) -> bool:
    """Whether `path`, resolved with links followed, lies inside one of `roots` (always true for no roots)."""
    if not roots:
        return True
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError):  # a link loop: it cannot be inside anything
        return False
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots)
