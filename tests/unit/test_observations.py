from __future__ import annotations

import zlib
from collections import defaultdict

import orjson
import pytest
from msgspec.structs import replace

from detectors.attributes import NEW_ACCOUNT
from detectors.explain import Reason
from detectors.patterns import Observation, PatternFinder, PatternUpdate
from detectors.scoring import Scored
from stream.alerts import SourceCoordinates
from stream.observations import (
    DEFAULT_NORMAL_RATE,
    BadObservation,
    Decoded,
    decode_observation,
    event_attributes,
    observation_records,
    routing_key,
    sampled,
)
from tests.unit.events import make_event
from tests.unit.observation_traffic import decode_all, reference_updates, scored_traffic

SOURCE = SourceCoordinates("events", 2, 41)


def scored(event_type: str, *, anomaly: bool, age_h: float = 100.0) -> Scored:
    reasons = (
        (
            Reason("ip_users", 9.0, 1.2, "high", 3.0),
            Reason("user_age_h", 0.1, 400.0, "low", 2.0),
        )
        if anomaly
        else ()
    )
    return Scored(
        event_type=event_type,
        score=0.93 if anomaly else 0.2,
        threshold=0.9,
        is_anomaly=anomaly,
        detector="hst/1",
        features={"user_age_h": age_h},
        reasons=reasons,
    )


def test_an_anomalous_event_gives_one_record_per_pattern_key() -> None:
    event = make_event("listing.created", 7, user="u-9", ip="203.0.113.5")
    result = scored("listing.created", anomaly=True, age_h=0.5)
    records = observation_records(event, result, SOURCE)
    attrs = event_attributes(event, result)
    assert NEW_ACCOUNT in attrs  # the account age comes from the scored features
    keys = PatternFinder().keys(attrs)
    assert [key for key, _ in records] == [routing_key(k) for k in keys]
    assert (routing_key((NEW_ACCOUNT, "ip24:203.0.113")), records[0][1]) in records
    body = orjson.loads(records[0][1])
    assert body == {
        "v": 1,
        "t": pytest.approx(1793577607.0),
        "a": True,
        "id": event["event_id"],
        "type": "listing.created",
        "user": "u-9",
        "score": 0.93,
        "reasons": [["ip_users", "high"], ["user_age_h", "low"]],
        "src": ["events", 2, 41],
        "alert": True,
    }
    decoded = decode_observation(*records[0])
    assert isinstance(decoded, Decoded)
    assert decoded.key == keys[0]
    assert decoded.event_type == "listing.created"
    obs = decoded.observation
    assert (obs.event_id, obs.user, obs.is_anomalous, obs.source) == (
        event["event_id"],
        "u-9",
        True,
        ("events", 2, 41),
    )
    assert obs.reasons == (("ip_users", "high"), ("user_age_h", "low"))


def test_normal_events_are_sampled_deterministically_and_weighted() -> None:
    kept = 0
    for n in range(4000):
        event = make_event("account.login", n)
        records = observation_records(event, scored("account.login", anomaly=False), SOURCE)
        assert records == observation_records(event, scored("account.login", anomaly=False), SOURCE)
        if records:
            kept += 1
            body = orjson.loads(records[0][1])
            assert body == {"v": 1, "t": pytest.approx(1793577600.0 + n), "a": False, "w": 8.0}
            assert sampled(event["event_id"], DEFAULT_NORMAL_RATE)
    assert kept == pytest.approx(4000 * DEFAULT_NORMAL_RATE, rel=0.15)
    every = observation_records(
        make_event("account.login"), scored("account.login", anomaly=False), SOURCE, normal_rate=1
    )
    assert orjson.loads(every[0][1])["w"] == 1.0
    with pytest.raises(ValueError, match="normal_rate"):
        observation_records(
            make_event("account.login"), scored("x", anomaly=False), SOURCE, normal_rate=0
        )


def test_weighted_normal_observations_count_as_many_events() -> None:
    one = PatternFinder()
    eight = PatternFinder()
    for i in range(80):
        one.observe_key(("ip24:10.0.0",), Observation(float(i), "", "", False, (), ("", 0, 0)))
        if i % 8 == 0:
            obs = Observation(float(i), "", "", False, (), ("", 0, 0), weight=8.0)
            eight.observe_key(("ip24:10.0.0",), obs)
    # The decayed counts (private: [events, anomalies] short, the same long, last time).
    counts_one = one._counts.get(("ip24:10.0.0",))
    counts_eight = eight._counts.get(("ip24:10.0.0",))
    assert counts_one is not None
    assert counts_eight is not None
    assert counts_eight[:4] == pytest.approx(counts_one[:4], rel=0.05)


def test_decoded_records_give_the_finder_what_observing_the_events_gives() -> None:
    # With every normal event sent, routing by key (observe_key on decoded records) is the
    # finder's own observe() on the events' full observations.
    records, observations = _full(seed=5)
    direct = PatternFinder()
    expected: list[PatternUpdate] = []
    for obs in observations:
        expected += direct.observe(obs)
    assert expected, "the attacks raise patterns"
    got = reference_updates(records, arrivals=False)
    assert [summary(u) for u in got] == [summary(u) for u in expected]


def test_routing_by_key_to_two_partitions_gives_the_same_patterns() -> None:
    # The stage's promise: a key's observations meet in one finder, so splitting keys over
    # partitions (and consumers) changes nothing.
    traffic = scored_traffic(events=8000, seed=3)
    expected = reference_updates(traffic.records)
    split: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    for key, value in traffic.records:
        split[zlib.crc32(key) % 2].append((key, value))
    got: list[PatternUpdate] = []
    for part in split.values():
        got += reference_updates(part)
    assert sorted(map(summary, got)) == sorted(map(summary, expected))
    # Patterns mix events of both input partitions (keyed by user), so a finder per input
    # partition would have seen each only in part.
    spanning = [u for u in expected if len({o[1] for o in u.offsets}) == 2]
    assert len(spanning) >= len(expected) // 2


def test_volume_is_under_two_records_per_event() -> None:
    traffic = scored_traffic(events=8000, seed=3)
    assert len(traffic.records) < 2 * 8000
    anomalous = [d for d in decode_all(traffic.records) if d.observation.is_anomalous]
    assert 0 < len(anomalous) < len(traffic.records) // 2


@pytest.mark.parametrize(
    ("key", "value", "reason", "detail"),
    [
        (b"ip24:1.2.3", None, "invalid_json", "null"),
        (b"ip24:1.2.3", b"{", "invalid_json", ""),
        (b"ip24:1.2.3", b"[1]", "not_an_object", "list"),
        (b"ip24:1.2.3", b"x" * 70_000, "oversized", "70000"),
        (None, b'{"v":1,"t":1,"a":false,"w":1}', "schema_violation", "key is missing"),
        (b"\xff", b'{"v":1,"t":1,"a":false,"w":1}', "schema_violation", "UTF-8"),
        (b"a:1\x1fb:2\x1fc:3", b'{"v":1,"t":1,"a":false,"w":1}', "schema_violation", "one or two"),
        (b"ip24:1.2.3", b'{"v":2,"t":1,"a":false,"w":1}', "schema_violation", "v must be 1"),
        (b"ip24:1.2.3", b'{"v":1,"t":"x","a":false,"w":1}', "schema_violation", "t must be"),
        (b"ip24:1.2.3", b'{"v":1,"t":1,"a":false,"w":0.5}', "schema_violation", "w must be"),
        (b"ip24:1.2.3", b'{"v":1,"t":1,"a":1}', "schema_violation", "a must be a boolean"),
        (b"ip24:1.2.3", b'{"v":1,"t":1,"a":true}', "schema_violation", "id must be"),
    ],
)
def test_bad_records_say_why(
    key: bytes | None, value: bytes | None, reason: str, detail: str
) -> None:
    result = decode_observation(key, value)
    assert isinstance(result, BadObservation)
    assert result.reason == reason
    assert detail in result.detail


def test_arrivals_are_sent_whatever_the_sampling_and_read_back_as_arrivals() -> None:
    event = make_event("account.login", 4, user="u-7", ip="203.0.113.5")
    normal = scored("account.login", anomaly=False)
    arriving = replace(
        normal, arrivals=("device:" + event["context"]["device_id"], "ip24:203.0.113")
    )
    # A normal event the sampling leaves out still sends its arrivals, one per value.
    assert observation_records(event, normal, SOURCE, normal_rate=1e-9) == []
    records = observation_records(event, arriving, SOURCE, normal_rate=1e-9)
    assert [k for k, _ in records] == [a.encode() for a in arriving.arrivals]
    for key, value in records:
        decoded = decode_observation(key, value)
        assert isinstance(decoded, Decoded)
        assert decoded.arrival
        obs = decoded.observation
        assert (obs.event_id, obs.user, obs.is_anomalous) == (event["event_id"], "u-7", True)
        assert obs.source == (SOURCE.topic, SOURCE.partition, SOURCE.offset)
        assert obs.reasons == (("arriving_users", "high"),)
        assert decoded.event_type == "account.login"
    # An anomalous arriving event sends both its observations and its arrivals.
    both = observation_records(event, replace(arriving, is_anomaly=True), SOURCE)
    decoded_all = [decode_observation(k, v) for k, v in both]
    assert sum(isinstance(d, Decoded) and d.arrival for d in decoded_all) == 2
    assert sum(isinstance(d, Decoded) and not d.arrival for d in decoded_all) > 2


@pytest.mark.parametrize(
    ("key", "body", "detail"),
    [
        (b"ip24:1.2.3", {"n": False}, "n must be true"),
        (b"ip24:1.2.3", {"a": True}, "has no a"),
        (b"cohort:new_account\x1fip24:1.2.3", {}, "one attribute"),
        (b"ip24:1.2.3", {"user": ""}, "user must be"),
        (b"ip24:1.2.3", {"src": ["events", 0]}, "src must be"),
    ],
)
def test_bad_arrival_records_are_rejected(key: bytes, body: dict[str, object], detail: str) -> None:
    good = {"v": 1, "t": 5.0, "n": True, "id": "e-1", "type": "account.login", "user": "u-1"}
    good["src"] = ["events", 0, 3]
    assert isinstance(decode_observation(b"ip24:1.2.3", orjson.dumps(good)), Decoded)
    result = decode_observation(key, orjson.dumps({**good, **body}))
    assert isinstance(result, BadObservation)
    assert (result.reason, detail in result.detail) == ("schema_violation", True), result


def test_bad_anomalous_fields_are_rejected() -> None:
    event = make_event("account.login", 3)
    (key, value), *_ = observation_records(event, scored("account.login", anomaly=True), SOURCE)
    body = orjson.loads(value)
    for field, bad in [
        ("reasons", [["f", "up"]]),
        ("reasons", "ip_users"),
        ("src", ["events", -1, 0]),
        ("src", ["events", 0]),
        ("score", None),
        ("user", ""),
    ]:
        result = decode_observation(key, orjson.dumps({**body, field: bad}))
        assert isinstance(result, BadObservation), (field, bad)
        assert result.reason == "schema_violation"
        assert field in result.detail


# -- helpers ----------------------------------------------------------------------------------


def summary(update: PatternUpdate) -> tuple[object, ...]:
    return (update.pattern_id, update.status, update.support, update.users, update.offsets)


def _full(seed: int) -> tuple[list[tuple[bytes, bytes]], list[Observation]]:
    """Every normal event sent, and the Observations observe() would get for each event."""
    from detectors.features.extractor import event_time_s
    from detectors.scoring import EventScorer, ScoringConfig
    from stream.traffic import TrafficConfig, generate

    events = [orjson.loads(r.value) for r in generate(TrafficConfig(3000, seed, attack_rate=2e-3))]
    scorer = EventScorer(ScoringConfig(warmup=100))
    records: list[tuple[bytes, bytes]] = []
    observations: list[Observation] = []
    for offset, (event, result) in enumerate(zip(events, scorer.score_batch(events), strict=True)):
        assert isinstance(result, Scored)
        source = SourceCoordinates("events", 0, offset)
        records += observation_records(event, result, source, normal_rate=1.0)
        observations.append(
            Observation(
                event_time_s(event["occurred_at"]),
                event["event_id"],
                event["entities"]["user_id"],
                result.is_anomaly or result.is_suspicious,
                event_attributes(event, result),
                ("events", 0, offset),
                result.score,
                tuple((r.feature, r.direction) for r in result.reasons),
            )
        )
    return records, observations
