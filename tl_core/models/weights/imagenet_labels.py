"""The 1000 ImageNet-1k class names, read offline from an installed package (no download).

Keras' own `decode_predictions` downloads `imagenet_class_index.json`, which cannot happen
offline. KerasHub (`keras-hub`) ships the same table as a Python literal,
`IMAGENET_NAMES = {0: ("n01440764", "tench"), ...}` in `keras_hub/src/utils/imagenet/imagenet_utils.py`.
We read that file as text and evaluate only the literal (`ast.literal_eval`): keras-hub is
neither imported nor needs its dependencies, so `pip install --no-deps keras-hub` is enough.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

from tl_core.errors import WeightsUnavailableError

IMAGENET_CLASS_COUNT = 1000
LABELS_PACKAGE = "keras-hub"
LABELS_PACKAGE_VERSION = "0.32.0"
_LABELS_MODULE = "keras_hub"
_LABELS_FILE = Path("src/utils/imagenet/imagenet_utils.py")
_LABELS_VARIABLE = "IMAGENET_NAMES"

INSTALL_HINT = f"pip install --no-deps {LABELS_PACKAGE}=={LABELS_PACKAGE_VERSION}"


def _labels_source() -> Path | None:
    spec = importlib.util.find_spec(_LABELS_MODULE)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / _LABELS_FILE
    return path if path.is_file() else None


def _parse_names(source: Path) -> list[str]:
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == _LABELS_VARIABLE for t in node.targets
        ):
            table = ast.literal_eval(node.value)
            break
    else:
        raise WeightsUnavailableError(
            f"{source} has no `{_LABELS_VARIABLE}` table; install the version we read: `{INSTALL_HINT}`."
        )
    if sorted(table) != list(range(IMAGENET_CLASS_COUNT)):
        raise WeightsUnavailableError(
            f"{source}: `{_LABELS_VARIABLE}` does not hold the 1000 ImageNet-1k classes; install `{INSTALL_HINT}`."
        )
    return [str(table[index][1]).replace("_", " ") for index in range(IMAGENET_CLASS_COUNT)]


@functools.cache
def _cached_names() -> tuple[str, ...]:
    source = _labels_source()
    if source is None:
        raise WeightsUnavailableError(
            f"ImageNet class names are read from the {LABELS_PACKAGE} package, which is not installed: run `{INSTALL_HINT}`."
        )
    return tuple(_parse_names(source))


def imagenet_class_names() -> list[str]:
    """ImageNet-1k class names in model output order, e.g. index 285 -> "Egyptian cat".

    Returns:
        1000 human-readable names (underscores replaced by spaces).

    Raises:
        WeightsUnavailableError: keras-hub is not installed (the message gives the pip command).
    """
    return list(_cached_names())  # a fresh list: callers may modify it without touching the cache
