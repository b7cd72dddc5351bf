"""The Predict page's model work, done in the server's model worker, and uploads written where the engine can read them."""

from __future__ import annotations

import hashlib
import io
import secrets
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from tl_core.errors import DataError
from tl_core.layout import KERAS_FILE
from tl_core.results import model_tasks
from tl_core.results.file_problems import FilePrediction, Prediction, image_problem
from tl_core.runs.store import RunStore
from ui.state import model_worker
from ui.uploads import UploadedFileLike, safe_name


def predict_files_with_run(store: RunStore, run_id: str, paths: Sequence[Path], top_k: int) -> list[FilePrediction]:
    """Top-k labels of each file with the run's model, computed in the server's model worker (never here)."""
    return model_worker().call(
        model_tasks.predict_run_files, str(store.workspace), run_id, [str(path) for path in paths], top_k
    )


def predict_texts_with_run(store: RunStore, run_id: str, texts: list[str], top_k: int) -> list[list[Prediction]]:
    """Top-k labels of each document with a text run's model, computed in the model worker."""
    return model_worker().call(model_tasks.predict_run_texts, str(store.workspace), run_id, list(texts), top_k)


def predict_imagenet(backbone: str, paths: Sequence[Path], top_k: int) -> list[list[tuple[str, float]]]:
    """Top-k ImageNet classes of each image with a packaged pretrained network, computed in the model worker."""
    return model_worker().call(model_tasks.predict_imagenet, backbone, [str(path) for path in paths], top_k)


def export_zip(store: RunStore, run_id: str, out_dir: Path, formats: Sequence[str]) -> tuple[Path, str | None]:
    """The run's export bundle, zipped in `out_dir` by the model worker, and why a TFLite file was left out (or None)."""
    zip_path, tflite_note = model_worker().call(
        model_tasks.export_run_zip, str(store.workspace), run_id, str(out_dir), tuple(formats)
    )
    return Path(zip_path), tflite_note


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

    Each message names the file as uploaded and says what its owner can do (see `tl_core.results.file_problems.file_problem`).
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
