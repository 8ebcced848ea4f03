"""Why Half-Space Trees found an event anomalous: the splits along its low-mass path.

An event scores high when, in many trees, its path quickly reaches nodes that held little
mass in the reference window. Each split on the way sends it to a child holding a share
of its parent's mass; the share it did *not* go with is how much that split isolated it.
Crediting each split's feature with that share (until the walk stops where river's scoring
stops, at mass below a tenth of the window) and summing over trees ranks the features;
the side of the split gives the direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from detectors.hst import HalfSpaceTrees
from detectors.protocol import FloatArray


@dataclass(frozen=True, slots=True)
class PathCredit:
    """A feature's share in isolating an event, and the side of its splits."""

    feature: str
    credit: float
    direction: str  # "high": the event went to the upper side of the splits


class PathExplainer:
    """Credits split features along each tree's path of one row (a scaled feature row).

    The tree arrays are copied once per reference window, so explaining the few alerts of
    a batch costs a walk of ``n_trees * height`` nodes each.

    >>> import numpy as np
    >>> det = HalfSpaceTrees(("a", "b"), n_trees=20, height=6, window_size=50, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> _ = det.score_learn_many(np.column_stack([rng.random(200), np.full(200, 0.5)]))
    >>> top = PathExplainer().explain(det, np.array([0.5, 0.99]))[0]
    >>> top.feature, top.direction
    ('b', 'high')
    """

    def __init__(self) -> None:
        self._cache_key: tuple[int, int] | None = None
        self._arrays: tuple[np.ndarray, FloatArray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, object]:
        return {}  # a cache: rebuilt from the trees on the next snapshot

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__()  # type: ignore[misc]

    def snapshot(self, det: HalfSpaceTrees) -> None:
        """Keep the trees as they are now; later ``explain`` calls use this reference
        mass, so a caller that learns ahead can still explain earlier events exactly."""
        # The reference mass only changes at a window swap: copy once per window.
        key = (id(det), det.windows_completed)
        if self._arrays is None or self._cache_key != key:
            self._arrays = (det.split_feature, det.split_value, det.r_mass)
            self._cache_key = key

    def explain(self, det: HalfSpaceTrees, row: FloatArray, top: int = 3) -> list[PathCredit]:
        """Credits for ``row`` against the last snapshot (taken now if there is none)."""
        if self._arrays is None:
            self.snapshot(det)
        assert self._arrays is not None
        features, values, r_mass = self._arrays
        n_features = len(det.feature_names)
        credit = np.zeros(n_features, dtype=np.float64)
        upward = np.zeros(n_features, dtype=np.float64)
        order = np.empty(n_features, dtype=np.int64)
        found = _path_credits(
            features,
            values,
            r_mass,
            np.asarray(row, dtype=np.float64),
            0.1 * det.window_size,
            credit,
            upward,
            order,
        )
        # In the order features were first credited, as the sum always was: the same float.
        credited = [(f, float(credit[f])) for f in order[:found].tolist()]
        ranked = sorted(credited, key=lambda item: (-item[1], item[0]))
        total = sum(c for _, c in credited) or 1.0
        return [
            PathCredit(
                det.feature_names[f],
                c / total,
                "high" if upward[f] >= 0 else "low",
            )
            for f, c in ranked[:top]
            if c > 0
        ]


@njit(cache=True)
def _path_credits(
    features: npt.NDArray[np.integer[Any]],
    values: FloatArray,
    r_mass: npt.NDArray[np.integer[Any]],
    row: FloatArray,
    size_limit: float,
    credit: FloatArray,
    upward: FloatArray,
    order: npt.NDArray[np.int64],
) -> int:
    """Sum each split feature's share along every tree's path of ``row`` into ``credit``
    (and, signed by the side taken, into ``upward``); ``order`` gets the features in the
    order they were first credited. Returns how many were."""
    found = 0
    n_nodes = features.shape[1]
    for t in range(features.shape[0]):
        node = 0
        parent_mass = float(r_mass[t, 0])
        while parent_mass >= size_limit:
            feature = features[t, node]
            if feature < 0:
                break
            x = row[feature]
            if x != x:
                break  # a missing value isolates nothing
            went_high = x >= values[t, node]
            child = 2 * node + (2 if went_high else 1)
            if child >= n_nodes:
                break
            child_mass = float(r_mass[t, child])
            share = 1.0 - child_mass / parent_mass if parent_mass > 0 else 0.0
            if not _listed(order, found, feature):
                order[found] = feature
                found += 1
            credit[feature] += share
            upward[feature] += share if went_high else -share
            node, parent_mass = child, child_mass
    return found


@njit(cache=True)
def _listed(order: npt.NDArray[np.int64], found: int, feature: int) -> bool:
    for i in range(found):  # noqa: SIM110 - a loop numba compiles, unlike any(<generator>)
        if order[i] == feature:
            return True
    return False
