"""Cheap explanations: which features of an event sit furthest from the learned normal.

River's Half-Space Trees have no attribution of their own, so this ranks features by their
distance from the detector's running mean, in standard deviations. It is computed from
running moments that cost O(features) per event, so it can run on every alert.

The moments are learned per event in order (``learn_one``) or, with the same arithmetic
in the same order, for a block of rows at once (``learn_many``, a numba loop): the
scorer learns a batch's events in blocks, up to each alert it explains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numba import njit

from detectors.protocol import FloatArray


@dataclass(frozen=True, slots=True)
class Reason:
    """One feature that drove a score."""

    feature: str
    value: float
    baseline: float
    direction: str  # "high" or "low"
    z: float


class DeviationExplainer:
    """Welford running mean and variance per feature; ranks an event's features by |z|."""

    def __init__(self, feature_names: tuple[str, ...], min_std: float = 1e-6) -> None:
        self.feature_names = feature_names
        self.min_std = min_std
        self._n = 0
        self._mean = dict.fromkeys(feature_names, 0.0)
        self._m2 = dict.fromkeys(feature_names, 0.0)

    def learn_one(self, x: Mapping[str, float]) -> None:
        self._n += 1
        for name in self.feature_names:
            value = x.get(name)
            if value is None or math.isnan(value):
                continue
            delta = value - self._mean[name]
            self._mean[name] += delta / self._n
            self._m2[name] += delta * (value - self._mean[name])

    def learn_many(self, rows: FloatArray) -> None:
        """``learn_one`` for each row in order; a row holds the values of
        ``feature_names`` in that order (NaN where a feature is missing)."""
        if rows.shape[0] == 0:
            return
        names = self.feature_names
        if rows.ndim != 2 or rows.shape[1] != len(names):
            raise ValueError(f"rows must have shape (n, {len(names)}), got {rows.shape}")
        mean = np.array([self._mean[name] for name in names], dtype=np.float64)
        m2 = np.array([self._m2[name] for name in names], dtype=np.float64)
        _welford(np.ascontiguousarray(rows, dtype=np.float64), self._n, mean, m2)
        self._n += rows.shape[0]
        # Python floats from float64 are the same values, bit for bit.
        self._mean = dict(zip(names, mean.tolist(), strict=True))
        self._m2 = dict(zip(names, m2.tolist(), strict=True))

    def baseline(self, feature: str) -> float:
        """The running mean of ``feature`` (0 before anything was learned)."""
        return self._mean.get(feature, 0.0)

    def explain(self, x: Mapping[str, float], top: int = 3) -> list[Reason]:
        if self._n < 2:
            return []
        reasons: list[Reason] = []
        for name in self.feature_names:
            value = x.get(name)
            if value is None or math.isnan(value):
                continue
            mean = self._mean[name]
            std = max(math.sqrt(self._m2[name] / (self._n - 1)), self.min_std)
            z = (value - mean) / std
            reasons.append(Reason(name, value, mean, "high" if z >= 0 else "low", z))
        reasons.sort(key=lambda r: (-abs(r.z), r.feature))
        return [r for r in reasons[:top] if abs(r.z) > 0.0]


@njit(cache=True)
def _welford(rows: FloatArray, n: int, mean: FloatArray, m2: FloatArray) -> None:
    """``learn_one``'s updates for each row, in place: the same IEEE operations in the
    same order (numba does not reassociate or fuse them without ``fastmath``)."""
    for i in range(rows.shape[0]):
        count = n + i + 1
        for j in range(rows.shape[1]):
            value = rows[i, j]
            if np.isnan(value):
                continue
            delta = value - mean[j]
            mean[j] += delta / count
            m2[j] += delta * (value - mean[j])
