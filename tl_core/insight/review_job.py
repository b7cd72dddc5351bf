"""The label review's check as a queued job: likely label errors and near-duplicates of one dataset.

The Data page's "Review likely label errors" button queues a `label-review` advisory job (tl_core/jobs/advisory.py),
so the backbone runs in a worker process, never in the web server (which must not import TensorFlow) nor in its
script thread (a rerun would unwind it). `execute_review_job` computes every example's frozen features once (or
reuses them from the workspace's feature cache), ranks likely label errors (`check_features`) and lists
near-duplicates by embedding (`find_near_duplicates`), places every example on a 2-D map with outliers marked
(`embedding_map`), then records `ReviewResult.to_dict()`
(tl_core/insight/review_result.py) as the job's result.
Like `execute_advisory_job`, it never raises for a failure of the job itself.

The request holds `config` (a `RunConfig.to_dict()`: the dataset and the backbone; the workspace's label decisions
are applied as a run applies them) and `options`: `folds` and `similarity` (the near-duplicate threshold).
"""

from __future__ import annotations

import time
from pathlib import Path

from tl_core.config import RunConfig
from tl_core.errors import TransferLabError
from tl_core.events import NullListener, RunStarted, StageStarted, TrainingListener
from tl_core.insight.embedding_map import embedding_map
from tl_core.insight.label_issues import DEFAULT_FOLDS, check_features, dataset_features
from tl_core.insight.near_duplicates import NEAR_DUPLICATE_SIMILARITY, find_near_duplicates
from tl_core.insight.review_result import MapPoint, review_result
from tl_core.jobs.advisory import AdvisoryStore
from tl_core.runs.store import RunStore
from tl_core.stopping import StopToken
from tl_core.training.preparation import PreparationStopped


def execute_review_job(
    workspace: str | Path, job_id: str, *, listener: TrainingListener | None = None, stop: object | None = None
) -> str:
    """Run one queued `label-review` job to its end in this process and return its final status."""
    records = AdvisoryStore(workspace)
    listener = listener or NullListener()
    token = stop if isinstance(stop, StopToken) else StopToken()
    started = time.monotonic()
    result = None
    try:
        record = records.mark_running(job_id)
        records.log(job_id, f"{record.kind} job started")
        config = RunConfig.from_dict(record.request["config"])
        options = record.request.get("options") or {}
        similarity = float(options.get("similarity", NEAR_DUPLICATE_SIMILARITY))
        listener.on_event(RunStarted(job_id, class_names=(), split_sizes={}, config=record.request))

        def step(text: str) -> None:
            records.log(job_id, text)
            listener.on_event(StageStarted(job_id, description=text))

        step("reading the dataset and computing backbone features")
        found = dataset_features(
            config.data,
            config.model,
            RunStore(workspace),
            seed=config.train.seed,
            progress=step,
            stop=token,
        )
        check = check_features(
            found, folds=int(options.get("folds") or DEFAULT_FOLDS), seed=config.train.seed, progress=step
        )
        step("comparing every pair of examples for near-duplicates")
        pairs = find_near_duplicates(found.features, found.examples, threshold=similarity)
        relpaths = {example.path: example.relpath for example in found.examples}
        step("placing every example on a 2-D map (PCA, then t-SNE) and marking outliers")
        xy, outliers = embedding_map(found.features, seed=config.train.seed)
        points = tuple(
            MapPoint(example.relpath, example.path, example.label, float(x), float(y), bool(odd))
            for example, (x, y), odd in zip(found.examples, xy, outliers)
        )
        result = review_result(check, pairs, relpaths, similarity, points).to_dict()
        status, error = "completed", None
    except PreparationStopped as stopped:
        status, error = "stopped", f"Stopped by request ({stopped})."
    except TransferLabError as exc:  # bad data or settings: the page shows why
        status, error = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - a job must never end without saying why
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    return records.end_job(job_id, status, error, result, listener=listener, started=started)
