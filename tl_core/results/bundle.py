"""Export a finished run from the store as a bundle (model files, labels, model card)."""

from __future__ import annotations

import json
from pathlib import Path

import tl_core.models.text_model  # noqa: F401 - registers the text layers, so text models load
from tl_core.errors import RunNotFoundError
from tl_core.layout import EXPORT_FORMATS, KERAS_FILE, LABELS_FILE, SUMMARY_FILE
from tl_core.models import keras_files
from tl_core.models.registry import get_backbone_spec
from tl_core.results.export import ExportBundle, ModelCard, export_model, read_labels
from tl_core.runs.store import RunStore


def model_card_for_run(store: RunStore, run_id: str) -> ModelCard:
    record = store.get(run_id)
    folder = store.run_dir(record.id)
    summary = json.loads((folder / SUMMARY_FILE).read_text()) if (folder / SUMMARY_FILE).is_file() else {}
    try:
        provenance = get_backbone_spec(record.backbone).weights_provenance
    except Exception:  # noqa: BLE001 - a backbone removed from the registry still exports
        provenance = "unknown"
    if record.weights == "none":
        provenance = "random initialisation (trained from scratch)"
    return ModelCard(
        title=f"{record.name}",
        backbone=record.backbone,
        weights=record.weights,
        weights_provenance=provenance,
        mode=record.mode,
        image_size=int(summary.get("image_size") or 0),
        class_names=tuple(read_labels(folder / LABELS_FILE)),
        class_counts=dict(record.dataset_stats.get("class_counts", {})),
        config=record.config,
        metrics={k: v for k, v in record.metrics.items() if isinstance(v, (int, float))},
        dataset_fingerprint=record.dataset_fingerprint,
        run_id=record.id,
        parent_run_id=record.parent_run_id,
        modality=str(record.config.get("data", {}).get("modality", "image")),
    )


def export_run(
    store: RunStore, run_id: str, out_dir: Path, *, formats: tuple[str, ...] = EXPORT_FORMATS
) -> ExportBundle:
    """Write the run's best model as an export bundle into `out_dir`."""
    record = store.get(run_id)
    model_path = store.run_dir(record.id) / KERAS_FILE
    if not model_path.is_file():
        raise RunNotFoundError(
            f"Run {record.id} ({record.status}) has no saved model to export: pick a completed run (`python -m tl_core runs`)."
        )
    model = keras_files.load_model(model_path)
    card = model_card_for_run(store, record.id)
    return export_model(model, card.class_names, out_dir, card, formats=formats)
