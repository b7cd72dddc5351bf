"""Server paths in messages, shown relative to the folders a user knows ("your workspace/...", "shared datasets/...").

On a workshop server a student should not learn where the server keeps files: errors and logs name
paths like `/srv/transferlab/users/alice/cache/extracted/flowers`. `relative_paths` rewrites every path
inside one of the user's areas relative to that area, and any other absolute path to its last part.

Example:
    >>> areas = [Area(Path("/srv/tl/users/alice"), "your workspace"), Area(Path("/srv/tl/datasets"), "shared datasets")]
    >>> relative_paths("/srv/tl/users/alice/datasets/empty.zip is empty; see /usr/lib/x.py", areas)
    'your workspace/datasets/empty.zip is empty; see x.py'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Area:
    """A folder a user may know about, and what it is called to them."""

    folder: Path
    label: str  # e.g. "your workspace"


# A folder's path ends where a name cannot go on: not before a letter, digit, `-`, `_` or `.x`.
_PATH_END = r"(?![\w-]|\.\w)"
# An absolute path not inside a word, a URL (`https://`) or a relative path (`cats/1.jpg`), up to a space or quote.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~\\-])/[^\s'\"`,;()<>\[\]{}|*?]+")


def relative_paths(text: str, areas: Sequence[Area]) -> str:
    """`text` with paths inside `areas` shown relative to them, and every other absolute path as its last part.

    Args:
        text: a message, error or log that may name server paths.
        areas: the user's folders (most specific first is not needed: longer folders are matched first).

    Returns:
        The text; `your workspace/datasets/x` for `/srv/tl/users/alice/datasets/x`.
    """
    forms = sorted(
        {(str(form), area.label) for area in areas for form in (area.folder, area.folder.resolve())},
        key=lambda item: -len(item[0]),
    )
    for folder, label in forms:
        if folder not in text:
            continue
        text = re.sub(re.escape(folder) + _PATH_END, lambda _match, label=label: label, text)
    return _ABSOLUTE_PATH.sub(lambda match: _last_part(match.group()), text)


def shown_path(path: str | Path, areas: Sequence[Area]) -> str:
    """One path as `relative_paths` shows it: `your workspace/datasets/x`, or its name outside every area."""
    resolved = Path(path).expanduser().resolve()
    for area in sorted(areas, key=lambda area: -len(str(area.folder))):
        if resolved.is_relative_to(area.folder.resolve()):
            inside = resolved.relative_to(area.folder.resolve()).as_posix()
            return area.label if inside == "." else f"{area.label}/{inside}"
    return Path(path).name


def _last_part(path: str) -> str:
    trimmed = path.rstrip("/")
    return PurePosixPath(trimmed).name or path
