"""The labels-override file: the user's keep / relabel / exclude decisions, kept in the workspace, never in their data.

Reviewing likely label errors (the Data page) ends in a decision per example. The dataset's own files stay as
they are (they may be read-only, shared, or an archive); the decisions go to `<workspace>/label_overrides.json`:

    {"version": 1, "datasets": {"/abs/path/of/the/source": {
        "cat/img_003.png": {"action": "relabel", "label": "dog"},
        "cat/img_007.png": {"action": "exclude"},
        "dog/img_001.png": {"action": "keep"}}}}

A dataset is keyed by its source (folder, archive or CSV/TSV) as an absolute path, an example by its `relpath`
(for images the path inside the dataset, for a table row the `reviews.csv:row 12` reference of
`tl_core.data.text_dataset`). `apply_label_overrides` applies them after the split, so the next run trains
relabelled examples under their new class and leaves excluded ones out; the dataset fingerprint then changes
with the decisions (it covers every example's label), so runs say which labels they trained on. "keep" only
dismisses a flagged example: it changes nothing the run sees, nor the fingerprint.

Decisions are applied after the split, not before: a relabel moves no example to another split, so runs before
and after a review are evaluated on the same test examples, and the backbone-feature cache (keyed by each split's
example contents, never by labels) is reused. Labels always come from the examples themselves, so no cached
features can carry an old label.

Example:
    >>> save_decision(workspace, "/data/pets", "cat/img_003.png", LabelDecision("relabel", "dog"))
    >>> load_decisions(workspace, "/data/pets")["cat/img_003.png"]
    LabelDecision(action='relabel', label='dog')
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tl_core.data.checks import MIN_EXAMPLES_PER_CLASS, dataset_fingerprint
from tl_core.data.types import SPLIT_NAMES, DatasetSplit, Example, Problem, ScanReport
from tl_core.errors import DataError
from tl_core.layout import LABEL_OVERRIDES_FILE

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; the write itself stays atomic
    fcntl = None  # type: ignore[assignment]

Action = Literal["keep", "relabel", "exclude"]
ACTIONS: tuple[Action, ...] = ("keep", "relabel", "exclude")
FORMAT_VERSION = 1
OVERRIDES_PROBLEM_KIND = "label-overrides"


@dataclass(frozen=True)
class LabelDecision:
    """One example's decision; `label` is the new class of a relabel (None otherwise)."""

    action: Action
    label: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action={self.action!r}: use one of {', '.join(ACTIONS)}.")
        if (self.action == "relabel") != bool(self.label):
            raise ValueError("A relabel needs the new class as `label`; keep and exclude take none.")

    def to_dict(self) -> dict[str, str]:
        return {"action": self.action, **({"label": self.label} if self.label else {})}


@dataclass(frozen=True)
class AppliedOverrides:
    """What the decisions changed in one prepared dataset (all zero when there is no decision for it)."""

    relabelled: int = 0
    excluded: int = 0
    kept: int = 0
    unmatched: int = 0  # decisions naming examples the dataset no longer has (moved, deleted, or skipped by the scan)

    @property
    def changed(self) -> bool:
        return bool(self.relabelled or self.excluded)


def overrides_path(workspace: str | Path) -> Path:
    return Path(workspace) / LABEL_OVERRIDES_FILE


def dataset_key(source: str | Path) -> str:
    """The key of a dataset in the file: its source as an absolute path (the same however the caller named it)."""
    return str(Path(source).expanduser().resolve())


def load_decisions(workspace: str | Path, source: str | Path) -> dict[str, LabelDecision]:
    """The decisions for `source` (relpath -> decision); empty when there are none.

    Raises:
        DataError: the file is not a labels-override file; the message names it and how to fix it.
    """
    path = overrides_path(workspace)
    return _decisions_of(_read(path), path).get(dataset_key(source), {})


def save_decision(
    workspace: str | Path, source: str | Path, relpath: str, decision: LabelDecision | None
) -> dict[str, LabelDecision]:
    """Record (or, with None, forget) one example's decision at once; returns the dataset's decisions after it.

    Read, change and replace happen under an exclusive lock, and the new file replaces the old one atomically:
    two tabs saving at once both keep their decision, and a crash never leaves half a file.
    """
    path = overrides_path(workspace)
    with _editing(path) as datasets:
        decisions = datasets.setdefault(dataset_key(source), {})
        if decision is None:
            decisions.pop(relpath, None)
        else:
            decisions[relpath] = decision.to_dict()
        if not decisions:
            del datasets[dataset_key(source)]
    return load_decisions(workspace, source)


def _read(path: Path) -> dict[str, Any]:
    """The file's `datasets` table; empty when the file does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise DataError(f"The labels-override file {path} cannot be read ({error}): check its permissions.") from error
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION or not isinstance(raw["datasets"], dict):
            raise ValueError(f"expected {{'version': {FORMAT_VERSION}, 'datasets': {{...}}}}")
    except (ValueError, KeyError) as error:
        raise DataError(_corrupt(path, error)) from error
    return raw["datasets"]


def _decisions_of(datasets: Mapping[str, Any], path: Path) -> dict[str, dict[str, LabelDecision]]:
    try:
        return {
            source: {relpath: LabelDecision(**fields) for relpath, fields in decisions.items()}
            for source, decisions in datasets.items()
        }
    except (TypeError, ValueError, AttributeError) as error:
        raise DataError(_corrupt(path, error)) from error


def _corrupt(path: Path, error: Exception) -> str:
    return (
        f'The labels-override file {path} is damaged ({error}). Fix it by hand (format: {{"version": 1, "datasets": '
        f'{{SOURCE: {{RELPATH: {{"action": "keep"|"relabel"|"exclude", "label": CLASS}}}}}}}}), or delete it to start '
        "the label review again; your dataset's own files were never changed."
    )


@contextlib.contextmanager
def _editing(path: Path) -> Iterator[dict[str, Any]]:
    """The `datasets` table to change in place, written back atomically under an exclusive lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        datasets = _read(path)
        _decisions_of(datasets, path)  # refuse to add to a damaged file rather than rewrite it
        yield datasets
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as output:
                json.dump({"version": FORMAT_VERSION, "datasets": datasets}, output, indent=1, sort_keys=True)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def apply_label_overrides(
    report: ScanReport, split: DatasetSplit, decisions: Mapping[str, LabelDecision], *, file: str | Path = ""
) -> tuple[ScanReport, DatasetSplit, AppliedOverrides]:
    """The report and split as the decisions make them: relabelled examples under their new class, excluded ones out.

    Each example stays in its split. The report's fingerprint, class counts and problems follow the change, with an
    "info" problem saying what was applied (a run logs it); a class left with fewer than `MIN_EXAMPLES_PER_CLASS`
    examples is left out with an error problem, as a scan does.

    Args:
        report: the scanned dataset.
        split: its split (of `report.examples`).
        decisions: relpath -> decision, as `load_decisions` gives them.
        file: the override file, named in messages.

    Returns:
        (report, split, what was applied); the inputs themselves when no decision changes anything.

    Raises:
        DataError: fewer than two classes are left; the message says which decisions to undo.
    """
    by_relpath = {example.relpath: example for example in report.examples}
    matched = {relpath: decision for relpath, decision in decisions.items() if relpath in by_relpath}
    problems: list[Problem] = []
    changed: dict[str, Example | None] = {}  # relpath -> the example as decided (None: excluded)
    for relpath, decision in matched.items():
        example = by_relpath[relpath]
        if decision.action == "exclude":
            changed[relpath] = None
        elif decision.action == "relabel" and decision.label != example.label:
            if decision.label in report.class_names:
                changed[relpath] = dataclasses.replace(example, label=decision.label)
            else:
                problems.append(_unknown_class(relpath, decision.label or "", report.class_names, file))
    applied = AppliedOverrides(
        relabelled=sum(1 for e in changed.values() if e is not None),
        excluded=sum(1 for e in changed.values() if e is None),
        kept=sum(1 for d in matched.values() if d.action == "keep"),
        unmatched=len(decisions) - len(matched),
    )
    if not changed and not problems:
        return report, split, applied
    decided = [changed.get(e.relpath, e) for e in report.examples]
    examples = [e for e in decided if e is not None]
    counts = {name: sum(1 for e in examples if e.label == name) for name in report.class_names}
    too_small = {name: count for name, count in counts.items() if count < MIN_EXAMPLES_PER_CLASS}
    problems += [_too_small(name, count, file) for name, count in too_small.items()]
    class_counts = {name: count for name, count in counts.items() if name not in too_small}
    if len(class_counts) < 2:
        raise DataError(
            f"After the label decisions in {file}, fewer than 2 classes have {MIN_EXAMPLES_PER_CLASS}+ examples "
            f"({', '.join(f'{n} ({c})' for n, c in counts.items())}): undo some relabel or exclude decisions in the "
            "Data page's label review, or delete that file."
        )
    examples = [e for e in examples if e.label in class_counts]
    problems.append(Problem("info", OVERRIDES_PROBLEM_KIND, _summary(applied, file)))
    new_report = dataclasses.replace(
        report,
        examples=examples,
        class_names=sorted(class_counts),
        class_counts=class_counts,
        excluded_classes={**report.excluded_classes, **too_small},
        problems=[*report.problems, *problems],
        fingerprint=dataset_fingerprint(examples),
    )
    parts = {
        name: tuple(
            e
            for e in (changed.get(example.relpath, example) for example in split.examples(name))
            if e is not None and e.label in class_counts
        )
        for name in SPLIT_NAMES
    }
    ordered = {name: tuple(sorted(parts[name], key=lambda e: (e.relpath, e.label))) for name in SPLIT_NAMES}
    new_split = DatasetSplit(ordered["train"], ordered["val"], ordered["test"], tuple(sorted(class_counts)), split.seed)
    return new_report, new_split, applied


def _summary(applied: AppliedOverrides, file: str | Path) -> str:
    stale = f"; {applied.unmatched} decision(s) name examples this dataset no longer has" if applied.unmatched else ""
    return (
        f"Label decisions applied from {file}: {applied.relabelled} relabelled, {applied.excluded} excluded, "
        f"{applied.kept} kept as labelled{stale}. Change them in the Data page's label review."
    )


def _unknown_class(relpath: str, label: str, class_names: list[str], file: str | Path) -> Problem:
    return Problem(
        "warning",
        OVERRIDES_PROBLEM_KIND,
        f"{relpath} is relabelled to {label!r} in {file}, but the dataset has no such class (it has "
        f"{', '.join(class_names)}): the example keeps its label. Relabel it to one of those in the label review.",
        relpath,
    )


def _too_small(name: str, count: int, file: str | Path) -> Problem:
    return Problem(
        "error",
        OVERRIDES_PROBLEM_KIND,
        f"Class {name!r} has {count} example(s) after the label decisions in {file} and was left out of training: "
        "undo some of its relabel or exclude decisions in the label review.",
        name,
    )
