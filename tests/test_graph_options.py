"""Skipping Grappler for one-off graphs: same results, only in the calling thread, restored afterwards; nothing
changed with the fast path off. They turn the fast path on whatever `TRANSFERLAB_FASTPATH` says, unless a test turns it off."""

import os
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import config_pb2  # noqa: E402
from tensorflow.python.eager import context as eager_context  # noqa: E402

from tl_core.config import ModelConfig  # noqa: E402
from tl_core.fastpath.graph_options import without_graph_rewrites  # noqa: E402
from tl_core.models.transfer_model import build_transfer_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("fastpath_on")


def _meta_optimizer_disabled() -> bool:
    serialized = eager_context.context().function_call_options.config_proto_serialized
    return config_pb2.ConfigProto.FromString(serialized).graph_options.rewrite_options.disable_meta_optimizer


def test_only_this_thread_skips_the_rewrites_and_only_inside_the_block() -> None:
    seen_elsewhere: list[bool] = []
    assert not _meta_optimizer_disabled()
    with without_graph_rewrites():
        assert _meta_optimizer_disabled()
        other = threading.Thread(target=lambda: seen_elsewhere.append(_meta_optimizer_disabled()))
        other.start()
        other.join()
    assert seen_elsewhere == [False]
    assert not _meta_optimizer_disabled()


def test_with_the_fast_path_off_the_block_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_FASTPATH", "0")
    with without_graph_rewrites():
        assert not _meta_optimizer_disabled()


def test_a_backbone_gives_the_same_features_with_and_without_the_rewrites() -> None:
    model = build_transfer_model(
        ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32), 2
    ).feature_extractor
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    rewritten = tf.function(lambda batch: model(batch, training=False))(images)
    with without_graph_rewrites():
        plain = tf.function(lambda batch: model(batch, training=False))(images)
    np.testing.assert_allclose(plain.numpy(), rewritten.numpy(), atol=1e-5)
