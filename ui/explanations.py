"""Explanations on the Predict and Evaluate pages: Grad-CAM overlays for images, highlighted words for documents.

The model work (heatmaps, occlusion) runs in the server's model worker (`tl_core.results.model_tasks`); the
overlay is blended here with PIL, so moving the opacity slider redraws without asking the model again.
Words come from the user: each is HTML-escaped (and its Markdown characters turned into entities) before
it goes into the one `st.markdown(..., unsafe_allow_html=True)` that colours them.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import streamlit as st

from tl_core.data.images import decode_image
from tl_core.errors import BackboneError, DataError, TransferLabError
from tl_core.layout import KERAS_FILE, LABELS_FILE
from tl_core.results import model_tasks
from tl_core.results.heatmaps import DEFAULT_ALPHA, FileHeatmap, overlay_heatmap
from tl_core.results.labels import read_labels
from tl_core.results.word_attributions import MAX_WORDS, TextAttributions
from tl_core.runs.store import RunStore
from ui.images import Tile
from ui.state import model_worker
from ui.text import escape_markdown, safe_label, user_message

OVERLAY_SIDE = 224
# Characters Streamlit's Markdown would read as syntax (emphasis, links, maths, :icons:, colour directives).
_MARKDOWN_CHARACTERS = frozenset("\\`*_{}[]()#+-.!|~:$^=")
_POSITIVE_RGB = "34, 139, 34"  # green: the word supports the class explained
_NEGATIVE_RGB = "214, 39, 40"  # red: the class is more likely without it


def run_class_names(store: RunStore, run_id: str) -> list[str]:
    """The run's class names, read from its labels file (no model needed)."""
    return read_labels(store.run_dir(run_id) / LABELS_FILE)


def heatmap_controls(prefix: str, class_names: Sequence[str] | None = None) -> tuple[float, str | None]:
    """An opacity slider and, given `class_names`, the class to explain (None: each image's predicted class)."""
    opacity_col, class_col = st.columns(2)
    alpha = opacity_col.slider(
        "Heatmap opacity",
        0.0,
        1.0,
        DEFAULT_ALPHA,
        0.05,
        key=f"{prefix}_heatmap_opacity",
        help="0 shows the image only, 1 the heatmap only. Red and yellow: where the evidence for the class lies.",
    )
    if class_names is None:
        return alpha, None
    class_name = class_col.selectbox(
        "Class explained",
        [None, *class_names],
        key=f"{prefix}_heatmap_class",
        format_func=lambda name: "The predicted class" if name is None else safe_label(name),
        help="Where in each image the model sees evidence for this class.",
    )
    return alpha, class_name


def explain_files(
    store: RunStore, run_id: str, paths: Sequence[Path | str], class_name: str | None
) -> list[FileHeatmap]:
    """Grad-CAM heatmaps of image files, computed by the model worker once per model version, files and class.

    Raises:
        BackboneError: the run's backbone has no spatial feature map to explain.
    """
    model_file = store.run_dir(run_id) / KERAS_FILE
    version = model_file.stat().st_mtime_ns if model_file.is_file() else 0
    return _explained(str(store.workspace), run_id, version, tuple(str(path) for path in paths), class_name)


@st.cache_data(show_spinner=False, max_entries=64)
def _explained(
    workspace: str, run_id: str, model_version: int, paths: tuple[str, ...], class_name: str | None
) -> list[FileHeatmap]:
    del model_version  # cache key only: a retrained model is explained again
    return model_worker().call(model_tasks.explain_run_files, workspace, run_id, list(paths), class_name)


def overlay(heatmap: FileHeatmap, alpha: float, side: int = OVERLAY_SIDE) -> np.ndarray | None:
    """The heatmap over a small copy of its image, or None when the image or its heatmap is missing."""
    if heatmap.heatmap is None:
        return None
    try:
        picture = decode_image(heatmap.path)
    except (DataError, OSError):
        return None
    picture.thumbnail((side, side))
    return np.asarray(overlay_heatmap(picture, heatmap.heatmap, alpha))


def heatmap_caption(heatmap: FileHeatmap) -> str:
    """What the overlay shows, as plain text (escape before Markdown)."""
    if heatmap.problem:
        return heatmap.problem
    return f"Evidence for {safe_label(heatmap.class_explained)}"


def show_unexplainable(exc: TransferLabError) -> None:
    """Why no heatmap can be drawn (a backbone without a spatial map): an info line, not an error."""
    icon = ":material/info:" if isinstance(exc, BackboneError) else ":material/error:"
    (st.info if isinstance(exc, BackboneError) else st.error)(escape_markdown(user_message(exc)), icon=icon)


def show_heatmap_tiles(
    store: RunStore, run_id: str, tiles: Sequence[Tile], alpha: float, *, width: int = 112, empty_message: str
) -> None:
    """Evaluation examples as overlays for their predicted class, captioned as their thumbnails would be."""
    if not tiles:
        st.caption(empty_message)
        return
    try:
        with st.spinner("Computing heatmaps…"):
            heatmaps = explain_files(store, run_id, [tile.path for tile in tiles], None)
    except TransferLabError as exc:
        show_unexplainable(exc)
        return
    drawn = [(overlay(heatmap, alpha), tile) for heatmap, tile in zip(heatmaps, tiles)]
    images = [(array, tile) for array, tile in drawn if array is not None]
    if images:
        st.image(
            [array for array, _ in images], width=width, caption=[escape_markdown(tile.caption) for _, tile in images]
        )
    missing = len(drawn) - len(images)
    if missing:
        st.caption(f"{missing} image(s) could not be explained (moved, deleted or unreadable).")


def explain_text(store: RunStore, run_id: str, text: str, class_name: str | None = None) -> TextAttributions:
    """Each word's attribution for the document's predicted class, computed by the model worker."""
    return model_worker().call(model_tasks.attribute_run_text, str(store.workspace), run_id, text, class_name)


def escape_word(word: str) -> str:
    """A word as inert HTML inside Streamlit Markdown: no tag, entity, Markdown syntax or hidden character survives."""
    visible = safe_label(word)
    return "".join(
        f"&#{ord(character)};" if character in _MARKDOWN_CHARACTERS else html.escape(character) for character in visible
    )


def highlighted_words(attributions: TextAttributions) -> str:
    """The words as HTML spans, green behind words that support the class explained, red behind those against it."""
    largest = max((abs(word.attribution) for word in attributions.words), default=0.0) or 1.0
    spans = []
    for word in attributions.words:
        strength = min(1.0, abs(word.attribution) / largest)
        rgb = _POSITIVE_RGB if word.attribution >= 0 else _NEGATIVE_RGB
        spans.append(
            f'<span style="background-color: rgba({rgb}, {0.75 * strength:.2f}); border-radius: 3px; '
            f'padding: 0 2px" title="{word.attribution:+.3f}">{escape_word(word.word)}</span>'
        )
    return " ".join(spans)


def show_word_attributions(attributions: TextAttributions) -> None:
    """The highlighted words and a line saying what the colours mean (and which words were left out)."""
    st.markdown(highlighted_words(attributions), unsafe_allow_html=True)
    note = (
        f"Green: words that make {escape_markdown(attributions.class_explained)} more likely; red: less likely "
        "(how much its probability drops when the word is left out)."
    )
    if attributions.words_left_out:
        note += f" Only the first {MAX_WORDS} words are explained; {attributions.words_left_out} more were not."
    st.caption(note)


def predict_page_overlays(store: RunStore, run_id: str, paths: Sequence[Path]) -> list[np.ndarray | None] | None:
    """The Predict page's heatmap controls and one overlay per image (None each where it could not be drawn).

    Returns None when heatmaps are off or the run cannot be explained (the reason is shown).
    """
    if not st.toggle(
        "Show heatmaps",
        value=True,
        key="predict_show_heatmaps",
        help="Grad-CAM: where in each image the model found the evidence for a class.",
    ):
        return None
    alpha, class_name = heatmap_controls("predict", run_class_names(store, run_id))
    try:
        with st.spinner("Computing heatmaps…"):
            heatmaps = explain_files(store, run_id, paths, class_name)
    except TransferLabError as exc:
        show_unexplainable(exc)
        return None
    return [overlay(heatmap, alpha) for heatmap in heatmaps]
