"""The classic text baseline (TF-IDF + logistic regression) beside the from-scratch one: `--compare-scratch`."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from tl_core.cli.main import main  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.text_demo import topic_documents, write_class_documents  # noqa: E402
from tl_core.data.types import DatasetSplit, Example  # noqa: E402
from tl_core.layout import SPLIT_FILE, SUMMARY_FILE  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.stopping import StopToken  # noqa: E402
from tl_core.training.classic_baseline import classic_baseline_entries, fit_classic_baseline  # noqa: E402
from tl_core.training.runner import run_experiment  # noqa: E402

SEED = 3


@pytest.fixture(scope="module")
def noisy_topics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 topics x 24 generated documents, one in four filed under the next topic: a bag of words cannot get
    every test document right, so its accuracy depends on exactly which documents it was fitted and scored on."""
    documents = topic_documents(3, 24, seed=SEED)
    topics = list(documents)
    noisy: dict[str, list[str]] = {topic: [] for topic in topics}
    for index, topic in enumerate(topics):
        for position, text in enumerate(documents[topic]):
            noisy[topics[(index + 1) % 3] if position % 4 == 0 else topic].append(text)
    return write_class_documents(tmp_path_factory.mktemp("classic") / "topics", noisy)


def text_config(source: Path, **train: object) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source), modality="text", val_fraction=0.2, test_fraction=0.25, seed=SEED),
        model=ModelConfig(backbone="glove_6b_50d", weights="glove", sequence_length=32),
        train=TrainConfig(
            epochs=2,
            batch_size=16,
            learning_rate=0.05,
            early_stopping_patience=None,
            reduce_lr_patience=None,
            seed=SEED,
            **train,
        ),
    )


def independent_accuracy(source: Path, run_dir: Path) -> float:
    """TF-IDF + logistic regression fitted here on the run's recorded train documents, scored on its test ones."""
    split = json.loads((run_dir / SPLIT_FILE).read_text())

    def documents(name: str) -> tuple[list[str], list[str]]:
        return [(source / relpath).read_text("utf-8") for relpath in split[name]], [
            relpath.split("/")[0] for relpath in split[name]
        ]

    (train_texts, train_labels), (test_texts, test_labels) = documents("train"), documents("test")
    vectorizer = TfidfVectorizer(token_pattern=r"(?u)[^\W_]+", sublinear_tf=True)
    classifier = LogisticRegression(C=10.0, max_iter=1000, random_state=SEED)
    classifier.fit(vectorizer.fit_transform(train_texts), train_labels)
    predicted = classifier.predict(vectorizer.transform(test_texts))
    return float(np.mean(predicted == np.array(test_labels)))


def test_a_text_run_reports_the_classic_baseline_fitted_on_its_own_split(noisy_topics: Path, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "ws")
    outcome = run_experiment(text_config(noisy_topics, compare_scratch=True), store=store)
    assert outcome.status == "completed", outcome.error
    summary = json.loads((store.run_dir(outcome.run_id) / SUMMARY_FILE).read_text())
    assert summary["evaluated_on"] == "test" and summary["scratch_run_id"]
    accuracy = summary["classic_baseline_accuracy"]
    assert 0.0 < accuracy < 1.0  # the label noise keeps it off 1.0, so the comparison below can fail
    assert accuracy == pytest.approx(independent_accuracy(noisy_topics, store.run_dir(outcome.run_id)), abs=1e-9)
    assert store.get(outcome.run_id).metrics["classic_baseline_accuracy"] == accuracy
    assert "classic_baseline_verdict" not in store.get(outcome.run_id).metrics  # a sentence, not a metric
    assert summary["classic_baseline_verdict"] in store.read_log(outcome.run_id)
    assert "classic_baseline_accuracy" not in store.get(summary["scratch_run_id"]).metrics


def test_an_image_run_has_no_classic_baseline(shapes_dataset: Path, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "ws")
    config = RunConfig(
        data=DataConfig(source=str(shapes_dataset)),
        model=ModelConfig(backbone="mobilenet_v2_035", weights="none", image_size=32),
        train=TrainConfig(epochs=1, fine_tune_epochs=1, batch_size=16, compare_scratch=True),
    )
    outcome = run_experiment(config, store=store)
    assert outcome.status == "completed", outcome.error
    assert outcome.summary["scratch_run_id"]  # the scratch comparison ran
    assert not any(key.startswith("classic_baseline") for key in outcome.summary)
    assert "classic_baseline_accuracy" not in store.get(outcome.run_id).metrics


def test_the_cli_json_line_carries_the_classic_baseline(noisy_topics: Path, tmp_path: Path, capsys) -> None:
    workspace = str(tmp_path / "ws")
    command = ["train", str(noisy_topics), "--modality", "text", "--compare-scratch", "--epochs", "1"]
    options = ["--sequence-length", "16", "--seed", str(SEED), "--workspace", workspace, "--json"]
    assert main([*command, *options]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "completed" and 0.0 < summary["classic_baseline_accuracy"] <= 1.0
    assert "TF-IDF + logistic regression" in summary["classic_baseline_verdict"]


def _split_of(folder: Path, documents: dict[str, dict[str, list[str]]]) -> DatasetSplit:
    """A split of documents written under `folder`: split name -> class -> texts."""
    parts: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    for split_name, by_class in documents.items():
        for label, texts in by_class.items():
            for index, text in enumerate(texts):
                path = folder / f"{split_name}_{label}_{index}.txt"
                path.write_text(text, encoding="utf-8")
                parts[split_name].append(Example(str(path), path.name, label, path.name, None, len(text), 1))
    classes = tuple(sorted({e.label for examples in parts.values() for e in examples}))
    return DatasetSplit(*(tuple(parts[name]) for name in ("train", "val", "test")), class_names=classes, seed=0)


def test_the_baseline_is_deterministic_and_compared_with_transfer(tmp_path: Path) -> None:
    documents = {
        "train": {"a": ["apples and pears", "pears in a bowl", "ripe apples"], "b": ["cars on roads", "fast cars"]},
        "test": {"a": ["a bowl of apples"], "b": ["roads full of cars"]},
    }
    split = _split_of(tmp_path, documents)
    first, again = fit_classic_baseline(split, "test", seed=0), fit_classic_baseline(split, "test", seed=0)
    assert first == again and first.accuracy == 1.0 and (first.train_count, first.evaluation_count) == (5, 2)
    entries, line = classic_baseline_entries(
        split, {"evaluated_on": "test", "evaluation_accuracy": 0.5}, seed=0, stop=StopToken()
    )
    assert entries["classic_baseline_accuracy"] == 1.0 and line.startswith("info: ")
    assert "does not beat the bag of words" in entries["classic_baseline_verdict"]


def test_a_failing_or_stopped_baseline_never_fails_the_run(tmp_path: Path) -> None:
    one_class = _split_of(tmp_path, {"train": {"a": ["only one class", "here too"]}, "test": {"a": ["and here"]}})
    summary = {"evaluated_on": "test", "evaluation_accuracy": 0.9}
    entries, line = classic_baseline_entries(one_class, summary, seed=0, stop=StopToken())
    assert entries == {"classic_baseline_accuracy": None} and line.startswith("warning: ") and "failed" in line
    stopped = StopToken()
    stopped.request_stop()
    assert classic_baseline_entries(one_class, summary, seed=0, stop=stopped)[0] == {}
    unscored, line = classic_baseline_entries(one_class, {"evaluated_on": None}, seed=0, stop=StopToken())
    assert unscored == {"classic_baseline_accuracy": None} and "--test-fraction" in line


def _classic_view() -> None:
    import types

    import streamlit as st

    from pages.train import show_classic_baseline

    show_classic_baseline(types.SimpleNamespace(metrics=st.session_state["metrics"]))  # type: ignore[arg-type]


def test_the_train_page_shows_the_classic_baseline_beside_the_scratch_verdict() -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_classic_view, default_timeout=30)
    at.session_state["metrics"] = {"evaluation_accuracy": 0.874, "classic_baseline_accuracy": 0.981}
    at.run()
    assert not at.exception
    assert "does not beat a bag of words" in at.warning[0].value and "98.1%" in at.warning[0].value
    at.session_state["metrics"] = {"evaluation_accuracy": 0.95, "classic_baseline_accuracy": 0.9}
    at.run()
    assert "Transfer beats a bag of words" in at.info[0].value and not at.warning
    at.session_state["metrics"] = {"evaluation_accuracy": 0.95, "classic_baseline_accuracy": None}
    at.run()
    assert "could not be fitted" in at.caption[0].value
    at.session_state["metrics"] = {"evaluation_accuracy": 0.95}  # an image run
    at.run()
    assert not (at.info or at.warning or at.caption)
