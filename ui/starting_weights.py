"""Which weights a run starts from on the Model page: the backbone's pretrained ones, random ones, or the backbone
a finished run trained (its "parent"). Only runs whose backbone fits are offered: the same architecture and kind of
data, trained (fine-tuned, not frozen), those on the chosen dataset first."""

from __future__ import annotations

import streamlit as st

from tl_core.config import RUN_WEIGHTS_PREFIX
from tl_core.errors import RunNotFoundError
from tl_core.modalities import DataModality, get_modality
from tl_core.models.spec import BackboneSpec
from tl_core.runs.records import RunRecord
from ui.advisor import CUT_LAYER_WIDGET_KEY, parent_image_size
from ui.model_form import setting
from ui.runs_table import dataset_name
from ui.settings import has_offline_weights, mode_label, pretrained_on
from ui.state import current_dataset, get_store, session_value
from ui.text import escape_markdown

RUN_WEIGHT_CHOICES = 8  # the newest fitting runs offered as starting backbones (plus the one chosen)
HUB_WEIGHTS_KEY = "model_hub_weights"


def fitting_runs(records: list[RunRecord], backbone: str, modality: str) -> list[RunRecord]:
    """Finished runs whose trained backbone can start a run on `backbone`: the same architecture and kind of data,
    and a mode that trained the backbone (a feature-extraction run's backbone is the pretrained one, unchanged).
    Runs on the chosen dataset come first."""
    dataset = current_dataset()
    fitting = [
        record
        for record in records
        if record.backbone == backbone and record.modality == modality and record.mode != "feature-extraction"
    ]
    return sorted(fitting, key=lambda record: record.config.get("data", {}).get("source") != dataset)


def parent_run(weights: str) -> RunRecord | None:
    """The finished run whose backbone `weights` (`run:ID`) names; None for other weights or a deleted run."""
    if not weights.startswith(RUN_WEIGHTS_PREFIX):
        return None
    try:
        return get_store().get(weights[len(RUN_WEIGHTS_PREFIX) :])
    except RunNotFoundError:
        return None


def follow_parent_run() -> None:
    """Starting from a run's backbone fixes the architecture and input size: show them in the widgets."""
    parent = parent_run(st.session_state.get("model_weights", ""))
    if parent is None:
        return
    st.session_state["model_backbone"] = parent.backbone
    if not get_modality(parent.modality).uses_image_size:
        return  # e.g. a text backbone reads any number of words: the sequence length stays the user's choice
    size = parent_image_size(get_store().run_dir(parent.id), parent.config)
    if size:
        st.session_state["model_image_size"] = size
    st.session_state[CUT_LAYER_WIDGET_KEY] = None


def leave_parent_run(pretrained_weights: str) -> None:
    """Another backbone than the parent run's: its weights no longer fit, so go back to the modality's pretrained ones."""
    parent = parent_run(st.session_state.get("model_weights", ""))
    if parent is not None and parent.backbone != st.session_state.get("model_backbone"):
        st.session_state["model_weights"] = pretrained_weights


def starting_weights(spec: BackboneSpec, data_modality: DataModality) -> tuple[str, RunRecord | None]:
    """The "Starting weights" radio (and the TF Hub name when chosen): the weights value and the parent run, if any."""
    backbone, modality = spec.name, data_modality.name
    offline = has_offline_weights(spec)
    hub_model = not spec.feature_dim  # a TF Hub model (no fixed feature size): the user names it as its weights
    pretrained = "hub" if hub_model else spec.pretrained_weights
    session_value("model_weights", pretrained)
    finished_runs = fitting_runs(get_store().list_runs(status="completed"), backbone, modality)
    chosen_weights = st.session_state["model_weights"]
    offered_runs = finished_runs[:RUN_WEIGHT_CHOICES] + [
        r for r in finished_runs[RUN_WEIGHT_CHOICES:] if f"{RUN_WEIGHTS_PREFIX}{r.id}" == chosen_weights
    ]
    weight_options = [pretrained, "none", *(f"{RUN_WEIGHTS_PREFIX}{record.id}" for record in offered_runs)]
    if chosen_weights not in weight_options:  # the run was deleted, or the backbone takes other pretrained weights
        st.session_state["model_weights"] = pretrained
    weight_labels = {
        "imagenet": f"Pretrained on {pretrained_on(spec)}"
        + (" (available offline)" if offline else " (needs a download)"),
        "glove": "Pretrained GloVe word vectors" + (" (available offline)" if offline else " (package not installed)"),
        "pretrained": f"Pretrained on {pretrained_on(spec)}"
        + (" (available offline)" if offline else " (package not installed)"),
        "hub": "A pretrained TF Hub model (name it below)",
        "none": "Random (train from scratch — needs much more data)",
        **{
            f"{RUN_WEIGHTS_PREFIX}{r.id}": escape_markdown(
                f"Backbone of run {r.name} ({r.backbone} {mode_label(r.mode, short=True)} on "
                f"{dataset_name(r) or 'unknown data'}, {r.id[-6:]})"
            )
            for r in offered_runs
        },
    }
    weights = setting(
        st.radio,
        "Starting weights",
        "Pretrained weights are what makes transfer learning work. A finished run's backbone carries what it learned "
        "on its data (domain-specific weights) into a new run; it fixes the backbone"
        + (" and image size." if data_modality.uses_image_size else "."),
        options=weight_options,
        key="model_weights",
        format_func=weight_labels.get,
        on_change=follow_parent_run,
    )
    if weights == "hub":
        session_value(HUB_WEIGHTS_KEY, "")
        weights = setting(
            st.text_input,
            "TF Hub model",
            "A TF Hub handle (needs internet once, or the TF Hub cache) or a SavedModel folder "
            "on this server that turns strings into one vector each.",
            key=HUB_WEIGHTS_KEY,
            placeholder="https://tfhub.dev/google/nnlm-en-dim50/2",
        ).strip()
    parent = parent_run(weights)
    if parent is not None:
        st.caption(
            f"Starts from the backbone trained in run **{escape_markdown(parent.name)}** ({escape_markdown(parent.id)}): "
            f"{escape_markdown(parent.backbone)}; the new run records it as its parent."
        )
    return weights, parent
