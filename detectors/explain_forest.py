"""Why an isolation forest finds a row strange: per-feature credit along its paths.

A node holding ``n`` training rows leaves an expected ``c(n)`` levels to go; after the
split the row is in a child of ``n'`` rows, with ``1 + c(n')`` to go. The split bought
``c(n) - 1 - c(n')`` levels, and we credit that to the split's feature, on the side the
row went (``"high"``: above the threshold, ``"low"``: at or below it). Along a path the
credits telescope to ``c(psi) - h(x)``, so a row's credits sum, over features, to exactly
how much shorter than average its path is: the quantity the anomaly score is a monotone
function of. A split that only peeled a few other rows off costs a little (negative
credit): the row was not isolated by it.

It is one pass over the trees per row, vectorised like scoring, cheap enough to run on
every alert.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.iforest import FlatForest, IsolationForestASD, average_path_length
from detectors.protocol import Features, FloatArray


@dataclass(frozen=True, slots=True)
class IsolationReason:
    """One feature that helped isolate a row."""

    feature: str
    contribution: float  # levels of path length saved, mean over trees
    direction: str  # "high" or "low": the row was above or at/below the split thresholds


def isolation_contributions(forest: FlatForest, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per row and feature, the path length saved by that feature's splits (mean over
    trees), and the part of it saved on the high side.

    >>> from detectors.iforest import fit_forest
    >>> X = np.random.default_rng(0).normal(size=(512, 3))
    >>> forest = fit_forest(X, 50, 128, np.random.default_rng(1))
    >>> row = np.array([[0.0, 9.0, 0.0]])
    >>> total, high = isolation_contributions(forest, row)
    >>> int(total.argmax()), bool(high[0, 1] > 0.9 * total[0, 1])
    (1, True)
    >>> saved = float(average_path_length(forest.sample_size)) - forest.path_lengths(row)
    >>> bool(np.allclose(total.sum(axis=1), saved))
    True
    """
    data = np.ascontiguousarray(rows, dtype=np.float64)
    n_rows, n_features = data.shape
    expected = average_path_length(forest.size)
    flat = data.ravel()
    base = (np.arange(n_rows, dtype=np.int64) * n_features)[:, None]
    node = np.broadcast_to(
        np.arange(forest.n_trees, dtype=np.int64) * forest.max_nodes, (n_rows, forest.n_trees)
    )
    total = np.zeros(n_rows * n_features, dtype=np.float64)
    high = np.zeros(n_rows * n_features, dtype=np.float64)
    for _ in range(forest.height_limit):
        split = forest.children[2 * node] != node  # leaves point at themselves
        feature = forest.feature[node]
        right = flat[base + feature] > forest.threshold[node]
        child = forest.children[2 * node + right].astype(np.int64)
        credit = np.where(split, expected[node] - 1.0 - expected[child], 0.0)
        key = (base + feature).ravel()
        total += np.bincount(key, credit.ravel(), minlength=total.size)
        up = right.ravel() & split.ravel()
        high += np.bincount(key[up], credit.ravel()[up], minlength=high.size)
        node = child
    shape = (n_rows, n_features)
    return total.reshape(shape) / forest.n_trees, high.reshape(shape) / forest.n_trees


def explain_isolation(
    detector: IsolationForestASD, x: Features, top: int = 3
) -> list[IsolationReason]:
    """The ``top`` features that saved the most path length for ``x`` under the forest in
    force, most first; none before the first fit or when nothing isolates ``x``.

    >>> det = IsolationForestASD(("amount", "hour"), n_trees=50, window_size=512)
    >>> rng = np.random.default_rng(0)
    >>> det.learn_many(np.column_stack([rng.normal(50, 5, 512), rng.integers(8, 18, 512)]))
    >>> [(r.feature, r.direction) for r in explain_isolation(det, {"amount": 400, "hour": 12})]
    [('amount', 'high')]
    """
    forest = detector.forest
    if forest is None:
        return []
    return isolation_reasons(forest, detector.as_row(x), detector.feature_names, top)


def isolation_reasons(
    forest: FlatForest, row: FloatArray, feature_names: tuple[str, ...], top: int = 3
) -> list[IsolationReason]:
    """``explain_isolation`` against a given forest (e.g. the one a row was scored with)."""
    total, high = isolation_contributions(forest, row.reshape(1, -1))
    low = total[0] - high[0]
    reasons = [
        IsolationReason(name, float(total[0, j]), "high" if high[0, j] >= low[j] else "low")
        for j, name in enumerate(feature_names)
        if total[0, j] > 0.0
    ]
    reasons.sort(key=lambda r: (-r.contribution, r.feature))
    return reasons[:top]
