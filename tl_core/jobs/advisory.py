"""Advisory jobs' records: what the mode advisor or the cut-depth probe was asked, its state and its result.

An advisory job is queued and run like a training run (one queue, the same device slots, progress and Stop),
but it is not a run: it has no record in the run store, so it never shows where runs are listed. Everything
about one lives in its folder, `<workspace>/advice/<job id>/`: `job.json` (the request, the state, then the
error or the result; rewritten atomically), `log.txt` as a run has, and the worker's progress file, stop request and log.

A page finds its result again after a reload with `latest(kind, key)`, `key` standing for the settings the
job measured with. Only the newest `KEEP_FINISHED` finished jobs of each kind are kept.

Example:
    >>> records = AdvisoryStore(workspace)
    >>> record = records.create("advice", owner="alice", request={"config": config.to_dict()}, key="3f2a...")
    >>> records.finish(record.id, "completed", result=advice.to_dict())
    >>> records.latest("advice", "3f2a...").result["recommended_mode"]
    'feature-extraction'
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tl_core.events import FINISHED_STATUSES, RunFinished, TrainingListener
from tl_core.jobs.backend import ADVICE_JOB, ADVISORY_KINDS, job_folder, run_time_limit_message
from tl_core.layout import ADVISORY_FOLDER, LOG_FILE
from tl_core.layout import ADVISORY_RECORD_FILE as RECORD_FILE

KEEP_FINISHED = 20
_JOB_ID_PATTERN = re.compile(r"^[a-z-]+-\d{8}-\d{6}-[0-9a-f]{6}$")


@dataclass(frozen=True)
class AdvisoryRecord:
    """One advisory job: `request` is what the worker needs (`config`: a RunConfig dict, plus the job's options)."""

    id: str
    kind: str
    owner: str
    status: str  # queued, running, then completed, stopped, failed or interrupted
    request: dict[str, Any]
    key: str
    created_at: float
    finished_at: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    @property
    def is_active(self) -> bool:
        return self.status not in FINISHED_STATUSES


class AdvisoryStore:
    """The advisory jobs of one workspace.

    It answers what the job manager asks of every job's records (`status`, `folder`, `finish`, `log`), as
    `tl_core.jobs.records.RunRecords` does for runs.
    """

    def __init__(self, workspace: str | Path) -> None:
        self.workspace = Path(workspace)
        self.root = self.workspace / ADVISORY_FOLDER

    def folder(self, job_id: str) -> Path:
        if not _JOB_ID_PATTERN.match(job_id):
            raise ValueError(f"{job_id!r} is not an advisory job id.")
        return job_folder(self.workspace, ADVICE_JOB, job_id)  # every advisory kind has its folder under advice/

    def create(self, kind: str, *, owner: str, request: dict[str, Any], key: str) -> AdvisoryRecord:
        """A new queued job (and its folder); the oldest finished jobs of `kind` beyond `KEEP_FINISHED` are deleted."""
        if kind not in ADVISORY_KINDS:
            raise ValueError(f"kind={kind!r} is not an advisory job; use one of {', '.join(ADVISORY_KINDS)}.")
        now = time.time()
        job_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-{secrets.token_hex(3)}"
        record = AdvisoryRecord(job_id, kind, owner, "queued", json.loads(json.dumps(request)), key, now)
        self.folder(job_id).mkdir(parents=True)
        self._write(record)
        self._prune(kind)
        return record

    def get(self, job_id: str) -> AdvisoryRecord | None:
        """The job, or None when it is unknown (deleted, or never created)."""
        try:
            raw = json.loads((self.folder(job_id) / RECORD_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        known = {field.name for field in dataclasses.fields(AdvisoryRecord)}
        return AdvisoryRecord(**{name: value for name, value in raw.items() if name in known})

    def status(self, job_id: str) -> str | None:
        record = self.get(job_id)
        return record.status if record else None

    def mark_running(self, job_id: str) -> AdvisoryRecord:
        """The worker has started the job; returns its record."""
        record = self._require(job_id)
        return self._write(dataclasses.replace(record, status="running"))

    def finish(
        self, job_id: str, status: str, error: str | None = None, *, result: dict[str, Any] | None = None
    ) -> None:
        """Record the job's end: a finished status, and the error (failed, stopped ...) or the result (completed)."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"status={status!r} does not end a job; use one of {', '.join(FINISHED_STATUSES)}.")
        record = self._require(job_id)
        self._write(dataclasses.replace(record, status=status, error=error, result=result, finished_at=time.time()))

    def end_job(
        self,
        job_id: str,
        status: str,
        error: str | None,
        result: dict[str, Any] | None,
        *,
        listener: TrainingListener,
        started: float,
    ) -> str:
        """How every advisory job ends (the advisor's, the cut probe's, the label review's): record it, log it, tell
        the listener. A stop at the server's run-time limit ends the job `failed`, saying so. Returns the status.

        Args:
            started: the job's `time.monotonic()` start, for `RunFinished.elapsed_s`.
        """
        if status == "stopped" and (over_time := run_time_limit_message(self.folder(job_id))):
            status, error = "failed", over_time  # the manager stopped it at the server's run-time limit
        # The log line first: whoever sees the record finished (the manager, a page) then finds the log complete.
        self.log(job_id, f"{status}: {error}" if error else status)
        self.finish(job_id, status, error, result=result)
        listener.on_event(
            RunFinished(
                job_id, status=status, epochs_run=0, final_metrics={}, elapsed_s=time.monotonic() - started, error=error
            )
        )
        return status

    def log(self, job_id: str, line: str) -> None:
        with open(self.folder(job_id) / LOG_FILE, "a", encoding="utf-8") as log:
            log.write(line.rstrip("\n") + "\n")

    def read_log(self, job_id: str) -> str:
        try:
            return (self.folder(job_id) / LOG_FILE).read_text(encoding="utf-8")
        except OSError:
            return ""

    def records(self, kind: str | None = None) -> list[AdvisoryRecord]:
        """Every job (of `kind`), newest first."""
        found = [
            self.get(path.parent.name)
            for path in self.root.glob(f"*/{RECORD_FILE}")
            if _JOB_ID_PATTERN.match(path.parent.name)
        ]
        return sorted(
            (r for r in found if r is not None and kind in (None, r.kind)), key=lambda r: r.created_at, reverse=True
        )

    def latest(self, kind: str, key: str) -> AdvisoryRecord | None:
        """The newest job of `kind` asked with the settings `key`, whatever its state; None when there is none."""
        return next((record for record in self.records(kind) if record.key == key), None)

    def _require(self, job_id: str) -> AdvisoryRecord:
        record = self.get(job_id)
        if record is None:
            raise FileNotFoundError(f"Advisory job {job_id} has no record in {self.root}.")
        return record

    def _write(self, record: AdvisoryRecord) -> AdvisoryRecord:
        path = self.folder(record.id) / RECORD_FILE
        partial = path.with_name(f".{RECORD_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_text(json.dumps(dataclasses.asdict(record)), encoding="utf-8")
        os.replace(partial, path)  # a reader (the page, every second) never sees half a file
        return record

    def _prune(self, kind: str) -> None:
        finished = [record for record in self.records(kind) if not record.is_active]
        for record in finished[KEEP_FINISHED:]:
            shutil.rmtree(self.folder(record.id), ignore_errors=True)
