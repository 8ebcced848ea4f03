"""The demo's pure parts: which alerts belong to phase 2, the views, the reviewer, the log
figures and the summary text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from detectors.oncall_eval import OnCallAlert, TruthEvent, epoch_s
from stream.demo_logs import gate_segments, restore_figures
from stream.demo_measure import (
    AFTER,
    BEFORE,
    EVENT_LEVEL,
    INCIDENTS,
    PATTERNS,
    measure_phase,
    phase_alerts,
)
from stream.demo_report import format_views
from stream.demo_review import simulate_review

T0 = epoch_s("2026-11-02T00:00:00.000Z")
HEX = "0" * 31


def alert(alert_id: str, kind: str, events: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "schema_version": 1,
        "kind": kind,
        "detector": "hst/1" if kind == "event" else "patterns/1",
        "event_type": "payment.attempted",
        "event_ids": events,
        "score": 0.9,
        "occurred_at": "2026-11-02T00:00:10.000Z",
        **extra,
    }


def test_phase_alerts_keep_patterns_raised_or_grown_in_the_phase() -> None:
    records = [
        (0, alert("al-" + HEX + "1", "event", ["e1"])),
        (1, alert("pa-" + HEX + "a", "pattern", ["e1"], sequence=1, status="new")),
        (2, alert("pa-" + HEX + "b", "pattern", ["e1"], sequence=1, status="new")),
        # phase 2 starts at offset 3
        (3, alert("al-" + HEX + "2", "event", ["e5"])),
        (4, alert("pa-" + HEX + "a", "pattern", ["e1"], sequence=2, status="growing")),
        (5, alert("pa-" + HEX + "b", "pattern", ["e1"], sequence=2, status="resolved")),
        (6, alert("pa-" + HEX + "c", "pattern", ["e5"], sequence=1, status="new")),
    ]
    events, patterns = phase_alerts(records, 3)
    assert [a.alert_id[-1] for a in events] == ["2"]
    assert [a.alert_id[-1] for a in patterns] == ["a", "c"]  # b was only resolved
    assert patterns[0].record["sequence"] == 2


def test_views_of_a_phase() -> None:
    stream = [
        TruthEvent("e1", T0 + 1, "card_testing", "ct-1"),
        TruthEvent("e2", T0 + 2, "card_testing", "ct-1"),
        TruthEvent("e3", T0 + 3),
        TruthEvent("e4", T0 + 4),
    ]

    def event(event_id: str, t: float, score: float) -> OnCallAlert:
        return OnCallAlert(f"ev:{event_id}", "event", (event_id,), T0 + t, score)

    flagged = [event("e0", 0, 0.99), event("e2", 2, 0.9), event("e3", 3, 0.95), event("e4", 4, 0.8)]
    sent = [OnCallAlert("al-2", "event", ("e2",), T0 + 2, 0.9)]  # labels held e3 and e4
    patterns = [OnCallAlert("pa-1", "pattern", ("e1", "e2"), T0 + 2, 9.0)]
    measure = measure_phase(stream, {"ct-1"}, sent, patterns, flagged)
    views = measure.views
    assert views[EVENT_LEVEL].alerts == 3  # e0 is not in the phase
    assert views[EVENT_LEVEL].precision == 1 / 3
    assert views[BEFORE].alerts == 4
    assert views[AFTER].alerts == 2
    assert views[AFTER].precision == 1.0
    assert views[PATTERNS].caught == 1
    assert measure.ratio() == 1.5
    # Highest scores first: e3 (false), then e2 catches ct-1.
    assert measure.event_level_at_equal_recall == 2
    assert measure.equal_recall_ratio() == 1.0
    text = format_views(measure)
    assert "1.5x fewer" in text
    assert "after labels" in text


def test_reviewer_labels_each_alert_once_in_the_order_raised_up_to_the_budget() -> None:
    truth = {"e1": "card_testing", "e2": None, "e3": None}
    later = {"occurred_at": "2026-11-02T00:05:00.000Z"}
    records = [
        alert("al-" + HEX + "0", "event", ["e3"], **later),  # arrived first, raised last
        alert("pa-" + HEX + "a", "pattern", ["e1", "e2", "e1"], sequence=1, status="new"),
        alert("al-" + HEX + "1", "event", ["e2"]),
        alert("pa-" + HEX + "a", "pattern", ["e1", "e2", "e1"], sequence=2, status="growing"),
        alert("al-" + HEX + "2", "event", ["e1"]),
        alert("al-" + HEX + "3", "event", ["e3"]),
    ]
    review = simulate_review(records, truth, max_labels=3)
    # Same event time: arrival order; the pattern once, at its first record.
    assert [label["alert_id"][-1] for label in review.labels] == ["a", "1", "2"]
    assert len(simulate_review(records, truth, max_labels=10).labels) == 5
    assert [label["verdict"] for label in review.labels] == [
        "true_positive",
        "false_positive",
        "true_positive",
    ]
    assert review.count("pattern", "true_positive") == 1
    assert review.count("event", "false_positive") == 1
    assert review.labels[0]["detector"] == "patterns/1"


def test_restore_and_gate_figures_from_the_log(tmp_path: Path) -> None:
    lines: list[dict[str, Any]] = [
        {"event": "labels.applied", "segments": [{"segment": "old"}]},
        {"event": "partitions.assigned", "timestamp": "2026-11-26T00:00:00.000000Z"},
        {"event": "state.resumed", "snapshot_bytes": 1000, "from_offset": 10, "replay_until": 12},
        {"event": "state.resumed", "snapshot_bytes": 0, "from_offset": 0, "replay_until": 0},
        {"event": "state.restored", "timestamp": "2026-11-26T00:00:01.500000Z"},
        {"event": "labels.applied", "segments": [{"segment": "new"}]},
    ]
    log = tmp_path / "service.log"
    log.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\nnot json\n")
    restore = restore_figures(log)
    assert restore is not None
    assert (restore.partitions, restore.from_snapshot, restore.snapshot_bytes) == (2, 1, 1000)
    assert restore.rescored == 2
    assert restore.seconds == 1.5
    assert "1 of 2 partitions" in restore.describe()
    assert gate_segments(log) == [{"segment": "new"}]
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert restore_figures(empty) is None


def test_views_with_incidents_show_them_instead_of_patterns() -> None:
    stream = [
        TruthEvent("e1", T0 + 1, "card_testing", "ct-1"),
        TruthEvent("e2", T0 + 2, "card_testing", "ct-1"),
        TruthEvent("e3", T0 + 3),
    ]
    flagged = [
        OnCallAlert("ev:e1", "event", ("e1",), T0 + 1, 0.99),
        OnCallAlert("ev:e3", "event", ("e3",), T0 + 3, 0.95),
    ]
    patterns = [OnCallAlert(f"pa-{n}", "pattern", ("e1", "e2"), T0 + 2, 9.0) for n in range(4)]
    incidents = [OnCallAlert("in-1", "incident", ("e1", "e2"), T0 + 2, 9.0)]
    measure = measure_phase(stream, {"ct-1"}, [], incidents, flagged, pattern_alerts=patterns)
    views = measure.views
    assert list(views) == [EVENT_LEVEL, BEFORE, AFTER, INCIDENTS, PATTERNS]
    assert views[AFTER].alerts == views[INCIDENTS].alerts == 1
    assert views[INCIDENTS].mean_pattern_alerts_per_caught == 1.0
    assert views[PATTERNS].mean_pattern_alerts_per_caught == 4.0
    assert measure.group_view == INCIDENTS
    assert measure.group_needed == 1  # e1 alone, highest score, catches ct-1
    assert "incidents only: 1 alerts catch 1 instances" in format_views(measure)
    # Incident records on the alerts topic are group alerts of the phase.
    records = [(0, alert("in-" + HEX + "1", "incident", ["e1"], sequence=1, status="new"))]
    assert [a.kind for a in phase_alerts(records, 0)[1]] == ["incident"]
