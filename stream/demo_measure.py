"""The demo's measurement of phase 2 as on-call sees it, from what is on the topics.

Views, each scored by ``detectors.oncall_eval`` against phase 2's ground truth:

- ``event-level``: every event the detector flagged within its alert budget, one alert
  each (the anomalous observations: the service writes them whether or not labels hold the
  event alert back). The baseline on-call would face without patterns and labels.
- ``before labels``: those event alerts and the group alerts (incident alerts; pattern
  alerts when no incident stage runs).
- ``after labels``: the event alerts the service actually sent (labels holding some back)
  and the group alerts: what on-call sees.
- ``incidents only``: the incident alerts alone (``vigil incidents``).
- ``patterns only``: the pattern alerts alone (what on-call would see without incidents).

Recall and delays count the attack instances that start in phase 2 (an instance already
running in phase 1 may have been caught there); alerts on any attack event count as true.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from detectors.oncall_eval import (
    EVENT,
    OnCallAlert,
    OnCallEvaluation,
    TruthEvent,
    alerts_for_recall,
    current_alerts,
    evaluate_oncall,
)
from stream.topic_reader import read_topic

EVENT_LEVEL = "event-level"
BEFORE = "before labels"
AFTER = "after labels"
PATTERNS = "patterns only"
INCIDENTS = "incidents only"


@dataclass
class PhaseMeasure:
    views: dict[str, OnCallEvaluation] = field(default_factory=dict)
    # Event-level alerts, highest score first, needed to catch as many instances as the
    # "after labels" view does (None: all of them catch fewer).
    event_level_at_equal_recall: int | None = None
    # The same for the group alerts alone (incidents, or patterns): what they replace.
    event_level_at_group_recall: int | None = None
    pattern_alerts: list[OnCallAlert] = field(default_factory=list)

    def ratio(self, view: str = AFTER) -> float | None:
        """Event-level alerts (the whole budget) over the alerts of ``view``."""
        alerts = self.views[view].alerts
        return self.views[EVENT_LEVEL].alerts / alerts if alerts else None

    def equal_recall_ratio(self, view: str = AFTER) -> float | None:
        """Event-level alerts at ``view``'s recall (highest scores first) over its alerts;
        for ``after labels`` and the group view (incidents, else patterns)."""
        alerts = self.views[view].alerts
        needed = self.event_level_at_equal_recall if view == AFTER else self.group_needed
        if needed is None or not alerts:
            return None
        return needed / alerts

    @property
    def group_view(self) -> str:
        """The view of the group alerts alone: incidents if measured, else patterns."""
        return INCIDENTS if INCIDENTS in self.views else PATTERNS

    @property
    def group_needed(self) -> int | None:
        return self.event_level_at_group_recall


def read_alert_records(bootstrap: str, topic: str) -> list[tuple[int, dict[str, Any]]]:
    """(offset, alert) of every alert record, in topic order (the demo's alerts topic has
    one partition, so that is arrival order)."""
    return [(r.offset, orjson.loads(r.value or b"")) for r in read_topic(bootstrap, topic)]


def flagged_events(bootstrap: str, observations_topic: str) -> list[OnCallAlert]:
    """One event-level alert per event over the alert budget, from the observations topic
    (which also carries the merely suspicious events: ``alert`` false)."""
    flagged: dict[str, OnCallAlert] = {}
    for record in read_topic(bootstrap, observations_topic):
        body = orjson.loads(record.value or b"")
        if body.get("a") and body.get("alert", True) and body["id"] not in flagged:
            flagged[body["id"]] = OnCallAlert(
                alert_id=f"ev:{body['id']}",
                kind=EVENT,
                event_ids=(body["id"],),
                raised_t=float(body["t"]),
                score=float(body.get("score", 0.0)),
            )
    return list(flagged.values())


def phase_alerts(
    records: Sequence[tuple[int, Mapping[str, Any]]], from_offset: int
) -> tuple[list[OnCallAlert], list[OnCallAlert]]:
    """Event alerts sent from ``from_offset`` on, and the group alerts (patterns, incidents)
    raised or grown from there (with all their records: the state is the latest record, the
    start the first); one only resolved there belongs to the phase before."""
    events = current_alerts(r for offset, r in records if offset >= from_offset and _is_event(r))
    active = {
        r["alert_id"]
        for offset, r in records
        if offset >= from_offset and not _is_event(r) and r.get("status") != "resolved"
    }
    patterns = current_alerts(r for _, r in records if r["alert_id"] in active)
    return events, patterns


def measure_phase(
    stream: Sequence[TruthEvent],
    instances: set[str],
    event_alerts: Sequence[OnCallAlert],
    group_alerts: Sequence[OnCallAlert],
    flagged: Iterable[OnCallAlert],
    *,
    pattern_alerts: Sequence[OnCallAlert] | None = None,
) -> PhaseMeasure:
    """The views; ``group_alerts`` are what on-call sees beside event alerts (incidents, or
    patterns when ``pattern_alerts`` is None), ``pattern_alerts`` the patterns behind them."""
    in_phase = {e.event_id for e in stream}
    budget = [a for a in flagged if a.event_ids[0] in in_phase]

    def score(alerts: Sequence[OnCallAlert]) -> OnCallEvaluation:
        return evaluate_oncall(alerts, stream, instances=instances)

    patterns = group_alerts if pattern_alerts is None else pattern_alerts
    result = PhaseMeasure(pattern_alerts=list(patterns))
    result.views = {
        EVENT_LEVEL: score(budget),
        BEFORE: score([*budget, *group_alerts]),
        AFTER: score([*event_alerts, *group_alerts]),
    }
    if pattern_alerts is not None:
        result.views[INCIDENTS] = score(group_alerts)
    result.views[PATTERNS] = score(patterns)
    result.event_level_at_equal_recall = alerts_for_recall(
        budget, stream, result.views[AFTER].caught, instances=instances
    )
    groups = INCIDENTS if pattern_alerts is not None else PATTERNS
    result.event_level_at_group_recall = alerts_for_recall(
        budget, stream, result.views[groups].caught, instances=instances
    )
    return result


def _is_event(record: Mapping[str, Any]) -> bool:
    return bool(record.get("kind", EVENT) == EVENT)
