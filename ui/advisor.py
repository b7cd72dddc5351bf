"""The Model page's advisor panels: which training mode to use, and where to cut the backbone.

Both measure features on the user's data (seconds to a minute), so a result is kept in this user's
session per dataset and settings and shown again on every rerun until a setting it depends on changes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import altair as alt
import pandas as pd
import streamlit as st

from tl_core.models.build import build_backbone
from tl_core.models.registry import candidate_cut_layers, get_backbone_spec, resolve_image_size
from tl_core.config import ModelConfig, TrainConfig
from tl_core.errors import TransferLabError
from ui.dataset import DatasetView, load_dataset, source_stamp
from ui.runs_table import RUN_WEIGHTS_PREFIX
from ui.settings import mode_label
from ui.state import get_store, session_value, workspace_path
from ui.text import escape_markdown, format_duration, format_percent, show_error, user_message

if TYPE_CHECKING:
    from tl_core.advisor.mode_advice import Advice

ADVICE_RESULTS_KEY = "advisor_results"  # session state: {settings key: Advice}
CUT_DEPTH_RESULTS_KEY = "advisor_cut_depths"  # session state: {settings key: [(layer, probe accuracy)]}
MODE_WIDGET_KEY = "model_mode"
CUT_LAYER_WIDGET_KEY = "model_cut_layer"
DEPTH_FRACTIONS = (0.25, 0.5, 0.75)  # the advisor's default probe points along the block outputs, plus the last layer


@dataclass(frozen=True)
class CutLayers:
    """Where a backbone can be cut: block outputs in order (shallow first) and its last layer (no cut)."""

    candidates: tuple[str, ...]
    final_layer: str


@st.cache_data(show_spinner=False, max_entries=64)
def cut_layers(backbone: str) -> CutLayers:
    """The block outputs of `backbone` (built once with random weights: names do not depend on weights or size)."""
    spec = get_backbone_spec(backbone)
    model = build_backbone(spec, "none", resolve_image_size(spec, None))
    return CutLayers(tuple(candidate_cut_layers(model)), model.layers[-1].name)


def depths_to_probe(layers: CutLayers, chosen: str | None) -> list[str]:
    """A few depths spread over the backbone, the chosen cut layer and the last layer, shallow first."""
    picks = [layers.candidates[round((len(layers.candidates) - 1) * f)] for f in DEPTH_FRACTIONS] if layers.candidates else []
    if chosen in layers.candidates:
        picks.append(chosen)
    ordered = sorted(set(picks), key=layers.candidates.index)
    return [*ordered, layers.final_layer]


def engine_model_config(model_config: ModelConfig) -> ModelConfig:
    """`run:ID` weights as the run's saved model file, which the advisor's backbone builder reads directly."""
    if not model_config.weights.startswith(RUN_WEIGHTS_PREFIX):
        return model_config
    store = get_store()
    parent = store.get(model_config.weights[len(RUN_WEIGHTS_PREFIX):])
    return dataclasses.replace(model_config, weights=str(store.run_dir(parent.id) / "model.keras"), cut_layer=None)


def dataset_key(source: str) -> tuple:
    """The dataset's path and a stamp that changes when its files do, so stale measurements are not shown."""
    return (source, source_stamp(source)) if Path(source).exists() else (source,)


def _dataset(source: str) -> DatasetView | None:
    """The scanned, split dataset, or None after showing why it cannot be measured."""
    try:
        view = load_dataset(source, workspace_path())
    except TransferLabError as exc:
        show_error(exc)
        return None
    if view.split is None:
        st.warning(escape_markdown(user_message(view.split_error or "The dataset cannot be split.")), icon=":material/warning:")
        return None
    return view


def _use_mode(mode: str) -> None:
    st.session_state[MODE_WIDGET_KEY] = mode  # a callback runs before the page redraws, so the radio takes it


def _use_cut_layer(layer: str | None) -> None:
    st.session_state[CUT_LAYER_WIDGET_KEY] = layer


def advice_table(advice: Advice) -> pd.DataFrame:
    """One row per mode: estimated time, throughput, and which one is recommended."""
    rows = [{"mode": mode, "estimated time": format_duration(estimate.estimated_seconds), "images/s": round(estimate.images_per_second),
             "recommended": "✓" if mode == advice.recommended_mode else ""} for mode, estimate in advice.estimates.items()]
    return pd.DataFrame(rows, columns=["mode", "estimated time", "images/s", "recommended"])


def show_mode_advisor(source: str, model_config: ModelConfig, train_config: TrainConfig) -> None:
    """Button-triggered recommendation of a training mode, with its reasons and time per mode."""
    from tl_core.advisor.mode_advice import advise

    st.subheader("Which mode? Ask the advisor")
    st.caption("Measures how well the frozen backbone's features separate your classes (a linear probe on a sample), "
               "looks at the dataset size and times each mode on this machine. Takes from a few seconds to a minute.")
    session_value("model_advise_timing", True)  # a default set here, not as `value=`: the page restores saved widget values
    timing = st.toggle("Time each mode on this machine", key="model_advise_timing",
                       help="Runs a few training steps per mode to estimate the time of each (about 10-30 s more).")
    key = (dataset_key(source), model_config.backbone, model_config.weights, model_config.image_size, model_config.cut_layer, model_config.pooling,
           model_config.augment, train_config.epochs, train_config.fine_tune_epochs, train_config.fine_tune_layers,
           train_config.batch_size, train_config.learning_rate, train_config.use_feature_cache, train_config.seed, bool(timing))
    results = st.session_state.setdefault(ADVICE_RESULTS_KEY, {})
    if st.button("Recommend a mode", key="advisor_run", icon=":material/psychology:",
                 help="Measures your data with the chosen backbone; the settings above are used as they are now."):
        view = _dataset(source)
        if view is not None:
            stages = st.empty()
            try:
                results[key] = advise(
                    view.report, view.split, engine_model_config(model_config), train_config, cache_dir=get_store().workspace / "cache",
                    measure_throughput=bool(timing), progress=lambda text: stages.caption(f"Advisor: {escape_markdown(text)}…"),
                )
            except TransferLabError as exc:
                show_error(exc)
            stages.empty()
    advice = results.get(key)
    if advice is None:
        return
    st.success(f"Recommended: **{mode_label(advice.recommended_mode)}**", icon=":material/recommend:")
    st.markdown("\n".join(f"- {escape_markdown(reason)}" for reason in advice.reasons))
    if advice.estimates:
        st.dataframe(advice_table(advice), hide_index=True)
    current = st.session_state.get(MODE_WIDGET_KEY)
    st.button("Use recommended mode", key="advisor_use_mode", on_click=_use_mode, args=(advice.recommended_mode,),
              disabled=current == advice.recommended_mode,
              help="Sets the training mode above to the recommendation." if current != advice.recommended_mode else "Already chosen.")


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
    rows = [{"depth": "last layer (no cut)" if layer == final_layer else layer, "layer": layer, "probe accuracy": accuracy,
             "best": accuracy == best} for layer, accuracy in measured]
    return pd.DataFrame(rows, columns=["depth", "layer", "probe accuracy", "best"])


def show_cut_depth_probe(source: str, model_config: ModelConfig, seed: int) -> None:
    """Button-triggered linear probe per cut depth; the best depth can be taken with one click."""
    from tl_core.advisor.mode_advice import probe_cut_depths

    if model_config.weights.startswith(RUN_WEIGHTS_PREFIX):
        return  # a run's backbone is used whole (see the cut-depth setting)
    st.subheader("Compare cut depths")
    st.caption("Earlier layers keep more general features (edges, textures); the last layer the most ImageNet-specific ones. "
               "When your images look unlike photos, an earlier cut can work better. Measured with a linear probe on a sample.")
    layers = cut_layers(model_config.backbone)
    key = (dataset_key(source), model_config.backbone, model_config.weights, model_config.image_size, model_config.pooling, seed)
    results = st.session_state.setdefault(CUT_DEPTH_RESULTS_KEY, {})
    if st.button("Measure cut depths", key="advisor_cut_depths_run", icon=":material/straighten:",
                 help="Trains a linear classifier on frozen features from several depths and reports its validation accuracy."):
        view = _dataset(source)
        if view is not None:
            with st.spinner("Probing each depth…"):
                try:
                    results[key] = probe_cut_depths(view.split, engine_model_config(model_config), cache_dir=get_store().workspace / "cache",
                                                    layers=depths_to_probe(layers, model_config.cut_layer), seed=seed)
                except TransferLabError as exc:
                    show_error(exc)
    measured = results.get(key)
    if not measured:
        return
    frame = cut_depth_frame(measured, layers.final_layer)
    best = frame[frame["best"]].iloc[-1]  # on a tie the deepest: the fewest changes from the default
    st.altair_chart(probe_chart(frame), width="stretch")
    st.dataframe(frame.assign(**{"probe accuracy": frame["probe accuracy"].map(format_percent), "best": frame["best"].map({True: "✓", False: ""})}),
                 hide_index=True)
    best_layer = None if best["layer"] == layers.final_layer else str(best["layer"])
    st.button(f"Cut at the best depth ({best['depth']}, {format_percent(best['probe accuracy'])})", key="advisor_use_cut",
              on_click=_use_cut_layer, args=(best_layer,), disabled=st.session_state.get(CUT_LAYER_WIDGET_KEY) == best_layer,
              help="Sets the cut depth above to the layer whose features scored best.")


def cut_layer_label(layer: str | None) -> str:
    return "last layer (no cut, default)" if layer is None else layer


def cut_layer_options(backbone: str) -> list[str | None]:
    """None (the last layer) first, then the block outputs from deep to shallow."""
    return [None, *reversed(cut_layers(backbone).candidates)]


def parent_image_size(run_dir: Path, config: dict) -> int | None:
    """The input size a run's backbone was trained at: from its summary, else its config."""
    summary = run_dir / "summary.json"
    try:
        size = json.loads(summary.read_text()).get("image_size") if summary.is_file() else None
    except (OSError, ValueError):
        size = None
    size = size or (config.get("model") or {}).get("image_size")
    return int(size) if size else None
