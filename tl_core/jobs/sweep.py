"""Backbone sweeps: one split, one run per backbone x mode, all queued at once on a job backend, ranked as they end.

A fair comparison needs every run to train and test on the same examples. A run's split is derived from
its data config (source, fractions, seed) and the scanned examples, so the sweep scans the data once,
records that split in `<workspace>/sweeps/<sweep id>/sweep.json`, and gives every run the very same data
config: each run then derives the same split and records the same dataset fingerprint (the sweep checks
both when the runs end). Every run is an ordinary run in the store, queued through whatever `submit` it is
given (the CLI: a `JobManager`; the app: the user's share of the server's queue, with its checks), so the
backend decides how many run at once (the local worker processes: the machine's device slots; Ray: the
cluster's capacity).

Starting and following are apart: `start_sweep` queues the runs and returns; `tl_core.jobs.sweep_record` reads
the sweep back as a leaderboard (the app redraws it while the runs train) and writes its final result.
`run_sweep` (the CLI) does both and waits.

Example:
    >>> plan = SweepPlan("flowers/", backbones=("mobilenet_v2", "efficientnet_lite0"))
    >>> result = run_sweep(plan, store, manager, on_finish=lambda run, board: print(run.backbone))
    >>> result.to_dict()["best_run_id"]
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from tl_core.config import MODES, DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.prep import prepare_dataset
from tl_core.data.types import SPLIT_NAMES
from tl_core.errors import BackboneError, TransferLabError
from tl_core.jobs.manager import JobManager
from tl_core.jobs.sweep_record import (
    DELETED,
    SweepRecord,
    SweepResult,
    SweepRun,
    finish_sweep,
    leaderboard,
    read_sweep,
    stored_run,
    sweep_folder,
    sweep_runs,
    write_record,
)
from tl_core.modalities import get_modality, resolve_modality
from tl_core.models.registry import backbone_for_data, get_backbone_spec
from tl_core.models.spec import BackboneSpec
from tl_core.runs.paired import compare_pair, run_accuracy
from tl_core.runs.store import RunStore

SWEEP_OWNER = "local"


class SweepError(TransferLabError):
    """A sweep's request is wrong (unknown backbones, modes a backbone cannot train): nothing was started."""


@dataclass(frozen=True)
class SweepPlan:
    """What to compare: every backbone in every mode, on one dataset and one split.

    Args:
        source: the dataset (folder, archive or CSV), as `train DATA` takes it.
        backbones: registry names (`python -m tl_core backbones --all`).
        modes: training modes (`feature-extraction`, `fine-tune`, ...), each run for every backbone.
        epochs: head epochs of every run (fine-tune mode adds `fine_tune_epochs`).
        image_size: input side for every run; None: each backbone's default.
        weights: weights for every run; None: each backbone's pretrained weights.
        seed: the split's and the training's seed, the same for every run.
    """

    source: str
    backbones: tuple[str, ...]
    modes: tuple[str, ...] = ("feature-extraction",)
    epochs: int = 5
    image_size: int | None = None
    weights: str | None = None
    seed: int = 42
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    batch_size: int = 32
    fine_tune_epochs: int = 5


def format_leaderboard(runs: list[SweepRun], intervals: dict[str, tuple[float, float]] | None = None) -> str:
    """The leaderboard as a text table, best first; `intervals`: run id -> 95% interval of its test accuracy."""
    intervals = intervals or {}
    lines = [
        f"{'#':>2} {'backbone':<22} {'mode':<18} {'status':<10} {'test acc':>8} {'95% interval':>12} {'val acc':>7} "
        f"{'time':>7}  node"
    ]
    for place, run in enumerate(leaderboard(runs), start=1):
        test, val = ("-" if value is None else f"{value:.3f}" for value in (run.test_accuracy, run.val_accuracy))
        low_high = intervals.get(run.run_id)
        interval = "-" if low_high is None else f"{low_high[0]:.3f}-{low_high[1]:.3f}"
        elapsed = "-" if run.elapsed_s is None else f"{run.elapsed_s:.0f}s"
        lines.append(
            f"{place:>2} {run.backbone:<22} {run.mode:<18} {run.status:<10} {test:>8} {interval:>12} {val:>7} "
            f"{elapsed:>7}  {run.node or '-'}"
        )
    return "\n".join(lines)


def test_intervals(store: RunStore, runs: list[SweepRun]) -> dict[str, tuple[float, float]]:
    """The 95% (Wilson) interval of each completed run's test accuracy, from its evaluation's test count."""
    intervals = {}
    for run in runs:
        if run.status == "completed":
            accuracy = run_accuracy(store, store.get(run.run_id))
            if accuracy is not None:
                intervals[run.run_id] = accuracy.interval
    return intervals


def best_against_runner_up(store: RunStore, runs: list[SweepRun]) -> str | None:
    """McNemar's verdict on the two best completed runs (one split: same test examples); None with fewer than two."""
    completed = [run for run in leaderboard(runs) if run.status == "completed"]
    if len(completed) < 2:
        return None
    return compare_pair(store, completed[0].run_id, completed[1].run_id).verdict


def parse_list(text: str, flag: str) -> tuple[str, ...]:
    """`a,b,c` as a tuple without blanks or repeats; refuses an empty list, naming `flag`."""
    items = tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    if not items:
        raise SweepError(f"{flag} is empty: pass a comma-separated list, e.g. {flag} mobilenet_v2,efficientnet_lite0.")
    return items


@dataclass(frozen=True)
class PlanProblem:
    """One entry of a plan that cannot run.

    Attributes:
        flag: the CLI option that named it (`--backbones` or `--modes`).
        entry: the backbone or mode as given.
        reason: what is wrong in a few plain words (`unknown backbone`, `cannot train text`), for the app.
        detail: the whole message, with how to fix it on the command line.
    """

    flag: str
    entry: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.flag} {self.entry}: {self.detail}"


def check_plan(plan: SweepPlan, modality: str, default_backbone: str) -> list[PlanProblem]:
    """Every problem with the plan's backbones and modes; empty when the plan can start."""
    problems = []
    for name in plan.backbones:
        try:
            backbone_for_data(name, modality, default_backbone)
        except BackboneError as exc:
            try:
                other = get_backbone_spec(name).modality
            except BackboneError:
                problems.append(PlanProblem("--backbones", name, "unknown backbone", str(exc)))
            else:
                reason = f"cannot train {modality} (it is a backbone for {other})"
                problems.append(PlanProblem("--backbones", name, reason, str(exc)))
    for mode in plan.modes:
        if mode not in MODES:
            detail = f"unknown training mode; choose from {', '.join(MODES)}."
            problems.append(PlanProblem("--modes", mode, "unknown training mode", detail))
    return problems


def validate_plan(plan: SweepPlan) -> str:
    """The dataset's modality, once every backbone and mode of the plan is known to fit it.

    Raises:
        SweepError: every unknown backbone, backbone for other data and unknown mode, each with its flag.
    """
    modality = get_modality(resolve_modality(plan.source))
    problems = check_plan(plan, modality.name, modality.default_backbone)
    if problems:
        raise SweepError("Nothing was started: " + " ".join(str(problem) for problem in problems))
    return modality.name


def fitted_size(image_size: int | None, spec: BackboneSpec) -> int | None:
    """`image_size` moved into the backbone's range (None: the backbone's default; text backbones take none)."""
    if image_size is None or spec.modality != "image":
        return image_size
    size = max(image_size, spec.min_size)
    return size if spec.max_size is None else min(size, spec.max_size)


def run_configs(
    plan: SweepPlan,
    modality: str,
    sweep_id: str,
    template: RunConfig | None = None,
    readable_roots: Sequence[str] = (),
) -> list[RunConfig]:
    """One run config per backbone x mode, all with the same data config (hence the same split).

    Args:
        template: the settings every run starts from (the app: the Model page's head, learning rate, ...); its
            backbone, weights, image size, mode, epochs, batch size and seed are the plan's, its data the sweep's,
            and a cut layer is dropped (it names one backbone's layer). None: the defaults.
        readable_roots: the folders the data may name files in (a workshop user's); empty: any.
    """
    data = DataConfig(
        source=plan.source,
        val_fraction=plan.val_fraction,
        test_fraction=plan.test_fraction,
        seed=plan.seed,
        modality=modality,
        readable_roots=tuple(readable_roots),
    )
    model_template = template.model if template else ModelConfig()
    train_template = template.train if template else TrainConfig()
    configs = []
    for backbone in plan.backbones:
        spec = backbone_for_data(backbone, modality, backbone)
        model = dataclasses.replace(
            model_template,
            backbone=backbone,
            weights=plan.weights or spec.pretrained_weights,
            image_size=fitted_size(plan.image_size, spec),
            cut_layer=None,
        )
        for mode in plan.modes:
            train = dataclasses.replace(
                train_template,
                mode=mode,
                epochs=plan.epochs,
                fine_tune_epochs=plan.fine_tune_epochs,
                batch_size=plan.batch_size,
                seed=plan.seed,
            )
            # Backbone first: lists and legends that cut long names still tell the runs apart.
            name = f"{backbone} · {mode} · sweep {short_sweep_id(sweep_id)}"
            configs.append(RunConfig(data=data, model=model, train=train, name=name))
    return configs


def short_sweep_id(sweep_id: str) -> str:
    """The random end of a sweep id (`20261206-155530-f5f9` -> `f5f9`), for run names and pickers."""
    return sweep_id.rsplit("-", 1)[-1]


def new_sweep_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def start_sweep(
    plan: SweepPlan,
    store: RunStore,
    submit: Callable[[RunConfig], str],
    *,
    backend: str = "local",
    sweep_id: str | None = None,
    template: RunConfig | None = None,
    readable_roots: Sequence[str] = (),
    admit: Callable[[list[RunConfig]], None] | None = None,
) -> SweepRecord:
    """Check the plan, record the split once and queue every run; returns at once (follow it with `sweep_runs`).

    Args:
        plan: the backbones, modes and data.
        store: the run store every run is recorded in; the record goes to `<workspace>/sweeps/<id>/sweep.json`.
        submit: queues one run and returns its id (a `JobManager`'s submit, or the app's per-user one).
        backend: the backend's name, as the record reports it.
        sweep_id: the sweep's id (default: a new one).
        template, readable_roots: see `run_configs`.
        admit: called with every run's config before the data is scanned or anything queued; raises to refuse
            the whole sweep (the app: the user's limits and share of the queue).

    Returns:
        The sweep's record, every run queued.

    Raises:
        SweepError: unknown backbones or modes (all named) before anything is queued.
        DataError: the dataset cannot be read or split.
    """
    modality = validate_plan(plan)
    sweep_id = sweep_id or new_sweep_id()
    configs = run_configs(plan, modality, sweep_id, template, readable_roots)
    if admit is not None:
        admit(configs)
    prepared = prepare_dataset(configs[0].data, store)  # scanned once; each run reuses the workspace's scan
    record: dict = {
        "sweep_id": sweep_id,
        "backend": backend,
        "plan": asdict(plan),
        "dataset_fingerprint": prepared.report.fingerprint,
        "split": {name: sorted(e.relpath for e in prepared.split.examples(name)) for name in SPLIT_NAMES},
        "started_at": time.time(),
        "runs": [],
    }
    folder = sweep_folder(store, sweep_id)
    for config in configs:
        record["runs"].append(submit(config))
        write_record(folder, record)  # a run is in the record as soon as it is queued
    return read_sweep(store, sweep_id)


def run_sweep(
    plan: SweepPlan,
    store: RunStore,
    manager: JobManager,
    *,
    backend: str = "local",
    sweep_id: str | None = None,
    on_finish: Callable[[SweepRun, list[SweepRun]], None] | None = None,
    poll_interval_s: float = 0.5,
) -> SweepResult:
    """Start the sweep on `manager` and wait for every run, then write the final record (the CLI's sweep).

    Args:
        plan: the backbones, modes and data.
        store: the run store every run is recorded in.
        manager: queues and runs the jobs (its backend decides where and how many at once).
        backend: the backend's name, as the result reports it.
        sweep_id: the sweep's id (default: a new one); its record is `<workspace>/sweeps/<id>/sweep.json`.
        on_finish: called as each run ends with that run and every run so far (the live leaderboard).
        poll_interval_s: how often the runs' states are read.

    Returns:
        The sweep's runs with their accuracies, best first.

    Raises:
        SweepError: unknown backbones or modes (all named) before anything is queued.
        DataError: the dataset cannot be read or split.
    """
    started = time.perf_counter()
    submitted: list[str] = []

    def submit(config: RunConfig) -> str:
        submitted.append(manager.submit(config, owner=SWEEP_OWNER, store=store))
        return submitted[-1]

    try:
        record = start_sweep(plan, store, submit, backend=backend, sweep_id=sweep_id)
        runs = sweep_runs(store, record)
        pending = dict(enumerate(runs))
        while pending:
            for place, run in list(pending.items()):
                status = manager.status(run.run_id)
                if status is not None and status.state != "finished":
                    run.status = status.state  # queued or running, as the live leaderboard shows it
                    continue
                runs[place] = stored_run(store, run.run_id) or dataclasses.replace(run, status=DELETED)
                del pending[place]
                if on_finish:
                    on_finish(runs[place], list(runs))
            if pending:
                time.sleep(poll_interval_s)
    except BaseException:  # Ctrl-C or an error: no run of this sweep keeps training unwatched
        for run_id in submitted:
            manager.stop(run_id)
        raise
    return finish_sweep(store, record, runs, time.perf_counter() - started)
