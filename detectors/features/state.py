"""Bounded per-entity state tables, in event time.

Every table has a fixed maximum number of keys and evicts the least recently touched one,
so memory stays constant however long the stream runs. Time is always the event's own
time (seconds), never the wall clock, so a replay computes the same features.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedTable(Generic[K, V]):
    """A dict that forgets its least recently used key beyond ``max_keys``."""

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.max_keys = max_keys
        self._data: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        value = self._data.pop(key, None)
        if value is not None:
            self._data[key] = value  # re-insert: now the most recently used
        return value

    def put(self, key: K, value: V) -> None:
        self._data.pop(key, None)
        self._data[key] = value
        if len(self._data) > self.max_keys:
            del self._data[next(iter(self._data))]


class DecayingCounts:
    """Exponentially decaying event counts per key: a velocity with a half-life.

    >>> c = DecayingCounts(half_life_s=3600.0, max_keys=10)
    >>> c.add("dev-1", 0.0), c.add("dev-1", 0.0), round(c.add("dev-1", 3600.0), 3)
    (1.0, 2.0, 2.0)
    """

    def __init__(self, half_life_s: float, max_keys: int) -> None:
        if half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
        self._rate = math.log(2.0) / half_life_s
        self._table: BoundedTable[Hashable, tuple[float, float]] = BoundedTable(max_keys)

    def _decayed(self, key: Hashable, t: float) -> float:
        entry = self._table.get(key)
        if entry is None:
            return 0.0
        value, last_t = entry
        # Out-of-order events (t < last_t) do not inflate the count.
        return value * math.exp(-self._rate * max(t - last_t, 0.0))

    def add(self, key: Hashable, t: float, amount: float = 1.0) -> float:
        """Add ``amount`` at time ``t`` and return the decayed total including it."""
        value = self._decayed(key, t) + amount
        self._table.put(key, (value, t))
        return value

    def get(self, key: Hashable, t: float) -> float:
        return self._decayed(key, t)


class DistinctSets:
    """How many distinct values each key has been seen with (capped per key).

    >>> d = DistinctSets(max_keys=10, max_values=3)
    >>> d.add("dev", "card-a"), d.add("dev", "card-a"), d.add("dev", "card-b")
    ((1, True), (1, False), (2, True))
    """

    def __init__(self, max_keys: int, max_values: int = 64) -> None:
        self.max_values = max_values
        self._table: BoundedTable[Hashable, set[Hashable]] = BoundedTable(max_keys)

    def add(self, key: Hashable, value: Hashable) -> tuple[int, bool]:
        """Record ``value`` for ``key``; return (distinct count, whether it was new)."""
        seen = self._table.get(key)
        if seen is None:
            seen = set()
            self._table.put(key, seen)
        if value in seen:
            return len(seen), False
        if len(seen) < self.max_values:
            seen.add(value)
        return len(seen), True

    def count(self, key: Hashable) -> int:
        seen = self._table.get(key)
        return 0 if seen is None else len(seen)

    def contains(self, key: Hashable, value: Hashable) -> bool:
        seen = self._table.get(key)
        return seen is not None and value in seen


class RunningMeans:
    """Exponentially weighted mean per key (e.g. a user's usual order amount)."""

    def __init__(self, alpha: float, max_keys: int) -> None:
        self.alpha = alpha
        self._table: BoundedTable[Hashable, float] = BoundedTable(max_keys)

    def get(self, key: Hashable) -> float | None:
        return self._table.get(key)

    def update(self, key: Hashable, value: float) -> None:
        current = self._table.get(key)
        updated = value if current is None else current + self.alpha * (value - current)
        self._table.put(key, updated)


class FirstSeen:
    """Event time at which each key was first seen."""

    def __init__(self, max_keys: int) -> None:
        self._table: BoundedTable[Hashable, float] = BoundedTable(max_keys)

    def age(self, key: Hashable, t: float) -> float:
        """Seconds since ``key`` was first seen (0 for a key seen now for the first time)."""
        first = self._table.get(key)
        if first is None:
            self._table.put(key, t)
            return 0.0
        return max(t - first, 0.0)

    def seen(self, key: Hashable) -> bool:
        return key in self._table

    def mark(self, key: Hashable, t: float) -> None:
        if self._table.get(key) is None:
            self._table.put(key, t)
