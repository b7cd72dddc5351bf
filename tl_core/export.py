"""Export bundles: `model.keras`, a SavedModel, a TFLite file, `labels.txt` and a model card.

Every form carries its own preprocessing: image models take uint8 RGB images of the model's input
size, text models take raw strings (tokenisation is inside the model), so a user needs neither
TransferLab nor the backbone's `preprocess_input` to use the SavedModel:

    model = keras.saving.load_model("bundle/model.keras")
    probabilities = model.predict(images_uint8)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tl_core import keras_files
from tl_core.model import inference_model

KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
LABELS_FILE = "labels.txt"
MODEL_CARD_FILE = "MODEL_CARD.md"
FORMATS = ("keras", "saved_model", "tflite")


@dataclass(frozen=True)
class ExportBundle:
    folder: Path
    keras_path: Path | None
    saved_model_dir: Path | None
    tflite_path: Path | None
    labels_path: Path
    model_card_path: Path

    def files(self) -> list[Path]:
        return [p for p in (self.keras_path, self.saved_model_dir, self.tflite_path, self.labels_path, self.model_card_path) if p]


@dataclass(frozen=True)
class ModelCard:
    """What the model card says; plain data so the run store can fill it."""

    title: str
    backbone: str
    weights: str
    weights_provenance: str
    mode: str
    image_size: int
    class_names: tuple[str, ...]
    class_counts: dict[str, int]
    config: dict[str, Any]
    metrics: dict[str, float]
    dataset_fingerprint: str | None = None
    run_id: str | None = None
    parent_run_id: str | None = None
    modality: str = "image"  # "text": `image_size` is then the number of word tokens read per document

    def to_markdown(self) -> str:
        metric_rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(self.metrics.items()) if isinstance(value, (int, float)))
        class_rows = "\n".join(f"| {name} | {self.class_counts.get(name, '')} |" for name in self.class_names)
        lineage = f"\n- Started from run `{self.parent_run_id}` (domain-specific weights)." if self.parent_run_id else ""
        text = self.modality == "text"
        model_input = (f"raw UTF-8 strings, one document each; lower-casing and tokenising are inside the model, "
                       f"which reads the first {self.image_size} word tokens" if text else
                       f"uint8 RGB images, {self.image_size}x{self.image_size} pixels; preprocessing is inside the model")
        return f"""# {self.title}

Trained with TransferLab{f' (run `{self.run_id}`)' if self.run_id else ''}.

## Model
- Backbone: `{self.backbone}`, weights `{self.weights}` — {self.weights_provenance}{lineage}
- Mode: {self.mode}
- Input: {model_input}.
- Output: softmax over {len(self.class_names)} classes, in the order of `{LABELS_FILE}`.

## Data
- Dataset fingerprint: `{self.dataset_fingerprint or 'unknown'}`

| class | {'documents' if text else 'images'} |
|---|---|
{class_rows}

## Metrics
| metric | value |
|---|---|
{metric_rows}

## Configuration
```json
{json.dumps(self.config, indent=2, sort_keys=True)}
```

## Use
{_TEXT_USE if text else _IMAGE_USE.replace("IMAGE_SIZE", str(self.image_size))}

## Limits
Trained on the classes above only: any input is assigned one of them. Check the per-class metrics
before relying on a class, and re-evaluate on data from where the model will be used.
"""


_IMAGE_USE = f"""```python
import keras, numpy as np
from PIL import Image
model = keras.saving.load_model("{KERAS_FILE}")
labels = open("{LABELS_FILE}").read().splitlines()
image = np.asarray(Image.open("photo.jpg").convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)))
probabilities = model.predict(image[None])[0]
print(labels[int(probabilities.argmax())])
```"""

_TEXT_USE = f"""With TensorFlow only, through the SavedModel:
```python
import tensorflow as tf
model = tf.saved_model.load("{SAVED_MODEL_DIR}")
labels = open("{LABELS_FILE}").read().splitlines()
probabilities = model.serve(tf.constant(["the text to classify"])).numpy()[0]
print(labels[int(probabilities.argmax())])
```
`{KERAS_FILE}` uses TransferLab's tokeniser: `import tl_core.text_model` before `keras.saving.load_model`.
`{TFLITE_FILE}` needs TensorFlow Lite's Flex delegate (select TensorFlow ops) for its string operations."""


def write_labels(class_names: tuple[str, ...] | list[str], path: Path) -> Path:
    path.write_text("\n".join(class_names) + "\n", encoding="utf-8")
    return path


def read_labels(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


def _convert_to_tflite(saved_model_dir: Path, target: Path, *, string_input: bool = False) -> Path:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if string_input:  # lower-casing, regex and splitting of strings exist only as select TensorFlow ops
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    target.write_bytes(converter.convert())
    return target


def export_model(
    model: keras.Model,
    class_names: tuple[str, ...] | list[str],
    out_dir: Path,
    card: ModelCard,
    *,
    formats: tuple[str, ...] = FORMATS,
) -> ExportBundle:
    """Write the bundle into `out_dir` (created; existing bundle files are replaced).

    Args:
        model: a classifier taking uint8 images or raw strings.
        class_names: index -> label, written to `labels.txt`.
        out_dir: target folder.
        card: what goes into `MODEL_CARD.md`.
        formats: any of "keras", "saved_model", "tflite" (TFLite is converted from the SavedModel).
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"Unknown export formats {sorted(unknown)}: choose from {', '.join(FORMATS)}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = inference_model(model)
    keras_path = saved_model_dir = tflite_path = None
    if "keras" in formats:
        keras_path = out_dir / KERAS_FILE
        keras_files.save_model(model, keras_path)
    if "saved_model" in formats or "tflite" in formats:
        saved_model_dir = out_dir / SAVED_MODEL_DIR
        if saved_model_dir.exists():
            shutil.rmtree(saved_model_dir)
        # tf.saved_model.save on a Keras 3 model writes no variables: model.export is the Keras 3 way.
        model.export(str(saved_model_dir), format="tf_saved_model", verbose=False)
    if "tflite" in formats:
        tflite_path = _convert_to_tflite(saved_model_dir, out_dir / TFLITE_FILE, string_input=model.input.dtype == "string")
        if "saved_model" not in formats:
            shutil.rmtree(saved_model_dir)
            saved_model_dir = None
    labels_path = write_labels(class_names, out_dir / LABELS_FILE)
    card_path = out_dir / MODEL_CARD_FILE
    card_path.write_text(card.to_markdown(), encoding="utf-8")
    return ExportBundle(out_dir, keras_path, saved_model_dir, tflite_path, labels_path, card_path)


def zip_bundle(bundle: ExportBundle, archive_base: Path) -> Path:
    """One .zip of the bundle folder, for a download button."""
    return Path(shutil.make_archive(os.fspath(archive_base), "zip", root_dir=bundle.folder))
