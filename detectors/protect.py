"""Protection against poisoning: do not learn what looks like an attack.

A wave of coordinated fraud that the detector learns becomes the new normal, and the
wave's later events score low. ``Protected`` wraps any detector and skips learning an
event whose score (computed before learning, as always) exceeds ``cutoff``, or that the
caller marks as part of a known incident. It is river's ``protect_anomaly_detector`` idea
for our protocol, with the incident mask added.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detectors.protocol import Detector, Features, FloatArray


class Protected:
    """Learn only from events scoring at most ``cutoff`` and not excluded by the caller.

    >>> from detectors.hst import HalfSpaceTrees
    >>> inner = HalfSpaceTrees(("a",), n_trees=5, height=4, window_size=10, seed=1)
    >>> guarded = Protected(inner, cutoff=0.5)
    >>> guarded.name
    'hst/1+protected'
    >>> rows = np.full((30, 1), 0.5)
    >>> scores = guarded.score_learn_many(rows)
    >>> guarded.learned, guarded.skipped
    (30, 0)
    """

    def __init__(self, inner: Detector, cutoff: float) -> None:
        self.inner = inner
        self.cutoff = cutoff
        self.name = f"{inner.name}+protected"
        self.feature_names = inner.feature_names
        self.learned = 0
        self.skipped = 0

    def score_one(self, x: Features) -> float:
        return self.inner.score_one(x)

    def learn_one(self, x: Features) -> None:
        """Learn ``x`` unconditionally (the caller decided)."""
        self.inner.learn_one(x)
        self.learned += 1

    def score_many(self, rows: FloatArray) -> FloatArray:
        return self.inner.score_many(rows)

    def learn_many(self, rows: FloatArray) -> None:
        self.inner.learn_many(rows)
        self.learned += len(rows)

    def score_learn_many(
        self, rows: FloatArray, exclude: Sequence[bool] | None = None
    ) -> FloatArray:
        """Score each row, then learn it unless it scored above the cutoff or is excluded.

        Row by row, because whether a row is learned depends on its own score (with an
        infinite cutoff only the mask decides, and runs go through the inner batch path).
        """
        if self.cutoff == np.inf:
            scores = score_learn_except(self.inner, rows, exclude)
            skipped = 0 if exclude is None else int(np.count_nonzero(exclude))
            self.skipped += skipped
            self.learned += len(rows) - skipped
            return scores
        scores = np.empty(len(rows), dtype=np.float64)
        for i in range(len(rows)):
            row = rows[i : i + 1]
            scores[i] = self.inner.score_many(row)[0]
            if scores[i] > self.cutoff or (exclude is not None and exclude[i]):
                self.skipped += 1
            else:
                self.inner.learn_many(row)
                self.learned += 1
        return scores


def score_learn_except(
    detector: Detector, rows: FloatArray, exclude: Sequence[bool] | None
) -> FloatArray:
    """Score every row before learning it, but learn only the rows not excluded.

    Exactly the row-by-row semantics: an excluded row leaves the model as it was, so each
    run of learned rows goes through the detector's own vectorised ``score_learn_many``
    and each run of excluded rows through ``score_many``.

    >>> from detectors.hst import HalfSpaceTrees
    >>> a = HalfSpaceTrees(("x",), n_trees=3, height=3, window_size=4, seed=1)
    >>> b = HalfSpaceTrees(("x",), n_trees=3, height=3, window_size=4, seed=1)
    >>> rows = np.linspace(0, 1, 12).reshape(-1, 1)
    >>> mask = [i % 3 == 0 for i in range(12)]
    >>> kept = np.array([not m for m in mask])
    >>> got = score_learn_except(a, rows, mask)
    >>> want = b.score_learn_many(rows[kept])
    >>> bool(np.allclose(got[kept], want))
    True
    """
    if exclude is None or not any(exclude):
        return detector.score_learn_many(rows)
    scores = np.empty(len(rows), dtype=np.float64)
    start = 0
    while start < len(rows):
        skip = bool(exclude[start])
        stop = start + 1
        while stop < len(rows) and bool(exclude[stop]) == skip:
            stop += 1
        part = rows[start:stop]
        scores[start:stop] = detector.score_many(part) if skip else detector.score_learn_many(part)
        start = stop
    return scores
