"""Predict & export: classify new images or documents with a trained run (or images with ImageNet as-is) and download the model."""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import streamlit as st

from tl_core.config import ConfigError
from tl_core.data.images import IMAGE_EXTENSIONS
from tl_core.errors import TransferLabError
from tl_core.layout import EXPORT_FORMATS as FORMATS
from tl_core.modalities import get_modality
from tl_core.models.weights import OFFLINE_WEIGHTS
from tl_core.results.word_attributions import MAX_WORDS, TextAttributions
from tl_core.runs.store import RunStore
from tl_core.server.accounts import User
from tl_core.server.workspaces import Workspaces
from ui.charts import probability_bars
from ui.explanations import explain_text, predict_page_overlays, show_word_attributions
from ui.images import thumbnail
from ui.navigation import run_app_instead
from ui.predictions import (
    bundle_for_download,
    export_zip,
    file_name_only,
    predict_files_with_run,
    predict_imagenet,
    predict_texts_with_run,
    read_uploaded_documents,
    readable_images,
    runs_with_models,
    save_images,
)
from ui.state import current_run_id, current_user, get_store, set_current_run, user_workspace, workspaces
from ui.text import escape_markdown, safe_label, show_error
from ui.uploads import safe_name, upload_size

TEXT_EXTENSIONS = ("txt", "text", "md")
SNIPPET_CHARACTERS = 300
EXPLAINED_DOCUMENTS = 5  # each costs up to MAX_WORDS + 1 predictions

EXPORTS_KEY = "export_zips"
FORMAT_LABELS = {
    "keras": "Keras (.keras)",
    "saved_model": "TensorFlow SavedModel",
    "tflite": "TensorFlow Lite (.tflite)",
}


def show_predictions(
    paths: list[Path],
    names: list[str],
    results: list[list[tuple[str, float]]],
    overlays: list[np.ndarray | None] | None = None,
) -> None:
    """Each image beside its top-k bars, and its heatmap overlay between them when given."""
    for index, (path, name, predictions) in enumerate(zip(paths, names, results)):
        if overlays is None:
            image_col, bars_col = st.columns([1, 4], vertical_alignment="center")
        else:
            image_col, heat_col, bars_col = st.columns([1, 1, 3], vertical_alignment="center")
            if overlays[index] is not None:
                heat_col.image(overlays[index], width=128, caption="Heatmap")
        array = thumbnail(str(path), 160)
        if array is not None:
            image_col.image(array, width=128)
        image_col.caption(escape_markdown(name))
        bars_col.altair_chart(probability_bars(predictions), width="stretch")


def show_text_predictions(
    names: list[str],
    texts: list[str],
    results: list[list[tuple[str, float]]],
    attributions: list[TextAttributions] | None = None,
) -> None:
    """Each document's name and beginning (or its highlighted words) beside its top-k bars."""
    for index, (name, text, predictions) in enumerate(zip(names, texts, results)):
        text_col, bars_col = st.columns([2, 3], vertical_alignment="center")
        flat = " ".join(text.split())
        text_col.markdown(f"**{escape_markdown(name)}**")
        if attributions is not None and index < len(attributions):
            with text_col:
                show_word_attributions(attributions[index])
        else:
            text_col.caption(
                escape_markdown(flat[:SNIPPET_CHARACTERS] + ("…" if len(flat) > SNIPPET_CHARACTERS else ""))
            )
        bars_col.altair_chart(probability_bars(predictions), width="stretch")


def document_attributions(store: RunStore, run_id: str, texts: list[str]) -> list[TextAttributions] | None:
    """Word attributions of the first `EXPLAINED_DOCUMENTS` documents when asked for (None: off, or it failed)."""
    if not st.toggle(
        "Highlight the words behind each prediction",
        value=True,
        key="predict_show_words",
        help=f"Each word is left out in turn: the more the predicted class's probability drops, the greener the word. "
        f"The first {MAX_WORDS} words of the first {EXPLAINED_DOCUMENTS} documents are explained.",
    ):
        return None
    try:
        with st.spinner("Weighing each word…"):
            return [explain_text(store, run_id, text) for text in texts[:EXPLAINED_DOCUMENTS]]
    except (TransferLabError, ConfigError, ValueError) as exc:
        show_error(exc)
        return None


def predict_documents(store: RunStore, run_id: str, top_k: int, spaces: Workspaces, user: User) -> None:
    """A text run: classify typed text and uploaded text files."""
    typed = st.text_area(
        "Text to classify",
        key="predict_text",
        height=120,
        placeholder="Type or paste a document…",
        help="The model reads the first words of the text, as many as the run was trained with.",
    )
    files = st.file_uploader(
        "Or text files",
        type=list(TEXT_EXTENSIONS),
        accept_multiple_files=True,
        key="predict_text_files",
        help="Plain-text documents (.txt), one document per file.",
    )
    try:
        spaces.check_upload(
            user.name, upload_size(files or [])
        )  # documents are saved in the user's cache, inside their quota
    except TransferLabError as exc:
        show_error(exc)
        files = []
    names, texts = (["Typed text"], [typed]) if typed.strip() else ([], [])
    documents, problems = read_uploaded_documents(files or [], user_workspace().cache / "predict")
    for name, text in documents:
        names.append(name)
        texts.append(text)
    for problem in problems:
        st.error(escape_markdown(problem), icon=":material/error:")
    if not texts:
        st.caption("Type a text or upload text files to see what this model predicts.")
        return
    try:
        with st.spinner("Loading the model and predicting…"):
            predictions = predict_texts_with_run(store, run_id, texts, top_k)
    except (TransferLabError, ConfigError, ValueError) as exc:
        show_error(exc)
    else:
        show_text_predictions(
            names,
            texts,
            [[(p.label, p.probability) for p in row] for row in predictions],
            document_attributions(store, run_id, texts),
        )


def trained_run_tab(
    store: RunStore,
    run_ids: list[str],
    names: dict[str, str],
    image_paths: list[Path],
    upload_names: list[str],
    top_k: int,
    spaces: Workspaces,
    user: User,
) -> None:
    """Classify with a run that saved a model: the uploaded images, or typed and uploaded documents for a text run."""
    if not run_ids:
        st.info("No trained model yet: finish a run on the Train page first.", icon=":material/info:")
        return
    run_id = st.selectbox("Run", run_ids, key="predict_run", format_func=names.get, help="Runs that saved a model.")
    set_current_run(run_id)
    if get_modality(store.get(run_id).modality).takes_typed_text:
        predict_documents(store, run_id, top_k, spaces, user)
    elif not image_paths:
        st.caption("Upload images above to see what this model predicts.")
    else:
        try:
            with st.spinner("Loading the model and predicting…"):
                results = predict_files_with_run(store, run_id, image_paths, top_k)
        except (TransferLabError, ConfigError) as exc:
            show_error(exc)
        else:
            predicted = [(result, name) for result, name in zip(results, upload_names) if not result.problem]
            for result, name in zip(results, upload_names):
                if result.problem:
                    st.error(
                        escape_markdown(f"{file_name_only(name)}: {result.problem}"), icon=":material/broken_image:"
                    )
            paths = [result.path for result, _ in predicted]
            show_predictions(
                paths,
                [name for _, name in predicted],
                [[(p.label, p.probability) for p in result.predictions] for result, _ in predicted],
                predict_page_overlays(store, run_id, paths) if paths else None,
            )


def imagenet_tab(image_paths: list[Path], upload_names: list[str], top_k: int) -> None:
    """Classify the uploaded images with a pretrained network's own 1,000 ImageNet classes."""
    st.caption(
        "The pretrained network with its original 1,000-class ImageNet head: no training, useful to see what the backbone already recognises."
    )
    pretrained = [
        name for name, weights in OFFLINE_WEIGHTS.items() if weights.has_imagenet_head and weights.is_installed()
    ]
    if not pretrained:
        st.info("No pretrained ImageNet classifier is installed on this server.", icon=":material/info:")
        return
    backbone = st.selectbox("Pretrained network", pretrained, key="predict_pretrained_backbone")
    if st.button("Classify with ImageNet classes", key="predict_pretrained_run", disabled=not image_paths):
        try:
            with st.spinner("Building the pretrained classifier…"):
                results = predict_imagenet(backbone, image_paths, top_k)
        except (TransferLabError, ConfigError) as exc:
            show_error(exc)
        else:
            show_predictions(image_paths, upload_names, results)
    if not image_paths:
        st.caption("Upload images above first.")


def export_tab(store: RunStore, run_ids: list[str], names: dict[str, str], spaces: Workspaces, user: User) -> None:
    """Build a run's export bundle in the chosen formats, then offer it for download."""
    if not run_ids:
        st.info("Nothing to export yet: finish a run first.", icon=":material/info:")
        return
    if st.session_state.get("export_run") not in run_ids:
        st.session_state["export_run"] = st.session_state["predict_run"]
    export_run_id = st.selectbox("Run to export", run_ids, key="export_run", format_func=names.get)
    formats = st.multiselect(
        "Formats",
        list(FORMATS),
        default=list(FORMATS),
        key="export_formats",
        format_func=FORMAT_LABELS.get,
        help="Every format carries its own preprocessing: image models take uint8 RGB images, text models raw strings. "
        "labels.txt and a model card come with it.",
    )
    exports: dict[str, str] = st.session_state.setdefault(EXPORTS_KEY, {})
    if st.button("Build the export bundle", key="export_prepare", disabled=not formats, icon=":material/inventory_2:"):
        try:
            spaces.check_disk(user.name)
            with st.spinner("Exporting (the TensorFlow Lite conversion takes a little while)…"):
                exports_dir = user_workspace().cache / "exports"  # the user's own folder: no one else can download it
                exports_dir.mkdir(parents=True, exist_ok=True)
                out = Path(tempfile.mkdtemp(prefix=f"{export_run_id}-", dir=exports_dir))
                zip_path, tflite_note = export_zip(store, export_run_id, out, formats)
                if tflite_note:
                    st.warning(tflite_note)
                exports[export_run_id] = str(zip_path)
        except (TransferLabError, ConfigError) as exc:
            show_error(exc)
        spaces.forget_usage(user.name)
    zip_path = exports.get(export_run_id)
    if zip_path and Path(zip_path).is_file():
        record = store.get(export_run_id)
        # Deferred: nothing is served until the owner clicks; Streamlit then serves the bytes at /media/<hash>.zip
        # to whoever has that address, until the second script run (of any session) that ends after the click.
        st.download_button(
            "Download the bundle (.zip)",
            data=partial(bundle_for_download, Path(zip_path)),
            on_click="ignore",
            file_name=f"{safe_name(record.name, 'model').replace(' ', '-')}-{time.strftime('%Y%m%d')}.zip",
            mime="application/zip",
            key="export_download",
            type="primary",
            icon=":material/download:",
        )
        st.caption(
            f"{Path(zip_path).stat().st_size / 1e6:.1f} MB: model files, labels.txt and MODEL_CARD.md. The file is prepared "
            "when you click, at a random address that expires moments later (after the server's next two page updates): "
            "click again to download it again."
        )


def predict_page() -> None:
    """The Predict & export page: images uploaded once, classified by a run or by ImageNet, and a run's export."""
    st.title("Predict & export")
    store = get_store()
    uploads = st.file_uploader(
        "Images to classify",
        type=sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS),
        accept_multiple_files=True,
        key="predict_files",
        help="Any number of JPEG, PNG, WebP, BMP, GIF or TIFF images. "
        "Runs trained on text take typed text or text files in their own tab below.",
    )
    top_k = st.slider(
        "Show the top",
        1,
        10,
        3,
        key="predict_top_k",
        help="How many of the most likely classes to show per image or document.",
    )
    user, spaces = current_user(), workspaces()
    try:
        spaces.check_upload(
            user.name, upload_size(uploads or [])
        )  # images are saved in the user's cache, inside their quota
    except TransferLabError as exc:
        show_error(exc)
        uploads = []
    # A file that cannot be read is named with what to do, and every other one is still predicted.
    image_paths, upload_names, image_problems = readable_images(
        save_images(uploads or [], user_workspace().cache / "predict"), [upload.name for upload in uploads or []]
    )
    for problem in image_problems:
        st.error(escape_markdown(problem), icon=":material/broken_image:")

    trained, imagenet, export = st.tabs(
        [
            ":material/model_training: With a trained run",
            ":material/public: ImageNet as-is",
            ":material/download: Export",
        ]
    )
    run_ids = runs_with_models(store)
    names = {
        record.id: f"{safe_label(record.name)} ({record.id[-6:]})"
        for record in store.list_runs()
        if record.id in run_ids
    }
    if run_ids and st.session_state.get("predict_run") not in run_ids:
        st.session_state["predict_run"] = current_run_id() if current_run_id() in run_ids else run_ids[0]
    with trained:
        trained_run_tab(store, run_ids, names, image_paths, upload_names, top_k, spaces, user)
    with imagenet:
        imagenet_tab(image_paths, upload_names, top_k)
    with export:
        export_tab(store, run_ids, names, spaces, user)


if __name__ == "__main__":  # Streamlit ran this file itself instead of app.py: see ui.navigation.run_app_instead
    run_app_instead()
