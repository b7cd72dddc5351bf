"""Loading a run's saved evaluation and shaping it for the Evaluate page (class names shown through `safe_label`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from tl_core.errors import DataError
from tl_core.layout import EVALUATION_FILE, SUMMARY_FILE
from tl_core.results.evaluate import Evaluation, ExampleOutcome
from tl_core.runs.store import RunStore
from ui.images import Tile
from ui.text import safe_label, user_message


@st.cache_data(show_spinner=False, max_entries=32)
def _load(path: str, modified_ns: int) -> Evaluation:
    del modified_ns  # cache key only
    return Evaluation.load(Path(path))


def evaluated_run_ids(store: RunStore) -> list[str]:
    """Runs (newest first) that saved an evaluation."""
    return [record.id for record in store.list_runs() if (store.run_dir(record.id) / EVALUATION_FILE).is_file()]


def load_evaluation(store: RunStore, run_id: str) -> Evaluation:
    path = store.run_dir(run_id) / EVALUATION_FILE
    return _load(str(path), path.stat().st_mtime_ns)


def dataset_root(store: RunStore, run_id: str) -> str | None:
    """Where the run's images were (to resolve relative example paths)."""
    path = store.run_dir(run_id) / SUMMARY_FILE
    return json.loads(path.read_text()).get("dataset_root") if path.is_file() else None


@st.cache_data(show_spinner=False, max_entries=2000)
def _document_beginning(path: str, characters: int) -> str:
    from tl_core.data.text_dataset import read_document

    try:
        text = " ".join(read_document(path).split())  # line breaks would waste the table row
    except (DataError, OSError):
        return f"(moved, deleted or unreadable: {path})"
    return text[:characters] + ("…" if len(text) > characters else "")


def document_frame(examples: list[ExampleOutcome], root: str | None, characters: int = 300) -> pd.DataFrame:
    """One row per evaluated document: true class, prediction, confidence and the document's beginning (plain text)."""
    rows = []
    for example in examples:
        path = example.item
        if not Path(path).is_absolute() and root:
            path = str(Path(root) / path)
        rows.append(
            {
                "true": safe_label(example.true_label),
                "predicted": safe_label(example.predicted_label),
                "confidence": example.confidence,
                "document": user_message(_document_beginning(path, characters)),
            }
        )
    return pd.DataFrame(rows, columns=["true", "predicted", "confidence", "document"])


def per_class_frame(evaluation: Evaluation) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "class": safe_label(row.label),
                "precision": row.precision,
                "recall": row.recall,
                "F1": row.f1,
                "support": row.support,
            }
            for row in evaluation.per_class
        ],
        columns=["class", "precision", "recall", "F1", "support"],
    )


def worst_cell(evaluation: Evaluation) -> tuple[str, str]:
    """The most frequent mistake (true, predicted); the first diagonal cell when there are none."""
    names = evaluation.class_names
    best, best_count = (names[0], names[0]), 0
    for i, row in enumerate(evaluation.confusion):
        for j, count in enumerate(row):
            if i != j and count > best_count:
                best, best_count = (names[i], names[j]), count
    return best


def example_tiles(examples: list[ExampleOutcome], root: str | None, *, show_true: bool = True) -> list[Tile]:
    """Thumbnails captioned 'true → predicted (confidence)'."""
    tiles = []
    for example in examples:
        path = Path(example.item)
        if not path.is_absolute() and root:
            path = Path(root) / path
        prefix = f"{example.true_label} → " if show_true else "→ "
        tiles.append(Tile(str(path), f"{prefix}{example.predicted_label} ({example.confidence:.0%})"))
    return tiles
