"""Reviewers' labels read back (``label.v1.json`` records): each alert's latest verdict.

Light on imports, like stream/scores.py: ``vigil tune`` reads them, and starts fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from detectors.precision import VERDICTS
from schemas.validation import validate_label
from stream.scores import InputError, json_lines


class Review(NamedTuple):
    """A reviewer's latest verdict on one alert (``None``: unsure) and the alert's detector."""

    labeled_at: str
    verdict: bool | None
    detector: str


def latest_reviews(rows: Iterable[Mapping[str, Any]]) -> dict[str, Review]:
    """alert_id -> its latest review, from valid ``label.v1`` records; an alert labeled
    more than once keeps its latest verdict, as the compacted labels topic does.

    >>> row = {"alert_id": "al-1", "verdict": "false_positive", "detector": "hst/1"}
    >>> later = {**row, "verdict": "true_positive", "labeled_at": "2026-11-03T00:00:00Z"}
    >>> latest_reviews([later, {**row, "labeled_at": "2026-11-02T00:00:00Z"}])["al-1"].verdict
    True
    """
    latest: dict[str, Review] = {}
    for row in rows:
        labeled_at, previous = row["labeled_at"], latest.get(row["alert_id"])
        # RFC 3339 UTC with Z: the string order is the time order, give or take a fraction's
        # digits, which only reorders labels given within the same second.
        if previous is None or labeled_at >= previous.labeled_at:
            latest[row["alert_id"]] = Review(labeled_at, VERDICTS[row["verdict"]], row["detector"])
    return latest


def read_review_file(path: Path) -> dict[str, Review]:
    """The reviews of a file of ``label.v1`` lines; ``InputError`` names a line that is
    not one."""
    rows = []
    for number, row in json_lines(path):
        try:
            validate_label(row)
        except ValueError as exc:
            raise InputError(path, f"not a label.v1 record: {exc}", number) from exc
        rows.append(row)
    return latest_reviews(rows)


def is_review_file(path: Path) -> bool:
    """Whether ``path`` holds reviewers' labels (its first record has a verdict) rather
    than the generator's ground truth."""
    for _, row in json_lines(path):
        return "verdict" in row
    return False
