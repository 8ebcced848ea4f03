"""Ensembles: detectors with different score scales, made comparable and combined.

Each member's score is replaced by its rank among that member's last ``window`` scores (a
causal rank in [0, 1]: it only looks back, so a stream gives the same result in any batch
cut), and the ensemble's score is the mean rank. A rank is what a threshold needs: 0.99
means "stranger than 99% of the recent past", whatever the detector.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence

import numpy as np

from detectors.protocol import Detector, Features, FloatArray


class CausalRank:
    """Rank of a value among the last ``window`` values seen (ties count half; 0.5 when
    nothing was seen yet): a streaming normalisation that only looks back."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._sorted: list[float] = []
        self._order: deque[float] = deque()

    def rank(self, value: float) -> float:
        if not self._sorted:
            return 0.5
        below = bisect.bisect_left(self._sorted, value)
        ties = bisect.bisect_right(self._sorted, value) - below
        return (below + 0.5 * ties) / len(self._sorted)

    def push(self, value: float) -> None:
        bisect.insort(self._sorted, value)
        self._order.append(value)
        if len(self._order) > self.window:
            old = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]


class RankEnsemble:
    """Mean causal rank of its members' scores.

    >>> from detectors.hst import HalfSpaceTrees
    >>> from detectors.iforest import IsolationForestASD
    >>> names = ("a", "b")
    >>> ens = RankEnsemble([
    ...     HalfSpaceTrees(names, n_trees=10, height=6, window_size=50, seed=0),
    ...     IsolationForestASD(names, n_trees=20, window_size=128, max_samples=64, seed=0),
    ... ])
    >>> ens.name
    'ensemble(hst/1,iforest-asd/1)'
    >>> rows = np.random.default_rng(0).normal(0.5, 0.05, size=(600, 2))
    >>> _ = ens.score_learn_many(rows)
    >>> ens.score_one({"a": 0.95, "b": 0.05}) > 0.9 > ens.score_one({"a": 0.5, "b": 0.5})
    True
    """

    def __init__(self, members: Sequence[Detector], window: int = 2048) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        names = {m.feature_names for m in members}
        if len(names) != 1:
            raise ValueError("ensemble members must share their feature names")
        self.members = list(members)
        self.feature_names = members[0].feature_names
        self.name = "ensemble(" + ",".join(m.name for m in members) + ")"
        self._ranks = [CausalRank(window) for _ in members]

    def score_one(self, x: Features) -> float:
        ranks = [r.rank(m.score_one(x)) for m, r in zip(self.members, self._ranks, strict=True)]
        return float(np.mean(ranks))

    def learn_one(self, x: Features) -> None:
        # The member scores the ranks will compare with: x's scores before it is learned.
        for member, ranks in zip(self.members, self._ranks, strict=True):
            ranks.push(member.score_one(x))
            member.learn_one(x)

    def score_many(self, rows: FloatArray) -> FloatArray:
        per_member = [m.score_many(rows) for m in self.members]
        return np.array(
            [
                np.mean([r.rank(float(s[i])) for r, s in zip(self._ranks, per_member, strict=True)])
                for i in range(len(rows))
            ],
            dtype=np.float64,
        )

    def learn_many(self, rows: FloatArray) -> None:
        for member, ranks in zip(self.members, self._ranks, strict=True):
            for row in rows:
                ranks.push(float(member.score_many(row[None, :])[0]))
                member.learn_many(row[None, :])

    def score_learn_many(self, rows: FloatArray) -> FloatArray:
        out = np.zeros(len(rows), dtype=np.float64)
        for member, ranks in zip(self.members, self._ranks, strict=True):
            for i, score in enumerate(member.score_learn_many(rows).tolist()):
                out[i] += ranks.rank(score)
                ranks.push(score)
        return out / len(self.members)
