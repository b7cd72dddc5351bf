"""What the advisor measures, as plain data: a recommendation (`Advice`) and a cut-depth comparison (`CutDepths`).

Advisory jobs write these as JSON into the user's workspace (tl_core/jobs/advisory.py) and the Model page
reads them back, so this module imports neither TensorFlow nor the engine.

Example:
    >>> advice = Advice.from_dict(json.loads(text))
    >>> advice.recommended_mode, advice.estimates["full"].estimated_seconds
    ('feature-extraction', 512.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEPTH_FRACTIONS = (
    0.25,
    0.5,
    0.75,
)  # where the cut-depth probe looks along the block outputs by default, besides the last layer


@dataclass(frozen=True)
class ModeEstimate:
    """Estimated seconds for one mode (every epoch run, plus evaluation) and the throughput that dominates it:
    feature extraction over images for `feature-extraction`, training with the top layers unfrozen for
    `fine-tune`, fully unfrozen for `full`."""

    mode: str
    estimated_seconds: float
    images_per_second: float


@dataclass(frozen=True)
class Advice:
    """The recommendation, the sentences that justify it and the measurements behind them."""

    recommended_mode: str
    reasons: tuple[str, ...]
    estimates: dict[str, ModeEstimate]
    probe_accuracy: float | None
    separability: float | None  # trace(between-class scatter) / trace(within-class scatter)
    pretrained_entropy: float | None  # mean ImageNet-head entropy / log(1000), in [0, 1]
    train_images: int
    num_classes: int
    chance_accuracy: float | None = None  # the probe's majority-class baseline
    backbone: str = ""
    image_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus `estimated_seconds` and `images_per_second` as {mode: value}."""
        raw = dataclasses.asdict(self)
        raw["reasons"] = list(self.reasons)
        raw["estimated_seconds"] = {mode: e.estimated_seconds for mode, e in self.estimates.items()}
        raw["images_per_second"] = {mode: e.images_per_second for mode, e in self.estimates.items()}
        return raw

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Advice:
        """Rebuild from `to_dict()` output; keys it does not know are ignored."""
        known = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in raw.items() if key in known}
        values["reasons"] = tuple(values.get("reasons", ()))
        values["estimates"] = {
            mode: ModeEstimate(**estimate) for mode, estimate in (values.get("estimates") or {}).items()
        }
        return cls(**values)


@dataclass(frozen=True)
class CutDepths:
    """Linear-probe validation accuracy per cut layer, in the order probed (shallow first, the last layer last)."""

    measured: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"depths": [{"layer": layer, "probe_accuracy": accuracy} for layer, accuracy in self.measured]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CutDepths:
        return cls(tuple((str(row["layer"]), float(row["probe_accuracy"])) for row in raw.get("depths", ())))


@dataclass(frozen=True)
class RecipeEstimate:
    """One text recipe (a backbone and a mode) and its estimated run time on the user's documents.

    `documents_per_second` is the frozen backbone's encoding rate; `timed_here` says whether it was timed on a
    sample of the user's documents on this machine (else a reference rate from bench/, on 2 idle cores).
    `estimated_seconds` is None when the backbone's weights are not installed.
    """

    label: str
    backbone: str
    weights: str
    mode: str
    estimated_seconds: float | None
    documents_per_second: float | None
    timed_here: bool


@dataclass(frozen=True)
class TextAdvice:
    """The text advisor's recommendation: which backbone and mode, why, and each recipe's estimated time."""

    recommended: RecipeEstimate
    reasons: tuple[str, ...]
    recipes: tuple[RecipeEstimate, ...]
    documents: int
    num_classes: int
    sequence_length: int
    modality: str = "text"

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        raw["reasons"] = list(self.reasons)
        raw["recipes"] = [dataclasses.asdict(recipe) for recipe in self.recipes]
        return raw

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TextAdvice:
        """Rebuild from `to_dict()` output."""
        return cls(
            recommended=RecipeEstimate(**raw["recommended"]),
            reasons=tuple(raw.get("reasons", ())),
            recipes=tuple(RecipeEstimate(**recipe) for recipe in raw.get("recipes", ())),
            documents=int(raw["documents"]),
            num_classes=int(raw["num_classes"]),
            sequence_length=int(raw["sequence_length"]),
        )
