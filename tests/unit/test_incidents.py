"""The grouping of pattern records into incidents (detectors/incidents.py)."""

from __future__ import annotations

import itertools
import pickle
import random

import pytest

from detectors.incidents import (
    BottomK,
    IncidentConfig,
    IncidentGrouper,
    IncidentUpdate,
    PatternRecord,
    example_record,
    incident_id,
)

T0 = 1_793_577_600.0


def pa(n: int) -> str:
    return f"pa-{n:032x}"


def events(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix}{i}" for i in range(start, start + n)]


def steps(updates: list[IncidentUpdate]) -> list[tuple[str, str, int]]:
    return [(u.incident_id, u.status, u.sequence) for u in updates]


def test_two_patterns_sharing_events_are_one_incident() -> None:
    grouper = IncidentGrouper()
    a = example_record(pa(1), ["ip24:10.0.0"], events("e", 6))
    b = example_record(pa(2), ["device:d1"], events("e", 6, start=2))
    first = grouper.observe(a)
    assert steps(first) == [(incident_id(pa(1)), "new", 1)]
    assert grouper.observe(b) == []  # joined: no new alert, and 8 events is not a doubling
    assert grouper.incident_of(pa(2)) == incident_id(pa(1))
    assert grouper.open_incidents == 1


def test_unrelated_patterns_are_separate_incidents() -> None:
    grouper = IncidentGrouper()
    a = grouper.observe(example_record(pa(1), ["ip24:10.0.0"], events("a", 6)))
    b = grouper.observe(example_record(pa(2), ["device:d1"], events("b", 6)))
    assert [u.status for u in a + b] == ["new", "new"]
    assert a[0].incident_id != b[0].incident_id
    assert grouper.open_incidents == 2


def test_an_incident_grows_at_doublings_only() -> None:
    grouper = IncidentGrouper()
    statuses = []
    for sequence, n in enumerate([5, 8, 10, 12, 19, 20, 40], start=1):
        record = example_record(
            pa(1), ["ip24:10.0.0"], events("e", n), status="new" if n == 5 else "growing",
            sequence=sequence,
        )  # fmt: skip
        statuses.append([(u.status, u.events) for u in grouper.observe(record)])
    assert statuses == [
        [("new", 5)],
        [],
        [("growing", 10)],
        [],
        [],
        [("growing", 20)],
        [("growing", 40)],
    ]


def test_it_resolves_when_all_its_patterns_are_resolved_and_the_watermark_passed() -> None:
    grouper = IncidentGrouper()
    grouper.observe(example_record(pa(1), ["ip24:10.0.0"], events("e", 6)))
    grouper.observe(example_record(pa(2), ["device:d1"], events("e", 6)))
    done_1 = example_record(pa(1), ["ip24:10.0.0"], events("e", 6), status="resolved", sequence=2)
    assert grouper.observe(done_1) == []
    assert grouper.advance(T0 + 10 * 3600) == []  # pa(2) is still open
    done_2 = example_record(pa(2), ["device:d1"], events("e", 6), status="resolved", sequence=2)
    assert grouper.observe(done_2) == []
    assert grouper.advance(done_2.updated_at - 1) == []  # another partition may be behind
    [resolved] = grouper.advance(done_2.updated_at)
    assert (resolved.status, resolved.sequence, resolved.open_patterns) == ("resolved", 2, 0)
    assert grouper.open_incidents == 0
    # Its patterns are closed: a repeated record of them starts nothing.
    assert grouper.observe(done_2) == []
    assert grouper.observe(example_record(pa(1), ["ip24:10.0.0"], events("e", 6))) == []


def test_a_fast_partitions_resolution_does_not_split_an_attack() -> None:
    """Stage 2's partitions can be hours apart in event time: the pattern of one partition
    opens and resolves before another partition's pattern of the same attack arrives."""
    grouper = IncidentGrouper()
    grouper.observe(example_record(pa(1), ["ip24:10.0.0"], events("e", 6)))
    grouper.observe(
        example_record(pa(1), ["ip24:10.0.0"], events("e", 6), status="resolved", sequence=2)
    )
    assert grouper.observe(example_record(pa(2), ["device:d1"], events("e", 6))) == []
    assert grouper.incident_of(pa(2)) == incident_id(pa(1))


def test_a_crowd_value_joins_one_incident_and_never_bridges_two() -> None:
    grouper = IncidentGrouper()
    grouper.observe(example_record(pa(1), ["ip24:10.0.0"], events("a", 6)))
    grouper.observe(example_record(pa(2), ["ip24:10.9.9"], events("b", 6)))
    country = example_record(pa(3), ["country:BR"], events("a", 4) + events("b", 3))
    assert grouper.observe(country) == []
    assert grouper.incident_of(pa(3)) == incident_id(pa(1))  # shares most with the first
    assert grouper.open_incidents == 2
    # Its events did not become links: a pattern sharing only the country's events of the
    # second attack joins the second attack.
    assert grouper.incident_of(pa(2)) == incident_id(pa(2))


def test_a_specific_pattern_linking_two_incidents_merges_them_into_the_older() -> None:
    grouper = IncidentGrouper()
    grouper.observe(example_record(pa(1), ["ip24:10.0.0"], events("a", 6), t=T0))
    grouper.observe(example_record(pa(2), ["ip24:10.9.9"], events("b", 6), t=T0 + 60))
    bridge = example_record(pa(3), ["device:d1"], events("a", 3) + events("b", 3))
    merged, grown = grouper.observe(bridge)
    assert steps([merged]) == [(incident_id(pa(2)), "resolved", 2)]
    assert merged.merged_into == incident_id(pa(1))
    assert steps([grown]) == [(incident_id(pa(1)), "growing", 2)]  # 6 events to 12
    assert grown.merged_into is None
    assert grouper.open_incidents == 1
    assert {grouper.incident_of(pa(n)) for n in (1, 2, 3)} == {incident_id(pa(1))}


def test_an_incident_explains_itself() -> None:
    grouper = IncidentGrouper(IncidentConfig(examples=4))
    grouper.observe(example_record(pa(1), ["ip24:10.0.0"], events("e", 6), users=["u1", "u2"]))
    update = grouper.observe(
        example_record(pa(2), ["cohort:new_account", "device:d1"], events("e", 12, start=3))
    )
    [growing] = update
    assert growing.status == "growing"
    assert growing.members == ("cohort:new_account", "device:d1", "ip24:10.0.0")
    assert growing.events == 15  # the distinct events its patterns name
    assert growing.users == 2
    assert growing.examples == ("e3", "e4", "e5", "e0")  # named by both patterns first
    assert growing.entity() == {"type": "device", "id": "d1"}
    assert growing.source_ranges() == [("events", 0, 100, 112)]
    assert growing.top_features(3) == [("ip_users", "high", 12)]


def test_repeats_and_stale_records_are_ignored() -> None:
    grouper = IncidentGrouper()
    record = example_record(pa(1), ["ip24:10.0.0"], events("e", 6))
    assert len(grouper.observe(record)) == 1
    assert grouper.observe(record) == []
    # A pattern resolved before this stage saw it opens nothing.
    late = example_record(pa(9), ["ip24:10.9.9"], events("x", 6), status="resolved", sequence=3)
    assert grouper.observe(late) == []
    assert grouper.open_incidents == 1


def _attack_records() -> tuple[list[PatternRecord], list[PatternRecord]]:
    """The records of two stage-2 partitions: two attacks and a lone pattern."""
    p0 = [
        example_record(pa(1), ["ip24:10.0.0"], events("a", 6)),
        example_record(pa(2), ["ip24:10.9.9"], events("b", 6)),
        example_record(pa(1), ["ip24:10.0.0"], events("a", 12), status="growing", sequence=2),
        example_record(pa(1), ["ip24:10.0.0"], events("a", 12), status="resolved", sequence=3),
    ]
    p1 = [
        example_record(pa(3), ["device:d1"], events("a", 6, start=1)),
        example_record(pa(4), ["country:BR"], events("a", 5, start=4) + events("b", 2)),
        example_record(pa(5), ["shop:s9"], events("c", 6)),
        example_record(pa(6), ["device:d2"], events("b", 8)),
        example_record(
            pa(3), ["device:d1"], events("a", 6, start=1), status="resolved", sequence=2
        ),
    ]
    return p0, p1


def _grouping(grouper: IncidentGrouper, ids: list[str]) -> set[frozenset[str]]:
    by_incident: dict[str | None, set[str]] = {}
    for pid in ids:
        by_incident.setdefault(grouper.incident_of(pid), set()).add(pid)
    return {frozenset(v) for v in by_incident.values()}


def test_the_grouping_does_not_depend_on_how_two_partitions_interleave() -> None:
    p0, p1 = _attack_records()
    groupings = set()
    rng = random.Random(5)
    for _ in range(60):
        picks = [0] * len(p0) + [1] * len(p1)
        rng.shuffle(picks)
        queues = [iter(p0), iter(p1)]
        grouper = IncidentGrouper()
        for pick in picks:
            grouper.observe(next(queues[pick]))
        groupings.add(frozenset(_grouping(grouper, [pa(n) for n in range(1, 7)])))
    expected = {frozenset({pa(1), pa(3), pa(4)}), frozenset({pa(2), pa(6)}), frozenset({pa(5)})}
    assert groupings == {frozenset(expected)}


def test_the_same_order_gives_the_same_ids_and_records() -> None:
    p0, p1 = _attack_records()
    records = [r for pair in itertools.zip_longest(p0, p1) for r in pair if r is not None]
    runs = []
    for _ in range(2):
        grouper = IncidentGrouper()
        runs.append([u for r in records for u in grouper.observe(r)] + grouper.advance(1e12))
    assert runs[0] == runs[1]


def test_the_grouper_pickles_mid_stream() -> None:
    p0, p1 = _attack_records()
    grouper = IncidentGrouper()
    for record in p0[:2] + p1[:2]:
        grouper.observe(record)
    copy = pickle.loads(pickle.dumps(grouper))
    rest = p0[2:] + p1[2:]
    assert [u for r in rest for u in copy.observe(r)] == [
        u for r in rest for u in grouper.observe(r)
    ]


def test_bottom_k_keeps_the_smallest_hashes_whatever_the_order() -> None:
    items = [f"e{i}" for i in range(200)]
    a, b = BottomK(16), BottomK(16)
    for item in items:
        a.add(item)
    for item in reversed(items):
        b.add(item)
    assert a.items() == b.items()
    assert len(a.items()) == 16
    assert pickle.loads(pickle.dumps(a)).items() == a.items()
    with pytest.raises(ValueError, match="k must be positive"):
        BottomK(0)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="min_shared"):
        IncidentConfig(min_shared=0)
    with pytest.raises(ValueError, match="growth_factor"):
        IncidentConfig(growth_factor=1.0)


def test_an_accounts_own_pattern_joins_the_incident_that_holds_its_events() -> None:
    # A device pattern over five throwaway accounts, then one account's own burst: their
    # samples name different events, the account links them.
    for order in ("device first", "account first"):
        grouper = IncidentGrouper()
        device = example_record(
            pa(1), ["device:d1"], events("d", 20), users=[f"u-{i}" for i in range(5)]
        )
        account = example_record(pa(2), ["user:u-3"], events("x", 6), users=["u-3"])
        records = [device, account] if order == "device first" else [account, device]
        updates = [u for r in records for u in grouper.observe(r)]
        assert grouper.open_incidents == 1, order
        assert grouper.incident_of(pa(1)) == grouper.incident_of(pa(2))
        assert [u.status for u in updates][:1] == ["new"]
        assert {u.incident_id for u in updates} == {updates[0].incident_id}


def test_patterns_of_different_accounts_stay_apart() -> None:
    grouper = IncidentGrouper()
    grouper.observe(example_record(pa(1), ["user:u-1"], events("a", 6), users=["u-1"]))
    grouper.observe(example_record(pa(2), ["user:u-2"], events("b", 6), users=["u-2"]))
    assert grouper.open_incidents == 2


def test_a_snapshot_from_before_account_links_still_links_after_restore() -> None:
    grouper = IncidentGrouper()
    grouper.observe(example_record(pa(1), ["device:d1"], events("d", 20), users=["u-1", "u-2"]))
    state = pickle.loads(pickle.dumps(grouper)).__dict__
    del state["_of_user"]  # as an older version pickled it
    old = IncidentGrouper.__new__(IncidentGrouper)
    old.__setstate__(state)
    old.observe(example_record(pa(2), ["user:u-2"], events("x", 6), users=["u-2"]))
    assert old.open_incidents == 1


def test_patterns_on_one_device_are_one_incident_whatever_their_samples() -> None:
    # An arrival burst on a device (its accounts' first events) and the anomalous events
    # of that device's accounts name no common event or account in their samples.
    grouper = IncidentGrouper()
    first = grouper.observe(example_record(pa(1), ["device:d1"], events("a", 5), users=["u-1"]))
    later = grouper.observe(
        example_record(pa(2), ["cohort:new_account", "device:d1"], events("b", 5), users=["u-9"])
    )
    assert [u.status for u in first] == ["new"]
    assert [(u.incident_id, u.status) for u in later] == [(first[0].incident_id, "growing")]
    assert grouper.open_incidents == 1
    assert grouper.incident_of(pa(2)) == grouper.incident_of(pa(1))
    # A crowd value shared does not link: two countries' patterns stay two incidents.
    grouper.observe(example_record(pa(3), ["country:BR"], events("c", 5), users=["u-3"]))
    grouper.observe(example_record(pa(4), ["country:BR"], events("d", 5), users=["u-4"]))
    assert grouper.open_incidents == 3


def test_a_resolved_incident_frees_its_values() -> None:
    grouper = IncidentGrouper()
    grouper.observe(example_record(pa(1), ["ip24:10.0.0"], events("a", 5)))
    closing = example_record(pa(1), ["ip24:10.0.0"], events("a", 5), status="resolved", sequence=2)
    grouper.observe(closing)
    assert [u.status for u in grouper.advance(T0 + 10 * 3600.0)] == ["resolved"]
    # The same /24 a day later is a new incident, not the old one's.
    again = example_record(pa(2), ["ip24:10.0.0"], events("b", 5), t=T0 + 86_400.0)
    assert [u.status for u in grouper.observe(again)] == ["new"]
    assert grouper.incident_of(pa(2)) != incident_id(pa(1))


def test_a_snapshot_from_before_value_links_still_links_after_restore() -> None:
    grouper = IncidentGrouper()
    grouper.observe(example_record(pa(1), ["device:d1"], events("d", 20), users=["u-1"]))
    state = pickle.loads(pickle.dumps(grouper)).__dict__
    del state["_of_member"]  # as an older version pickled it
    old = IncidentGrouper.__new__(IncidentGrouper)
    old.__setstate__(state)
    old.observe(example_record(pa(2), ["device:d1", "cohort:new_account"], events("x", 6)))
    assert old.open_incidents == 1


WAIT = IncidentConfig(group_wait_s=600.0)


def test_an_incident_waits_for_its_attacks_other_patterns_before_its_first_record() -> None:
    grouper = IncidentGrouper(WAIT)
    first = example_record(pa(1), ["device:d1"], events("a", 5), t=T0)
    assert grouper.observe(first) == []  # waiting: nothing reported yet
    # Another pattern of the attack joins within the wait (it names the same events).
    second = example_record(pa(2), ["ip24:10.0.0"], events("a", 5, start=3), t=T0 + 60.0)
    assert grouper.observe(second) == []
    assert grouper.open_incidents == 1
    assert grouper.advance(first.updated_at + 599.0) == []
    (new,) = grouper.advance(first.updated_at + 600.0)
    assert (new.status, new.sequence) == ("new", 1)
    assert {p.alert_id for p in new.patterns} == {pa(1), pa(2)}
    # A record after the wait reports at once (here: growth of a reported incident).
    later = example_record(pa(3), ["device:d1"], events("b", 20), t=T0 + 700.0)
    assert [u.status for u in grouper.observe(later)] == ["growing"]


def test_a_record_after_the_wait_reports_without_a_watermark() -> None:
    grouper = IncidentGrouper(WAIT)
    grouper.observe(example_record(pa(1), ["device:d1"], events("a", 5), t=T0))
    late = example_record(pa(2), ["device:d1"], events("b", 5), t=T0 + 900.0)
    assert [u.status for u in grouper.observe(late)] == ["new"]


def test_an_attack_over_within_its_wait_is_still_reported_then_resolved() -> None:
    grouper = IncidentGrouper(WAIT)
    grouper.observe(example_record(pa(1), ["device:d1"], events("a", 5), t=T0))
    done = example_record(pa(1), ["device:d1"], events("a", 5), status="resolved", sequence=2)
    assert grouper.observe(done) == []
    steps = grouper.advance(done.updated_at)
    assert [(u.status, u.sequence) for u in steps] == [("new", 1), ("resolved", 2)]
    assert grouper.open_incidents == 0


def test_a_waiting_incident_that_absorbs_a_reported_one_reports_at_once() -> None:
    grouper = IncidentGrouper(WAIT)
    # Reported: its wait is over when its second record comes.
    grouper.observe(example_record(pa(1), ["ip24:10.0.0"], events("x", 5), t=T0 + 100.0))
    reported = grouper.observe(
        example_record(pa(9), ["ip24:10.0.0"], events("x", 5, start=5), t=T0 + 800.0)
    )
    assert [u.status for u in reported] == ["new"]
    # An older incident, still waiting, is linked to it by a pattern naming both's events:
    # the older one survives, so it must be reported now, with the merge.
    assert grouper.observe(example_record(pa(2), ["device:d2"], events("y", 5), t=T0 + 50.0)) == []
    bridge = example_record(
        pa(3), ["device:d2", "ip24:10.0.0"], [*events("y", 2), *events("x", 2)], t=T0 + 400.0
    )
    steps = grouper.observe(bridge)
    assert sorted(u.status for u in steps) == ["new", "resolved"]
    merged = next(u for u in steps if u.status == "resolved")
    assert merged.merged_into == next(u for u in steps if u.status == "new").incident_id


def test_a_snapshot_from_before_group_wait_restores() -> None:
    grouper = IncidentGrouper()
    grouper.observe(example_record(pa(1), ["device:d1"], events("d", 5)))
    state = pickle.loads(pickle.dumps(grouper)).__dict__
    del state["_waiting"]
    old = IncidentGrouper.__new__(IncidentGrouper)
    old.__setstate__(state)
    assert old.advance(T0 + 10 * 86_400.0) == []
    with pytest.raises(ValueError, match="group_wait_s"):
        IncidentConfig(group_wait_s=-1.0)


def test_a_wait_in_progress_survives_a_snapshot() -> None:
    grouper = IncidentGrouper(WAIT)
    first = example_record(pa(1), ["device:d1"], events("a", 5), t=T0)
    assert grouper.observe(first) == []
    restored = pickle.loads(pickle.dumps(grouper))
    (new,) = restored.advance(first.updated_at + 600.0)
    assert (new.status, new.patterns[0].alert_id) == ("new", pa(1))
