"""A streaming, outlier-robust scaler to [0, 1], per feature, from sampled quantiles.

Half-Space Trees split the box ``[0, 1]^d`` (or given limits); a min-max scaler lets one
wild value squash every later one into a corner. Here each feature keeps a reservoir sample
of its values and maps its ``q_low`` .. ``q_high`` quantiles (default 0.1 % .. 99.9 %)
to ``[0, 1]``, clipping beyond, so an outlier lands on the edge instead of moving it. (1 %
.. 99 % clips so many ordinary tail values onto the edges, next to the anomalies, that
Half-Space Trees lose them: ROC AUC 0.90 instead of 0.999 on shuffled http.)

* **Sampling.** Reservoir sampling ("algorithm R") with a horizon: the ``c``-th value of a
  feature replaces a random slot with probability ``reservoir_size / min(c, horizon)``,
  so the sample is uniform over the last ``horizon`` values or so and follows drift. The
  "random" slot comes from a hash of (seed, feature name, ``c``), not from a generator:
  the result does not depend on how events are batched, nor on which other features an
  event carries, and the state pickles as plain arrays.
* **Schedule.** A feature's bounds are recomputed after its 1st, 2nd, 4th, ... value up to
  ``refresh_every``, then every ``refresh_every`` values: quick to settle, cheap after.
* **Missing values.** NaN (and ``None``, or a missing key) maps to ``fill_value``
  (``math.nan`` passes the gap on, e.g. to a detector with its own missing-value rule) and
  is not learned; infinities are clipped to 0 or 1 and not learned either.
* **Late features.** A dict event may bring a feature never seen before: it is appended to
  ``feature_names`` (and so becomes a new column of the batch methods). Until a feature
  has a value its output is ``fill_value``; while all its values are equal, that value
  maps to 0.5, smaller ones to 0 and larger ones to 1.

Batch methods take 2-D arrays whose columns follow ``feature_names``.
``transform_learn_many`` is the per-event ``transform_one`` then ``learn_one``, row by row,
exactly (bounds change only at refresh points, so the batch is cut there).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from detectors.protocol import Features, FloatArray

_U64 = npt.NDArray[np.uint64]
_MASK = 2**64 - 1


def _uniforms(key: np.uint64, counts: _U64) -> FloatArray:
    """Uniforms in [0, 1) from splitmix64 of ``key`` and each count: a stateless stream."""
    z = counts * np.uint64(0x9E3779B97F4A7C15) + key
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _uniform(key: int, count: int) -> float:
    """:func:`_uniforms` for one count, in plain integers (numpy scalars cost more)."""
    z = (count * 0x9E3779B97F4A7C15 + key) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return (z >> 11) * 2.0**-53


class QuantileScaler:
    """Streaming robust scaling of each feature to [0, 1] between sampled quantiles.

    >>> scaler = QuantileScaler(("amount",), refresh_every=100)
    >>> for i in range(1000):
    ...     scaler.learn_one({"amount": float(i % 100)})
    >>> scaler.learn_one({"amount": 1e9})  # one wild value moves nothing
    >>> [round(b, 2) for b in scaler.bounds["amount"]]  # the 0.1 % and 99.9 % quantiles
    [0.0, 99.0]
    >>> out = scaler.transform_one({"amount": 50.0, "late": 3.0})
    >>> round(out["amount"], 2), out["late"], scaler.feature_names
    (0.51, 0.5, ('amount', 'late'))
    >>> scaler.transform_one({"amount": 1e9})["amount"], scaler.transform_one({})["amount"]
    (1.0, 0.5)
    """

    def __init__(
        self,
        feature_names: Sequence[str] = (),
        *,
        q_low: float = 0.001,
        q_high: float = 0.999,
        reservoir_size: int = 1024,
        horizon: int | None = 65536,
        refresh_every: int = 256,
        fill_value: float = 0.5,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= q_low < q_high <= 1.0:
            raise ValueError("need 0 <= q_low < q_high <= 1")
        if reservoir_size < 1 or refresh_every < 1:
            raise ValueError("reservoir_size and refresh_every must be >= 1")
        if horizon is not None and horizon < reservoir_size:
            raise ValueError("horizon must be None or >= reservoir_size")
        self.q_low = q_low
        self.q_high = q_high
        self.reservoir_size = reservoir_size
        self.horizon = horizon
        self.refresh_every = refresh_every
        self.fill_value = fill_value
        self.seed = seed
        self.feature_names: tuple[str, ...] = ()
        self._index: dict[str, int] = {}
        self._sample = np.empty((0, reservoir_size), dtype=np.float64)
        self._seen: list[int] = []  # values learned per feature
        self._low = np.empty(0, dtype=np.float64)
        self._high = np.empty(0, dtype=np.float64)
        self._keys: list[int] = []  # per-feature hash key of the reservoir slots
        self._add(feature_names)

    # -- state ------------------------------------------------------------------------------

    def _add(self, names: Iterable[str]) -> None:
        if isinstance(names, Mapping) and names.keys() <= self._index.keys():
            return  # the usual event: nothing new
        new = [name for name in dict.fromkeys(names) if name not in self._index]
        if not new:
            return
        for name in new:
            self._index[name] = len(self.feature_names)
            self.feature_names = (*self.feature_names, name)
            crc = zlib.crc32(name.encode())
            self._keys.append(((self.seed & 0xFFFFFFFF) << 32) | crc)
            self._seen.append(0)
        grow = len(new)
        self._sample = np.vstack(
            [self._sample, np.full((grow, self.reservoir_size), np.nan, dtype=np.float64)]
        )
        self._low = np.concatenate([self._low, np.full(grow, np.nan)])
        self._high = np.concatenate([self._high, np.full(grow, np.nan)])

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """Current ``(low, high)`` per feature that has seen a value."""
        return {
            name: (float(self._low[i]), float(self._high[i]))
            for name, i in self._index.items()
            if not math.isnan(self._low[i])
        }

    def n_seen(self, name: str) -> int:
        """How many values of ``name`` were learned."""
        return self._seen[self._index[name]] if name in self._index else 0

    def _next_refresh(self, seen: int) -> int:
        """The first count above ``seen`` after which the bounds are recomputed."""
        step = self.refresh_every
        due = (seen // step + 1) * step
        if seen >= step:
            return due
        return min(1 << seen.bit_length(), due)  # the next power of two above seen

    def _refresh(self, f: int) -> None:
        size = min(self._seen[f], self.reservoir_size)
        low, high = np.quantile(self._sample[f, :size], [self.q_low, self.q_high])
        self._low[f], self._high[f] = low, high

    def _store(self, f: int, values: FloatArray, first: int) -> None:
        """Reservoir-store ``values``, the ``first``-th (1-based) and following of ``f``."""
        k = self.reservoir_size
        counts = np.arange(first, first + len(values), dtype=np.int64)
        filling = counts <= k
        self._sample[f, counts[filling] - 1] = values[filling]
        if filling.all():
            return
        later = counts[~filling]
        span = later if self.horizon is None else np.minimum(later, self.horizon)
        key = np.uint64(self._keys[f])
        slot = (_uniforms(key, later.astype(np.uint64)) * span).astype(np.int64)
        kept = slot < k
        slot, kept_values = slot[kept], values[~filling][kept]
        # Sequential semantics: of several values landing in one slot, the last stays.
        last = len(slot) - 1 - np.unique(slot[::-1], return_index=True)[1]
        self._sample[f, slot[last]] = kept_values[last]

    # -- transforming -------------------------------------------------------------------------

    def _scale(self, values: FloatArray, low: FloatArray, high: FloatArray) -> FloatArray:
        """``values`` (any shape broadcasting with ``low``/``high``) scaled to [0, 1]."""
        width = high - low
        with np.errstate(invalid="ignore", divide="ignore"):
            scaled = np.clip((values - low) / width, 0.0, 1.0)
        # All values equal so far: that value is the middle, the rest one side or other.
        flat = np.where(values < low, 0.0, np.where(values > high, 1.0, 0.5))
        scaled = np.where(width > 0, scaled, flat)
        unknown = np.isnan(values) | np.isnan(low)  # a gap, or no value seen yet
        return np.where(unknown, self.fill_value, scaled)

    def _column(self, rows: FloatArray) -> FloatArray:
        array = np.asarray(rows, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != len(self.feature_names):
            raise ValueError(
                f"rows must have shape (n, {len(self.feature_names)}), not {array.shape}"
            )
        return array

    def _row(self, x: Features) -> FloatArray:
        return np.array(
            [math.nan if (v := x.get(name)) is None else v for name in self.feature_names],
            dtype=np.float64,
        )

    def transform_one(self, x: Features) -> dict[str, float]:
        """Every known feature (new keys of ``x`` included) scaled; nothing is learned."""
        self._add(x)
        # Plain floats, the same operations as :meth:`_scale`: numpy's per-call cost would
        # dominate a single event.
        out = {}
        fill = self.fill_value
        for name, low, high in zip(
            self.feature_names, self._low.tolist(), self._high.tolist(), strict=True
        ):
            value = x.get(name)
            if value is None or math.isnan(value) or math.isnan(low):
                out[name] = fill
            elif high > low:
                out[name] = min(max((value - low) / (high - low), 0.0), 1.0)
            else:
                out[name] = 0.0 if value < low else 1.0 if value > high else 0.5
        return out

    def transform_many(self, rows: FloatArray) -> FloatArray:
        """Rows scaled with the current bounds; nothing is learned."""
        return self._scale(self._column(rows), self._low, self._high)

    # -- learning ---------------------------------------------------------------------------------

    def _learn_column(self, f: int, column: FloatArray, out: FloatArray | None) -> None:
        """Learn one feature's values in order; ``out`` gets each scaled before learning it."""
        learnable = np.flatnonzero(np.isfinite(column))
        row = 0  # rows before this one are done
        used = 0  # learnable values before this one are learned
        while used < len(learnable):
            seen = self._seen[f]
            take = min(self._next_refresh(seen) - seen, len(learnable) - used)
            last = int(learnable[used + take - 1])
            if out is not None:
                out[row : last + 1] = self._scale_column(f, column[row : last + 1])
            self._store(f, column[learnable[used : used + take]], seen + 1)
            self._seen[f] = seen + take
            if self._seen[f] == self._next_refresh(seen):
                self._refresh(f)
            row, used = last + 1, used + take
        if out is not None:
            out[row:] = self._scale_column(f, column[row:])

    def _scale_column(self, f: int, values: FloatArray) -> FloatArray:
        return self._scale(values, self._low[f : f + 1], self._high[f : f + 1])

    def learn_one(self, x: Features) -> None:
        # The batch code for one value, in plain Python: numpy's per-call cost would
        # dominate a single event.
        self._add(x)
        k = self.reservoir_size
        for name, value in x.items():
            if value is None or not math.isfinite(value):
                continue
            f = self._index[name]
            seen = self._seen[f]
            count = seen + 1
            if count <= k:
                self._sample[f, count - 1] = value
            else:
                span = count if self.horizon is None else min(count, self.horizon)
                slot = int(_uniform(self._keys[f], count) * span)
                if slot < k:
                    self._sample[f, slot] = value
            self._seen[f] = count
            if count == self._next_refresh(seen):
                self._refresh(f)

    def learn_many(self, rows: FloatArray) -> None:
        array = self._column(rows)
        for f in range(array.shape[1]):
            self._learn_column(f, array[:, f], None)

    def transform_learn_many(self, rows: FloatArray) -> FloatArray:
        """Each row scaled with the bounds in force before it, then learned: the
        per-event ``transform_one`` + ``learn_one`` stream, batched."""
        array = self._column(rows)
        out = np.empty(array.shape, dtype=np.float64)
        for f in range(array.shape[1]):
            self._learn_column(f, array[:, f], out[:, f])
        return out

    def transform_learn_one(self, x: Features) -> dict[str, float]:
        """``transform_one(x)`` then ``learn_one(x)``."""
        out = self.transform_one(x)
        self.learn_one(x)
        return out
