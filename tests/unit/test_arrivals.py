"""Arrival bursts (detectors/arrivals.py): the tracker's distinct arrivals, the finder's
rate test against each value's own past, and what the scorer hands on."""

from __future__ import annotations

import pickle
from collections import defaultdict

import pytest

from detectors.arrival_tracker import ArrivalTracker
from detectors.arrivals import ArrivalConfig, ArrivalFinder
from detectors.attributes import attribute_kind, attributes
from detectors.patterns import Observation, PatternFinder, PatternUpdate
from detectors.scoring import EventScorer, Scored, ScoringConfig
from schemas.validation import EventValidator
from stream.traffic.config import TrafficConfig
from stream.traffic.generator import generate

HOUR = 3600.0
DAY = 86_400.0


def arrival(t: float, user: str, n: int = 0) -> Observation:
    return Observation(t, f"e-{user}-{n}", user, True, (), ("events", 0, n))


def feed(finder: ArrivalFinder, key: str, obs: list[Observation]) -> list[PatternUpdate]:
    updates: list[PatternUpdate] = []
    for o in obs:
        updates += finder.observe_key((key,), o)
    return updates


# -- the tracker ------------------------------------------------------------------------


def test_a_user_arrives_once_a_day_at_each_tracked_value() -> None:
    tracker = ArrivalTracker(kinds=("device", "ip24"))
    values = ["device:d-1", "ip24:10.0.0", "shop:s-1", "country:US"]
    assert tracker.arrivals("u-1", values, 0.0) == ("device:d-1", "ip24:10.0.0")
    for t in (1.0, HOUR, DAY - 1.0):
        assert tracker.arrivals("u-1", values, t) == ()
    # Another user at the same values arrives; a day after the first arrival, so does u-1.
    assert tracker.arrivals("u-2", values, 10.0) == ("device:d-1", "ip24:10.0.0")
    assert tracker.arrivals("u-1", values, DAY) == ("device:d-1", "ip24:10.0.0")


def test_the_tracker_is_bounded_and_pickles() -> None:
    tracker = ArrivalTracker(max_keys=100)
    for i in range(1000):
        tracker.arrivals(f"u-{i}", [f"device:d-{i}"], float(i))
    assert len(tracker) == 100
    # The most recent pairs are remembered, the oldest forgotten (they arrive again).
    copy = pickle.loads(pickle.dumps(tracker))
    for t in (tracker, copy):
        assert t.arrivals("u-999", ["device:d-999"], 1000.0) == ()
        assert t.arrivals("u-0", ["device:d-0"], 1000.0) == ("device:d-0",)


def test_the_scorers_path_arrives_where_the_grouping_attributes_say() -> None:
    # arrivals_of builds the values itself (cheaper); they must be spelt exactly as the
    # grouping attributes that key the observations, for every event type.
    validator = EventValidator()
    kinds = ("device", "ip24", "title")
    fast, reference = ArrivalTracker(kinds), ArrivalTracker(kinds)
    seen_types, arrived = set(), 0
    for i, record in enumerate(generate(TrafficConfig(events=3000, seed=2, bad_fraction=0.0))):
        event = validator.decode(record.value)
        assert isinstance(event, dict)
        seen_types.add(event["event_type"])
        user = event["entities"]["user_id"]
        got = fast.arrivals_of(event, float(i))
        assert got == reference.arrivals(user, attributes(event), float(i))
        arrived += len(got)
    assert len(seen_types) == 7
    assert 0 < arrived < 3 * 3000


# -- the finder -------------------------------------------------------------------------


def test_a_burst_of_users_at_a_fresh_device_is_one_growing_pattern() -> None:
    finder = ArrivalFinder()
    updates = feed(finder, "device:d-9", [arrival(1000.0 + 60 * i, f"s{i}") for i in range(12)])
    assert [(u.status, u.support, u.users) for u in updates] == [
        ("new", 3, 3),
        ("growing", 6, 6),
        ("growing", 12, 12),
    ]
    assert len({u.pattern_id for u in updates}) == 1
    new = updates[0]
    assert new.members == ("device:d-9",)
    assert new.first_seen == 1000.0
    assert new.risk_ratio >= 5.0
    assert new.p_value <= 1e-3
    assert new.top_features == ()  # the stage's arrival observations bring the reason
    (resolved,) = finder.advance(1000.0 + 60 * 11 + HOUR)
    assert (resolved.status, resolved.support) == ("resolved", 12)


def test_the_same_users_spread_over_days_raise_nothing() -> None:
    finder = ArrivalFinder()
    obs = [arrival(i * 8 * HOUR, f"u{i}") for i in range(12)]  # three a day, for four days
    assert feed(finder, "ip24:10.0.0", obs) == []


def test_one_user_is_never_a_burst() -> None:
    finder = ArrivalFinder()
    assert feed(finder, "device:d-1", [arrival(100.0 * i, "u", i) for i in range(20)]) == []


def test_a_busy_value_is_measured_against_its_own_rate() -> None:
    # A carrier's /24: a new user every 10 minutes, for two days. Its own pace raises
    # nothing once learnt; five times its pace does.
    config = ArrivalConfig()
    busy = [arrival(600.0 * i, f"u{i}") for i in range(288)]
    finder = ArrivalFinder(config)
    updates = feed(finder, "ip24:100.64.0", busy)
    assert all(u.first_seen < 6 * HOUR for u in updates), "only while it had no history"
    start = busy[-1].t + 600.0
    usual = [arrival(start + 600.0 * i, f"v{i}") for i in range(12)]
    assert feed(finder, "ip24:100.64.0", usual) == []
    start = usual[-1].t + 600.0
    burst = [arrival(start + 60.0 * i, f"w{i}") for i in range(60)]
    raised = feed(finder, "ip24:100.64.0", burst)
    assert raised
    assert raised[0].status == "new"
    assert raised[0].baseline_rate == pytest.approx(6.0, rel=0.3)  # arrivals an hour


def test_arrival_pattern_ids_are_stable_and_their_own() -> None:
    obs = [arrival(5000.0 + 30 * i, f"s{i}") for i in range(5)]
    first = feed(ArrivalFinder(), "ip24:10.0.0", obs)
    again = feed(ArrivalFinder(), "ip24:10.0.0", obs)
    assert [u.pattern_id for u in first] == [u.pattern_id for u in again]
    # The pattern finder's id of the same key and window differs.
    as_events = PatternFinder()
    other = []
    for o in obs * 2:
        other += as_events.observe_key(("ip24:10.0.0",), o)
    assert other
    assert other[0].pattern_id != first[0].pattern_id


def test_routing_arrivals_by_key_changes_nothing() -> None:
    by_key = {
        "device:d-1": [arrival(100.0 + 50 * i, f"a{i}") for i in range(8)],
        "ip24:10.0.0": [arrival(90.0 + 70 * i, f"b{i}") for i in range(8)],
        "device:d-2": [arrival(3 * HOUR * i, f"c{i}") for i in range(8)],
    }
    interleaved = sorted(
        ((o.t, key, o) for key, obs in by_key.items() for o in obs), key=lambda x: x[0]
    )
    together = ArrivalFinder()
    mixed: dict[str, list[PatternUpdate]] = defaultdict(list)
    for _, key, o in interleaved:
        mixed[key] += together.observe_key((key,), o)
    for key, obs in by_key.items():
        assert feed(ArrivalFinder(), key, obs) == mixed[key]
    assert mixed["device:d-1"]
    assert mixed["ip24:10.0.0"]
    assert not mixed["device:d-2"]


@pytest.mark.parametrize(
    ("setting", "value"),
    [("prior_per_day", 0.0), ("prior_days", -1.0), ("min_users", 0), ("window_s", 7200.0)],
)
def test_bad_arrival_settings_fail_naming_the_setting(setting: str, value: float) -> None:
    name = "min_support" if setting == "min_users" else setting
    with pytest.raises(ValueError, match=name):
        ArrivalConfig(**{setting: value})  # type: ignore[arg-type]


# -- the scorer hands arrivals on -------------------------------------------------------


def scored_stream(config: ScoringConfig, events: int = 4000) -> list[Scored]:
    validator = EventValidator()
    decoded = [validator.decode(r.value) for r in generate(TrafficConfig(events=events, seed=9))]
    valid = [e for e in decoded if isinstance(e, dict)]
    scorer = EventScorer(config)
    out = []
    for start in range(0, len(valid), 500):
        out += [s for s in scorer.score_batch(valid[start : start + 500]) if isinstance(s, Scored)]
    return out


def test_the_scorer_reports_each_users_first_device_and_24_once() -> None:
    scored = scored_stream(ScoringConfig())
    arrivals = [a for s in scored for a in s.arrivals]
    assert arrivals
    assert {attribute_kind(a) for a in arrivals} == {"device", "ip24"}
    assert len(arrivals) < len(scored)  # most events are by users already there
    assert not [a for s in scored_stream(ScoringConfig(arrival_kinds=())) for a in s.arrivals]


def test_a_scorer_pickled_before_arrival_tracking_restores_with_a_fresh_tracker() -> None:
    scorer = EventScorer()
    state = scorer.__dict__.copy()
    del state["arrivals"]
    old = EventScorer.__new__(EventScorer)
    old.__setstate__(state)
    assert old.arrivals.arrivals("u-1", ["device:d-1"], 0.0) == ("device:d-1",)
