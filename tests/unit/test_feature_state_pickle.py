"""The state tables' columnar pickle restores exactly the same behaviour.

Checkpoints are ``pickle.dumps(scorer)``; a restored partition must go on computing the
same features, and evicting the same keys, as if it had never been stopped.
"""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

import pytest

from detectors.compiled import attributes
from detectors.features import FeatureExtractor
from detectors.features.state import (
    BoundedTable,
    DecayingCounts,
    DistinctSets,
    FirstSeen,
    RunningMeans,
    UserHistories,
    UserHistory,
    table_of,
)
from stream.bench_state import synthetic_events
from tests.unit.events import _PAYLOADS, make_event


def _round_trip(obj: Any) -> Any:
    return pickle.loads(pickle.dumps(obj, protocol=5))


def _items(table: BoundedTable[Any, Any]) -> list[tuple[Any, Any]]:
    """A table's entries in order; a user's entry (``UserHistories``) as its fields."""
    return [
        (key, tuple(attributes(value).items()) if isinstance(value, UserHistory) else value)
        for key, value in table._data.items()
    ]


@pytest.mark.parametrize(
    "values",
    [
        [1.5, -0.0, math.inf, 1e-300, 3.0],  # floats
        [(1.0, 2.0), (math.nan, 0.1), (-0.0, 5e10)],  # DecayingCounts' (value, time)
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],  # patterns' count lists
        ["a", "b", "", "é\u2603"],  # bare strings
        [{"a", "b"}, "c", set(), {"d"}],  # DistinctSets' bare values and sets
        [1, 2.0, True, None, ("x", 1), frozenset({1})],  # mixed: a plain list
        [(1.0, 2)],  # an int inside a tuple must stay an int
        [("x\x00y", 1.0)],  # a value holding the key separator
    ],
)
def test_table_round_trip_keeps_values_types_and_order(values):
    table: BoundedTable[Any, Any] = BoundedTable(100)
    for i, value in enumerate(values):
        table.put(f"k{(i * 7) % 10}", value)
    restored = _round_trip(table)
    before, after = _items(table), _items(restored)
    assert [k for k, _ in after] == [k for k, _ in before]
    for (_, a), (_, b) in zip(before, after, strict=True):
        assert type(a) is type(b)
        assert _canonical(a) == _canonical(b)  # also nan, -0.0 and every member's type
    assert restored.max_keys == table.max_keys


def _canonical(value: Any) -> Any:
    """``repr``, except that a set's members are sorted: a rebuilt set may iterate in
    another order (string hashes vary per process), which no table reads."""
    if isinstance(value, set | frozenset):
        return sorted(repr(member) for member in value)
    return repr(value)


@pytest.mark.parametrize("keys", [["a\x00b", "c"], [1, 2, 3], [("t", 1), "s"], [""], []])
def test_table_round_trip_with_awkward_keys(keys):
    table: BoundedTable[Any, float] = BoundedTable(10)
    for key in keys:
        table.put(key, 1.0)
    assert _items(_round_trip(table)) == _items(table)


def test_lru_order_survives_the_round_trip():
    """Touching keys out of insertion order must be remembered: a restored table that
    lost the LRU order (e.g. sorted or re-inserted keys) evicts a different key."""
    table: BoundedTable[str, float] = BoundedTable(3)
    for key in ("a", "b", "c"):
        table.put(key, 1.0)
    table.get("a")  # LRU order now b, c, a
    restored = _round_trip(table)
    for t in (table, restored):
        t.put("d", 2.0)  # evicts b, the least recently used
    assert "b" not in restored
    assert "a" in restored
    assert _items(restored) == _items(table) == [("c", 1.0), ("a", 1.0), ("d", 2.0)]


def test_old_checkpoints_still_load():
    table: BoundedTable[str, float] = BoundedTable(5)
    restored = BoundedTable.__new__(BoundedTable)
    restored.__setstate__({"max_keys": 5, "_data": {"a": 1.0, "b": 2.0}})
    table.put("a", 1.0)
    table.put("b", 2.0)
    assert _items(restored) == _items(table)


def _exercise(tables: dict[str, Any], rng: random.Random, steps: int) -> list[Any]:
    """Random operations on every table kind; what they return, in order."""
    out: list[Any] = []
    for i in range(steps):
        key = f"k{rng.randrange(40)}"
        t = 1000.0 + i * rng.random() * 30
        out.append(tables["counts"].add(key, t, rng.choice((0.0, 1.0))))
        out.append(tables["counts"].get(f"k{rng.randrange(40)}", t))
        out.append(tables["sets"].add(key, f"v{rng.randrange(6)}"))
        out.append(tables["sets"].count(f"k{rng.randrange(40)}"))
        out.append(tables["sets"].contains(key, f"v{rng.randrange(6)}"))
        out.append(tables["one"].add(key, rng.randrange(3)))
        tables["means"].update(key, rng.random() * 100)
        out.append(tables["means"].get(f"k{rng.randrange(40)}"))
        out.append(tables["first"].age(key, t))
        tables["first"].mark(f"k{rng.randrange(40)}", t)
        out.append(tables["first"].seen(f"k{rng.randrange(40)}"))
    return out


def test_every_table_kind_continues_identically_after_evictions():
    def fresh() -> dict[str, Any]:
        return {
            "counts": DecayingCounts(half_life_s=60.0, max_keys=25),
            "sets": DistinctSets(max_keys=25, max_values=3),
            "one": DistinctSets(max_keys=25, max_values=1),
            "means": RunningMeans(alpha=0.3, max_keys=25),
            "first": FirstSeen(max_keys=25),
        }

    original = fresh()
    _exercise(original, random.Random(1), 500)  # 40 keys into 25 slots: many evictions
    restored = _round_trip(original)
    assert _exercise(restored, random.Random(2), 500) == _exercise(original, random.Random(2), 500)
    for name in original:
        assert _items(restored[name]._table) == _items(original[name]._table)


def test_distinct_sets_keep_their_semantics_with_a_lone_value_kept_bare():
    sets = DistinctSets(max_keys=10, max_values=2)
    assert sets.add("k", None) == (1, True)  # None is not mistaken for "no entry"
    assert sets.add("k", None) == (1, False)
    assert sets.contains("k", None)
    assert sets.add("j", "a") == (1, True)
    assert sets.add("j", "b") == (2, True)
    assert sets.add("j", "c") == (2, True)  # capped: counted as new, not remembered
    assert not sets.contains("j", "c")
    none = DistinctSets(max_keys=10, max_values=0)
    assert none.add("k", "a") == (0, True)
    assert none.count("k") == 0
    assert _round_trip(sets).count("j") == 2


def _mixed_events(n: int, seed: int) -> list[dict[str, Any]]:
    """Random events over a small population, so keys repeat, collide and get evicted."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        event_type = rng.choice(sorted(_PAYLOADS))
        event = make_event(
            event_type,
            i,
            seconds=i * 7.0 + rng.random(),
            user=f"u-{rng.randrange(300)}",
            device=f"d-{rng.randrange(200)}",
            ip=f"10.0.{rng.randrange(4)}.{rng.randrange(60)}",
            country=rng.choice(("US", "GB", "DE")),
        )
        event["entities"]["shop_id"] = f"s-{rng.randrange(50)}"
        payload = event["payload"]
        if "card_fingerprint" in payload:
            payload["card_fingerprint"] = f"c-{rng.randrange(400)}"
            payload["outcome"] = rng.choice(("approved", "declined"))
        if "recipient_id" in payload:
            payload["recipient_id"] = f"u-{rng.randrange(300)}"
        if "amount" in payload:
            payload["amount"] = round(rng.random() * 500, 2)
        if "rating" in payload:
            payload["rating"] = rng.randrange(1, 6)
        if "title" in payload:
            payload["title"] = f"item {rng.randrange(30)}"
        if "success" in payload:
            payload["success"] = rng.random() > 0.2
        events.append(event)
    return events


@pytest.mark.parametrize("max_keys", [64, 100_000])  # with and without evictions
def test_extractor_continues_identically_after_a_round_trip(max_keys):
    events = _mixed_events(4_000, seed=3)
    original = FeatureExtractor(max_keys=max_keys)
    for event in events[:3_000]:
        original.extract(event)
    restored = _round_trip(original)
    for event in events[3_000:]:
        assert restored.extract(event) == original.extract(event)
    for name, holder in attributes(original).items():
        assert _items(table_of(getattr(restored, name))) == _items(table_of(holder)), name


def test_extractor_round_trip_on_generated_traffic():
    events = list(synthetic_events(3_000, seed=5))
    original = FeatureExtractor(max_keys=500)
    for event in events[:2_000]:
        original.extract(event)
    restored = _round_trip(_round_trip(original))  # a restored state snapshots again
    for event in events[2_000:]:
        assert restored.extract(event) == original.extract(event)


def test_user_histories_round_trip_keeps_every_field_and_the_order():
    users = UserHistories(max_keys=50, half_life_s=3600.0, new_for_s=3600.0)
    rng = random.Random(4)
    for i in range(400):
        users.observe(
            f"u-{rng.randrange(80)}", f"d-{rng.randrange(20)}", rng.choice("ABC"), i * 30.0
        )
    restored = _round_trip(users)
    assert _items(restored) == _items(users)  # sets compare as sets
    assert [type(v) for _, v in _items(restored)] == [type(v) for _, v in _items(users)]
    assert (restored.max_keys, restored.half_life_s, restored.new_for_s, restored.max_values) == (
        50,
        3600.0,
        3600.0,
        64,
    )
    # Some users have a new device remembered, some not: both forms of that column.
    kept = {record.new_device is None for record in users._data.values()}
    assert kept == {True, False}
    for i in range(400, 600):
        event = (f"u-{rng.randrange(80)}", f"d-{rng.randrange(20)}", rng.choice("ABC"), i * 30.0)
        assert restored.observe(*event) == users.observe(*event)
