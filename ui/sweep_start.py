"""Starting a backbone sweep from the Runs page: the same sweep as `python -m tl_core sweep`, planned from the
Model page's settings, queued through the user's share of the server's queue, refused in the app's words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import TransferLabError
from tl_core.jobs.sweep import SweepPlan, check_plan, start_sweep
from tl_core.jobs.sweep_record import SweepRecord
from tl_core.modalities import get_modality
from tl_core.models.registry import get_backbone_spec
from tl_core.runs.store import RunStore
from ui.settings import mode_label
from ui.state import UserJobs


def app_sweep_plan(
    dataset: str, modality: str, backbones: Sequence[str], modes: Sequence[str], model: ModelConfig, train: TrainConfig
) -> tuple[SweepPlan, RunConfig]:
    """The plan (epochs, image size, batch size, seed from the Model page) and the template of every run (its head,
    learning rate and the rest). Random weights stay random; any other start (ImageNet, a file, another run's
    backbone) fits one architecture only, so each backbone starts from its own pretrained weights."""
    plan = SweepPlan(
        source=dataset,
        backbones=tuple(backbones),
        modes=tuple(modes),
        epochs=train.epochs,
        image_size=model.image_size,
        weights="none" if model.weights == "none" else None,
        seed=train.seed,
        batch_size=train.batch_size,
        fine_tune_epochs=train.fine_tune_epochs,
    )
    return plan, RunConfig(data=DataConfig(source=dataset, modality=modality), model=model, train=train)


def plan_problems(plan: SweepPlan, modality: str, offline: Mapping[str, bool]) -> list[str]:
    """Every entry of the plan that cannot run here, each named as the page shows it (`MobileNetV3Small: cannot
    train text ...`); empty when it can start.

    Args:
        offline: backbone name -> whether its pretrained weights are installed (no download).
    """
    problems = []
    for problem in check_plan(plan, modality, get_modality(modality).default_backbone):
        name = _backbone_name(problem.entry) if problem.flag == "--backbones" else mode_label(problem.entry, short=True)
        problems.append(f"{name}: {problem.reason}")
    if plan.weights != "none":
        for backbone in plan.backbones:
            if offline.get(backbone) is False:
                problems.append(
                    f"{_backbone_name(backbone)}: its pretrained weights are not installed on this server "
                    "(pick another backbone, or random weights on the Model page)"
                )
    return problems


def start_app_sweep(store: RunStore, jobs: UserJobs, plan: SweepPlan, template: RunConfig, backend: str) -> SweepRecord:
    """Queue every run of `plan` for the signed-in user; all are refused when one is (limits, disk, queue share).

    Raises:
        TransferLabError: the user may not read the data, a run passes a limit or their queue share, the data
            cannot be split; nothing was queued.
    """
    return start_sweep(
        plan,
        store,
        jobs.submit,
        backend=backend,
        template=template,
        readable_roots=jobs.readable_roots(),
        admit=jobs.check_batch,
    )


def _backbone_name(name: str) -> str:
    try:
        return get_backbone_spec(name).display_name
    except TransferLabError:
        return name
