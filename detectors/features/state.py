"""Bounded per-entity state tables, in event time.

Every table has a fixed maximum number of keys and evicts the least recently touched one,
so memory stays constant however long the stream runs. Time is always the event's own
time (seconds), never the wall clock, so a replay computes the same features.

A partition's state is checkpointed with ``pickle`` and restored on partition assignment,
so a table pickles in a columnar form (``BoundedTable.__getstate__``, columnar.py): one joined
string for the keys and numpy arrays for the numbers, instead of millions of small Python
objects, each of which pickle would write, memoise and rebuild one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any, Generic, TypeVar, cast

from detectors.features.columnar import (
    FORMAT,
    gc_paused,
    pack_entries,
    pack_hashables,
    pack_values,
    unpack_entries,
    unpack_hashables,
    unpack_values,
)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_exp = math.exp  # a global, not an attribute lookup per decayed count

# Every constructor argument has a default. Not for callers, who should say what they
# want: a class compiled by mypyc (``setup.py``) is unpickled by calling it without
# arguments and then setting its attributes, so it must be callable so.
DEFAULT_MAX_KEYS = 1_000_000
DEFAULT_SPAN_S = 3600.0


class BoundedTable(Generic[K, V]):
    """A dict that forgets its least recently used key beyond ``max_keys``."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
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

    # The tables below work on ``_data`` directly in their hot paths: one ``pop`` and one
    # insert per access instead of ``get``'s and then ``put``'s, which leaves the same
    # keys, values and LRU order (a key read and then written ends up last either way).

    def _evict(self) -> None:
        """``put``'s bound check, after an insert into ``_data``."""
        if len(self._data) > self.max_keys:
            del self._data[next(iter(self._data))]

    # Pickling. The dict's insertion order is the LRU order, so keys and values are packed
    # as parallel columns in that order and zipped back into a dict in the same order.
    # Every packed form restores values of exactly the same types and bit patterns, so a
    # restored table behaves identically; values that fit no columnar form pickle as a
    # plain list, still in order.

    def __getstate__(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "max_keys": self.max_keys,
            "keys": pack_hashables(list(self._data)),
            "values": pack_values(list(self._data.values())),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_data" in state:  # a checkpoint written before the columnar form
            self.max_keys = state["max_keys"]
            self._data = state["_data"]
            return
        if state.get("format") != FORMAT:
            raise ValueError(f"unknown BoundedTable pickle format {state.get('format')!r}")
        self.max_keys = state["max_keys"]
        with gc_paused():
            keys = unpack_hashables(state["keys"])
            values = unpack_values(state["values"])
            self._data = dict(zip(keys, values, strict=True))


def table_of(holder: object) -> BoundedTable[Any, Any]:
    """A state table (``UserHistories`` is one), or the table a holder of one keeps
    (``DecayingCounts``, ``DistinctSets``, ...): for code that looks inside the state."""
    if isinstance(holder, BoundedTable):
        return holder
    table: BoundedTable[Any, Any] = cast(Any, holder)._table
    return table


def decayed_sum(value: float, last_t: float, t: float, rate: float, amount: float) -> float:
    """``value`` as of ``last_t`` decayed to ``t`` at ``rate``, plus ``amount``.

    As ``DecayingCounts._decayed``, with ``max(dt, 0.0)`` spelled out (the same value, NaN
    and -0.0 included): this runs for most table accesses of every event.
    """
    dt = t - last_t
    if dt < 0.0:
        dt = 0.0
    return value * _exp(-rate * dt) + amount


class DecayingCounts:
    """Exponentially decaying event counts per key: a velocity with a half-life.

    >>> c = DecayingCounts(half_life_s=3600.0, max_keys=10)
    >>> c.add("dev-1", 0.0), c.add("dev-1", 0.0), round(c.add("dev-1", 3600.0), 3)
    (1.0, 2.0, 2.0)
    """

    def __init__(
        self, half_life_s: float = DEFAULT_SPAN_S, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
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
        table = self._table
        data = table._data
        entry = data.pop(key, None)
        if entry is None:
            value = 0.0 + amount
            data[key] = (value, t)
            table._evict()
            return value
        last_value, last_t = entry
        value = decayed_sum(last_value, last_t, t, self._rate, amount)
        data[key] = (value, t)  # the key was there: the size is unchanged, nothing to evict
        return value

    def get(self, key: Hashable, t: float) -> float:
        return self._decayed(key, t)


def observe_distinct(
    seen: Hashable | set[Hashable] | None, value: Hashable, max_values: int
) -> tuple[Hashable | set[Hashable], bool, int, bool]:
    """One key's distinct values (``DistinctSets``' form: None for none yet, a bare value,
    or a set), after ``value``: (the new form, whether the key had values before, their
    distinct count, whether ``value`` is new). A set that gains a value is updated in
    place."""
    if seen is None:
        if max_values >= 1 and value is not None:
            return value, False, 1, True
        seen = set()
        had = False
    elif type(seen) is not set:
        if value in (seen,):  # the same test as set membership: identity, then ==
            return seen, True, 1, False
        if max_values < 2:
            return seen, True, 1, True
        return {cast(Hashable, seen), value}, True, 2, True
    else:
        had = len(seen) > 0
    assert type(seen) is set
    if value in seen:
        return seen, had, len(seen), False
    if len(seen) < max_values:
        seen.add(value)
    return seen, had, len(seen), True


class DistinctSets:
    """How many distinct values each key has been seen with (capped per key).

    A key seen with one value keeps that value bare, not in a set: most keys (a user's
    country, a device's user) never see a second one, and a million one-element sets cost
    hundreds of MB and most of a checkpoint's restore time. The second distinct value
    turns it into a set. ``None`` is always kept in a set, since the table reads ``None``
    as "no entry".

    >>> d = DistinctSets(max_keys=10, max_values=3)
    >>> d.add("dev", "card-a"), d.add("dev", "card-a"), d.add("dev", "card-b")
    ((1, True), (1, False), (2, True))
    """

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, max_values: int = 64) -> None:
        self.max_values = max_values
        # A bare value, or a set once the key has two (or, with max_values < 1, none).
        self._table: BoundedTable[Hashable, Hashable | set[Hashable]] = BoundedTable(max_keys)

    def add(self, key: Hashable, value: Hashable) -> tuple[int, bool]:
        """Record ``value`` for ``key``; return (distinct count, whether it was new)."""
        _, count, is_new = self.observe(key, value)
        return count, is_new

    def observe(self, key: Hashable, value: Hashable) -> tuple[bool, int, bool]:
        """Record ``value`` for ``key``; return (whether ``key`` had values before,
        distinct count, whether ``value`` is new): ``add``'s answer and whether the key had
        values before, for the feature extractor's hot path, which calls it directly."""
        table = self._table
        data = table._data
        seen = data.pop(key, None)
        stored, had, count, is_new = observe_distinct(seen, value, self.max_values)
        data[key] = stored
        if seen is None:
            table._evict()
        return had, count, is_new

    def count(self, key: Hashable) -> int:
        seen = self._table.get(key)
        if seen is None:
            return 0
        return len(seen) if type(seen) is set else 1

    def contains(self, key: Hashable, value: Hashable) -> bool:
        seen = self._table.get(key)
        if seen is None:
            return False
        return value in seen if type(seen) is set else value in (seen,)


class RunningMeans:
    """Exponentially weighted mean per key (e.g. a user's usual order amount)."""

    def __init__(self, alpha: float = 0.1, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.alpha = alpha
        self._table: BoundedTable[Hashable, float] = BoundedTable(max_keys)

    def get(self, key: Hashable) -> float | None:
        return self._table.get(key)

    def update(self, key: Hashable, value: float) -> float | None:
        """Fold ``value`` into ``key``'s mean; returns the mean before (``get`` then
        ``update`` in one table access)."""
        table = self._table
        data = table._data
        current = data.pop(key, None)
        if current is None:
            data[key] = value
            table._evict()
        else:
            data[key] = current + self.alpha * (value - current)
        return current


class RecentlyNew:
    """Per key, the latest value that was new to it and when: a value stays new for
    ``span_s`` of event time (a device new to an account, for a session).

    No longer updated (``UserHistories`` keeps these entries per user, see
    ``observe_new_value``); the class stays so that checkpoints written before it still
    unpickle, for ``UserHistories.merged`` to read.
    """

    def __init__(self, span_s: float = DEFAULT_SPAN_S, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.span_s = span_s
        self._table: BoundedTable[Hashable, tuple[Hashable, float]] = BoundedTable(max_keys)


class FirstSeen:
    """Event time at which each key was first seen."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self._table: BoundedTable[Hashable, float] = BoundedTable(max_keys)

    def age(self, key: Hashable, t: float) -> float:
        """Seconds since ``key`` was first seen (0 for a key seen now for the first time)."""
        table = self._table
        data = table._data
        first = data.pop(key, None)
        if first is None:
            data[key] = t
            table._evict()
            return 0.0
        data[key] = first
        return max(t - first, 0.0)

    def seen(self, key: Hashable) -> bool:
        return key in self._table

    def mark(self, key: Hashable, t: float) -> None:
        if self._table.get(key) is None:
            self._table.put(key, t)


def still_new(
    entry: tuple[Hashable, float] | None, value: Hashable, t: float, span_s: float
) -> bool:
    """Whether ``value`` is the one a ``RecentlyNew`` entry remembers, within ``span_s``."""
    return entry is not None and entry[0] == value and t - entry[1] < span_s


def observe_new_value(
    seen: Hashable | set[Hashable] | None,
    latest_new: tuple[Hashable, float] | None,
    value: Hashable,
    t: float,
    max_values: int,
    span_s: float,
) -> tuple[Hashable | set[Hashable], tuple[Hashable, float] | None, bool]:
    """``value`` at ``t`` against one key's distinct values (``DistinctSets``' form) and
    its latest new value (``RecentlyNew``'s entry): (the values' new form, the entry's,
    whether ``value`` counts as new: new to a key that had values before, or the entry's
    own value within ``span_s``), as the new-device and new-country features read them.

    >>> seen, entry, new = observe_new_value(None, None, "d-1", 0.0, 8, 3600.0)
    >>> new  # the first device of an account is not a new one
    False
    >>> seen, entry, new = observe_new_value(seen, entry, "d-2", 100.0, 8, 3600.0)
    >>> new, entry
    (True, ('d-2', 100.0))
    >>> [observe_new_value(seen, entry, "d-2", t, 8, 3600.0)[2] for t in (3000.0, 3700.0)]
    [True, False]
    >>> observe_new_value(seen, entry, "d-1", 200.0, 8, 3600.0)[1:]  # known: entry kept
    (('d-2', 100.0), False)
    """
    seen, had, _, is_new = observe_distinct(seen, value, max_values)
    if had and is_new:
        return seen, (value, t), True
    return seen, latest_new, still_new(latest_new, value, t, span_s)


class UserHistory:
    """One user's entry of ``UserHistories``: what every event of the user reads and
    updates. The fields are those the per-user tables held, in their forms."""

    def __init__(self, first_seen: float = 0.0) -> None:
        self.first_seen = first_seen  # FirstSeen
        self.events = 0.0  # DecayingCounts: the count as of ``events_t``
        self.events_t = first_seen
        # DistinctSets: a bare value or a set (None only before the first event).
        self.devices: Hashable | set[Hashable] | None = None
        self.countries: Hashable | set[Hashable] | None = None
        # RecentlyNew: the latest new value and its time; None: none yet.
        self.new_device: tuple[Hashable, float] | None = None
        self.new_country: tuple[Hashable, float] | None = None


class UserHistories(BoundedTable[Hashable, UserHistory]):
    """Per user: first seen, decaying event count, distinct devices and countries, and
    whether the device (country) is new to the user, in one entry instead of six tables.

    Every event reads and updates all six, so six tables held the same keys in the same
    LRU order, each with its own dict lookups; one entry costs one. It computes what
    ``FirstSeen``, ``DecayingCounts``, ``DistinctSets`` and ``RecentlyNew`` compute, bit
    for bit, with their functions. One difference, under eviction only: a user is
    forgotten as a whole, where the ``RecentlyNew`` tables (which hold only users with a
    new device or country) could still remember one the others had evicted.

    >>> users = UserHistories(max_keys=10, half_life_s=3600.0, new_for_s=3600.0)
    >>> users.observe("u-1", "d-1", "US", 0.0), users.observe("u-1", "d-2", "US", 3600.0)
    ((0.0, 1.0, False, False), (3600.0, 1.5, True, False))
    """

    def __init__(
        self,
        max_keys: int = DEFAULT_MAX_KEYS,
        half_life_s: float = DEFAULT_SPAN_S,
        new_for_s: float = DEFAULT_SPAN_S,
        max_values: int = 64,
    ) -> None:
        super().__init__(max_keys)
        if half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
        self.half_life_s = half_life_s
        self._rate = math.log(2.0) / half_life_s
        self.new_for_s = new_for_s
        self.max_values = max_values

    def observe(
        self, user: Hashable, device: Hashable, country: Hashable, t: float
    ) -> tuple[float, float, bool, bool]:
        """Record an event of ``user`` at ``t`` from ``device`` in ``country``; return
        (seconds since the user was first seen, the user's decayed event count including
        this one, whether the device is new to a user who had devices before (or was,
        within ``new_for_s``), the same for the country)."""
        data = self._data
        record = data.pop(user, None)
        if record is None:
            record = UserHistory(t)
            data[user] = record
            self._evict()
            age = 0.0
            events = 0.0 + 1.0
        else:
            data[user] = record
            age = max(t - record.first_seen, 0.0)
            events = decayed_sum(record.events, record.events_t, t, self._rate, 1.0)
        record.events = events
        record.events_t = t
        record.devices, record.new_device, new_device = observe_new_value(
            record.devices, record.new_device, device, t, self.max_values, self.new_for_s
        )
        record.countries, record.new_country, new_country = observe_new_value(
            record.countries, record.new_country, country, t, self.max_values, self.new_for_s
        )
        return age, events, new_device, new_country

    # Pickled in columns, as the other tables (BoundedTable.__getstate__).

    def __getstate__(self) -> dict[str, Any]:
        records = list(self._data.values())
        return {
            "format": FORMAT,
            "max_keys": self.max_keys,
            "half_life_s": self.half_life_s,
            "rate": self._rate,
            "new_for_s": self.new_for_s,
            "max_values": self.max_values,
            "keys": pack_hashables(list(self._data)),
            "first_seen": pack_values([r.first_seen for r in records]),
            "events": pack_values([r.events for r in records]),
            "events_t": pack_values([r.events_t for r in records]),
            "devices": pack_values([r.devices for r in records]),
            "countries": pack_values([r.countries for r in records]),
            "new_device": pack_entries([r.new_device for r in records]),
            "new_country": pack_entries([r.new_country for r in records]),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("format") != FORMAT:
            raise ValueError(f"unknown UserHistories pickle format {state.get('format')!r}")
        self.max_keys = state["max_keys"]
        self.half_life_s = state["half_life_s"]
        self._rate = state["rate"]
        self.new_for_s = state["new_for_s"]
        self.max_values = state["max_values"]
        with gc_paused():
            keys = unpack_hashables(state["keys"])
            first_seen = unpack_values(state["first_seen"])
            events = unpack_values(state["events"])
            events_t = unpack_values(state["events_t"])
            devices = unpack_values(state["devices"])
            countries = unpack_values(state["countries"])
            new_device = unpack_entries(state["new_device"])
            new_country = unpack_entries(state["new_country"])
            data: dict[Hashable, UserHistory] = {}
            for i, key in enumerate(keys):
                record = UserHistory(first_seen[i])
                record.events = events[i]
                record.events_t = events_t[i]
                record.devices = devices[i]
                record.countries = countries[i]
                record.new_device = new_device[i]
                record.new_country = new_country[i]
                data[key] = record
            self._data = data

    @classmethod
    def merged(
        cls,
        first_seen: FirstSeen,
        events: DecayingCounts,
        devices: DistinctSets,
        countries: DistinctSets,
        new_devices: RecentlyNew | None,
        new_countries: RecentlyNew | None,
        half_life_s: float,
        new_for_s: float,
    ) -> UserHistories:
        """The six per-user tables a checkpoint of an earlier version holds, as one
        (``new_*`` None: a checkpoint from before those tables). ``half_life_s`` and
        ``new_for_s``: those the tables were made with (the count table keeps only its
        decay rate, which is kept as it is)."""
        users = cls(first_seen._table.max_keys, half_life_s, new_for_s, devices.max_values)
        users._rate = events._rate
        counts = events._table._data
        device_sets, country_sets = devices._table._data, countries._table._data
        new_device = {} if new_devices is None else new_devices._table._data
        new_country = {} if new_countries is None else new_countries._table._data
        for user, first in first_seen._table._data.items():  # the LRU order they shared
            record = UserHistory(first)
            count = counts.get(user)
            if count is not None:
                record.events, record.events_t = count
            record.devices = device_sets.get(user)
            record.countries = country_sets.get(user)
            record.new_device = new_device.get(user)
            record.new_country = new_country.get(user)
            users._data[user] = record
        return users
