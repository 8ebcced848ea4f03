"""Thresholds, kept apart from scoring (as river's ``QuantileFilter`` is).

An alert budget: the threshold is a streaming quantile of the scores seen so far, so about
``1 - q`` of events exceed it. No alert fires before ``warmup`` scores were seen.
"""

from __future__ import annotations

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
