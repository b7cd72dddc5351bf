"""Predict page, text runs: each document's words highlighted by their attribution, every word escaped."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.text_demo import make_topics_dataset  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402
from tl_core.training.runner import run_experiment  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
HOSTILE = "a <script>alert(1)</script> **bold** $x^2$ :red[hi] &amp; word"


@pytest.fixture(scope="module")
def text_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished text run: random word vectors, 16 words per document, 1 epoch (only the plumbing matters)."""
    root = tmp_path_factory.mktemp("words")
    data = make_topics_dataset(root / "topics", num_classes=2, docs_per_class=10, seed=0)
    config = RunConfig(
        data=DataConfig(source=str(data), modality="text", val_fraction=0.2, test_fraction=0.2, seed=0),
        model=ModelConfig(backbone="glove_6b_50d", weights="none", sequence_length=16),
        train=TrainConfig(epochs=1, batch_size=8),
    )
    outcome = run_experiment(config, store=RunStore(root / "workspace"))
    assert outcome.status == "completed", outcome.error
    return root / "workspace"


def highlighted(at: AppTest) -> list[str]:
    return [markdown.value for markdown in at.markdown if "<span" in markdown.value]


def test_typed_words_are_highlighted_and_escaped(text_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(text_workspace))
    at = AppTest.from_file(APP, default_timeout=120).run()
    open_page(at, "predict").run()
    at.text_area(key="predict_text").set_value(HOSTILE).run()

    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert at.toggle(key="predict_show_words").value
    [body] = highlighted(at)
    assert body.count("<span") == len(HOSTILE.split()), "one highlighted span per word"
    assert "&lt;script&gt;" in body and "<script" not in body and "</script" not in body
    assert "**" not in body and "$" not in body and ":red[" not in body, "no Markdown, maths or directive survives"
    assert "&amp;amp;" in body, "an entity typed by the user is shown as typed"
    assert any("Green: words that make" in caption.value for caption in at.caption)

    at.toggle(key="predict_show_words").set_value(False).run()
    assert not highlighted(at) and not at.exception
