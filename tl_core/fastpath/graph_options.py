"""Graph-function options for one-off graphs on CPU: skip Grappler's rewrites where they cost more than they save.

Grappler rewrites a `tf.function`'s graph the first time it runs. For the graphs a run calls once or for a few
seconds (the backbone's inference graph for the feature cache, the head's epoch loop) that rewrite is pure set-up
time on CPU: measured 0.2-0.45 s for EfficientNet-Lite0 and ResNet50 at 128 px and ~0.1 s for the head, with no
faster batches afterwards and identical outputs. On a GPU its layout and fusion rewrites pay, so they stay.
The options live in TensorFlow's private eager context (`tensorflow.python.eager.context`); with the fast path
off (`TRANSFERLAB_FASTPATH=0`) the block changes nothing and every graph gets TensorFlow's default rewrites.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tensorflow as tf

from tl_core import fastpath


@contextlib.contextmanager
def without_graph_rewrites() -> Iterator[None]:
    """Graph functions first run inside this block, in this thread, skip Grappler (CPU only; a no-op with a GPU
    or with the fast path off).

    The options are the calling thread's `function_call_options` (each concrete function is optimised
    at its first call with them), so work in other threads keeps every rewrite.
    """
    if not fastpath.enabled():
        yield
        return
    # Private modules imported here, past the switch: a TensorFlow that moved them still runs with the fast path off.
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context as eager_context

    context = eager_context.context()
    if tf.config.list_logical_devices("GPU") or not hasattr(context, "function_call_options"):
        yield
        return
    previous = context.function_call_options
    config = config_pb2.ConfigProto.FromString(previous.config_proto_serialized)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    context.function_call_options = eager_context.FunctionCallOptions(
        executor_type=previous.executor_type, config_proto=config
    )
    try:
        yield
    finally:
        context.function_call_options = previous
