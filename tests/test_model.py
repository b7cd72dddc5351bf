import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tl_core.config import ModelConfig  # noqa: E402
from tl_core.models.transfer_model import FreezeBackbone, UnfreezeAll, UnfreezeTop, build_transfer_model, is_batch_norm  # noqa: E402

TINY = ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=48, head_hidden_units=(16,))


def test_classifier_takes_uint8_and_outputs_probabilities():
    tm = build_transfer_model(TINY, 4)
    images = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    probabilities = keras.ops.convert_to_numpy(tm.model(images))
    assert probabilities.shape == (2, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert tm.feature_extractor.output.shape[-1] == tm.feature_dim == 1280
    assert tm.model.get_layer("backbone") is tm.backbone
    assert not tm.backbone.trainable


def test_freeze_policies_set_trainable_flags_and_keep_batch_norm_frozen():
    tm = build_transfer_model(TINY, 3)
    FreezeBackbone().apply(tm.backbone)
    assert tm.backbone.trainable_weights == []
    assert tm.head.trainable_weights

    description = UnfreezeTop(5).apply(tm.backbone)
    trainable = [layer for layer in tm.backbone.layers if layer.trainable and layer.weights]
    assert len(trainable) == 5 and "top 5" in description
    assert not any(is_batch_norm(layer) for layer in trainable)
    assert (
        trainable[-1].name
        == [layer for layer in tm.backbone.layers if layer.weights and not is_batch_norm(layer)][-1].name
    )

    UnfreezeAll().apply(tm.backbone)
    assert all(layer.trainable != is_batch_norm(layer) for layer in tm.backbone.layers if layer.weights)


def test_max_pooling_and_cut_layer_change_the_features():
    avg = build_transfer_model(TINY, 2)
    cut = build_transfer_model(
        ModelConfig(
            backbone="mobilenet_v2_035", weights="none", image_size=48, cut_layer="block_6_expand_relu", pooling="max"
        ),
        2,
    )
    assert cut.feature_dim != avg.feature_dim
    assert cut.model.get_layer("pooling").__class__.__name__ == "GlobalMaxPooling2D"
