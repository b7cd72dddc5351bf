"""The Data page's label review: the button queues a job (the check never runs in the web server's process), the
grid shows planted label flips with their suggested class, and a decision is saved to the override file at once."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.conftest import open_page  # noqa: E402
from tl_core.data.label_overrides import LabelDecision, load_decisions  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def plain(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The app's workspace; the review fails if it runs in this (the web server's) process."""
    import tl_core.insight.review_job as review_job

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("The label review ran in the web server's process: it must run as a job in a worker.")

    monkeypatch.setattr(review_job, "execute_review_job", not_here)
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "workspace"))
    return tmp_path / "workspace"


def test_review_flags_planted_flips_and_saves_decisions(tmp_path: Path, workspace: Path) -> None:
    root = make_shapes_dataset(tmp_path / "shapes", num_classes=3, images_per_class=16, image_size=48, seed=1)
    classes = sorted(p.name for p in root.iterdir())
    planted = {}
    for i in range(2):
        source = sorted((root / classes[i]).iterdir())[i]
        target = root / classes[i + 1] / f"planted_{i}.png"
        shutil.move(source, target)
        planted[f"{classes[i + 1]}/planted_{i}.png"] = classes[i]
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["dataset_path"] = str(root)
    at.run()
    open_page(at, "data").run()
    assert not at.exception
    at.button(key="data_review_run").click().run()
    assert not at.exception
    deadline = time.monotonic() + 400
    while not any("likely label errors" in m.value for m in at.markdown):
        assert time.monotonic() < deadline, f"no review result; errors: {[e.value for e in at.error]}"
        time.sleep(1)
        at.run()
        assert not at.exception and not at.error, [e.value for e in at.error]
    rows = [plain(m.value) for m in at.markdown if "suggested" in m.value]
    top = rows[: len(planted) + 2]
    for relpath, true_class in planted.items():
        row = next((r for r in top if relpath in r), None)
        assert row is not None, f"{relpath} not among the first flagged: {top}"
        assert f"suggested {true_class}" in row.replace("*", "")
    index = next(i for i, r in enumerate(rows) if list(planted)[0] in r)
    at.button(key=f"data_review_exclude_{index}").click().run()
    assert load_decisions(workspace, root) == {list(planted)[0]: LabelDecision("exclude")}
    assert any("1 decision(s) saved" in info.value and "next run uses them" in info.value for info in at.info)
    assert "excluded" in plain(next(m.value for m in at.markdown if list(planted)[0] in plain(m.value)))
    at.button(key=f"data_review_undo_{index}").click().run()
    assert load_decisions(workspace, root) == {}
    assert any(h.value == "Near-duplicates by embedding" for h in at.subheader)
    assert any(h.value == "Embedding map" for h in at.subheader)
    assert any("Crosses are the likely label errors" in c.value for c in at.caption)  # the map itself is drawn
