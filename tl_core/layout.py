"""Every workspace and run-folder name TransferLab reads or writes, in one place, importable without TensorFlow.

A workspace (personal mode: `./workspace`; workshop mode: one per user under `users/`) looks like:

    <workspace>/transferlab.db         the run store (SQLite)
    <workspace>/queue.sqlite           the job queue (the server's workspace only)
    <workspace>/datasets/              uploaded or written datasets
    <workspace>/label_overrides.json   the label review's decisions (tl_core/data/label_overrides.py)
    <workspace>/cache/<kind>/          extracted archives, decoded images, backbone features, scans
    <workspace>/runs/<run id>/         one folder per run, holding the files named below

Pages and `ui/` import names from here, never from the training engine (which loads TensorFlow).
"""

from __future__ import annotations

# -- a workspace -------------------------------------------------------------------------------------
RUN_DATABASE_FILE = "transferlab.db"
QUEUE_FILE = "queue.sqlite"
DATASETS_FOLDER = "datasets"
CACHE_FOLDER = "cache"
RUNS_FOLDER = "runs"
USERS_FOLDER = "users"  # workshop mode: <server workspace>/users/<name>/ is each user's workspace
EXTRACTED_CACHE = "extracted"  # cache/<kind> folders
SCANS_CACHE = "scans"

UI_CHOICES_FILE = "app_choices.json"  # <workspace>/: the app's dataset, settings and run in view, kept across reloads
ADVISORY_FOLDER = "advice"  # <workspace>/advice/<job id>/: an advisory job's record, result and logs
ADVISORY_RECORD_FILE = "job.json"
LABEL_OVERRIDES_FILE = "label_overrides.json"  # <workspace>/: the label review's decisions
SWEEPS_FOLDER = "sweeps"  # <workspace>/sweeps/<sweep id>/: a sweep's record (its split, its runs) and its job queue
SWEEP_RECORD_FILE = "sweep.json"

# -- a run's folder ----------------------------------------------------------------------------------
LOG_FILE = "log.txt"
CHECKPOINT_FILE = "checkpoint.weights.h5"
RESUME_WEIGHTS_FILE = "resume_from.weights.h5"
EVALUATION_FILE = "evaluation.json"
SUMMARY_FILE = "summary.json"
SPLIT_FILE = "split.json"
PROGRESS_FILE = "progress.json"
STOP_FILE = "stop.request"
WORKER_LOG_FILE = "worker.log"
NODE_FILE = "node.txt"  # the machine (a Ray node: its address and id) that ran the run
RUN_TIME_LIMIT_FILE = "run_time_limit.txt"
RAY_EVENTS_FILE = "ray_events_recorded.txt"  # how many of its Ray actor's events the server has recorded
TENSORBOARD_FOLDER = "tensorboard"  # Keras' layout inside it: train/ and validation/ event files

# -- a model bundle (a run's folder and its export) ---------------------------------------------------
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
EXPORT_FORMATS = ("keras", "saved_model", "tflite")  # what an export bundle can hold, in this order
LABELS_FILE = "labels.txt"
LABELS_JSON_FILE = "labels.json"  # what TransferLab reads: a JSON list round-trips any class name
MODEL_CARD_FILE = "MODEL_CARD.md"
