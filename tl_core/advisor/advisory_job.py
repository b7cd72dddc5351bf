"""The mode advisor and the cut-depth probe as queued jobs: what the worker runs for an advisory job.

`execute_advisory_job` runs one job recorded in `<workspace>/advice/<job id>/` (tl_core/jobs/advisory.py),
in a worker process (or a test's thread), never in the web server: it prepares the data as the planned run
would (the same scan, the same split), runs the advisor or the probe with the job's listener and stop
token, and records the result (`Advice.to_dict()` or `CutDepths.to_dict()`), the stop or the failure.
Like `execute_run`, it never raises for a failure of the job itself.

The request (`AdvisoryRecord.request`) holds `config`, the planned run's `RunConfig.to_dict()`, and
`options`: for `advice`, `measure_throughput` (default True) and `max_probe_images`; for `cut-probe`,
`layers` (None: a few spread over the backbone) and `max_probe_images`. For text (`advisor_times_encoders`), an
`advice` job times the offline encoders on a sample of the documents and writes `TextAdvice.to_dict()`; the
cut-depth probe is for image backbones only.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from tl_core.advisor.mode_advice import advise
from tl_core.advisor.probe import AdvisorSteps, AdvisorStopped, probe_cut_depths
from tl_core.advisor.results import CutDepths
from tl_core.advisor.text_advice import advise_text
from tl_core.config import RUN_WEIGHTS_PREFIX, ModelConfig, RunConfig
from tl_core.data.prep import prepare_dataset
from tl_core.errors import DataError, TransferLabError
from tl_core.events import NullListener, RunStarted, TrainingListener
from tl_core.jobs.advisory import AdvisoryStore
from tl_core.jobs.backend import ADVICE_JOB
from tl_core.layout import CACHE_FOLDER, KERAS_FILE
from tl_core.modalities import get_modality
from tl_core.runs.store import RunStore
from tl_core.stopping import StopToken
from tl_core.training.preparation import PreparationStopped


def execute_advisory_job(
    workspace: str | Path, job_id: str, *, listener: TrainingListener | None = None, stop: StopToken | None = None
) -> str:
    """Run one queued advisory job to its end in this process and return its final status.

    Args:
        workspace: the user's workspace (its run store, caches and `advice/` folder).
        job_id: the queued job.
        listener: receives `RunStarted`, each step (`StageStarted`), decoding and feature progress and `RunFinished`.
        stop: the job's stop token, checked at every step and batch.
    """
    records = AdvisoryStore(workspace)
    listener = listener or NullListener()
    started = time.monotonic()
    result = None
    try:
        record = records.mark_running(job_id)
        records.log(job_id, f"{record.kind} job started")
        config = RunConfig.from_dict(record.request["config"])
        options = record.request.get("options") or {}
        steps = AdvisorSteps(listener=listener, stop=stop, job_id=job_id)
        steps.start("reading the dataset")
        store = RunStore(workspace)
        modality = get_modality(config.data.modality)
        times_encoders = record.kind == ADVICE_JOB and modality.advisor_times_encoders
        if not (modality.measured_by_advisor or times_encoders):
            raise DataError(
                f"The {record.kind} job measures image backbones only; {config.data.source} holds {config.data.modality}."
            )
        prepared = prepare_dataset(config.data, store)
        listener.on_event(
            RunStarted(
                job_id,
                class_names=tuple(prepared.split.class_names),
                split_sizes=prepared.split.sizes(),
                config=record.request,
            )
        )
        model_config = _weights_as_file(config.model, store)
        cache_dir = store.workspace / CACHE_FOLDER
        sample = {"max_probe_images": int(options["max_probe_images"])} if options.get("max_probe_images") else {}
        if times_encoders:
            result = advise_text(
                prepared.split,
                model_config,
                config.train,
                cache_dir=cache_dir,
                measure_throughput=bool(options.get("measure_throughput", True)),
                steps=steps,
            ).to_dict()
        elif record.kind == ADVICE_JOB:
            advice = advise(
                prepared.report,
                prepared.split,
                model_config,
                config.train,
                cache_dir=cache_dir,
                measure_throughput=bool(options.get("measure_throughput", True)),
                steps=steps,
                **sample,
            )
            result = advice.to_dict()
        else:
            measured = probe_cut_depths(
                prepared.split,
                model_config,
                cache_dir=cache_dir,
                layers=options.get("layers"),
                seed=config.train.seed,
                steps=steps,
                **sample,
            )
            result = CutDepths(tuple(measured)).to_dict()
        status, error = "completed", None
    except (AdvisorStopped, PreparationStopped) as stopped:
        status, error = "stopped", f"Stopped by request ({stopped})."
    except TransferLabError as exc:  # bad data or settings: the page shows why
        status, error = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - a job must never end without saying why
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    return records.end_job(job_id, status, error, result, listener=listener, started=started)


def _weights_as_file(model: ModelConfig, store: RunStore) -> ModelConfig:
    """`run:ID` weights as that run's saved model file, which the advisor's backbone builder reads (its backbone is used whole)."""
    if not model.weights.startswith(RUN_WEIGHTS_PREFIX):
        return model
    parent = store.get(model.weights[len(RUN_WEIGHTS_PREFIX) :])
    return dataclasses.replace(model, weights=str(store.run_dir(parent.id) / KERAS_FILE), cut_layer=None)
