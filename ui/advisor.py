"""The Model page's advisor panels: which training mode to use, and where to cut the backbone.

Both measure the user's data with the chosen backbone (seconds to minutes of real training steps), so a
button queues an advisory job (tl_core/jobs/advisory.py) through the job manager, like a training run: it
waits for a device slot and runs in a worker, never in this script. The panel follows the job in a
fragment that redraws every second (queue position, the step it is at, Stop), and shows the result once
it is done. The result stays in the user's workspace under the settings it was measured with, so a rerun,
a reload or another tab shows it again until a setting it depends on changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from tl_core.advisor.results import DEPTH_FRACTIONS, Advice, CutDepths
from tl_core.config import RUN_WEIGHTS_PREFIX, DataConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import TransferLabError
from tl_core.events import PREPARATION_STEP_NAMES
from tl_core.jobs.advisory import AdvisoryRecord, AdvisoryStore
from tl_core.jobs.backend import ADVICE_JOB, CUT_PROBE_JOB
from tl_core.modalities import get_modality
from tl_core.results.model_tasks import cut_layer_names
from ui.dataset import DatasetView, load_dataset, source_stamp
from ui.settings import mode_label
from ui.singletons import process_wide
from ui.state import get_manager, get_store, model_worker, session_value, workspace_path
from ui.text import escape_markdown, format_duration, format_percent, show_error, starts_in, user_message

MODE_WIDGET_KEY = "model_mode"
CUT_LAYER_WIDGET_KEY = "model_cut_layer"
REFRESH_S = 1.0  # how often a panel following a job redraws


_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CutLayers:
    """Where a backbone can be cut: block outputs in order (shallow first) and its last layer (no cut)."""

    candidates: tuple[str, ...]
    final_layer: str


@process_wide
def cut_layers(backbone: str) -> CutLayers:
    """The block outputs of `backbone`, listed once per backbone and server by the model worker (it builds the backbone)."""
    candidates, final_layer = model_worker().call(cut_layer_names, backbone)
    return CutLayers(candidates, final_layer)


_listings: dict[str, Future[CutLayers]] = {}  # backbone -> its cut depths, being listed or listed, in this process
_listings_lock = threading.Lock()


def cut_layers_if_listed(backbone: str) -> CutLayers | None:
    """`backbone`'s cut depths if the model worker has listed them, else None, with the listing begun in the background.

    The first list of a server starts the model worker (seconds: it imports TensorFlow). A page that waited for it
    sat mid-run for ~5 s on its first visit, and what a user typed and clicked meanwhile raced the run (seen in
    Chromium: an edited epoch count lost, a click on Train undone). A failed listing raises its error once and is
    tried again on the next call.
    """
    with _listings_lock:
        future = _listings.get(backbone)
        if future is None:
            future = _listings[backbone] = Future()
            threading.Thread(
                target=_list_cut_layers, args=(backbone, future), name="transferlab-cut-layers", daemon=True
            ).start()
        elif future.done() and future.exception() is not None:
            del _listings[backbone]
    return future.result() if future.done() else None


def _list_cut_layers(backbone: str, future: Future[CutLayers]) -> None:
    try:
        future.set_result(cut_layers(backbone))
    except BaseException as exc:  # noqa: BLE001 - handed to the page that asks next, which shows it
        future.set_exception(exc)


@process_wide
def warm_up_cut_layers() -> threading.Thread:
    """List the default image backbone's cut depths in the background, once per server.

    The Model page shows them for every image backbone, and the first list starts the model worker (seconds:
    it imports TensorFlow); begun when the app is first opened, the Model page is ready when the user gets there.
    """

    def warm_up() -> None:
        try:
            cut_layers(get_modality("image").default_backbone)
        except Exception:  # noqa: BLE001 - only a head start: the page asks again and shows any error itself
            _log.warning("Listing the default backbone's cut depths in the background failed", exc_info=True)

    thread = threading.Thread(target=warm_up, name="transferlab-model-warm-up", daemon=True)
    thread.start()
    return thread


def depths_to_probe(layers: CutLayers, chosen: str | None) -> list[str]:
    """A few depths spread over the backbone, the chosen cut layer and the last layer, shallow first."""
    picks = (
        [layers.candidates[round((len(layers.candidates) - 1) * f)] for f in DEPTH_FRACTIONS]
        if layers.candidates
        else []
    )
    if chosen in layers.candidates:
        picks.append(chosen)
    ordered = sorted(set(picks), key=layers.candidates.index)
    return [*ordered, layers.final_layer]


def settings_key(source: str, *settings: object) -> str:
    """Stands for the dataset (its path, and a stamp that changes when its files do) and the settings a result depends on."""
    stamp = source_stamp(source) if Path(source).exists() else None
    return hashlib.sha256(repr((source, stamp, settings)).encode()).hexdigest()[:24]


def advisory_records() -> AdvisoryStore:
    return AdvisoryStore(get_store().workspace)


def _dataset(source: str) -> DatasetView | None:
    """The scanned, split dataset, or None after showing why it cannot be measured."""
    try:
        view = load_dataset(source, workspace_path())
    except TransferLabError as exc:
        show_error(exc)
        return None
    if view.split is None:
        st.warning(
            escape_markdown(user_message(view.split_error or "The dataset cannot be split.")), icon=":material/warning:"
        )
        return None
    return view


def submit_advisory_job(
    kind: str, source: str, model_config: ModelConfig, train_config: TrainConfig, key: str, options: dict
) -> str | None:
    """Queue the job after checking the dataset can be split; None (with the reason shown) when it cannot be queued."""
    view = _dataset(source)
    if view is None:
        return None
    config = RunConfig(data=DataConfig(source=source, modality=view.modality), model=model_config, train=train_config)
    try:
        return get_manager().submit_advisory(kind, config, key=key, options=options)
    except TransferLabError as exc:
        show_error(exc)
        return None


def job_panel(job_id: str, what: str, stop_key: str) -> None:
    """Queue position or the step the job is at, and Stop; redraws the whole page once the job has ended."""
    record = advisory_records().get(job_id)
    if record is None or not record.is_active:
        st.rerun()  # the page draws the result (or why there is none) in place of this panel
    jobs = get_manager()
    status = jobs.status(job_id)
    if status is None or status.state == "queued":
        position = f", position {status.queue_position}" if status is not None and status.queue_position else ""
        start = status.estimated_start if status is not None else None
        when = f" Estimated start: {starts_in(start)}." if start is not None else ""
        st.info(
            f"{what}: queued{position}; it starts when the jobs before it finish.{when}", icon=":material/schedule:"
        )
    else:
        progress = status.progress
        elapsed = format_duration(max(0.0, time.time() - (status.estimated_start or time.time())))
        if progress.is_preparing:
            step = PREPARATION_STEP_NAMES.get(progress.preparing, progress.preparing)
            text = f"{what}: {step} ({progress.preparing_split} sample) {progress.preparing_done:,} of {progress.preparing_total:,} · {elapsed}"
            st.progress(progress.preparing_done / progress.preparing_total, text=escape_markdown(text))
        else:
            st.info(
                f"{what}: {escape_markdown(progress.stage or 'starting')}… ({elapsed})", icon=":material/hourglass_top:"
            )
    if st.button("Stop", key=stop_key, icon=":material/stop:", help="Stops the measurement after its current step."):
        jobs.stop(job_id)
        st.toast("Stopping…")


live_job_panel = st.fragment(run_every=REFRESH_S)(job_panel)


def show_ended(record: AdvisoryRecord) -> bool:
    """Say why a job that ended has no result; True when it completed (the caller draws the result)."""
    if record.status == "completed" and record.result is not None:
        return True
    if record.status == "stopped":
        st.info("The last measurement was stopped before it finished.", icon=":material/stop_circle:")
    else:
        ended = "was interrupted" if record.status == "interrupted" else "failed"
        st.error(
            f"The last measurement {ended}: "
            + escape_markdown(user_message(record.error or "no reason was recorded.")),
            icon=":material/error:",
        )
    return False


def completed_result(record: AdvisoryRecord | None, title: str, stop_key: str) -> dict | None:
    """The result of the job's latest record, or None: no job yet, the job still running (its live panel with Stop
    is drawn), or the job ended without one (`show_ended` says why)."""
    if record is None:
        return None
    if record.is_active:
        live_job_panel(record.id, title, stop_key)
        return None
    return record.result if show_ended(record) else None


def _use_mode(mode: str) -> None:
    st.session_state[MODE_WIDGET_KEY] = mode  # a callback runs before the page redraws, so the radio takes it


def _use_cut_layer(layer: str | None) -> None:
    st.session_state[CUT_LAYER_WIDGET_KEY] = layer


def advice_table(advice: Advice) -> pd.DataFrame:
    """One row per mode: estimated time, throughput, and which one is recommended."""
    rows = [
        {
            "mode": mode,
            "estimated time": format_duration(estimate.estimated_seconds),
            "images/s": round(estimate.images_per_second),
            "recommended": "✓" if mode == advice.recommended_mode else "",
        }
        for mode, estimate in advice.estimates.items()
    ]
    return pd.DataFrame(rows, columns=["mode", "estimated time", "images/s", "recommended"])


def show_mode_advisor(source: str, model_config: ModelConfig, train_config: TrainConfig) -> None:
    """Button-queued recommendation of a training mode, followed live, then its reasons and time per mode."""
    st.subheader("Which mode? Ask the advisor")
    st.caption(
        "Measures how well the frozen backbone's features separate your classes (a linear probe on a sample), "
        "looks at the dataset size and times each mode on this machine. Runs in the job queue, like training: "
        "from a few seconds to a minute once it starts."
    )
    session_value(
        "model_advise_timing", True
    )  # a default set here, not as `value=`: the page restores saved widget values
    timing = st.toggle(
        "Time each mode on this machine",
        key="model_advise_timing",
        help="Runs a few training steps per mode to estimate the time of each (about 10-30 s more).",
    )
    key = settings_key(
        source,
        model_config.backbone,
        model_config.weights,
        model_config.image_size,
        model_config.cut_layer,
        model_config.pooling,
        model_config.augment,
        train_config.epochs,
        train_config.fine_tune_epochs,
        train_config.fine_tune_layers,
        train_config.batch_size,
        train_config.learning_rate,
        train_config.use_feature_cache,
        train_config.seed,
        bool(timing),
    )
    record = advisory_records().latest(ADVICE_JOB, key)
    busy = record is not None and record.is_active
    clicked = st.button(
        "Recommend a mode",
        key="advisor_run",
        icon=":material/psychology:",
        disabled=busy,
        help="Queues a measurement of your data with the chosen backbone; the settings above are used as they are now.",
    )
    if (
        clicked
        and not busy
        and submit_advisory_job(
            ADVICE_JOB, source, model_config, train_config, key, {"measure_throughput": bool(timing)}
        )
    ):
        st.rerun()  # drawn again with the job's panel and the button disabled
    if (result := completed_result(record, "Advisor", "advisor_stop")) is None:
        return
    advice = Advice.from_dict(result)
    st.success(f"Recommended: **{mode_label(advice.recommended_mode)}**", icon=":material/recommend:")
    st.markdown("\n".join(f"- {escape_markdown(reason)}" for reason in advice.reasons))
    if advice.estimates:
        st.dataframe(advice_table(advice), hide_index=True)
    current = st.session_state.get(MODE_WIDGET_KEY)
    st.button(
        "Use recommended mode",
        key="advisor_use_mode",
        on_click=_use_mode,
        args=(advice.recommended_mode,),
        disabled=current == advice.recommended_mode,
        help="Sets the training mode above to the recommendation."
        if current != advice.recommended_mode
        else "Already chosen.",
    )


def probe_chart(results: pd.DataFrame) -> alt.LayerChart:
    """Probe accuracy per depth, shallow to deep, the best bar highlighted."""
    base = alt.Chart(results).encode(
        x=alt.X("depth:N", sort=list(results["depth"]), title=None, axis=alt.Axis(labelAngle=-30, labelLimit=160)),
        y=alt.Y("probe accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%")),
        tooltip=["depth:N", alt.Tooltip("probe accuracy:Q", format=".1%")],
    )
    bars = base.mark_bar(cornerRadiusEnd=3).encode(
        color=alt.condition("datum.best", alt.value("#16a34a"), alt.value("#93c5fd")),
    )
    labels = base.mark_text(dy=-6, color="#374151").encode(text=alt.Text("probe accuracy:Q", format=".0%"))
    return (bars + labels).properties(height=240)


def cut_depth_frame(measured: list[tuple[str, float]], final_layer: str) -> pd.DataFrame:
    """Measured depths as rows (shallow first): layer, what it means, accuracy, and the best one flagged."""
    best = max(accuracy for _, accuracy in measured)
    rows = [
        {
            "depth": "last layer (no cut)" if layer == final_layer else layer,
            "layer": layer,
            "probe accuracy": accuracy,
            "best": accuracy == best,
        }
        for layer, accuracy in measured
    ]
    return pd.DataFrame(rows, columns=["depth", "layer", "probe accuracy", "best"])


def show_cut_depth_probe(source: str, model_config: ModelConfig, seed: int) -> None:
    """Button-queued linear probe per cut depth, followed live; the best depth can then be taken with one click."""
    if model_config.weights.startswith(RUN_WEIGHTS_PREFIX):
        return  # a run's backbone is used whole (see the cut-depth setting)
    st.subheader("Compare cut depths")
    st.caption(
        "Earlier layers keep more general features (edges, textures); the last layer the most ImageNet-specific ones. "
        "When your images look unlike photos, an earlier cut can work better. Measured with a linear probe on a sample."
    )
    layers = cut_layers_if_listed(model_config.backbone)
    if layers is None:
        return  # shown with the user's next change, once the model process has listed the backbone's blocks
    key = settings_key(
        source, model_config.backbone, model_config.weights, model_config.image_size, model_config.pooling, seed
    )
    record = advisory_records().latest(CUT_PROBE_JOB, key)
    busy = record is not None and record.is_active
    clicked = st.button(
        "Measure cut depths",
        key="advisor_cut_depths_run",
        icon=":material/straighten:",
        disabled=busy,
        help="Queues a linear classifier on frozen features from several depths and reports its validation accuracy.",
    )
    options = {"layers": depths_to_probe(layers, model_config.cut_layer)}
    if (
        clicked
        and not busy
        and submit_advisory_job(CUT_PROBE_JOB, source, model_config, TrainConfig(seed=seed), key, options)
    ):
        st.rerun()
    result = completed_result(record, "Cut-depth probe", "advisor_cut_depths_stop")
    measured = list(CutDepths.from_dict(result).measured) if result is not None else []
    if not measured:
        return
    frame = cut_depth_frame(measured, layers.final_layer)
    best = frame[frame["best"]].iloc[-1]  # on a tie the deepest: the fewest changes from the default
    st.altair_chart(probe_chart(frame), width="stretch")
    st.dataframe(
        frame.assign(
            **{
                "probe accuracy": frame["probe accuracy"].map(format_percent),
                "best": frame["best"].map({True: "✓", False: ""}),
            }
        ),
        hide_index=True,
    )
    best_layer = None if best["layer"] == layers.final_layer else str(best["layer"])
    st.button(
        f"Cut at the best depth ({best['depth']}, {format_percent(best['probe accuracy'])})",
        key="advisor_use_cut",
        on_click=_use_cut_layer,
        args=(best_layer,),
        disabled=st.session_state.get(CUT_LAYER_WIDGET_KEY) == best_layer,
        help="Sets the cut depth above to the layer whose features scored best.",
    )


def cut_layer_label(layer: str | None) -> str:
    return "last layer (no cut, default)" if layer is None else layer


def cut_layer_options(layers: CutLayers) -> list[str | None]:
    """None (the last layer) first, then the block outputs from deep to shallow."""
    return [None, *reversed(layers.candidates)]


def parent_image_size(run_dir: Path, config: dict) -> int | None:
    """The input size a run's backbone was trained at: from its summary, else its config."""
    summary = run_dir / "summary.json"
    try:
        size = json.loads(summary.read_text()).get("image_size") if summary.is_file() else None
    except (OSError, ValueError):
        size = None
    size = size or (config.get("model") or {}).get("image_size")
    return int(size) if size else None
