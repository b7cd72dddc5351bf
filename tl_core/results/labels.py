"""Reading a run's or a bundle's class names: light (no TensorFlow), so the web server reads them itself."""

from __future__ import annotations

import json
from pathlib import Path

from tl_core.errors import DataError, TransferLabError
from tl_core.layout import LABELS_JSON_FILE


def read_labels(path: Path) -> list[str]:
    """Class names by index for the `labels.txt` at `path`: from `labels.json` beside it, else (older runs) its lines.

    Args:
        path: a run's or a bundle's `labels.txt`.

    Raises:
        DataError: `labels.json` is not a JSON list of names.
    """
    json_path = path.with_name(LABELS_JSON_FILE)
    if json_path.is_file():
        names = json.loads(json_path.read_text(encoding="utf-8"))
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise DataError(f"{json_path.name} is not a JSON list of class names: export or train the run again.")
        return names
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


def class_index(class_names: list[str], name: str) -> int:
    """The index of class `name`; a clear error listing the classes when the run has no such class."""
    if name in class_names:
        return class_names.index(name)
    raise TransferLabError(f"This run has no class '{name}': choose one of {', '.join(class_names)}.")
