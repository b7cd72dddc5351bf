"""Classifiers for the Predict page, cached per run, and uploaded images and documents written where the engine can read them."""

from __future__ import annotations

import hashlib
import io
import secrets
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import streamlit as st

from tl_core.errors import DataError
from tl_core.layout import KERAS_FILE
from tl_core.results.predict import LoadedClassifier, image_problem, load_run_classifier
from tl_core.runs.store import RunStore
from ui.uploads import UploadedFileLike, safe_name


@st.cache_resource(show_spinner=False, max_entries=3)
def _classifier(workspace: str, run_id: str, model_mtime_ns: int) -> LoadedClassifier:
    del model_mtime_ns  # cache key only: a re-saved model is loaded again
    return load_run_classifier(RunStore(workspace), run_id)


def run_classifier(store: RunStore, run_id: str) -> LoadedClassifier:
    """The run's saved model, loaded once per run and model file version (shared by all users, read-only)."""
    path = store.run_dir(run_id) / KERAS_FILE
    mtime = path.stat().st_mtime_ns if path.is_file() else 0
    return _classifier(str(store.workspace), run_id, mtime)


def runs_with_models(store: RunStore) -> list[str]:
    """Runs (newest first) that saved a model."""
    return [record.id for record in store.list_runs() if (store.run_dir(record.id) / KERAS_FILE).is_file()]


def save_images(files: Sequence[UploadedFileLike], folder: Path) -> list[Path]:
    """Write uploaded images under content-hash names (the same upload is written once)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for upload in files:
        data = upload.getvalue()
        suffix = Path(safe_name(upload.name, "image")).suffix.lower()
        path = folder / f"{hashlib.sha256(data).hexdigest()[:20]}{suffix}"
        if not path.exists():
            path.write_bytes(data)
        paths.append(path)
    return paths


def read_uploaded_documents(files: Sequence[UploadedFileLike], folder: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(upload name, text) of every readable uploaded document, and a message per file that is not text.

    The files are saved like images (content-hash names) and decoded as in training (UTF-8, else Windows-1252).
    """
    from tl_core.data.text_dataset import read_document

    documents: list[tuple[str, str]] = []
    problems: list[str] = []
    for upload, path in zip(files, save_images(files, folder)):
        try:
            documents.append((upload.name, read_document(str(path))))
        except DataError:
            problems.append(
                f"{upload.name} is not a plain-text file (it holds binary data): save it as UTF-8 text (.txt) and upload it again."
            )
    return documents, problems


def file_name_only(name: str) -> str:
    """The last part of an upload's name as the browser sent it: what a message may show, never a server path."""
    return PurePosixPath(name.replace("\\", "/")).name or name


def readable_images(paths: Sequence[Path], names: Sequence[str]) -> tuple[list[Path], list[str], list[str]]:
    """The saved uploads that can be predicted, their upload names, and a message per file that cannot.

    Each message names the file as uploaded and says what its owner can do (see `tl_core.results.predict.file_problem`).
    """
    usable_paths: list[Path] = []
    usable_names: list[str] = []
    problems: list[str] = []
    for path, name in zip(paths, names):
        problem = image_problem(path)
        if problem:
            problems.append(f"{file_name_only(name)}: {problem}")
        else:
            usable_paths.append(path)
            usable_names.append(name)
    return usable_paths, usable_names, problems


def bundle_for_download(zip_path: Path) -> bytes:
    """The export zip with a fresh random comment, read when its owner clicks the download button.

    Streamlit serves a download at `/media/<hash of its bytes>.zip` to anyone who has the address: 128 random bits
    in the bytes make that address impossible to derive from the model, and new on every click.
    """
    buffer = io.BytesIO(zip_path.read_bytes())
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.comment = f"TransferLab export {secrets.token_hex(16)}".encode()
    return buffer.getvalue()
