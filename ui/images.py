"""Small thumbnails of dataset and evaluation images, decoded once and cached."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import streamlit as st

from tl_core.data.images import decode_image
from tl_core.errors import DataError
from ui.text import escape_markdown, safe_label, user_message

THUMBNAIL_SIDE = 112


@dataclass(frozen=True)
class Tile:
    """One image to show: its file and a plain-text caption (escaped before display)."""

    path: str
    caption: str = ""


@st.cache_data(show_spinner=False, max_entries=4000)
def _thumbnail(path: str, modified_ns: int, side: int) -> np.ndarray | None:
    del modified_ns  # part of the cache key only: an edited file gets a new thumbnail
    try:
        image = decode_image(path)
    except (DataError, OSError):
        return None
    image.thumbnail((side, side))
    return np.asarray(image)


def thumbnail(path: str, side: int = THUMBNAIL_SIDE) -> np.ndarray | None:
    """A small RGB array of the image at `path`, or None when the file is gone or unreadable."""
    try:
        modified_ns = os.stat(path).st_mtime_ns
    except OSError:
        return None
    return _thumbnail(path, modified_ns, side)


def show_tiles(tiles: Sequence[Tile], *, width: int = 96, empty_message: str = "No images to show.") -> None:
    """A wrapping row of thumbnails with captions; unreadable files are listed instead of drawn."""
    drawable = [(thumbnail(tile.path), tile) for tile in tiles]
    images = [(array, tile) for array, tile in drawable if array is not None]
    missing = [tile for array, tile in drawable if array is None]
    if not tiles:
        st.caption(empty_message)
        return
    if images:
        st.image(
            [array for array, _ in images], width=width, caption=[escape_markdown(tile.caption) for _, tile in images]
        )
    if missing:
        st.caption(f"{len(missing)} image(s) could not be shown (moved, deleted or unreadable):")
        st.text("\n".join(safe_label(user_message(tile.path)) for tile in missing[:10]))
