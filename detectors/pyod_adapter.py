"""pyod's ``IForest`` behind the Vigil protocol, on the same windows and schedule as ours.

The reference implementation for ``detectors.iforest``: same ring buffer, warm-up and refit
rows (``WindowedRefit``), only the forest is pyod's (scikit-learn's ``IsolationForest``).
It is what PySAD's IForestASD does, and what our forest's speed is measured against.

pyod's ``decision_function`` subtracts an offset fitted per window (the ``contamination``
quantile of the training scores), which shifts every score at each refit and would blur a
stream-wide ranking. We add it back, so the score is scikit-learn's ``-score_samples``,
the usual ``2 ** (-E[h(x)] / c(psi))``, on the same scale as ours.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from detectors.iforest import WindowedRefit
from detectors.protocol import FloatArray


class PyODIForest(WindowedRefit):
    """pyod ``IForest`` refitted on a sliding window.

    >>> rng = np.random.default_rng(0)
    >>> det = PyODIForest(("a", "b"), n_trees=25, window_size=256, max_samples=64, warmup=64)
    >>> scores = det.score_learn_many(rng.normal(size=(600, 2)))
    >>> det.n_fits, float(scores[0])
    (4, 0.0)
    >>> det.score_one({"a": 5.0, "b": -5.0}) > 0.6 > det.score_one({"a": 0.1, "b": 0.0})
    True
    """

    name = "iforest-pyod/1"

    def __init__(
        self,
        feature_names: tuple[str, ...],
        *,
        n_trees: int = 100,
        max_samples: int = 256,
        window_size: int = 2048,
        refit_every: int | Literal["window"] | None = "window",
        warmup: int = 16,
        drift_rate: float | None = None,
        drift_threshold: float = 0.5,
        seed: int = 0,
        fill_value: float = 0.0,
    ) -> None:
        super().__init__(
            feature_names,
            window_size=window_size,
            refit_every=window_size if refit_every == "window" else refit_every,
            warmup=warmup,
            drift_rate=drift_rate,
            drift_threshold=drift_threshold,
            seed=seed,
            fill_value=fill_value,
        )
        self.n_trees = n_trees
        self.max_samples = max_samples
        self._model: Any = None

    @property
    def fitted(self) -> bool:
        return self._model is not None

    def _fit(self, window: FloatArray) -> None:
        # Imported here: pyod pulls in scikit-learn and is only needed by this reference.
        from pyod.models.iforest import IForest

        model = IForest(
            n_estimators=self.n_trees,
            max_samples=min(self.max_samples, len(window)),
            # A fresh seed per refit from our generator: reproducible, not the same trees.
            random_state=int(self._rng.integers(2**31 - 1)),
        )
        model.fit(window)
        self._model = model

    def _score_rows(self, rows: FloatArray) -> FloatArray:
        shifted = self._model.decision_function(rows)
        return np.asarray(shifted - self._model.offset_, dtype=np.float64)
