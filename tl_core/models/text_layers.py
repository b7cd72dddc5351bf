"""Layers shared by the text backbones: pooling token vectors into one vector per document.

A module of its own so the GloVe builder (`tl_core.models.text_backbones`) and the sentence encoder
(`tl_core.models.sentence_encoder`) share it without importing each other.
"""

from __future__ import annotations

from typing import Any

import keras

from tl_core.errors import BackboneError
from tl_core.models.text_specs import RESERVED_TOKENS


@keras.saving.register_keras_serializable(package="transferlab")
class MaskedPooling(keras.layers.Layer):
    """Mean (or max) of token vectors over the tokens with ids from `RESERVED_TOKENS` (2) up.

    For GloVe, ids 0 and 1 are padding and out-of-vocabulary words; for the sentence encoder, id 0 is [PAD]
    and id 1 never occurs, so the mean is the reference's attention-mask-weighted mean.

    Args:
        mode: "avg" or "max".
        **kwargs: Keras layer arguments.

    Call arguments: `[vectors (batch, tokens, dim), token_ids (batch, tokens)]`; a document with no
    known word pools to zeros.
    """

    def __init__(self, mode: str = "avg", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("avg", "max"):
            raise BackboneError(f"pooling={mode!r}: choose 'avg' or 'max'.")
        self.mode = mode

    def call(self, inputs: list[Any]) -> Any:
        vectors, token_ids = inputs
        known = keras.ops.cast(keras.ops.greater_equal(token_ids, RESERVED_TOKENS), vectors.dtype)[..., None]
        if self.mode == "max":
            lowest = keras.ops.min(vectors) - 1.0
            pooled = keras.ops.max(vectors * known + lowest * (1.0 - known), axis=1)
            return keras.ops.where(keras.ops.sum(known, axis=1) > 0, pooled, keras.ops.zeros_like(pooled))
        return keras.ops.sum(vectors * known, axis=1) / keras.ops.maximum(keras.ops.sum(known, axis=1), 1.0)

    def compute_output_shape(self, input_shapes: list[tuple[int | None, ...]]) -> tuple[int | None, ...]:
        return (input_shapes[0][0], input_shapes[0][-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}
