"""Where a run's progress goes besides the run store: TensorBoard event files (always) and MLflow (when asked).

Each is a `TrainingListener` the runner adds to a run's `ListenerGroup`, so a failure here is written to the run's
log as a warning and never fails the run.

Example:
    >>> ListenerGroup(RunRecorder(store, run_id), *tracking_listeners(run_id, store.run_dir(run_id)))
"""

from __future__ import annotations

import os
from pathlib import Path

from tl_core.events import TrainingListener
from tl_core.layout import TENSORBOARD_FOLDER
from tl_core.tracking.mlflow_log import (
    DEFAULT_EXPERIMENT,
    MLFLOW_EXPERIMENT_VARIABLE,
    MLFLOW_URI_VARIABLE,
    MlflowLogger,
)
from tl_core.tracking.tensorboard_log import TensorBoardWriter


def tracking_listeners(run_id: str, run_dir: Path) -> list[TrainingListener]:
    """The listeners that log one run outside TransferLab: TensorBoard files in `run_dir/tensorboard/`, and an
    MLflow run when `TRANSFERLAB_MLFLOW_URI` is set (read at each call, like `TRANSFERLAB_FASTPATH`).

    Args:
        run_id: the run to log.
        run_dir: its folder.

    Returns:
        The listeners, to add to the run's `ListenerGroup`.
    """
    listeners: list[TrainingListener] = [TensorBoardWriter(run_id, run_dir / TENSORBOARD_FOLDER)]
    tracking_uri = os.environ.get(MLFLOW_URI_VARIABLE, "").strip()
    if tracking_uri:
        experiment = os.environ.get(MLFLOW_EXPERIMENT_VARIABLE, "").strip() or DEFAULT_EXPERIMENT
        listeners.append(MlflowLogger(run_id, run_dir, tracking_uri=tracking_uri, experiment=experiment))
    return listeners
