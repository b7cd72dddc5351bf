"""What the label review found, as plain data: the page reads it from the job's record without loading the engine.

`tl_core.insight.review_job` fills it in a worker; `ui.label_review` draws it. It imports no TensorFlow, so the web
server can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tl_core.insight.near_duplicates import NearDuplicate

if TYPE_CHECKING:
    from tl_core.insight.label_issues import LabelCheck


@dataclass(frozen=True)
class ReviewIssue:
    """A likely label error as the review shows it: the example's relpath (the override file's key) and file."""

    relpath: str
    path: str
    given_label: str
    suggested_label: str
    score: float


@dataclass(frozen=True)
class MapPoint:
    """One example on the embedding map (tl_core/insight/embedding_map.py): where it sits, its label, whether odd."""

    relpath: str
    path: str
    label: str
    x: float
    y: float
    outlier: bool


@dataclass(frozen=True)
class ReviewResult:
    """What the review job found; plain data, so the page reads it from the job's record without the engine."""

    checked: int
    folds: int
    class_names: tuple[str, ...]
    issues: tuple[ReviewIssue, ...]
    near_duplicates: tuple[NearDuplicate, ...]
    similarity: float
    notes: tuple[str, ...] = ()
    paths: dict[str, str] | None = None  # relpath -> file, for the near-duplicates' thumbnails
    points: tuple[MapPoint, ...] = ()  # the embedding map; empty in a result recorded before it existed

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "folds": self.folds,
            "class_names": list(self.class_names),
            "issues": [issue.__dict__ for issue in self.issues],
            "near_duplicates": [pair.to_dict() for pair in self.near_duplicates],
            "similarity": self.similarity,
            "notes": list(self.notes),
            "paths": dict(self.paths or {}),
            "points": [point.__dict__ for point in self.points],
        }

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ReviewResult:
        return cls(
            checked=int(fields["checked"]),
            folds=int(fields["folds"]),
            class_names=tuple(fields["class_names"]),
            issues=tuple(ReviewIssue(**issue) for issue in fields["issues"]),
            near_duplicates=tuple(NearDuplicate.from_dict(pair) for pair in fields["near_duplicates"]),
            similarity=float(fields["similarity"]),
            notes=tuple(fields.get("notes") or ()),
            paths=dict(fields.get("paths") or {}),
            points=tuple(MapPoint(**point) for point in fields.get("points") or ()),
        )


def review_result(
    check: LabelCheck,
    pairs: list[NearDuplicate],
    relpaths: dict[str, str],
    similarity: float,
    points: tuple[MapPoint, ...] = (),
) -> ReviewResult:
    """The check's issues keyed by relpath (`relpaths`: file -> relpath), with the near-duplicate pairs and the map."""
    issues = tuple(
        ReviewIssue(relpaths[i.path], i.path, i.given_label, i.suggested_label, i.score) for i in check.issues
    )
    by_relpath = {relpath: path for path, relpath in relpaths.items()}
    shown = {name for pair in pairs for name in (pair.first, pair.second)}
    return ReviewResult(
        check.checked,
        check.folds,
        check.class_names,
        issues,
        tuple(pairs),
        similarity,
        check.notes,
        {relpath: by_relpath[relpath] for relpath in sorted(shown)},
        points,
    )
