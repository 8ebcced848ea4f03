"""Thresholds, kept apart from scoring (as river's ``QuantileFilter`` is).

An alert budget: the threshold is a streaming quantile of the scores seen so far, so about
``1 - q`` of events exceed it. No alert fires before ``warmup`` scores were seen.
"""

from __future__ import annotations

from collections.abc import Iterable

from river import stats


class QuantileThreshold:
    """Streaming-quantile threshold with a warm-up.

    >>> th = QuantileThreshold(q=0.9, warmup=10)
    >>> [th.observe(s) for s in [0.1] * 5]
    [False, False, False, False, False]
    >>> for s in [i / 100 for i in range(100)]:
    ...     _ = th.observe(s)
    >>> th.observe(0.99), th.observe(0.05)
    (True, False)
    """

    def __init__(self, q: float = 0.995, warmup: int = 1000) -> None:
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must be in (0, 1), got {q}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.q = q
        self.warmup = warmup
        self._quantile = stats.Quantile(q)
        self.seen = 0

    @property
    def value(self) -> float:
        """The threshold in force now (infinite during warm-up)."""
        if self.seen < self.warmup or self.seen == 0:
            return float("inf")
        current = self._quantile.get()
        return float("inf") if current is None else float(current)

    def observe(self, score: float) -> bool:
        """Compare ``score`` with the threshold in force, then learn it. True means alert."""
        is_alert = score > self.value
        self._quantile.update(score)
        self.seen += 1
        return is_alert

    def observe_many(self, scores: Iterable[float]) -> tuple[list[float], list[bool]]:
        """``value`` then ``observe`` for each score in order: the thresholds in force and
        the alert flags, exactly as the one-at-a-time calls would give them."""
        # The same steps as ``value`` and ``observe``, with the lookups hoisted out of the
        # loop. river's Quantile wraps a Rust estimator; its ``get`` is only called here
        # after an update (``seen > 0``), where the wrapper returns the estimator's value
        # unchanged, so the loop calls the estimator directly (when river has one).
        quantile = self._quantile
        estimator = getattr(quantile, "_quantile", quantile)
        update, get = estimator.update, estimator.get
        warmup, seen, inf = self.warmup, self.seen, float("inf")
        thresholds: list[float] = []
        flags: list[bool] = []
        for score in scores:
            if seen < warmup or seen == 0:
                threshold = inf
            else:
                current = get()
                threshold = inf if current is None else float(current)
            thresholds.append(threshold)
            flags.append(score > threshold)
            update(score)
            seen += 1
        if seen > self.seen:
            quantile._is_updated = True
        self.seen = seen
        return thresholds, flags
