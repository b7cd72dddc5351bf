"""Export bundles: `model.keras`, a SavedModel, a TFLite file, `labels.json`, `labels.txt` and a model card.

Every form carries its own preprocessing: image models take uint8 RGB images of the model's input
size, text models take raw strings (tokenisation is inside the model), so a user needs neither
TransferLab nor the backbone's `preprocess_input` to use the SavedModel:

    model = keras.saving.load_model("bundle/model.keras")
    probabilities = model.predict(images_uint8)
    labels = json.load(open("bundle/labels.json"))  # index -> class name

Names come from users (class folders, run names): the model card shows them as literal text (no HTML,
link or bidi control survives) and holds no absolute path of the machine that trained the model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import keras
import tensorflow as tf

from tl_core.errors import DataError
from tl_core.layout import (
    EXPORT_FORMATS,
    KERAS_FILE,
    LABELS_FILE,
    LABELS_JSON_FILE,
    MODEL_CARD_FILE,
    SAVED_MODEL_DIR,
    TFLITE_FILE,
)
from tl_core.modalities import get_modality
from tl_core.models import keras_files
from tl_core.models.transfer_model import inference_model
from tl_core.results.labels import read_labels  # noqa: F401 - re-exported: bundles and older callers read labels here
from tl_core.text_safety import control_characters, describe_characters, markdown_text, visible_controls

FORMATS = EXPORT_FORMATS


@dataclass(frozen=True)
class ExportBundle:
    folder: Path
    keras_path: Path | None
    saved_model_dir: Path | None
    tflite_path: Path | None
    labels_path: Path  # labels.txt; labels.json beside it
    model_card_path: Path
    tflite_note: str | None = None  # why no TFLite file was written although it was asked for

    @property
    def labels_json_path(self) -> Path:
        return self.labels_path.with_name(LABELS_JSON_FILE)

    def files(self) -> list[Path]:
        paths = (
            self.keras_path,
            self.saved_model_dir,
            self.tflite_path,
            self.labels_json_path,
            self.labels_path,
            self.model_card_path,
        )
        return [p for p in paths if p]


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
        """The card as Markdown: every name from a user is literal text, the configuration holds no absolute path."""
        metric_rows = "\n".join(
            f"| {markdown_text(name)} | {value:.4f} |"
            for name, value in sorted(self.metrics.items())
            if isinstance(value, (int, float))
        )
        class_rows = "\n".join(
            f"| {markdown_text(name)} | {self.class_counts.get(name, '')} |" for name in self.class_names
        )
        lineage = (
            f"\n- Started from run {markdown_text(self.parent_run_id)} (domain-specific weights)."
            if self.parent_run_id
            else ""
        )
        modality = get_modality(self.modality)
        config = portable_config(self.config)
        source = (config.get("data") or {}).get("source") if isinstance(config.get("data"), dict) else None
        return f"""# {markdown_text(self.title)}

Trained with TransferLab{f" (run {markdown_text(self.run_id)})" if self.run_id else ""}.

## Model
- Backbone: {markdown_text(self.backbone)}, weights {markdown_text(self.weights)} — {markdown_text(self.weights_provenance)}{lineage}
- Mode: {markdown_text(self.mode)}
- Input: {modality.model_input.format(size=self.image_size)}.
- Output: softmax over {len(self.class_names)} classes, in the order of `{LABELS_JSON_FILE}` (and `{LABELS_FILE}`, one name per line).

## Data
- Dataset: {markdown_text(source) if source else "unknown"}
- Dataset fingerprint: {markdown_text(self.dataset_fingerprint or "unknown")}

| class | {modality.noun}s |
|---|---|
{class_rows}

## Metrics
| metric | value |
|---|---|
{metric_rows}

## Configuration
```json
{inert_json(config)}
```

## Use
{modality.export_usage.format(size=self.image_size)}

## Limits
Trained on the classes above only: any input is assigned one of them. Check the per-class metrics
before relying on a class, and re-evaluate on data from where the model will be used.
"""


# Inside a JSON string these become \u escapes: still the same JSON value, but no HTML tag, link or code
# fence can be read into the text by a Markdown renderer that looks inside the code block.
_JSON_INERT = str.maketrans({character: f"\\u{ord(character):04x}" for character in "<>&[]()`"})
_JSON_STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def inert_json(value: Any) -> str:
    """`value` as indented JSON with only ASCII, and no `<`, `>`, `&`, brackets, parentheses or backticks inside strings."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True)
    return _JSON_STRING.sub(lambda match: match.group().translate(_JSON_INERT), text)


def portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with every absolute path (the dataset, a weights file) cut to its last part, the dataset's name.

    A model card travels with the model: it must not tell where the training machine keeps its files.
    """

    def portable(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: portable(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [portable(item) for item in value]
        if isinstance(value, str) and (PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute()):
            name = PureWindowsPath(value).name if PureWindowsPath(value).is_absolute() else PurePosixPath(value).name
            return name or "(a folder on the training machine)"
        return value

    return portable(config)


def write_labels(class_names: tuple[str, ...] | list[str], path: Path) -> Path:
    """Write `labels.txt` (one name per line, for people and other tools) at `path` and `labels.json` beside it.

    `labels.json` is what `read_labels` reads: a JSON list holds any name. A name that one line of
    `labels.txt` cannot hold (a line break, tab or other control character) is refused, so the two files
    never disagree; the dataset scan refuses such class names before training.

    Args:
        class_names: index -> class name, the order of the model's outputs.
        path: where `labels.txt` goes.

    Returns:
        `path`.

    Raises:
        DataError: a name is empty or holds a control character (names the class and what to do).
    """
    for index, name in enumerate(class_names):
        if not name:
            raise DataError(
                f"Class {index} has an empty name, which {LABELS_FILE} cannot hold: give every class a name, then train again."
            )
        if control_characters(name):
            held = describe_characters(control_characters(name))
            raise DataError(
                f"Class name '{visible_controls(name)}' cannot be written to {LABELS_FILE} (it holds {held}): rename the class "
                "folder (or fix the label in the CSV) without line breaks, tabs or other control characters, then train again."
            )
    names = list(class_names)
    path.with_name(LABELS_JSON_FILE).write_text(
        json.dumps(names, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    path.write_text("\n".join(names) + "\n", encoding="utf-8")
    return path


def _convert_to_tflite(saved_model_dir: Path, target: Path, *, string_input: bool = False) -> str | None:
    """Write the TFLite file; for string input, only when TFLite (with select TensorFlow ops) can carry the tokenizer.

    Returns:
        None when written, else why TFLite cannot carry the model (no file is left behind).
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if not string_input:
        target.write_bytes(converter.convert())
        return None
    # Lower-casing, regex and splitting of strings exist only as select TensorFlow ops.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    try:
        # The file needs TFLite's Flex delegate (the model card says so), which this Python interpreter lacks,
        # so a test run here would refuse even a good file; a tokenizer TFLite cannot carry fails right here.
        flat = converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; all mean "cannot"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return (
            "No TFLite file: TensorFlow Lite cannot run this model's tokenizer (its TensorFlow Text operations are "
            f"neither TFLite nor select TensorFlow ops; {reason}). Use the SavedModel (TensorFlow and tensorflow-text)."
        )
    target.write_bytes(flat)
    return None


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
        class_names: index -> label, written to `labels.json` and `labels.txt`; as many as the model's outputs.
        out_dir: target folder.
        card: what goes into `MODEL_CARD.md`.
        formats: any of "keras", "saved_model", "tflite" (TFLite is converted from the SavedModel).
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"Unknown export formats {sorted(unknown)}: choose from {', '.join(FORMATS)}.")
    if tuple(card.class_names) != tuple(class_names):
        raise ValueError("The model card must name the same classes, in the same order, as `class_names`.")
    model = inference_model(model)
    outputs = model.output_shape[-1]
    if outputs != len(class_names):
        raise DataError(
            f"The model has {outputs} outputs but its labels name {len(class_names)} classes, so predictions would be "
            "mislabelled: train the run again."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
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
    tflite_note = None
    if "tflite" in formats:
        tflite_path = out_dir / TFLITE_FILE
        tflite_path.unlink(missing_ok=True)  # an older bundle's file must not pass for this model's
        tflite_note = _convert_to_tflite(saved_model_dir, tflite_path, string_input=model.input.dtype == "string")
        if tflite_note is not None:
            tflite_path = None
        if "saved_model" not in formats:
            shutil.rmtree(saved_model_dir)
            saved_model_dir = None
    labels_path = write_labels(class_names, out_dir / LABELS_FILE)
    card_path = out_dir / MODEL_CARD_FILE
    card_path.write_text(card.to_markdown(), encoding="utf-8")
    return ExportBundle(out_dir, keras_path, saved_model_dir, tflite_path, labels_path, card_path, tflite_note)


def zip_bundle(bundle: ExportBundle, archive_base: Path) -> Path:
    """One .zip of the bundle folder, for a download button."""
    return Path(shutil.make_archive(os.fspath(archive_base), "zip", root_dir=bundle.folder))
