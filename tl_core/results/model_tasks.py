"""The model work the web server hands to its model worker (`tl_core.jobs.model_worker`): one function per task.

Each takes and returns plain, picklable values (paths as strings, `tl_core.results.file_problems` types),
so the server reads the answer without importing TensorFlow. Loaded models stay cached in the worker
process, keyed by the model file's modification time, so a second prediction with the same run is quick.
Imports of the engine are inside the functions: the server imports this module only to name them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from tl_core.layout import KERAS_FILE
from tl_core.results.file_problems import FilePrediction, Prediction
from tl_core.results.heatmaps import FileHeatmap
from tl_core.results.word_attributions import TextAttributions

CACHED_MODELS = 3  # a few runs at once (a class predicting with different runs) without holding every model
_classifiers: OrderedDict[tuple[str, str, int], Any] = OrderedDict()
_lock = threading.Lock()


def _classifier(workspace: str, run_id: str) -> Any:
    """The run's `LoadedClassifier`, loaded once per model file version (least recently used ones are dropped)."""
    from tl_core.results.predict import load_run_classifier
    from tl_core.runs.store import RunStore

    store = RunStore(workspace)
    path = store.run_dir(run_id) / KERAS_FILE
    key = (workspace, run_id, path.stat().st_mtime_ns if path.is_file() else 0)
    with _lock:
        if key in _classifiers:
            _classifiers.move_to_end(key)
            return _classifiers[key]
    classifier = load_run_classifier(store, run_id)
    with _lock:
        _classifiers[key] = classifier
        while len(_classifiers) > CACHED_MODELS:
            _classifiers.popitem(last=False)
    return classifier


def predict_run_files(workspace: str, run_id: str, paths: list[str], top_k: int) -> list[FilePrediction]:
    """Top-k labels of each file with a run's model; a file that cannot be read gets its problem instead."""
    from tl_core.results.predict import predict_each_file

    return predict_each_file(_classifier(workspace, run_id), [Path(path) for path in paths], top_k=top_k)


def predict_run_texts(workspace: str, run_id: str, texts: list[str], top_k: int) -> list[list[Prediction]]:
    """Top-k labels of each document (a string) with a text run's model."""
    from tl_core.results.predict import predict_texts

    return predict_texts(_classifier(workspace, run_id), texts, top_k=top_k)


def explain_run_files(
    workspace: str, run_id: str, paths: list[str], class_name: str | None = None
) -> list[FileHeatmap]:
    """A Grad-CAM heatmap per image file for the predicted class (or `class_name`); unreadable files get their problem.

    Raises:
        BackboneError: the run's backbone has no spatial feature map (`tl_core.results.grad_cam.NO_SPATIAL_MAP`).
    """
    from tl_core.results.explain import explain_each_file

    results = explain_each_file(_classifier(workspace, run_id), [Path(path) for path in paths], class_name=class_name)
    heatmaps = []
    for result in results:
        explained = result.explanation
        if explained is None:
            heatmaps.append(FileHeatmap(str(result.path), problem=result.problem))
            continue
        heatmaps.append(
            FileHeatmap(
                str(result.path),
                predicted=explained.predicted,
                probability=explained.probability,
                class_explained=explained.class_explained,
                heatmap=explained.heatmap.astype("float32"),
                peak=explained.peak,
                map_cells=explained.map_cells,
            )
        )
    return heatmaps


def attribute_run_text(workspace: str, run_id: str, text: str, class_name: str | None = None) -> TextAttributions:
    """Each word's attribution (occlusion) for the predicted class of a document, or for `class_name`."""
    from tl_core.results.word_attributions import attribute_words

    return attribute_words(_classifier(workspace, run_id), text, class_name)


def predict_imagenet(backbone: str, paths: list[str], top_k: int) -> list[list[tuple[str, float]]]:
    """Top-k of the 1,000 ImageNet classes for each image, with a packaged pretrained network and its own head."""
    from tl_core.models.weights.pretrained import predict_pretrained

    return predict_pretrained(backbone, [Path(path) for path in paths], top_k=top_k)


def export_run_zip(workspace: str, run_id: str, out_dir: str, formats: tuple[str, ...]) -> tuple[str, str | None]:
    """Write the run's export bundle in `out_dir` and zip it; returns the zip's path and the bundle's `tflite_note`."""
    from tl_core.results.bundle import export_run
    from tl_core.results.export import zip_bundle
    from tl_core.runs.store import RunStore

    bundle = export_run(RunStore(workspace), run_id, Path(out_dir) / "bundle", formats=tuple(formats))
    return str(zip_bundle(bundle, Path(out_dir) / "transferlab-model")), bundle.tflite_note


def cut_layer_names(backbone: str) -> tuple[tuple[str, ...], str]:
    """Where `backbone` can be cut (block outputs, shallow first) and its last layer.

    The backbone is built with random weights: layer names depend on neither the weights nor the image size.
    """
    from tl_core.models.blocks import candidate_cut_layers
    from tl_core.models.build import build_backbone
    from tl_core.models.registry import get_backbone_spec, resolve_image_size

    spec = get_backbone_spec(backbone)
    model = build_backbone(spec, "none", resolve_image_size(spec, None))
    return tuple(candidate_cut_layers(model)), model.layers[-1].name
