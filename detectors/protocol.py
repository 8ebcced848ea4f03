"""The one protocol every Vigil detector speaks.

Modelled on river's anomaly detectors: ``score_one`` before ``learn_one``, higher scores
mean more anomalous. The batch methods work on a 2-D float array whose columns follow
``feature_names``; a detector that has no faster batch path inherits the row-by-row one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Features = Mapping[str, float]
FloatArray = npt.NDArray[np.float64]


@runtime_checkable
class Detector(Protocol):
    """An online, unsupervised anomaly detector."""

    name: str
    feature_names: tuple[str, ...]

    def score_one(self, x: Features) -> float:
        """Anomaly score of ``x`` against what was learned so far; higher is stranger."""
        ...

    def learn_one(self, x: Features) -> None:
        """Update the model with ``x``."""
        ...

    def score_many(self, rows: FloatArray) -> FloatArray:
        """Scores of each row (columns in ``feature_names`` order)."""
        ...

    def learn_many(self, rows: FloatArray) -> None:
        """Learn each row, in order."""
        ...

    def score_learn_many(self, rows: FloatArray) -> FloatArray:
        """Score each row, then learn it, in order: the per-event semantics in one call."""
        ...


class RowByRowBatch:
    """Batch methods built on the per-event ones, for detectors without a vector path."""

    feature_names: tuple[str, ...]

    def score_one(self, x: Features) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def learn_one(self, x: Features) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _row_dict(self, row: Sequence[float]) -> dict[str, float]:
        return dict(zip(self.feature_names, (float(v) for v in row), strict=True))

    def score_many(self, rows: FloatArray) -> FloatArray:
        return np.array([self.score_one(self._row_dict(row)) for row in rows], dtype=np.float64)

    def learn_many(self, rows: FloatArray) -> None:
        for row in rows:
            self.learn_one(self._row_dict(row))

    def score_learn_many(self, rows: FloatArray) -> FloatArray:
        scores = np.empty(len(rows), dtype=np.float64)
        for i, row in enumerate(rows):
            x = self._row_dict(row)
            scores[i] = self.score_one(x)
            self.learn_one(x)
        return scores
