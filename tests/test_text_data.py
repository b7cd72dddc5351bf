"""Text datasets: scanning folders, archives and CSV/TSV tables; decoding; validation problems; loading."""

from __future__ import annotations

import codecs
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tl_core.data.checks import detect_modality
from tl_core.data.image_dataset import split_dataset
from tl_core.data.synthetic import make_shapes_dataset
from tl_core.data.text_dataset import (
    TextScanReport,
    load_texts,
    read_document,
    scan_text_dataset,
)
from tl_core.data.text_decoding import FALLBACK_ENCODING, MAX_DOCUMENT_CHARS, decode_bytes
from tl_core.data.text_demo import make_topics_dataset
from tl_core.errors import DataError


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _messy_dataset(root: Path) -> Path:
    """Two healthy classes (news, recipes) plus every problem the scanner reports."""
    for i in range(12):
        _write(root / "news" / f"n{i:02d}.txt", f"Report {i}: the minister spoke to parliament about the budget.")
    for i in range(4):
        _write(root / "recipes" / f"r{i}.txt", f"Recipe {i}: mix flour and butter, then bake.")
    _write(root / "recipes" / "bom.txt", codecs.BOM_UTF8 + "Crème brûlée with a BOM.".encode())
    _write(root / "recipes" / "latin.txt", "Café au lait, naïve chef.".encode("cp1252"))
    _write(root / "recipes" / "empty.txt", "  \n\t ")
    _write(root / "recipes" / "binary.txt", b"PK\x03\x04\x00\x00binary junk")
    _write(root / "recipes" / "photo.png", b"\x89PNG not text")
    _write(root / "recipes" / "copy.txt", "RECIPE 0:   mix flour and\nbutter, then bake.")  # same normalised text as r0
    _write(root / "news" / "misfiled.txt", "Soup of the day.")
    _write(root / "recipes" / "misfiled.txt", "soup of the day.")  # the same document in two classes
    _write(root / "recipes" / "long.txt", "word " * (MAX_DOCUMENT_CHARS // 4))
    _write(root / "poetry" / "only.txt", "A single poem.")
    _write(root / "loose.txt", "Not in a class folder.")
    return root


def test_messy_folder_reports_each_problem_with_its_file_and_fix(tmp_path: Path) -> None:
    report = scan_text_dataset(_messy_dataset(tmp_path / "data"))
    assert isinstance(report, TextScanReport)
    kinds = Counter(problem.kind for problem in report.problems)
    assert kinds == Counter(
        {
            "not-utf8": 1,
            "empty-document": 1,
            "binary-file": 1,
            "not-a-text-file": 1,
            "duplicate": 1,
            "label-conflict": 1,
            "long-document": 1,
            "too-few-documents": 1,
            "small-class": 1,
            "outside-class-folder": 1,
        }
    )
    for problem in report.problems:
        if problem.kind not in ("too-few-documents", "small-class"):
            assert problem.file and problem.file.split(":")[0] in problem.message, problem
    by_kind = {p.kind: p for p in report.problems}
    assert by_kind["label-conflict"].severity == "error" and "news/misfiled.txt" in by_kind["label-conflict"].message
    assert "keep the document only in its true class" in by_kind["label-conflict"].message
    assert FALLBACK_ENCODING in by_kind["not-utf8"].message and "recipes/latin.txt" == by_kind["not-utf8"].file
    assert f"first {MAX_DOCUMENT_CHARS:,}" in by_kind["long-document"].message
    assert by_kind["too-few-documents"].file == "poetry" and report.excluded_classes == {"poetry": 1}
    assert report.class_names == ["news", "recipes"]
    used = {e.relpath for e in report.examples}
    assert "recipes/copy.txt" in used and "recipes/r0.txt" not in used  # one copy kept: the first by path
    assert not used & {"news/misfiled.txt", "recipes/misfiled.txt", "recipes/empty.txt", "recipes/binary.txt"}
    assert report.class_counts == {"news": 12, "recipes": 7}  # r0-r3, bom, latin, long
    long_doc = next(e for e in report.examples if e.relpath == "recipes/long.txt")
    assert long_doc.width == MAX_DOCUMENT_CHARS and long_doc.height == MAX_DOCUMENT_CHARS // 5
    text = report.format_text()
    assert "documents" in text and "images" not in text and "ERROR label-conflict" in text


def test_imbalance_is_reported(tmp_path: Path) -> None:
    for i in range(40):
        _write(tmp_path / "big" / f"{i}.txt", f"big class document number {i}")
    for i in range(10):
        _write(tmp_path / "small" / f"{i}.txt", f"small class document number {i}")
    report = scan_text_dataset(tmp_path)
    imbalance = [p for p in report.problems if p.kind == "imbalance"]
    assert (
        len(imbalance) == 1
        and "'big' has 40 documents" in imbalance[0].message
        and "class weighting" in imbalance[0].message
    )


def test_decoding_order_utf8_bom_utf16_then_fallback() -> None:
    assert decode_bytes("naïve".encode()) == ("naïve", "utf-8")
    assert decode_bytes(codecs.BOM_UTF8 + "naïve".encode()) == ("naïve", "utf-8-sig")
    assert decode_bytes("naïve".encode("utf-16")) == ("naïve", "utf-16")
    assert decode_bytes("naïve".encode("cp1252")) == ("naïve", FALLBACK_ENCODING)
    assert decode_bytes("naïve".encode()[:3], complete=False) == ("na", "utf-8")  # a character cut by a partial read


def test_split_and_load_texts_give_string_arrays(tmp_path: Path) -> None:
    report = scan_text_dataset(_messy_dataset(tmp_path / "data"))
    split = split_dataset(report, val_fraction=0.2, test_fraction=0.2, seed=1)
    data = load_texts(split)
    assert data.class_names == ("news", "recipes")
    for name in ("train", "val", "test"):
        texts = data.images[name]
        assert (
            texts.dtype == object
            and texts.ndim == 1
            and len(texts) == len(data.labels[name]) == len(split.examples(name))
        )
        for text, example in zip(texts, split.examples(name)):
            assert isinstance(text, str) and text == read_document(example.path)
    everything = {e.relpath: t for n in ("train", "val", "test") for e, t in zip(split.examples(n), data.images[n])}
    assert everything["recipes/bom.txt"] == "Crème brûlée with a BOM."  # BOM removed
    assert everything["recipes/latin.txt"] == "Café au lait, naïve chef."
    assert len(everything["recipes/long.txt"]) == MAX_DOCUMENT_CHARS


def test_csv_with_named_columns_and_tsv_without_header(tmp_path: Path) -> None:
    csv_path = _write(
        tmp_path / "reviews.csv",
        'id,review_text,sentiment\n1,"Great film, loved it",pos\n2,"Awful.\nJust awful",neg\n'
        "3,Fine acting,pos\n4,Boring plot,neg\n5,No label here,\n6,Terrible pacing,neg\n7,Wonderful cast,pos\n",
    )
    report = scan_text_dataset(csv_path)
    assert report.class_counts == {"neg": 3, "pos": 3}
    assert Counter(p.kind for p in report.problems) == Counter({"small-class": 2, "csv-row": 1})
    assert next(p for p in report.problems if p.kind == "csv-row").file == "reviews.csv:row 6"
    row = next(e for e in report.examples if e.label == "neg" and e.relpath == "reviews.csv:row 3")
    assert read_document(row.path) == "Awful.\nJust awful"  # a quoted cell spanning two lines is one row
    assert report.root == str(tmp_path.resolve())

    tsv_path = _write(
        tmp_path / "plain.tsv",
        "".join(f"sport\tThe team won match number {i} at home\n" for i in range(3))
        + "".join(f"politics\tThe senate debated bill number {i} today\n" for i in range(3)),
    )
    tsv = scan_text_dataset(tsv_path)
    assert tsv.class_names == ["politics", "sport"]  # the longer column is the text
    assert (
        read_document(next(e for e in tsv.examples if e.relpath == "plain.tsv:row 1").path)
        == "The team won match number 0 at home"
    )


def test_csv_without_recognisable_columns_says_how_to_name_them(tmp_path: Path) -> None:
    path = _write(tmp_path / "odd.csv", "a,b,c\n1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="Name them `text` and `label`"):
        scan_text_dataset(path)
    named = scan_text_dataset(
        _write(tmp_path / "named.csv", "a,b,c\nx1,hello world,p\nx2,hi there,p\nx3,bye now,q\nx4,so long,q\n"),
        text_column="b",
        label_column="c",
    )
    assert named.class_counts == {"p": 2, "q": 2}


def test_zip_of_a_folder_scans_like_the_folder(tmp_path: Path) -> None:
    folder = make_topics_dataset(tmp_path / "topics", num_classes=3, docs_per_class=6)
    archive = tmp_path / "topics.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*.txt")):
            bundle.write(path, Path("topics") / path.relative_to(folder))
    from_zip = scan_text_dataset(archive, extract_root=tmp_path / "extracted")
    from_folder = scan_text_dataset(folder)
    assert from_zip.fingerprint == from_folder.fingerprint and from_zip.class_counts == {
        "business": 6,
        "politics": 6,
        "sports": 6,
    }


def test_detect_modality(tmp_path: Path) -> None:
    text_folder = make_topics_dataset(tmp_path / "topics", docs_per_class=3)
    image_folder = make_shapes_dataset(tmp_path / "shapes", num_classes=2, images_per_class=3, image_size=32)
    assert detect_modality(text_folder) == "text" and detect_modality(image_folder) == "image"
    archive = tmp_path / "t.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("a/1.txt", "hello")
    assert detect_modality(archive) == "text"
    assert detect_modality(_write(tmp_path / "x.tsv", "a\tb\n")) == "text"
    assert detect_modality(_write(tmp_path / "texts.csv", "text,label\nhello,a\n")) == "text"
    assert detect_modality(_write(tmp_path / "images.csv", "path,label\ncats/1.jpg,cat\n")) == "image"


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ("empty", "is empty"),
        ("no-classes", "no class sub-folders"),
        ("one-class", "fewer than 2 classes"),
        ("missing", "does not exist"),
    ],
)
def test_unusable_sources_raise_with_a_fix(tmp_path: Path, layout: str, match: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    if layout == "no-classes":
        _write(root / "a.txt", "hello")
    elif layout == "one-class":
        _write(root / "only" / "a.txt", "hello")
        _write(root / "only" / "b.txt", "world")
        _write(root / "other" / "bad.txt", b"\x00\x01")
    elif layout == "missing":
        root = tmp_path / "nothing"
    with pytest.raises(DataError, match=match):
        scan_text_dataset(root)


def test_preset_split_folders_are_kept(tmp_path: Path) -> None:
    for split, count in (("train", 4), ("test", 2)):
        for label in ("a", "b"):
            for i in range(count):
                _write(tmp_path / split / label / f"{i}.txt", f"{split} {label} document {i}")
    report = scan_text_dataset(tmp_path)
    assert report.has_preset_splits
    split = split_dataset(report, val_fraction=0.25, test_fraction=0.2, seed=0)
    assert {e.relpath.split("/")[0] for e in split.test} == {"test"} and len(split.test) == 4
    assert np.array_equal(np.sort(split.labels("test")), [0, 0, 1, 1])
