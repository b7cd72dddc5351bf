"""Likely label errors (`tl_core.insight.label_issues`) and `python -m tl_core label-issues`."""

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tl_core.cli.main import main  # noqa: E402
from tl_core.data.synthetic import make_shapes_dataset  # noqa: E402
from tl_core.data.text_demo import make_topics_dataset  # noqa: E402
from tl_core.data.types import Example  # noqa: E402
from tl_core.errors import DataError  # noqa: E402
from tl_core.insight.label_issues import fold_count, rank_label_issues  # noqa: E402

ISSUE_KEYS = ["path", "given_label", "suggested_label", "score"]


def plant_flips(root: Path, count: int, suffix: str) -> list[str]:
    """Move the i-th file of class i (mod classes) into the next class's folder; return the moved files' paths."""
    names = sorted(p.name for p in root.iterdir())
    planted = []
    for i in range(count):
        source = sorted((root / names[i % len(names)]).iterdir())[i]
        target = root / names[(i + 1) % len(names)] / f"planted_{i}{suffix}"
        shutil.move(source, target)
        planted.append(str(target.resolve()))
    return planted


def label_issues_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict, str]:
    assert main(["label-issues", *args, "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out.strip().splitlines()[-1]), captured.err


def example(index: int, label: str) -> Example:
    return Example(f"/data/{label}/{index}.png", f"{label}/{index}.png", label, f"hash{index}", None, 8, 8)


def test_rank_label_issues_flags_the_flipped_points_of_separated_clusters():
    rng = np.random.default_rng(0)
    class_names = ("a", "b", "c")
    true = np.repeat(np.arange(3), 20)
    features = rng.normal(0, 0.3, (60, 8)) + np.eye(3, 8)[true] * 3
    given = true.copy()
    flipped = [3, 25, 47]
    given[flipped] = (true[flipped] + 1) % 3
    examples = [example(i, class_names[label]) for i, label in enumerate(given)]
    check = rank_label_issues(features, examples, class_names)
    assert check.checked == 60 and check.folds == 5
    assert {issue.path for issue in check.issues[:3]} == {examples[i].path for i in flipped}
    assert [issue.suggested_label for issue in check.issues[:3]] == [
        class_names[true[int(Path(issue.path).stem)]] for issue in check.issues[:3]
    ]
    scores = [issue.score for issue in check.issues]
    assert scores == sorted(scores) and all(0.0 <= score <= 1.0 for score in scores)
    assert "score" in check.format_text() and examples[flipped[0]].path in check.format_text()


def test_fold_count_uses_fewer_folds_for_a_small_class_and_refuses_a_tiny_one():
    assert fold_count(["a"] * 9 + ["b"] * 5) == (5, None)
    folds, note = fold_count(["a"] * 9 + ["b"] * 4)
    assert folds == 4 and "'b' has only 4" in note
    with pytest.raises(DataError, match="class 'b' has 2.*at least 3 examples"):
        fold_count(["a"] * 9 + ["b"] * 2)


def test_planted_image_label_flips_rank_at_the_top(tmp_path, capsys):
    # Random-weight backbones missed them (0 of 4 in the top 6 at 32 px); packaged ImageNet weights at 64 px find them.
    root = make_shapes_dataset(tmp_path / "shapes", num_classes=3, images_per_class=20, image_size=32, seed=1)
    planted = plant_flips(root, 4, ".png")
    workspace = str(tmp_path / "ws")
    report, stderr = label_issues_json(capsys, str(root), "--image-size", "64", "--workspace", workspace)
    assert report["checked"] == 60 and "5-fold" in stderr
    issues = report["issues"]
    assert all(list(issue) == ISSUE_KEYS for issue in issues)
    assert sum(path in [issue["path"] for issue in issues[:6]] for path in planted) >= 3
    scores = [issue["score"] for issue in issues]
    assert scores == sorted(scores)
    for issue in issues:
        path = Path(issue["path"])
        assert path.is_file() and path.parent.name == issue["given_label"]
        assert issue["suggested_label"] != issue["given_label"]
    assert main(["label-issues", str(root), "--image-size", "64", "--workspace", workspace]) == 0
    captured = capsys.readouterr()
    assert "reused cached backbone features" in captured.err  # one feature pass: the second check reads the cache
    assert "given" in captured.out and "suggested" in captured.out and planted[0] in captured.out


def test_planted_text_label_flips_rank_at_the_top(tmp_path, capsys):
    root = make_topics_dataset(tmp_path / "topics", num_classes=3, docs_per_class=12, seed=0)
    planted = plant_flips(root, 3, ".txt")
    report, stderr = label_issues_json(capsys, str(root), "--workspace", str(tmp_path / "ws"))
    assert report["checked"] == 36 and "documents" in stderr
    assert sum(path in [issue["path"] for issue in report["issues"][:5]] for path in planted) >= 2


def test_a_class_too_small_for_k_fold_is_refused_with_what_it_needs(tmp_path, capsys):
    root = make_shapes_dataset(tmp_path / "shapes", num_classes=2, images_per_class=[8, 2], image_size=32)
    assert main(["label-issues", str(root), "--workspace", str(tmp_path / "ws"), "--json"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: Too few examples") and "at least 3 examples" in message
