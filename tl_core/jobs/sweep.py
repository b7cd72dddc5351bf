"""Backbone sweeps: one split, one run per backbone x mode, all queued at once on a job backend, ranked as they end.

A fair comparison needs every run to train and test on the same examples. A run's split is derived from
its data config (source, fractions, seed) and the scanned examples, so the sweep scans the data once,
records that split in `<workspace>/sweeps/<sweep id>/sweep.json`, and gives every run the very same data
config: each run then derives the same split and records the same dataset fingerprint (the sweep checks
both when the runs end). Every run is an ordinary run in the store, queued through a `JobManager`, so the
backend decides how many run at once (the local worker processes: the machine's device slots; Ray: the
cluster's capacity).

Example:
    >>> plan = SweepPlan("flowers/", backbones=("mobilenet_v2", "efficientnet_lite0"))
    >>> result = run_sweep(plan, store, manager, on_finish=lambda run, board: print(run.backbone))
    >>> result.to_dict()["best_run_id"]
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tl_core.config import MODES, DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.data.prep import prepare_dataset
from tl_core.data.types import SPLIT_NAMES
from tl_core.errors import BackboneError, TransferLabError
from tl_core.jobs.manager import JobManager
from tl_core.layout import NODE_FILE, SPLIT_FILE, SWEEP_RECORD_FILE, SWEEPS_FOLDER
from tl_core.modalities import resolve_modality
from tl_core.models.registry import backbone_for_data
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


@dataclass
class SweepRun:
    """One run of a sweep as the leaderboard shows it (the keys of the `--json` contract)."""

    run_id: str
    backbone: str
    mode: str
    status: str = "queued"
    test_accuracy: float | None = None
    val_accuracy: float | None = None
    elapsed_s: float | None = None
    node: str | None = None


@dataclass
class SweepResult:
    """A finished sweep: its runs (best first), the best completed run and the wall time."""

    sweep_id: str
    backend: str
    runs: list[SweepRun]
    elapsed_s: float
    dataset_fingerprint: str = ""
    folder: Path | None = None
    # Runs whose split or data differ from the sweep's (a dataset changed mid-sweep; never expected otherwise).
    problems: list[str] = field(default_factory=list)

    @property
    def best_run_id(self) -> str | None:
        completed = [run for run in self.runs if run.status == "completed"]
        return leaderboard(completed)[0].run_id if completed else None

    def to_dict(self) -> dict:
        return {
            "sweep_id": self.sweep_id,
            "backend": self.backend,
            "runs": [asdict(run) for run in self.runs],
            "best_run_id": self.best_run_id,
            "elapsed_s": round(self.elapsed_s, 2),
        }


def leaderboard(runs: list[SweepRun]) -> list[SweepRun]:
    """Runs best first: completed before the rest, then by test accuracy, then validation accuracy."""

    def key(run: SweepRun) -> tuple:
        return (run.status != "completed", -(run.test_accuracy or -1.0), -(run.val_accuracy or -1.0), run.run_id)

    return sorted(runs, key=key)


def format_leaderboard(runs: list[SweepRun]) -> str:
    """The leaderboard as a text table, best first."""
    lines = [f"{'#':>2} {'backbone':<22} {'mode':<18} {'status':<10} {'test acc':>8} {'val acc':>7} {'time':>7}  node"]
    for place, run in enumerate(leaderboard(runs), start=1):
        test, val = ("-" if value is None else f"{value:.3f}" for value in (run.test_accuracy, run.val_accuracy))
        elapsed = "-" if run.elapsed_s is None else f"{run.elapsed_s:.0f}s"
        lines.append(
            f"{place:>2} {run.backbone:<22} {run.mode:<18} {run.status:<10} {test:>8} {val:>7} {elapsed:>7}  {run.node or '-'}"
        )
    return "\n".join(lines)


def parse_list(text: str, flag: str) -> tuple[str, ...]:
    """`a,b,c` as a tuple without blanks or repeats; refuses an empty list, naming `flag`."""
    items = tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    if not items:
        raise SweepError(f"{flag} is empty: pass a comma-separated list, e.g. {flag} mobilenet_v2,efficientnet_lite0.")
    return items


def check_plan(plan: SweepPlan, modality: str, default_backbone: str) -> list[str]:
    """Every problem with the plan's backbones and modes, each naming its flag; empty when the plan can start."""
    problems = []
    for name in plan.backbones:
        try:
            backbone_for_data(name, modality, default_backbone)
        except BackboneError as exc:
            problems.append(f"--backbones {name}: {exc}")
    for mode in plan.modes:
        if mode not in MODES:
            problems.append(f"--modes {mode}: unknown training mode; choose from {', '.join(MODES)}.")
    return problems


def validate_plan(plan: SweepPlan) -> str:
    """The dataset's modality, once every backbone and mode of the plan is known to fit it.

    Raises:
        SweepError: every unknown backbone, backbone for other data and unknown mode, each with its flag.
    """
    from tl_core.modalities import get_modality

    modality = get_modality(resolve_modality(plan.source))
    problems = check_plan(plan, modality.name, modality.default_backbone)
    if problems:
        raise SweepError("Nothing was started: " + " ".join(problems))
    return modality.name


def run_configs(plan: SweepPlan, modality: str, sweep_id: str) -> list[RunConfig]:
    """One run config per backbone x mode, all with the same data config (hence the same split)."""
    data = DataConfig(
        source=plan.source,
        val_fraction=plan.val_fraction,
        test_fraction=plan.test_fraction,
        seed=plan.seed,
        modality=modality,
    )
    configs = []
    for backbone in plan.backbones:
        weights = plan.weights or backbone_for_data(backbone, modality, backbone).pretrained_weights
        for mode in plan.modes:
            configs.append(
                RunConfig(
                    data=data,
                    model=ModelConfig(backbone=backbone, weights=weights, image_size=plan.image_size),
                    train=TrainConfig(
                        mode=mode,
                        epochs=plan.epochs,
                        fine_tune_epochs=plan.fine_tune_epochs,
                        batch_size=plan.batch_size,
                        seed=plan.seed,
                    ),
                    name=f"sweep {sweep_id} · {backbone} · {mode}",
                )
            )
    return configs


def new_sweep_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def sweep_folder(store: RunStore, sweep_id: str) -> Path:
    return store.workspace / SWEEPS_FOLDER / sweep_id


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
    """Check the plan, record the split once, queue every run on `manager` and wait for all of them.

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
    modality = validate_plan(plan)
    sweep_id = sweep_id or new_sweep_id()
    configs = run_configs(plan, modality, sweep_id)
    prepared = prepare_dataset(configs[0].data, store)  # scanned once; each run reuses the workspace's scan
    split = {name: sorted(e.relpath for e in prepared.split.examples(name)) for name in SPLIT_NAMES}
    folder = sweep_folder(store, sweep_id)
    folder.mkdir(parents=True, exist_ok=True)
    record: dict = {
        "sweep_id": sweep_id,
        "backend": backend,
        "plan": asdict(plan),
        "dataset_fingerprint": prepared.report.fingerprint,
        "split": split,
        "runs": [],
    }
    runs: list[SweepRun] = []
    try:
        for config in configs:
            run_id = manager.submit(config, owner=SWEEP_OWNER, store=store)
            runs.append(SweepRun(run_id, config.model.backbone, config.train.mode))
            record["runs"] = [run.run_id for run in runs]
            _write_record(folder, record)
        pending = {run.run_id: run for run in runs}
        while pending:
            for run_id, run in list(pending.items()):
                status = manager.status(run_id)
                if status is not None and status.state != "finished":
                    run.status = status.state  # queued or running, as the live leaderboard shows it
                else:
                    _fill_from_store(run, store)
                    del pending[run_id]
                    if on_finish:
                        on_finish(run, list(runs))
            if pending:
                time.sleep(poll_interval_s)
    except BaseException:  # Ctrl-C or an error: no run of this sweep keeps training unwatched
        for run in runs:
            manager.stop(run.run_id)
        raise
    result = SweepResult(
        sweep_id,
        backend,
        leaderboard(runs),
        time.perf_counter() - started,
        prepared.report.fingerprint,
        folder,
        _split_problems(runs, store, record),
    )
    record.update(result.to_dict(), problems=result.problems)
    _write_record(folder, record)
    return result


def _fill_from_store(run: SweepRun, store: RunStore) -> None:
    record = store.get(run.run_id)
    metrics = record.metrics
    run.status = record.status
    run.test_accuracy = metrics.get("test_accuracy")
    run.val_accuracy = metrics.get("val_accuracy")
    run.elapsed_s = metrics.get("elapsed_s", record.elapsed_s)
    try:
        run.node = (store.run_dir(run.run_id) / NODE_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        run.node = None


def _split_problems(runs: list[SweepRun], store: RunStore, record: dict) -> list[str]:
    """Runs that trained on other data or another split than the sweep recorded (a changed folder mid-sweep)."""
    problems = []
    for run in runs:
        stored = store.get(run.run_id)
        if stored.dataset_fingerprint and stored.dataset_fingerprint != record["dataset_fingerprint"]:
            problems.append(f"run {run.run_id} saw other data (the dataset changed during the sweep)")
            continue
        try:
            split = json.loads((store.run_dir(run.run_id) / SPLIT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a run that failed before splitting has no split to compare
        if {name: sorted(split.get(name, [])) for name in SPLIT_NAMES} != record["split"]:
            problems.append(f"run {run.run_id} used another split than the sweep's")
    return problems


def _write_record(folder: Path, record: dict) -> None:
    partial = folder / f".{SWEEP_RECORD_FILE}.partial"
    partial.write_text(json.dumps(record, indent=1), encoding="utf-8")
    partial.replace(folder / SWEEP_RECORD_FILE)
