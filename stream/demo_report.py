"""The demo's summary text: on-call figures per view, and alerts a reviewer would read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.evaluation import Evaluation, Label, format_evaluation
from detectors.oncall_eval import OnCallAlert, OnCallEvaluation, alert_verdict
from stream.demo_logs import Restore
from stream.demo_measure import AFTER, EVENT_LEVEL, PhaseMeasure
from stream.demo_review import Review


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


def format_views(measure: PhaseMeasure) -> str:
    header = (
        f"{'view':<15} {'alerts':>7} {'true':>6} {'false':>6} {'prec.':>6}"
        f" {'caught':>9} {'recall':>6} {'gr/inst':>7} {'delay ev':>8} {'delay t':>8}"
        f" {'per 1M ev':>10}"
    )
    lines = [header]
    for name, r in measure.views.items():
        lines.append(
            f"{name:<15} {r.alerts:>7,} {r.true_alerts:>6,} {r.false_alerts:>6,}"
            f" {_num(r.precision, '.3f'):>6} {f'{r.caught}/{r.instances}':>9}"
            f" {_num(r.recall, '.2f'):>6} {_num(r.mean_pattern_alerts_per_caught, '.2f'):>7}"
            f" {_num(r.median_delay_events, '.1f'):>8} {_duration(r.median_delay_s):>8}"
            f" {r.alerts_per_million:>10,.0f}"
        )
    after, event_level = measure.views[AFTER], measure.views[EVENT_LEVEL]
    lines.append(
        f"event-level alerting sends {event_level.alerts:,} alerts (recall"
        f" {_num(event_level.recall, '.2f')}), on-call after labels {after.alerts:,} (recall"
        f" {_num(after.recall, '.2f')}): {_num(measure.ratio(), '.1f')}x fewer"
    )
    needed = measure.event_level_at_equal_recall
    if after.caught:
        lines.append(
            f"no event-level threshold catches the {after.caught} instances caught after labels"
            if needed is None
            else f"an event-level threshold catching the same {after.caught} instances would"
            f" send {needed:,} alerts (highest scores first, in hindsight):"
            f" {_num(measure.equal_recall_ratio(), '.2f')}x the alerts after labels"
        )
    group = measure.views[measure.group_view]
    if group.caught:
        needed = measure.group_needed
        ratio = _num(measure.equal_recall_ratio(measure.group_view), ".1f")
        lines.append(
            f"{measure.group_view}: {group.alerts:,} alerts catch {group.caught} instances;"
            + (
                " no event-level threshold catches as many"
                if needed is None
                else f" event-level alerting needs {needed:,} for as many (highest scores"
                f" first, in hindsight): {ratio}x more"
            )
        )
    lines.append(
        "gr/inst: group (incident or pattern) alerts per instance they caught; delay ev:"
        " median events of an instance before its first true alert; delay t: median event"
        " time from its first event to that alert"
    )
    return "\n".join(lines)


def format_by_attack(result: OnCallEvaluation) -> str:
    parts = [f"{attack} {r.caught}/{r.instances}" for attack, r in sorted(result.by_attack.items())]
    return ", ".join(parts) if parts else "no attack instances"


def format_review(review: Review, max_labels: int) -> str:
    kinds = sorted({kind for kind, _ in review.verdicts})
    parts = [
        f"{kind} {review.count(kind, 'true_positive')} true/"
        f"{review.count(kind, 'false_positive')} false"
        for kind in kinds
    ]
    return f"{len(review.labels)} of at most {max_labels} labels: " + ", ".join(parts)


def format_gate(segments: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for s in segments:
        threshold = s.get("threshold")
        shown = "-" if threshold is None else f"{threshold:.3f}"
        lines.append(
            f"  {s['detector']} {s['segment']:<18} {s['true']:>3} true {s['false']:>3} false"
            f" -> threshold {shown} ({s['source']})"
        )
    return lines


def format_restore(restore: Restore | None) -> str:
    return "no restore logged" if restore is None else restore.describe()


def pattern_examples(
    patterns: Sequence[OnCallAlert], attack_of: Mapping[str, str | None]
) -> list[tuple[str, OnCallAlert]]:
    """One true group alert (pattern or incident) per attack type (the one with most
    events), by type."""
    best: dict[str, OnCallAlert] = {}
    for alert in patterns:
        if not alert_verdict(alert.event_ids, attack_of):
            continue
        kinds = Counter(attack_of.get(e) for e in alert.event_ids if attack_of.get(e))
        attack = str(kinds.most_common(1)[0][0])
        events = _group(alert.record)["events"]
        if attack not in best or events > _group(best[attack].record)["events"]:
            best[attack] = alert
    return sorted(best.items())


def _group(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``pattern`` or ``incident`` object of a group alert."""
    group: Mapping[str, Any] = record.get("incident") or record["pattern"]
    return group


def describe_pattern(attack: str, alert: OnCallAlert) -> str:
    """A pattern or incident alert as on-call reads it."""
    record = alert.record
    p = _group(record)
    features = ", ".join(f"{f['feature']} {f['direction']}" for f in p["top_features"][:3])
    ranges = ", ".join(
        f"{r['topic']}[{r['partition']}] {r['from_offset']}-{r['to_offset']}"
        for r in p["source_ranges"]
    )
    patterns = f"{p['pattern_count']} patterns, " if "pattern_count" in p else ""
    return (
        f"{attack}: {alert.alert_id} ({record['status']}, record {record['sequence']})\n"
        f"    shares {' + '.join(p['members'])} ({record['entity']['type']}"
        f" {record['entity']['id']}); {patterns}{p['events']} events, {p['users']} users;"
        f" risk ratio {record['score']:.1f}\n"
        f"    first seen {p['first_seen']}, last seen {p['last_seen']};"
        f" anomalous: {features}\n"
        f"    replay: {ranges}"
    )


def event_examples(alerts: Sequence[Mapping[str, Any]], labels: Sequence[Label]) -> list[str]:
    """One caught event alert per attack type, with the splits that isolated it."""
    attack_of = {label.event_id: label.attack for label in labels if label.attack}
    shown: dict[str, Mapping[str, Any]] = {}
    for alert in alerts:
        attack = attack_of.get(alert["event_ids"][0])
        if attack is not None and attack not in shown and alert["explanation"]:
            shown[attack] = alert
    lines = []
    for attack in sorted(shown):
        alert = shown[attack]
        why = ", ".join(
            f"{r['feature']} {r['direction']} ({r['value']:.3g} vs usual {r['baseline']:.3g})"
            for r in alert["explanation"]
        )
        lines.append(
            f"{attack}: {alert['event_type']} by {alert['entity']['type']}"
            f" {alert['entity']['id']} score {alert['score']:.3f} > {alert['threshold']:.3f}:"
            f" {why}"
        )
    return lines


@dataclass
class DemoOutcome:
    """Everything the summary prints."""

    engine: str
    events: int
    records_per_s: list[float]  # per phase
    dead_letters: int
    malformed: int
    dead_letter_reasons: Mapping[str, int]
    phase_events: list[int]
    instances_in_phase2: int
    review: Review
    max_labels: int
    measure: PhaseMeasure
    whole_stream: Evaluation  # every event alert of both phases, the existing evaluation
    event_alert_examples: list[str]
    pattern_alert_examples: list[tuple[str, OnCallAlert]]
    gate: Sequence[Mapping[str, Any]] = ()
    restore: Restore | None = None
    logs: Sequence[Path] = ()


def summary(o: DemoOutcome) -> str:
    rates = " / ".join(f"{r:,.0f}" for r in o.records_per_s)
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(o.dead_letter_reasons.items()))
    after = o.measure.views[AFTER]
    lines = [
        "",
        "Vigil demo summary",
        "==================",
        f"events consumed   {o.events:,} (engine {o.engine}); phase 1 {o.phase_events[0]:,},"
        f" phase 2 {o.phase_events[1]:,} events",
        f"records/s         {rates} (phase 1 / 2, end to end: decode, validate, score,"
        " alert, observe, commit)",
        f"dead letters      {o.dead_letters:,} (generated malformed: {o.malformed:,};"
        f" reasons: {reasons})",
        f"state restore     phase 2: {format_restore(o.restore)}",
        f"reviewer          after phase 1, {format_review(o.review, o.max_labels)}",
    ]
    if o.gate:
        lines.append("label gate        per (detector, event type) in phase 2:")
        lines.extend(format_gate(o.gate))
    else:
        lines.append("label gate        no labels applied")
    lines += [
        "",
        f"Phase 2 as on-call sees it ({o.instances_in_phase2} attack instances start in it)",
        format_views(o.measure),
        f"recall by attack type after labels: {format_by_attack(after)}",
        "",
        "Event alerts over the whole stream (any attack event counts):",
        format_evaluation(o.whole_stream),
        "",
        "Example incident alerts (one per attack type, the largest):",
    ]
    examples = o.pattern_alert_examples
    lines.extend(describe_pattern(attack, alert) for attack, alert in examples)
    if not examples:
        lines.append("  none")
    lines.append("Example event alerts:")
    lines.extend(o.event_alert_examples or ["  none"])
    lines.append("logs              " + ", ".join(str(p) for p in o.logs))
    return "\n".join(lines)
