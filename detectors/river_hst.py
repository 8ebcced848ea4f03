"""river's Half-Space Trees behind the Vigil detector protocol.

river builds its trees from the keys of the first event it sees, so a feature that shows up
late is silently ignored and a missing one raises. The adapter fixes the feature list up
front, fills a missing or NaN feature with a neutral value and clips into the [0, 1] box
that Half-Space Trees assume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from river import anomaly

from detectors.protocol import Features, RowByRowBatch


class RiverHalfSpaceTrees(RowByRowBatch):
    """river ``HalfSpaceTrees`` on features already scaled to [0, 1].

    >>> det = RiverHalfSpaceTrees(("a", "b"), n_trees=5, height=4, window_size=10, seed=1)
    >>> for i in range(50):
    ...     det.learn_one({"a": 0.5 + (i % 5) / 100, "b": 0.5})
    >>> det.score_one({"a": 0.99, "b": 0.01}) > det.score_one({"a": 0.52, "b": 0.5})
    True
    """

    name = "hst-river/1"

    def __init__(
        self,
        feature_names: tuple[str, ...],
        *,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 0,
        fill_value: float = 0.0,
    ) -> None:
        if not feature_names:
            raise ValueError("feature_names must not be empty")
        self.feature_names = feature_names
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.fill_value = fill_value
        self._model = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )

    def _prepare(self, x: Mapping[str, float]) -> dict[str, float]:
        prepared: dict[str, float] = {}
        for name in self.feature_names:
            value = x.get(name, self.fill_value)
            if value is None or math.isnan(value):
                value = self.fill_value
            prepared[name] = min(max(value, 0.0), 1.0)
        return prepared

    def score_one(self, x: Features) -> float:
        return float(self._model.score_one(self._prepare(x)))  # type: ignore[no-untyped-call]

    def learn_one(self, x: Features) -> None:
        self._model.learn_one(self._prepare(x))  # type: ignore[no-untyped-call]
