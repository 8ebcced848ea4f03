"""On-call figures on a ten-event stream whose answers are worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from detectors.oncall_eval import (
    OnCallAlert,
    TruthEvent,
    alert_verdict,
    alerts_for_recall,
    current_alerts,
    epoch_s,
    evaluate_oncall,
)

T0 = epoch_s("2026-11-02T00:00:00.000Z")

# e2, e3, e5: card_testing-1; e6, e8: review_bombing-1; e9: card_testing-2; others normal.
STREAM = [
    TruthEvent("e1", T0 + 0),
    TruthEvent("e2", T0 + 10, "card_testing", "ct-1"),
    TruthEvent("e3", T0 + 20, "card_testing", "ct-1"),
    TruthEvent("e4", T0 + 30),
    TruthEvent("e5", T0 + 40, "card_testing", "ct-1"),
    TruthEvent("e6", T0 + 50, "review_bombing", "rb-1"),
    TruthEvent("e7", T0 + 60),
    TruthEvent("e8", T0 + 70, "review_bombing", "rb-1"),
    TruthEvent("e9", T0 + 80, "card_testing", "ct-2"),
    TruthEvent("e10", T0 + 90),
]


def at(seconds: float) -> str:
    whole = int(seconds)
    return f"2026-11-02T00:{whole // 60:02d}:{whole % 60:02d}.000Z"


def event_alert(alert_id: str, event_id: str, t: float, score: float = 0.5) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "kind": "event",
        "event_ids": [event_id],
        "occurred_at": at(t),
        "score": score,
    }


def pattern(alert_id: str, seq: int, t: float, examples: list[str]) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "kind": "pattern",
        "event_ids": examples,
        "occurred_at": at(t),
        "score": 9.0,
        "sequence": seq,
        "status": "new" if seq == 1 else "growing",
    }


RECORDS = [
    event_alert("al-1", "e3", 20),  # true: ct-1 at 20 s
    event_alert("al-2", "e4", 30),  # false
    event_alert("al-3", "e99", 30),  # unknown event
    pattern("pa-1", 2, 45, ["e2", "e3", "e5", "e4"]),  # latest record listed first
    pattern("pa-1", 1, 40, ["e2", "e3", "e5", "e4"]),  # 3 of 4 attack: true, raised at 40
    pattern("pa-2", 1, 70, ["e6", "e7"]),  # 1 of 2: not most, false
    pattern("pa-3", 1, 70, ["e6", "e8", "e1"]),  # 2 of 3: true, rb-1 at 70
    pattern("pa-4", 1, 55, ["e2", "e5", "e6"]),  # true, ct-1 and rb-1 at 55
    event_alert("al-1", "e3", 20),  # the same event alert again (a reprocessed batch)
]


def test_current_alerts_one_per_id_latest_state_raised_at_first_record() -> None:
    alerts = current_alerts(RECORDS)
    assert [a.alert_id for a in alerts] == ["al-1", "al-2", "al-3", "pa-1", "pa-2", "pa-3", "pa-4"]
    pa1 = alerts[3]
    assert pa1.record["sequence"] == 2
    assert pa1.raised_t == T0 + 40
    assert pa1.kind == "pattern"
    assert pa1.event_ids == ("e2", "e3", "e5", "e4")


def test_verdict_rule() -> None:
    truth = {e.event_id: e.attack for e in STREAM}
    assert alert_verdict(["e3"], truth) is True
    assert alert_verdict(["e4"], truth) is False
    assert alert_verdict(["e6", "e7"], truth) is False  # a tie is not "most"
    assert alert_verdict(["e6", "e8", "e1", "e404"], truth) is True  # unknown ids ignored
    assert alert_verdict(["e404"], truth) is None


def test_figures_worked_by_hand() -> None:
    result = evaluate_oncall(current_alerts(RECORDS), STREAM)
    assert (result.alerts, result.event_alerts, result.pattern_alerts) == (7, 3, 4)
    assert (result.true_alerts, result.false_alerts, result.unknown_alerts) == (4, 2, 1)
    assert result.precision == pytest.approx(4 / 6)
    # ct-1 (first true alert al-1 at 20 s), rb-1 (pa-4 at 55 s); ct-2 missed.
    assert (result.instances, result.caught) == (3, 2)
    assert result.recall == pytest.approx(2 / 3)
    # ct-1: e2 before 20 s, 20 - 10 = 10 s; rb-1: e6 before 55 s, 55 - 50 = 5 s.
    assert result.delays_events == [1, 1]
    assert result.delays_s == [10.0, 5.0]
    assert result.median_delay_events == 1
    assert result.median_delay_s == 7.5
    # ct-1: pa-1 and pa-4; rb-1: pa-3 and pa-4.
    assert result.pattern_caught == 2
    assert result.mean_pattern_alerts_per_caught == 2.0
    assert result.by_attack["card_testing"].instances == 2
    assert result.by_attack["card_testing"].caught == 1
    assert result.by_attack["review_bombing"].recall == 1.0
    assert result.alerts_per_million == 700_000.0


def test_only_the_instances_asked_for_are_counted() -> None:
    result = evaluate_oncall(current_alerts(RECORDS), STREAM, instances={"rb-1", "ct-2", "zz"})
    assert (result.instances, result.caught) == (2, 1)
    assert result.true_alerts == 4  # alerts on ct-1 still count for the precision
    assert result.delays_events == [1]
    assert set(result.by_attack) == {"card_testing", "review_bombing"}


def test_no_alerts_and_no_attacks() -> None:
    quiet = [TruthEvent(f"n{i}", T0 + i) for i in range(4)]
    result = evaluate_oncall([], quiet)
    assert result.precision is None
    assert result.recall is None
    assert result.median_delay_events is None
    assert result.mean_pattern_alerts_per_caught is None
    one = evaluate_oncall([OnCallAlert("al-x", "event", ("n1",), T0 + 1)], quiet)
    assert one.false_alerts == 1
    assert one.precision == 0.0
    assert one.alerts_per_million == 250_000.0


def test_event_level_alerts_needed_for_a_recall() -> None:
    alerts = [
        OnCallAlert("a", "event", ("e3",), T0 + 20, score=0.9),
        OnCallAlert("b", "event", ("e4",), T0 + 30, score=0.95),
        OnCallAlert("c", "event", ("e6",), T0 + 50, score=0.5),
        OnCallAlert("d", "event", ("e9",), T0 + 80, score=0.8),
    ]
    # Highest first: b (false), a (ct-1), d (ct-2), c (rb-1).
    assert alerts_for_recall(alerts, STREAM, 0) == 0
    assert alerts_for_recall(alerts, STREAM, 2) == 3
    assert alerts_for_recall(alerts, STREAM, 3) == 4
    assert alerts_for_recall(alerts, STREAM, 4) is None
    assert alerts_for_recall(alerts, STREAM, 1, instances={"rb-1"}) == 4


def test_incident_alerts_are_group_alerts() -> None:
    stream = [
        TruthEvent("a1", T0 + 1, "card_testing", "ct-1"),
        TruthEvent("a2", T0 + 2, "card_testing", "ct-1"),
    ]
    alerts = [
        OnCallAlert("in-1", "incident", ("a1", "a2"), T0 + 2),
        OnCallAlert("pa-1", "pattern", ("a1",), T0 + 1),
    ]
    result = evaluate_oncall(alerts, stream)
    assert (result.alerts, result.incident_alerts, result.pattern_alerts) == (2, 1, 1)
    assert result.event_alerts == 0
    assert result.pattern_alerts_per_instance == [2]  # both group alerts caught ct-1
    assert evaluate_oncall(alerts[:1], stream).mean_pattern_alerts_per_caught == 1.0
