"""Alerts against ground-truth labels: recall per attack instance, false alerts."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Label:
    event_id: str
    attack: str | None
    attack_id: str | None


@dataclass
class AttackTypeResult:
    instances: int = 0
    caught: int = 0
    attack_events: int = 0
    alerted_events: int = 0

    @property
    def recall(self) -> float:
        return self.caught / self.instances if self.instances else 0.0


@dataclass
class Evaluation:
    alerts: int = 0
    true_alerts: int = 0
    false_alerts: int = 0
    unknown_alerts: int = 0
    by_attack: dict[str, AttackTypeResult] = field(default_factory=dict)
    false_by_event_type: Counter[str] = field(default_factory=Counter)

    @property
    def precision(self) -> float:
        judged = self.true_alerts + self.false_alerts
        return self.true_alerts / judged if judged else 0.0


def evaluate(alerts: Iterable[Mapping[str, Any]], labels: Iterable[Label]) -> Evaluation:
    """An alert is true if any of its events belongs to an attack; an attack instance is
    caught if at least one alert names one of its events."""
    by_event = {label.event_id: label for label in labels}
    result = Evaluation()
    instances: dict[str, set[str]] = defaultdict(set)
    for label in by_event.values():
        if label.attack is not None and label.attack_id is not None:
            instances[label.attack].add(label.attack_id)
            result.by_attack.setdefault(label.attack, AttackTypeResult()).attack_events += 1
    caught: dict[str, set[str]] = defaultdict(set)
    alerted: set[str] = set()
    for alert in alerts:
        result.alerts += 1
        hits = [by_event.get(e) for e in alert["event_ids"]]
        known = [h for h in hits if h is not None]
        if not known:
            result.unknown_alerts += 1
            continue
        attacks = [h for h in known if h.attack is not None]
        if attacks:
            result.true_alerts += 1
            for h in attacks:
                caught[str(h.attack)].add(str(h.attack_id))
                alerted.add(h.event_id)
        else:
            result.false_alerts += 1
            result.false_by_event_type[str(alert.get("event_type"))] += 1
    for attack, ids in instances.items():
        entry = result.by_attack[attack]
        entry.instances = len(ids)
        entry.caught = len(caught[attack])
        entry.alerted_events = sum(1 for e in alerted if by_event[e].attack == attack)
    return result


def format_evaluation(result: Evaluation) -> str:
    lines = [
        f"alerts: {result.alerts}  true: {result.true_alerts}  false: {result.false_alerts}"
        f"  precision: {result.precision:.3f}",
        f"{'attack':<20} {'instances':>9} {'caught':>7} {'recall':>7} {'events':>7} {'alerted':>8}",
    ]
    for attack in sorted(result.by_attack):
        r = result.by_attack[attack]
        lines.append(
            f"{attack:<20} {r.instances:>9} {r.caught:>7} {r.recall:>7.2f}"
            f" {r.attack_events:>7} {r.alerted_events:>8}"
        )
    if result.false_by_event_type:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(result.false_by_event_type.items()))
        lines.append(f"false alerts by event type: {parts}")
    return "\n".join(lines)
