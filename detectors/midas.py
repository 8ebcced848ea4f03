"""MIDAS-R: microcluster anomalies in a stream of edges, in constant memory.

After Bhatia et al., "MIDAS: Microcluster-Based Detector of Anomalies in Edge Streams"
(AAAI 2020), relational variant. Count-min sketches hold, for every edge (source,
destination), every source and every destination, a *current* count (this tick, decayed
by ``alpha`` at each tick change, which is what makes it MIDAS-R rather than plain MIDAS)
and a *total* count (all ticks). Under the null hypothesis that an item arrives at the same
mean rate ``s / t`` in every tick, the current count ``a`` gives the chi-squared statistic
(1 degree of freedom)::

    X = (a - s / t)^2 * t^2 / (s * (t - 1))

and an edge's score is the largest of the statistics of the edge, its source and its
destination, so a burst of new cards on one device scores high even when each card is new.

Ticks are event-time buckets of ``tick_seconds``; tick 1 is the bucket of the first event,
so the score does not depend on where the epoch falls. Pure: no wall clock, no I/O.
Hashes are keyed blake2b, never Python's ``hash``, so a sketch built in one process scores
the same in any other (whatever ``PYTHONHASHSEED``), and the sketch pickles.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import numpy.typing as npt

# Index of each sketch in the first axis of the count arrays.
_EDGE, _SOURCE, _DESTINATION = 0, 1, 2
_MASK64 = (1 << 64) - 1


class MidasR:
    """MIDAS-R edge scorer over count-min sketches of fixed size.

    ``score_edge`` first records the edge, then scores it, as MIDAS does. With
    ``alpha=0.6``: an edge seen once in tick 1 and again in tick 2 has current count
    ``1 * 0.6 + 1 = 1.6`` and total 2, so ``X = ((1.6 - 2/2) * 2)^2 / (2 * 1) = 0.72``.

    >>> m = MidasR(rows=2, buckets=1024, alpha=0.6, tick_seconds=60.0, seed=0)
    >>> m.score_edge("device-1", "card-1", 0.0)
    0.0
    >>> round(m.score_edge("device-1", "card-1", 60.0), 6)
    0.72
    """

    def __init__(
        self,
        rows: int = 2,
        buckets: int = 1024,
        alpha: float = 0.6,
        tick_seconds: float = 60.0,
        seed: int = 0,
    ) -> None:
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        if buckets < 2:
            raise ValueError(f"buckets must be >= 2, got {buckets}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be within 0..1, got {alpha}")
        if not (math.isfinite(tick_seconds) and tick_seconds > 0):
            raise ValueError(f"tick_seconds must be positive, got {tick_seconds}")
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be within 0..2**64-1, got {seed}")
        self.rows = rows
        self.buckets = buckets
        self.alpha = alpha
        self.tick_seconds = tick_seconds
        self.seed = seed
        self._key = seed.to_bytes(8, "little")
        # One flat array per kind of count, [sketch, row, bucket] flattened, so that an
        # event touches all its cells with one fancy-indexed operation.
        size = 3 * rows * buckets
        self._current: npt.NDArray[np.float64] = np.zeros(size, dtype=np.float64)
        self._total: npt.NDArray[np.float64] = np.zeros(size, dtype=np.float64)
        self._origin: int | None = None  # absolute bucket number of tick 1
        self._tick = 0

    @property
    def tick(self) -> int:
        """The current tick (1 at the first event; 0 before any)."""
        return self._tick

    @property
    def nbytes(self) -> int:
        """Bytes held by the sketches: fixed at construction."""
        return int(self._current.nbytes + self._total.nbytes)

    def _cells(self, sketch: int, data: bytes) -> list[int]:
        # Kirsch-Mitzenmacher double hashing: two 64-bit halves of one keyed digest give
        # ``rows`` independent-enough bucket choices for any number of rows.
        digest = hashlib.blake2b(data, digest_size=16, key=self._key).digest()
        h1 = int.from_bytes(digest[:8], "little")
        h2 = int.from_bytes(digest[8:], "little") | 1
        base = sketch * self.rows * self.buckets
        return [
            base + row * self.buckets + ((h1 + row * h2) & _MASK64) % self.buckets
            for row in range(self.rows)
        ]

    def _advance(self, t: float) -> None:
        absolute = math.floor(t / self.tick_seconds)
        if self._origin is None:
            self._origin = absolute
            self._tick = 1
            return
        tick = absolute - self._origin + 1
        if tick > self._tick:
            # Decay once per elapsed tick: an empty minute is still a minute in which the
            # item did not occur (equals the paper's one decay per change when no tick is
            # empty).
            self._current *= self.alpha ** (tick - self._tick)
            self._tick = tick
        # An event from an earlier tick (out of order) counts in the current one: the
        # sketch cannot go back in time, and dropping it would hide it.

    def score_edge(self, src: str, dst: str, t: float) -> float:
        """Record edge ``src -> dst`` at event time ``t`` (seconds); return its score."""
        self._advance(t)
        # Length-prefixing keeps ("ab", "c") and ("a", "bc") apart.
        edge = f"{len(src)}:{src}{dst}".encode()
        cells = np.array(
            self._cells(_EDGE, edge)
            + self._cells(_SOURCE, src.encode())
            + self._cells(_DESTINATION, dst.encode()),
            dtype=np.intp,
        )
        self._current[cells] += 1.0
        self._total[cells] += 1.0
        # Count-min: the smallest cell of each sketch is the least inflated by collisions.
        current = self._current[cells].reshape(3, self.rows).min(axis=1)
        total = self._total[cells].reshape(3, self.rows).min(axis=1)
        return max(
            chi_squared(float(a), float(s), self._tick) for a, s in zip(current, total, strict=True)
        )


def chi_squared(current: float, total: float, tick: int) -> float:
    """MIDAS's statistic for a count ``current`` this tick out of ``total`` over ``tick`` ticks.

    >>> round(chi_squared(1.6, 2.0, 2), 6)
    0.72
    """
    if total <= 0.0 or tick <= 1:
        return 0.0
    return ((current - total / tick) * tick) ** 2 / (total * (tick - 1))
