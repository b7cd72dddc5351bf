"""The limits a trainer sets for every run on a workshop server: model size, image size, epochs, run time.

`check_run_limits` says, before a run is queued, every way its settings are over the limits (the value,
the limit and what to change); the Model page shows that instead of "Ready" and `JobManager.submit`
refuses such a run. The run time is only known while a run runs: the job manager ends a run that
passes `max_run_minutes` (see `JobManager`). The limits hold for everyone on the server, trainers
included: a trainer who needs a bigger run raises them in `transferlab.toml`.

Parameters are counted without building anything: the backbone's count from the registry (all of its
layers, frozen or not; with a cut layer this is an upper bound) plus the head's Dense layers, computed
from the feature size, the hidden units and the number of classes (2 when unknown, the least a
classifier has).

Example:
    >>> limits = RunLimits(max_model_parameters=100_000_000, max_image_size=320, max_epochs=100)
    >>> check_run_limits(ModelConfig(image_size=1024), TrainConfig(epochs=500), limits)
    ['Image size 1024 px is over ...', '500 epochs planned ...']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tl_core.config import ModelConfig, RunConfig, TrainConfig
from tl_core.errors import TransferLabError
from tl_core.jobs.queue import PROGRESSIVE_STAGES_GUESS, planned_epochs
from tl_core.modalities import get_modality
from tl_core.server.settings import ServerSettings

MIN_CLASSES = 2


class RunLimitError(TransferLabError):
    """A run's settings are over the server's limits; `problems` holds one sentence per limit passed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            "These settings are over this server's limits (set by the trainer):\n"
            + "\n".join(f"• {p}" for p in problems)
        )


@dataclass(frozen=True)
class RunLimits:
    """The most one run may ask for; None switches a limit off (personal mode has none unless set).

    Args:
        max_model_parameters: parameters of the model a run builds: the whole backbone plus the head.
        max_image_size: largest image side in pixels (image runs).
        max_epochs: epochs over all phases of a run (head, fine-tune or unfrozen blocks), the
            from-scratch baseline's included.
        max_run_minutes: wall time from a job's start to its end, enforced by the job manager.
    """

    max_model_parameters: int | None = None
    max_image_size: int | None = None
    max_epochs: int | None = None
    max_run_minutes: float | None = None

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> RunLimits:
        """The limits these server settings set (none in personal mode unless set there)."""
        return cls(
            settings.max_model_parameters, settings.max_image_size, settings.max_epochs, settings.max_run_minutes
        )

    @property
    def max_run_s(self) -> float | None:
        return None if self.max_run_minutes is None else self.max_run_minutes * 60

    def describe(self) -> str:
        """The limits in one line for the pages ("" when there are none)."""
        parts = [
            f"images up to {self.max_image_size} px" if self.max_image_size else "",
            f"{self.max_epochs} epochs per run" if self.max_epochs else "",
            f"models up to {count_words(self.max_model_parameters)} parameters" if self.max_model_parameters else "",
            f"{duration_words(self.max_run_s)} per run" if self.max_run_s else "",
        ]
        return ", ".join(part for part in parts if part)


def count_words(count: int) -> str:
    """`3.36 billion`, `100 million`, `410,208`."""
    if count >= 1_000_000_000:
        return f"{count / 1e9:.3g} billion"
    if count >= 1_000_000:
        return f"{count / 1e6:.3g} million"
    return f"{count:,}"


def duration_words(seconds: float) -> str:
    """`30 min`, `1.5 min`, `3 s` (tests use limits of seconds)."""
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def model_parameters(model: ModelConfig, num_classes: int | None = None) -> tuple[int, int]:
    """(backbone, head) parameter counts of the model `model` describes, without building it.

    Args:
        model: the backbone (registry name) and head settings.
        num_classes: classes of the data; None counts the least a classifier has (2).

    Returns:
        The backbone's registry count (a TF Hub model's own parameters count as 0: known only once loaded)
        and the head's weights: its Dense weights and biases, and its feature normalisation's mean, variance and
        count (2 x features + 1, not trained but saved with the model).
    """
    from tl_core.models.registry import (
        get_backbone_spec,
    )  # the registry imports Keras; importing this module (ui.state, the queue) stays light

    spec = get_backbone_spec(model.backbone)
    widths = [spec.feature_dim, *model.head_hidden_units, num_classes or MIN_CLASSES]
    if not spec.feature_dim:  # a TF Hub model's feature size is known once it is loaded
        widths = widths[1:]
    head = sum(inputs * outputs + outputs for inputs, outputs in zip(widths, widths[1:]))
    normalization = 2 * spec.feature_dim + 1 if spec.feature_dim else 0
    return spec.parameters, head + normalization


def _image_size(model: ModelConfig) -> int | None:
    """The side images are resized to (None when the model reads tokens): the one set, else the backbone's default."""
    from tl_core.models.registry import get_backbone_spec  # see model_parameters

    spec = get_backbone_spec(model.backbone)
    return (model.image_size or spec.default_size) if get_modality(spec.modality).uses_image_size else None


def epochs_planned(model: ModelConfig, train: TrainConfig) -> tuple[int, str]:
    """Epochs the run trains over all its phases, and how they add up in words."""
    epochs = planned_epochs({"train": dataclasses.asdict(train)})
    if train.mode in ("fine-tune", "full"):
        how = f"head {train.epochs} + fine-tune {train.fine_tune_epochs}"
    elif train.mode == "progressive":
        stages = train.max_stages or PROGRESSIVE_STAGES_GUESS
        how = f"head {train.epochs} + {train.stage_epochs} per block x {stages} blocks" + (
            "" if train.max_stages else " (assumed)"
        )
    else:
        how = f"head {train.epochs}"
    if train.compare_scratch and model.weights != "none":  # the baseline trains the same budget again
        epochs, how = 2 * epochs, f"({how}) x 2 with the from-scratch baseline"
    return epochs, how


def check_run_limits(
    model: ModelConfig, train: TrainConfig, limits: RunLimits, *, num_classes: int | None = None
) -> list[str]:
    """Every limit these settings pass, one sentence each with the value, the limit and the fix; [] when within all.

    Args:
        model: the model settings (backbone, image size, head).
        train: the training settings (mode and epochs).
        limits: the server's limits.
        num_classes: the data's classes when known (the head's last layer), else 2.

    Raises:
        BackboneError: an unknown backbone (looked up only when an image size or parameter limit is set).
    """
    problems = []
    if (
        limits.max_image_size is not None
        and (image_size := _image_size(model)) is not None
        and image_size > limits.max_image_size
    ):
        default = "" if model.image_size else " (the backbone's default)"
        problems.append(
            f"Image size {image_size} px{default} is over the limit of {limits.max_image_size} px: choose {limits.max_image_size} px or less "
            "(smaller images train faster; 96-224 px suits most backbones)."
        )
    if limits.max_epochs is not None:
        epochs, how = epochs_planned(model, train)
        if epochs > limits.max_epochs:
            problems.append(
                f"{epochs} epochs planned ({how}) is over the limit of {limits.max_epochs}: plan {limits.max_epochs} or fewer in all "
                "(early stopping usually ends a run long before that)."
            )
    if limits.max_model_parameters is not None:
        backbone, head = model_parameters(model, num_classes)
        if backbone + head > limits.max_model_parameters:
            problems.append(
                f"The model would have {count_words(backbone + head)} parameters (backbone {count_words(backbone)}, head "
                f"{count_words(head)}), over the limit of {count_words(limits.max_model_parameters)}: "
                + (
                    "use fewer and smaller hidden layers (e.g. 256, or none) or a smaller backbone."
                    if head > backbone
                    else "choose a smaller backbone."
                )
            )
    return problems


def require_within_limits(config: RunConfig, limits: RunLimits) -> None:
    """Refuse a run whose settings pass any limit (see `check_run_limits`).

    Raises:
        RunLimitError: listing every limit passed.
    """
    problems = check_run_limits(config.model, config.train, limits)
    if problems:
        raise RunLimitError(problems)


def run_time_message(limits: RunLimits) -> str:
    """Why a run was ended at the run-time limit, and what to do."""
    return (
        f"Ended at this server's run-time limit of {duration_words(limits.max_run_s or 0)} per run. Its log and whatever it trained "
        "so far (best weights, checkpoint) are kept. To finish within the limit, plan fewer epochs, use smaller images, "
        "or choose feature extraction (the fastest mode)."
    )
