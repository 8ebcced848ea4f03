"""The generated stream as a whole: determinism, order, the contract, labels, statistics."""

from __future__ import annotations

import functools
import inspect
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from schemas import EVENT_SCHEMA, EVENT_TYPES, load_schema
from stream.traffic import MALFORMED_KINDS, GeneratedRecord, TrafficConfig, generate, label_line

MAX_EVENT_BYTES = 65536

# Small enough to validate every record with jsonschema, big enough for every kind of record.
CONTRACT_CONFIG = TrafficConfig(events=8_000, seed=5, bad_fraction=0.03, attack_rate=1e-3)
# Two days of event time with a little of everything, for statistics and labels.
STATS_CONFIG = TrafficConfig(events=40_000, seed=11, bad_fraction=0.02, events_per_day=20_000)


@functools.cache
def stream(config: TrafficConfig) -> tuple[GeneratedRecord, ...]:
    return tuple(generate(config))


@functools.cache
def validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema(EVENT_SCHEMA))


def good_events(records: tuple[GeneratedRecord, ...]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records if r.malformed is None]


def test_generate_is_lazy():
    assert inspect.isgenerator(generate(TrafficConfig(events=10, seed=1)))


def test_same_seed_same_bytes_different_seed_different_bytes():
    config = TrafficConfig(events=3_000, seed=42, bad_fraction=0.05, attack_rate=2e-3)
    first = list(generate(config))
    assert first == list(generate(config))
    other = list(generate(TrafficConfig(events=3_000, seed=43, bad_fraction=0.05)))
    assert [r.value for r in first] != [r.value for r in other]


def test_corruption_does_not_reshuffle_the_traffic():
    # Malformed records draw from their own random stream: the good records stay put.
    clean = list(generate(TrafficConfig(events=3_000, seed=9)))
    dirty = list(generate(TrafficConfig(events=3_000, seed=9, bad_fraction=0.1)))
    pairs = [(c, d) for c, d in zip(clean, dirty, strict=True) if d.malformed is None]
    assert len(pairs) > 2_500
    assert all(c == d for c, d in pairs)


@pytest.mark.parametrize("events", [0, 1, 2, 997, 5_000])
def test_exactly_the_requested_number_of_records(events: int):
    config = TrafficConfig(events=events, seed=3, bad_fraction=0.02, attack_rate=1e-3)
    assert sum(1 for _ in generate(config)) == events


def test_timestamps_nondecreasing_and_match_occurred_at():
    records = stream(STATS_CONFIG)
    stamps = [r.timestamp_ms for r in records]
    assert stamps == sorted(stamps)
    assert stamps[0] >= STATS_CONFIG.start_ms
    for record in records[:2_000]:
        if record.malformed is None:
            occurred = orjson.loads(record.value)["occurred_at"]
            assert occurred == _format_ms(record.timestamp_ms)


def test_ids_keys_and_record_fields():
    records = stream(STATS_CONFIG)
    assert [r.event_id for r in records] == [f"e-11-{n}" for n in range(len(records))]
    for record in records:
        if record.malformed is not None:
            assert record.event_type is None
            assert record.attack is None
            continue
        event = orjson.loads(record.value)
        assert event["event_id"] == record.event_id
        assert event["event_type"] == record.event_type
        assert record.key == event["entities"]["user_id"].encode()


def test_every_good_record_meets_the_contract():
    records = stream(CONTRACT_CONFIG)
    schema = validator()
    seen: Counter[str] = Counter()
    for record in records:
        if record.malformed is None:
            assert len(record.value) <= MAX_EVENT_BYTES
            event = orjson.loads(record.value)
            errors = [error.message for error in schema.iter_errors(event)]
            assert errors == [], (record.event_id, errors)
            seen[event["event_type"]] += 1
    assert set(seen) == set(EVENT_TYPES)
    assert {r.attack for r in records} >= {
        "card_testing",
        "account_takeover",
        "fake_listing_ring",
        "review_bombing",
    }


def test_every_malformed_record_breaks_the_contract():
    records = [r for r in stream(CONTRACT_CONFIG) if r.malformed is not None]
    schema = validator()
    assert {r.malformed for r in records} == set(MALFORMED_KINDS)
    for record in records:
        assert not _meets_contract(record.value, schema), (record.malformed, record.value[:300])
        if record.malformed == "oversized":
            assert MAX_EVENT_BYTES < len(record.value) <= 200 * 1024 + 4096
            assert isinstance(orjson.loads(record.value), dict)
        elif record.malformed == "invalid_json":
            with pytest.raises(ValueError, match=r"."):
                json.loads(record.value)
        elif record.malformed == "not_an_object":
            assert not isinstance(orjson.loads(record.value), dict)
        else:
            assert isinstance(orjson.loads(record.value), dict)
            assert len(record.value) <= MAX_EVENT_BYTES


def test_no_value_contains_a_line_break():
    for record in stream(STATS_CONFIG):
        assert b"\n" not in record.value
        assert b"\r" not in record.value


@pytest.mark.parametrize("bad_fraction", [0.0, 0.02])
def test_bad_fraction_is_honoured(bad_fraction: float):
    config = TrafficConfig(events=40_000, seed=11, bad_fraction=bad_fraction, events_per_day=20_000)
    malformed = sum(1 for r in stream(config) if r.malformed is not None)
    expected = bad_fraction * config.events
    # Binomial: the standard deviation is ~28 at 800 expected.
    assert abs(malformed - expected) <= max(0.15 * expected, 0)


def test_label_lines_cover_every_record():
    records = stream(STATS_CONFIG)
    labels = [orjson.loads(label_line(r)) for r in records]
    assert [label["event_id"] for label in labels] == [r.event_id for r in records]
    for record, label in zip(records, labels, strict=True):
        assert set(label) == {"event_id", "attack", "attack_id", "malformed"}
        assert label["attack"] == record.attack
        assert label["attack_id"] == record.attack_id
        assert label["malformed"] == record.malformed
        assert (label["attack"] is None) == (label["attack_id"] is None)


def test_activity_is_heavy_tailed():
    per_user = Counter(r.key for r in stream(STATS_CONFIG) if r.malformed is None)
    ranked = sorted(per_user.values(), reverse=True)
    top = ranked[: max(len(ranked) // 100, 1)]
    # Uniform activity would give the top 1% of users about 1% of the events.
    assert sum(top) / sum(ranked) > 0.10


def test_daily_rhythm_peaks_in_the_evening():
    hours = Counter(int(e["occurred_at"][11:13]) for e in good_events(stream(STATS_CONFIG)))
    days = (stream(STATS_CONFIG)[-1].timestamp_ms - STATS_CONFIG.start_ms) / 86_400_000
    assert 1.5 < days < 3.0
    evening = sum(hours[h] for h in (18, 19, 20, 21))
    night = sum(hours[h] for h in (2, 3, 4, 5))
    assert evening > 3 * night


def test_normal_behaviour_mix():
    events = [e for e, r in _good_pairs(STATS_CONFIG) if r.attack is None]
    types = Counter(e["event_type"] for e in events)
    total = sum(types.values())
    assert 0.25 < types["account.login"] / total < 0.45
    assert 0.1 < types["order.placed"] / total < 0.25
    assert types["account.created"] / total > 0.01
    logins = [e["payload"]["success"] for e in events if e["event_type"] == "account.login"]
    assert sum(logins) / len(logins) > 0.93
    payments = [e["payload"] for e in events if e["event_type"] == "payment.attempted"]
    approved = sum(p["outcome"] == "approved" for p in payments)
    assert 0.9 < approved / len(payments) < 1.0
    ratings = [e["payload"]["rating"] for e in events if e["event_type"] == "review.posted"]
    assert sum(r >= 4 for r in ratings) / len(ratings) > 0.8


def test_orders_are_paid_and_reviews_follow_orders():
    events = [e for e, r in _good_pairs(TrafficConfig(events=20_000, seed=2)) if r.attack is None]
    ordered: set[tuple[str, str | None]] = set()
    paid: set[str] = set()
    orders: dict[str, float] = {}
    for event in events:
        entities = event["entities"]
        if event["event_type"] == "order.placed":
            ordered.add((entities["user_id"], entities["listing_id"]))
            orders[entities["order_id"]] = event["payload"]["amount"]
        elif event["event_type"] == "payment.attempted":
            paid.add(entities["order_id"])
            assert event["payload"]["amount"] == orders[entities["order_id"]]
        elif event["event_type"] == "review.posted":
            assert (entities["user_id"], entities["listing_id"]) in ordered
    # Only orders placed in the last minute of the stream may still wait for their payment.
    assert len(set(orders) - paid) <= 5


def test_population_grows_with_signups():
    events = good_events(stream(STATS_CONFIG))
    created = {e["entities"]["user_id"] for e in events if e["event_type"] == "account.created"}
    acting_later = {
        e["entities"]["user_id"]
        for e in events
        if e["event_type"] == "order.placed" and e["entities"]["user_id"] in created
    }
    assert acting_later


def _good_pairs(config: TrafficConfig) -> list[tuple[dict[str, Any], GeneratedRecord]]:
    return [(orjson.loads(r.value), r) for r in stream(config) if r.malformed is None]


def _meets_contract(value: bytes, schema: Draft202012Validator) -> bool:
    if len(value) > MAX_EVENT_BYTES:
        return False
    try:
        event = json.loads(value)
    except ValueError:
        return False
    return isinstance(event, dict) and schema.is_valid(event)


def _format_ms(epoch_ms: int) -> str:
    instant = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"
