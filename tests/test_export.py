"""Every exported form loads without TransferLab and predicts what the in-memory model predicts."""

import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tl_core.config import ModelConfig  # noqa: E402
from tl_core.models.transfer_model import build_transfer_model  # noqa: E402
from tl_core.results.export import ModelCard, export_model, read_labels  # noqa: E402


def test_bundle_round_trips(tmp_path):
    tm = build_transfer_model(ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32, augment=True), 3)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    expected = tm.model.predict(images, verbose=0)
    card = ModelCard(
        "shapes",
        "mobilenet_v2_035",
        "none",
        "random",
        "feature-extraction",
        32,
        ("a", "b", "c"),
        {"a": 1},
        {"x": 1},
        {"test_accuracy": 0.9},
    )
    bundle = export_model(tm.model, ("a", "b", "c"), tmp_path / "bundle", card)

    assert read_labels(bundle.labels_path) == ["a", "b", "c"]
    assert "test_accuracy | 0.9000" in bundle.model_card_path.read_text()

    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, keras
        assert "tl_core" not in sys.modules
        model = keras.saving.load_model(r"{bundle.keras_path}", safe_mode=True)
        np.save(r"{tmp_path / "keras_out.npy"}", model.predict(np.load(r"{tmp_path / "images.npy"}"), verbose=0))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    np.testing.assert_allclose(np.load(tmp_path / "keras_out.npy"), expected, atol=1e-5)

    saved = tf.saved_model.load(str(bundle.saved_model_dir))
    np.testing.assert_allclose(saved.serve(tf.constant(images)).numpy(), expected, atol=1e-5)

    interpreter = tf.lite.Interpreter(model_path=str(bundle.tflite_path))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    np.testing.assert_allclose(
        interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), expected, atol=1e-4
    )
