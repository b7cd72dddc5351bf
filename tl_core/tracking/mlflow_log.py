"""A run's settings, epochs and files, logged to MLflow when `TRANSFERLAB_MLFLOW_URI` is set.

Each TransferLab run becomes one MLflow run in the experiment `TRANSFERLAB_MLFLOW_EXPERIMENT` (default
`TransferLab`): the run's settings as params (`RunConfig` flattened: `train.learning_rate`, ...), each phase's
first epoch and learning rate as params, every epoch's metrics and learning rate with `step` = the run's epoch
(1-based, counting on across phases), the final metrics (`test_accuracy`, ...; the kept weights'
`val_loss` as `final_val_loss`), and at the end its files: `evaluation.json`, a
confusion-matrix PNG, `model.keras`, `summary.json`, `labels.txt` and `log.txt`. Its status follows the run's.

Why a listener and not MLflow's Keras autolog or a Keras callback: autolog supports Keras only up to 3.13 (we pin
3.15), and the fast feature-extraction path trains heads outside `model.fit` (`tl_core/fastpath/head_fit.py`),
where no Keras callback runs. The engine's events reach every path, so this logs through MLflow's client.

mlflow is imported only when a run starts with the variable set: without it nothing here loads MLflow.
A failure here (an unreachable store) is caught by `ListenerGroup` and written to the run's log as a warning;
the run itself carries on, and after a failed start this logger stays quiet for the rest of the run.

Example:
    >>> logger = MlflowLogger(run_id, run_dir, tracking_uri="sqlite:///mlflow.db")
    >>> ListenerGroup(RunRecorder(store, run_id), logger)  # then train: the events log the run
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tl_core.events import EpochEnded, PhaseStarted, RunFinished, RunStarted, TrainingEvent
from tl_core.layout import EVALUATION_FILE, KERAS_FILE, LABELS_FILE, LOG_FILE, SUMMARY_FILE
from tl_core.results.confusion_image import write_confusion_matrix_png
from tl_core.results.evaluate import Evaluation

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

MLFLOW_URI_VARIABLE = "TRANSFERLAB_MLFLOW_URI"
MLFLOW_EXPERIMENT_VARIABLE = "TRANSFERLAB_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT = "TransferLab"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"  # an artefact only: the run's folder keeps evaluation.json
RUN_FILES = (EVALUATION_FILE, KERAS_FILE, SUMMARY_FILE, LABELS_FILE, LOG_FILE)  # logged when present
RUN_ID_TAG = "transferlab.run_id"
# TransferLab's run status -> MLflow's (`mlflow.entities.RunStatus` names).
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "stopped": "KILLED", "interrupted": "KILLED"}
_BATCH_LIMIT = 100  # MLflow takes at most 100 params per `log_batch` call
_MAX_PARAM_LENGTH = 6000  # and a param value of at most 6,000 characters


class MlflowLogger:
    """Logs one TransferLab run to an MLflow tracking store (a `TrainingListener`).

    Args:
        run_id: the TransferLab run to listen to (events of other runs are ignored).
        run_dir: its folder, read for the files logged at the end.
        tracking_uri: MLflow's store, e.g. `sqlite:///mlflow.db` (relative to the working directory).
        experiment: the MLflow experiment, created when missing.
    """

    def __init__(self, run_id: str, run_dir: Path, *, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT) -> None:
        self.run_id = run_id
        self.run_dir = run_dir
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.mlflow_run_id: str | None = None  # set once the MLflow run exists
        self._client: MlflowClient | None = None
        self._epoch_metric_names: set[str] = set()

    def on_event(self, event: TrainingEvent) -> None:
        if event.run_id != self.run_id:
            return
        if isinstance(event, RunStarted):
            self._start(event)
        elif self._client is None or self.mlflow_run_id is None:
            return  # the start failed (and was logged once): nothing to add to
        elif isinstance(event, PhaseStarted):
            self._log_params(
                {f"phase.{event.phase}.epochs": event.epochs, f"phase.{event.phase}.learning_rate": event.learning_rate}
            )
        elif isinstance(event, EpochEnded):
            metrics = {**event.metrics, "learning_rate": event.learning_rate}
            self._epoch_metric_names.update(metrics)
            self._log_metrics(metrics, event.epoch, event.timestamp)
        elif isinstance(event, RunFinished):
            self._finish(event)

    def _start(self, event: RunStarted) -> None:
        from mlflow.exceptions import MlflowException  # only a run logging to MLflow loads it
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = client.create_experiment(self.experiment)
            except MlflowException:  # another worker created it meanwhile
                experiment_id = client.get_experiment_by_name(self.experiment).experiment_id
        run = client.create_run(
            experiment_id,
            start_time=_ms(event.timestamp),
            tags={RUN_ID_TAG: self.run_id, "transferlab.run_dir": str(self.run_dir.resolve())},
            run_name=event.config.get("name") or self.run_id,
        )
        self._client, self.mlflow_run_id = client, run.info.run_id
        split_sizes = {f"split.{name}": count for name, count in event.split_sizes.items()}
        self._log_params({**flatten_config(event.config), **split_sizes, "classes": len(event.class_names)})

    def _finish(self, event: RunFinished) -> None:
        assert self._client is not None and self.mlflow_run_id is not None
        try:
            # The kept weights' val_loss is not the last epoch's: a name the epochs use gets a `final_` prefix.
            final = {
                (f"final_{key}" if key in self._epoch_metric_names else key): value
                for key, value in event.final_metrics.items()
            }
            self._log_metrics(final, event.epochs_run, event.timestamp)
            log_run_files(self._client, self.mlflow_run_id, self.run_dir)
        finally:  # the MLflow run ends with the run's status even when a file could not be logged
            self._client.set_terminated(
                self.mlflow_run_id, status=MLFLOW_STATUS.get(event.status, "FAILED"), end_time=_ms(event.timestamp)
            )

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        assert self._client is not None and self.mlflow_run_id is not None
        entries = [Param(key, str(value)[:_MAX_PARAM_LENGTH]) for key, value in params.items()]
        for start in range(0, len(entries), _BATCH_LIMIT):
            self._client.log_batch(self.mlflow_run_id, params=entries[start : start + _BATCH_LIMIT])

    def _log_metrics(self, metrics: dict[str, Any], step: int, timestamp: float) -> None:
        from mlflow.entities import Metric

        assert self._client is not None and self.mlflow_run_id is not None
        entries = [
            Metric(key, float(value), _ms(timestamp), step)
            for key, value in metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        if entries:
            self._client.log_batch(self.mlflow_run_id, metrics=entries)


def log_run_files(client: MlflowClient, mlflow_run_id: str, run_dir: Path) -> list[str]:
    """Log the files of a finished run's folder that exist (`RUN_FILES`) and its confusion matrix as a PNG.

    Returns:
        The artefact names logged.
    """
    logged = []
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            client.log_artifact(mlflow_run_id, str(run_dir / name))
            logged.append(name)
    if (run_dir / EVALUATION_FILE).is_file():
        with tempfile.TemporaryDirectory() as folder:
            image = write_confusion_matrix_png(
                Evaluation.load(run_dir / EVALUATION_FILE), Path(folder) / CONFUSION_MATRIX_PNG
            )
            client.log_artifact(mlflow_run_id, str(image))
            logged.append(CONFUSION_MATRIX_PNG)
    return logged


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"epochs": 5}}` -> `{"train.epochs": 5}`: one MLflow param per setting."""
    return dict(_flat_items(config, prefix))


def _flat_items(config: dict[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _flat_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _ms(timestamp: float) -> int:
    return int(timestamp * 1000)
