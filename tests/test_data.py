"""Scanning sources (folders, archives, CSV, preset splits), the validation report, and splitting."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.data.image_dataset import scan_dataset, split_dataset
from tl_core.data.synthetic import make_shapes_dataset
from tl_core.data.types import ScanReport
from tl_core.errors import DataError


def _shapes(root: Path, counts: list[int] | int = 12, classes: int = 3) -> Path:
    return make_shapes_dataset(root, num_classes=classes, images_per_class=counts, image_size=32)


def _kinds(report: ScanReport) -> Counter[str]:
    return Counter(problem.kind for problem in report.problems)


def _problem_files(report: ScanReport, kind: str) -> set[str | None]:
    return {problem.file for problem in report.problems if problem.kind == kind}


def test_clean_folder(tmp_path: Path) -> None:
    root = _shapes(tmp_path / "data", [12, 10, 11])

    report = scan_dataset(root)

    assert report.class_names == ["blue_triangle", "green_square", "red_circle"]
    assert report.class_counts == {"blue_triangle": 11, "green_square": 10, "red_circle": 12}
    assert report.files_seen == 33 and report.files_skipped == 0 and report.problems == []
    assert [e.relpath for e in report.examples] == sorted(e.relpath for e in report.examples)
    example = report.examples[0]
    assert Path(example.path).is_absolute() and example.relpath == "blue_triangle/blue_triangle_0000.png"
    assert (example.width, example.height, example.preset_split) == (32, 32, None) and len(example.content_hash) == 64
    assert report.size_stats == {
        "width_min": 32.0,
        "width_median": 32.0,
        "width_max": 32.0,
        "height_min": 32.0,
        "height_median": 32.0,
        "height_max": 32.0,
    }
    assert not report.has_preset_splits and report.errors == [] and report.warnings == []
    json.dumps(report.to_dict())


def _truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()[:-300]


def test_bad_files_are_skipped_with_reasons_and_clutter_is_ignored(tmp_path: Path) -> None:
    root = _shapes(tmp_path / "data", 12, classes=2)
    red = root / "red_circle"
    (red / "notes.txt").write_text("collected in May")
    (red / "empty.jpg").write_bytes(b"")
    (red / "fake.png").write_bytes(b"<html>not found</html>")
    (red / "cut.png").write_bytes(_truncated_png())
    corrupt = bytearray((red / "red_circle_0000.png").read_bytes())
    corrupt[50:80] = b"\xff" * 30
    (red / "damaged.png").write_bytes(bytes(corrupt))
    Image.new("RGB", (120, 100), (1, 2, 3)).save(red / "huge.png")
    nested = red / "more" / "deeper"
    nested.mkdir(parents=True)
    (nested / "moved.png").write_bytes(_png((250, 0, 0)))
    for clutter in [
        red / ".hidden.png",
        red / "Thumbs.db",
        root / ".DS_Store",
        root / "__MACOSX" / "red_circle" / "._a.png",
        red / ".thumbs" / "x.png",
    ]:
        clutter.parent.mkdir(parents=True, exist_ok=True)
        clutter.write_bytes(b"junk")

    report = scan_dataset(root, max_pixels=10_000)

    assert _problem_files(report, "not-an-image") == {"red_circle/notes.txt", "red_circle/fake.png"}
    assert _problem_files(report, "zero-bytes") == {"red_circle/empty.jpg"}
    assert _problem_files(report, "truncated") == {"red_circle/cut.png"}
    assert _problem_files(report, "corrupt") == {"red_circle/damaged.png"}
    assert _problem_files(report, "too-large") == {"red_circle/huge.png"}
    assert report.files_skipped == 6 and report.files_seen == 24 + 7
    assert report.class_counts == {"green_square": 12, "red_circle": 13}
    assert "red_circle/more/deeper/moved.png" in {e.relpath for e in report.examples}
    mentioned = " ".join(p.message for p in report.problems) + str(report.duplicate_groups)
    assert not any(word in mentioned for word in ["hidden", "Thumbs", "DS_Store", "MACOSX", ".thumbs"])
    for problem in report.problems:
        assert problem.file and problem.file in problem.message and problem.severity in {"warning", "info"}


def _png(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_class_size_checks_tiny_small_and_imbalance(tmp_path: Path) -> None:
    root = _shapes(tmp_path / "data", [40, 5, 1])

    report = scan_dataset(root)

    assert report.excluded_classes == {"blue_triangle": 1}
    assert report.class_names == ["green_square", "red_circle"]
    assert all(e.label != "blue_triangle" for e in report.examples)
    assert [p.file for p in report.errors] == ["blue_triangle"] and "left out of training" in report.errors[0].message
    assert _problem_files(report, "small-class") == {"green_square"}
    imbalance = [p for p in report.problems if p.kind == "imbalance"]
    assert len(imbalance) == 1 and "'red_circle' has 40" in imbalance[0].message and "8.0" in imbalance[0].message
    assert "blue_triangle" in report.format_text() and "excluded" in report.format_text()


def test_no_imbalance_warning_at_ratio_three(tmp_path: Path) -> None:
    assert "imbalance" not in _kinds(scan_dataset(_shapes(tmp_path / "data", [30, 10], classes=2)))


def test_duplicates_within_and_across_classes(tmp_path: Path) -> None:
    root = _shapes(tmp_path / "data", 12)
    shutil.copy(root / "red_circle" / "red_circle_0003.png", root / "red_circle" / "copy_of_3.png")
    shutil.copy(root / "red_circle" / "red_circle_0004.png", root / "green_square" / "mislabelled.png")

    report = scan_dataset(root)

    relpaths = {e.relpath for e in report.examples}
    assert ("red_circle/copy_of_3.png" in relpaths) != (
        "red_circle/red_circle_0003.png" in relpaths
    )  # exactly one copy kept
    assert "red_circle/red_circle_0004.png" not in relpaths and "green_square/mislabelled.png" not in relpaths
    assert report.class_counts == {"blue_triangle": 12, "green_square": 12, "red_circle": 11}
    conflict = [p for p in report.problems if p.kind == "label-conflict"]
    assert (
        len(conflict) == 1
        and "green_square/mislabelled.png" in conflict[0].message
        and "red_circle/red_circle_0004.png" in conflict[0].message
    )
    assert _kinds(report)["duplicate"] == 1
    assert sorted(report.duplicate_groups) == [
        ["green_square/mislabelled.png", "red_circle/red_circle_0004.png"],
        ["red_circle/copy_of_3.png", "red_circle/red_circle_0003.png"],
    ]
    assert len({e.content_hash for e in report.examples}) == len(report.examples)


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ("missing", "does not exist"),
        ("empty", "is empty"),
        ("flat", "no class sub-folders"),
        ("one-class", "fewer than 2 classes"),
        ("all-bad", "zero-bytes|empty \\(0 bytes\\)"),
        ("no-train", "no train/ folder"),
    ],
)
def test_unusable_sources_raise_data_error_with_a_fix(tmp_path: Path, layout: str, match: str) -> None:
    root = tmp_path / "data"
    if layout == "empty":
        root.mkdir()
    elif layout == "flat":
        root.mkdir()
        for i in range(3):
            (root / f"{i}.png").write_bytes(_png((i, i, i)))
    elif layout == "one-class":
        _shapes(root, 5, classes=1)
    elif layout == "no-train":
        _shapes(root / "val", 3, classes=2)
        _shapes(root / "test", 3, classes=2)
    elif layout == "all-bad":
        for name in ("cats", "dogs"):
            (root / name).mkdir(parents=True)
            (root / name / "a.png").write_bytes(b"")

    with pytest.raises(DataError, match=match) as caught:
        scan_dataset(root)
    assert str(root) in str(caught.value)


def test_archive_source_is_extracted_under_extract_root(tmp_path: Path) -> None:
    root = _shapes(tmp_path / "data", 4, classes=2)
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in root.rglob("*.png"):
            bundle.write(path, f"wrapper/{path.relative_to(root).as_posix()}")

    report = scan_dataset(archive, extract_root=tmp_path / "extracted")

    assert Path(report.root).is_relative_to(tmp_path / "extracted") and Path(report.root).name == "wrapper"
    assert report.source == str(archive) and report.class_counts == {"green_square": 4, "red_circle": 4}
    assert report.fingerprint == scan_dataset(root).fingerprint


@pytest.mark.parametrize("header", [True, False])
def test_csv_source(tmp_path: Path, header: bool) -> None:
    images = _shapes(tmp_path / "images", 3, classes=2)
    outside = tmp_path / "elsewhere" / "extra.png"
    outside.parent.mkdir()
    outside.write_bytes(_png((9, 99, 199)))
    csv_dir = tmp_path / "lists"
    csv_dir.mkdir()
    rows = [f"../images/red_circle/red_circle_{i:04d}.png,round" for i in range(3)]
    rows += [f"{images}/green_square/green_square_{i:04d}.png,boxy" for i in range(3)]
    rows += [f"{outside},boxy", "missing.png,round", "only-one-column"]
    csv_path = csv_dir / "labels.csv"
    csv_path.write_text(("path,label\n" if header else "") + "\n".join(rows) + "\n")

    report = scan_dataset(csv_path)

    assert report.class_counts == {"boxy": 4, "round": 3}
    assert report.root == str(csv_dir)
    assert "../images/red_circle/red_circle_0000.png" in {e.relpath for e in report.examples}
    assert outside.as_posix() in {e.relpath for e in report.examples}
    assert _problem_files(report, "missing-file") == {"missing.png"}
    assert _kinds(report)["csv-row"] == 1


def _preset_tree(root: Path, folders: dict[str, int]) -> Path:
    for index, (split_folder, count) in enumerate(folders.items()):
        make_shapes_dataset(root / split_folder, num_classes=2, images_per_class=count, image_size=32, seed=index + 1)
    return root


def test_preset_split_folders_are_used_as_given(tmp_path: Path) -> None:
    root = _preset_tree(tmp_path / "data", {"train": 8, "validation": 3, "test": 2})

    report = scan_dataset(root)
    split = split_dataset(report, seed=5)

    assert report.has_preset_splits and report.class_counts == {"green_square": 13, "red_circle": 13}
    assert {e.preset_split for e in report.examples} == {"train", "val", "test"}
    assert split.sizes() == {"train": 16, "val": 6, "test": 4}
    assert all(e.relpath.startswith("validation/") for e in split.val)
    assert all(e.relpath.startswith("test/") for e in split.test)


def test_preset_train_and_test_only_carves_val_from_train(tmp_path: Path) -> None:
    root = _preset_tree(tmp_path / "data", {"train": 10, "test": 3})

    split = split_dataset(scan_dataset(root), val_fraction=0.2, seed=1)

    assert split.sizes() == {"train": 16, "val": 4, "test": 6}
    assert all(e.relpath.startswith("train/") for e in split.val + split.train)
    assert split.class_counts("val") == {"green_square": 2, "red_circle": 2}


def test_split_is_stratified_deterministic_and_independent_of_listing_order(tmp_path: Path) -> None:
    report = scan_dataset(_shapes(tmp_path / "data", [20, 10, 40]))

    split = split_dataset(report, val_fraction=0.15, test_fraction=0.15, seed=7)
    reordered = dataclasses.replace(report, examples=list(reversed(report.examples)))

    assert split == split_dataset(reordered, val_fraction=0.15, test_fraction=0.15, seed=7)
    assert split != split_dataset(report, val_fraction=0.15, test_fraction=0.15, seed=8)
    assert split.class_counts("val") == {"blue_triangle": 6, "green_square": 2, "red_circle": 3}
    assert split.class_counts("test") == {"blue_triangle": 6, "green_square": 2, "red_circle": 3}
    assert split.sizes() == {"train": 48, "val": 11, "test": 11}
    all_paths = [e.relpath for name in ("train", "val", "test") for e in split.examples(name)]
    assert sorted(all_paths) == sorted(e.relpath for e in report.examples)
    labels = split.labels("val")
    assert labels.dtype == np.int32 and [split.class_names[i] for i in labels] == [e.label for e in split.val]


@pytest.mark.parametrize(("count", "expected"), [(2, (2, 0, 0)), (3, (2, 0, 1)), (4, (2, 1, 1)), (10, (6, 2, 2))])
def test_tiny_classes_keep_training_images_first(tmp_path: Path, count: int, expected: tuple[int, int, int]) -> None:
    report = scan_dataset(_shapes(tmp_path / "data", [count, 20], classes=2))

    split = split_dataset(report, val_fraction=0.15, test_fraction=0.15, seed=0)

    assert tuple(split.class_counts(name)["red_circle"] for name in ("train", "val", "test")) == expected
    missing = [name for name, count in zip(("val", "test"), expected[1:]) if count == 0]
    assert list(split.missing_classes()) == missing and all(
        classes == ["red_circle"] for classes in split.missing_classes().values()
    )
    problems = split.coverage_problems()
    assert len(problems) == len(missing) and all(
        "'red_circle'" in problem and "at least 3" in problem for problem in problems
    )


def test_a_tiny_image_is_trained_on_with_a_warning(tmp_path: Path) -> None:
    from PIL import Image

    data = _shapes(tmp_path / "data", [6, 6], classes=2)
    Image.new("RGB", (3, 3), (255, 0, 0)).save(data / "red_circle" / "speck.png")
    report = scan_dataset(data)
    assert any(example.relpath == "red_circle/speck.png" for example in report.examples)
    [problem] = [problem for problem in report.problems if problem.kind == "tiny-image"]
    assert problem.file == "red_circle/speck.png" and "3x3 pixels" in problem.message and problem.severity == "warning"


def test_identical_files_never_straddle_splits(tmp_path: Path) -> None:
    report = scan_dataset(_shapes(tmp_path / "data", 30, classes=2))
    shared_hashes = [e.content_hash for e in report.examples[:10]]
    # give pairs of examples the same content hash, as if the scan had kept copies
    examples = [
        dataclasses.replace(e, content_hash=shared_hashes[i // 2]) if i < 20 else e
        for i, e in enumerate(report.examples)
    ]
    grouped = dataclasses.replace(report, examples=examples)

    for seed in range(5):
        split = split_dataset(grouped, seed=seed)
        where = {name: {e.content_hash for e in split.examples(name)} for name in ("train", "val", "test")}
        assert not (where["train"] & where["val"] or where["train"] & where["test"] or where["val"] & where["test"])


def test_fingerprint_is_stable_and_tracks_content(tmp_path: Path) -> None:
    root = _shapes(tmp_path / "data", 4, classes=2)
    first = scan_dataset(root).fingerprint

    assert scan_dataset(root).fingerprint == first
    (root / "red_circle" / "red_circle_0002.png").write_bytes(_png((1, 2, 3)))
    changed = scan_dataset(root).fingerprint
    assert changed != first
    (root / "red_circle" / "red_circle_0002.png").rename(root / "red_circle" / "renamed.png")
    assert scan_dataset(root).fingerprint not in {first, changed}


def test_format_text_aligns_counts_and_caps_each_kind(tmp_path: Path) -> None:
    root = _shapes(tmp_path / "data", 12, classes=2)
    for i in range(25):
        (root / "green_square" / f"note_{i:02d}.txt").write_text("x")

    text = scan_dataset(root).format_text()

    assert "green_square  " in text and "red_circle    " in text
    assert text.count("note_") == 20 and "... and 5 more" in text
