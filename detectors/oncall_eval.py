"""What on-call sees, measured against ground truth: precision, attack instances caught,
alerts per caught instance, detection delay, alert volume.

An on-call reviewer sees distinct alerts: one per event alert (``al-``), one per pattern
(``pa-``) and one per incident (``in-``, patterns grouped), whose latest record is its
current state. Pattern and incident alerts are *group* alerts. The rules:

- **Known events** of an alert: an event alert's event; a group alert's ``event_ids`` (a
  pattern's first anomalous events, up to 5; an incident's events most of its patterns
  name, up to 10), the only members it names.
- **True**: an event alert whose event is an attack event; a group alert whose known
  events are *mostly* attack events (strictly more than half of those in the ground truth).
  An alert with no known event is *unknown* and left out of the precision.
- **Caught**: an attack instance is caught when a true alert has one of its events among
  its known events. A pattern alert counts towards every instance among its known events.
- **Raised at**: the event time of the trigger of the alert's first record (an event alert's
  ``occurred_at``; a pattern alert's ``occurred_at`` at its lowest ``sequence``, which is the
  event time of the anomalous event that raised it).
- **Delay** of a caught instance, to its first true alert: in events, how many of the
  instance's events occurred before that alert was raised (event time strictly earlier);
  in event time, seconds from the instance's first event to the alert being raised.

Pure: alerts, the stream and its ground truth come in as arguments.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

EVENT = "event"
PATTERN = "pattern"
INCIDENT = "incident"


@dataclass(frozen=True, slots=True)
class TruthEvent:
    """One event of the evaluated stream: its event time and what it belongs to."""

    event_id: str
    t: float  # event time, epoch seconds
    attack: str | None = None
    attack_id: str | None = None


@dataclass(frozen=True, slots=True)
class OnCallAlert:
    """One alert as on-call sees it (an event alert, or a pattern's current state)."""

    alert_id: str
    kind: str  # "event", "pattern" or "incident"
    event_ids: tuple[str, ...]  # its known events
    raised_t: float  # event time of its first record's trigger, epoch seconds
    score: float = 0.0
    record: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def epoch_s(timestamp: str) -> float:
    """RFC 3339 UTC (``...Z``) to epoch seconds.

    >>> epoch_s("2026-11-02T00:00:01.500Z")
    1793577601.5
    """
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def current_alerts(records: Iterable[Mapping[str, Any]]) -> list[OnCallAlert]:
    """Alert records (event and pattern, as on the alerts topic) to one alert per id.

    A pattern's latest record (highest ``sequence``) is its state; it was raised at the
    ``occurred_at`` of its lowest. A repeated event alert (a reprocessed batch) is one alert.
    Order: by first appearance.
    """
    latest: dict[str, Mapping[str, Any]] = {}
    raised: dict[str, float] = {}
    first_seq: dict[str, int] = {}
    for record in records:
        alert_id = str(record["alert_id"])
        seq = int(record.get("sequence") or 1)
        if alert_id not in latest or seq >= int(latest[alert_id].get("sequence") or 1):
            latest[alert_id] = record
        if alert_id not in first_seq or seq < first_seq[alert_id]:
            first_seq[alert_id] = seq
            raised[alert_id] = epoch_s(str(record["occurred_at"]))
    return [
        OnCallAlert(
            alert_id=alert_id,
            kind=str(record.get("kind", EVENT)),
            event_ids=tuple(record["event_ids"]),
            raised_t=raised[alert_id],
            score=float(record.get("score", 0.0)),
            record=record,
        )
        for alert_id, record in latest.items()
    ]


def alert_verdict(event_ids: Sequence[str], attack_of: Mapping[str, str | None]) -> bool | None:
    """True, false, or None when no event is known; the rule of the module docstring (an
    event alert has one event, so "mostly" is "its event").

    >>> truth = {"a": "card_testing", "b": None, "c": "card_testing"}
    >>> alert_verdict(["a", "b", "c"], truth), alert_verdict(["a", "b"], truth)
    (True, False)
    >>> alert_verdict(["zz"], truth) is None
    True
    """
    known = [e for e in event_ids if e in attack_of]
    if not known:
        return None
    attacks = sum(1 for e in known if attack_of[e] is not None)
    return 2 * attacks > len(known)


@dataclass
class AttackTypeFigures:
    instances: int = 0
    caught: int = 0

    @property
    def recall(self) -> float:
        return self.caught / self.instances if self.instances else 0.0


@dataclass
class OnCallEvaluation:
    """The figures of one set of alerts against one stream."""

    events: int = 0
    alerts: int = 0
    event_alerts: int = 0
    pattern_alerts: int = 0
    incident_alerts: int = 0
    true_alerts: int = 0
    false_alerts: int = 0
    unknown_alerts: int = 0
    instances: int = 0
    caught: int = 0
    # Caught instances with at least one true group (pattern or incident) alert, and those
    # alerts per instance.
    pattern_caught: int = 0
    pattern_alerts_per_instance: list[int] = field(default_factory=list)
    delays_events: list[int] = field(default_factory=list)
    delays_s: list[float] = field(default_factory=list)
    by_attack: dict[str, AttackTypeFigures] = field(default_factory=dict)

    @property
    def precision(self) -> float | None:
        judged = self.true_alerts + self.false_alerts
        return self.true_alerts / judged if judged else None

    @property
    def recall(self) -> float | None:
        return self.caught / self.instances if self.instances else None

    @property
    def alerts_per_million(self) -> float:
        return self.alerts * 1e6 / self.events if self.events else 0.0

    @property
    def mean_pattern_alerts_per_caught(self) -> float | None:
        counts = self.pattern_alerts_per_instance
        return sum(counts) / len(counts) if counts else None

    @property
    def median_delay_events(self) -> float | None:
        return statistics.median(self.delays_events) if self.delays_events else None

    @property
    def median_delay_s(self) -> float | None:
        return statistics.median(self.delays_s) if self.delays_s else None


def evaluate_oncall(
    alerts: Iterable[OnCallAlert],
    stream: Sequence[TruthEvent],
    *,
    instances: Collection[str] | None = None,
) -> OnCallEvaluation:
    """Score ``alerts`` against ``stream`` (every event of the evaluated stream, with its
    ground truth). ``instances``: the attack instances to count for recall and delay
    (default: every instance with an event in ``stream``); alerts on others still count as
    true for the precision."""
    attack_of = {e.event_id: e.attack for e in stream}
    instance_of = {e.event_id: e.attack_id for e in stream if e.attack_id is not None}
    members: dict[str, list[float]] = defaultdict(list)
    type_of: dict[str, str] = {}
    for e in stream:
        if e.attack_id is not None and e.attack is not None:
            members[e.attack_id].append(e.t)
            type_of[e.attack_id] = e.attack
    counted = set(members) if instances is None else set(instances) & set(members)

    result = OnCallEvaluation(events=len(stream), instances=len(counted))
    first_alert: dict[str, float] = {}
    patterns_on: dict[str, set[str]] = defaultdict(set)
    for alert in alerts:
        result.alerts += 1
        if alert.kind == PATTERN:
            result.pattern_alerts += 1
        elif alert.kind == INCIDENT:
            result.incident_alerts += 1
        else:
            result.event_alerts += 1
        verdict = alert_verdict(alert.event_ids, attack_of)
        if verdict is None:
            result.unknown_alerts += 1
            continue
        if not verdict:
            result.false_alerts += 1
            continue
        result.true_alerts += 1
        for instance in {instance_of[e] for e in alert.event_ids if e in instance_of}:
            if instance not in counted:
                continue
            if instance not in first_alert or alert.raised_t < first_alert[instance]:
                first_alert[instance] = alert.raised_t
            if alert.kind != EVENT:
                patterns_on[instance].add(alert.alert_id)

    for instance in sorted(counted):
        figures = result.by_attack.setdefault(type_of[instance], AttackTypeFigures())
        figures.instances += 1
        if instance not in first_alert:
            continue
        figures.caught += 1
        result.caught += 1
        raised = first_alert[instance]
        times = members[instance]
        result.delays_events.append(sum(1 for t in times if t < raised))
        result.delays_s.append(max(raised - min(times), 0.0))
        if patterns_on.get(instance):
            result.pattern_caught += 1
            result.pattern_alerts_per_instance.append(len(patterns_on[instance]))
    return result


def alerts_for_recall(
    alerts: Iterable[OnCallAlert],
    stream: Sequence[TruthEvent],
    caught: int,
    *,
    instances: Collection[str] | None = None,
) -> int | None:
    """How many of ``alerts``, highest score first, it takes to catch ``caught`` instances
    (None if all of them catch fewer): event-level alerting at a given recall."""
    ranked = sorted(alerts, key=lambda a: a.score, reverse=True)
    if caught <= 0:
        return 0
    attack_of = {e.event_id: e.attack for e in stream}
    instance_of = {e.event_id: e.attack_id for e in stream if e.attack_id is not None}
    counted = set(instance_of.values()) if instances is None else set(instances)
    found: set[str] = set()
    for n, alert in enumerate(ranked, start=1):
        if alert_verdict(alert.event_ids, attack_of):
            found.update(
                instance_of[e]
                for e in alert.event_ids
                if e in instance_of and instance_of[e] in counted
            )
            if len(found) >= caught:
                return n
    return None
