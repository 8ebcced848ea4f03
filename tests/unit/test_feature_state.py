from __future__ import annotations

import math

import pytest

from detectors.features.state import BoundedTable, DecayingCounts, DistinctSets, FirstSeen


def test_bounded_table_evicts_least_recently_used():
    table: BoundedTable[str, int] = BoundedTable(2)
    table.put("a", 1)
    table.put("b", 2)
    assert table.get("a") == 1  # a is now the most recent
    table.put("c", 3)
    assert "b" not in table
    assert "a" in table
    assert "c" in table
    assert len(table) == 2


def test_decaying_count_halves_after_half_life():
    counts = DecayingCounts(half_life_s=60.0, max_keys=10)
    counts.add("k", 0.0, 4.0)
    assert counts.get("k", 60.0) == pytest.approx(2.0)
    assert counts.get("k", 120.0) == pytest.approx(1.0)
    assert counts.get("other", 0.0) == 0.0


def test_decaying_count_ignores_time_going_backwards():
    counts = DecayingCounts(half_life_s=60.0, max_keys=10)
    counts.add("k", 100.0)
    assert counts.add("k", 50.0) == pytest.approx(2.0)


def test_decaying_count_memory_is_bounded():
    counts = DecayingCounts(half_life_s=60.0, max_keys=100)
    for i in range(10_000):
        counts.add(i, float(i))
    assert len(counts._table) == 100


def test_distinct_sets_cap_values_per_key():
    sets = DistinctSets(max_keys=10, max_values=2)
    assert sets.add("k", 1) == (1, True)
    assert sets.add("k", 2) == (2, True)
    assert sets.add("k", 3) == (2, True)  # still reported new, count saturates
    assert sets.contains("k", 1)
    assert not sets.contains("k", 3)


def test_first_seen_age():
    first = FirstSeen(max_keys=10)
    assert first.age("u", 100.0) == 0.0
    assert first.age("u", 160.0) == 60.0
    assert first.seen("u")
    assert not first.seen("v")


def test_rejects_bad_construction():
    with pytest.raises(ValueError, match="half_life_s"):
        DecayingCounts(half_life_s=0.0, max_keys=1)
    with pytest.raises(ValueError, match="max_keys"):
        BoundedTable(0)
    assert math.isfinite(DecayingCounts(1.0, 1).get("x", 0.0))
