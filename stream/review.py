"""``vigil review``: list open alerts, record a reviewer's verdict, or play a reviewer.

Labels go to a labels topic per ``schemas/label.v1.json``, keyed by alert id, so the
latest verdict on an alert is what compaction keeps. ``simulate`` labels alerts from the
generator's ground truth, for evaluating thresholds without a human.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from schemas.validation import validate_label
from stream.alerts import stable_id
from stream.kafka_io import DeliveryTracker, flush_or_raise
from stream.topic_reader import read_topic
from stream.traffic.sinks import read_labels

VERDICTS = ("true_positive", "false_positive", "unsure")


def label_id(alert_id: str, reviewer: str, labeled_at: str) -> str:
    """Stable: the same reviewer labelling the same alert at the same time, the same id."""
    return stable_id("lb", alert_id, reviewer, labeled_at)


def make_label(
    alert: Mapping[str, Any],
    verdict: str,
    reviewer: str,
    labeled_at: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """A label for ``alert`` per the contract (validated)."""
    label = {
        "label_id": label_id(alert["alert_id"], reviewer, labeled_at),
        "schema_version": 1,
        "alert_id": alert["alert_id"],
        "verdict": verdict,
        "reason": reason,
        "reviewer": reviewer,
        "labeled_at": labeled_at,
        "detector": alert["detector"],
        "segment": alert["event_type"],
        "score": alert["score"],
    }
    if "entity" in alert:
        label["entity"] = {"type": alert["entity"]["type"], "id": alert["entity"]["id"]}
    validate_label(label)
    return label


def truth_verdict(alert: Mapping[str, Any], attack_of: Mapping[str, str | None]) -> str:
    """What a perfect reviewer says: true if any of the alert's events is an attack."""
    known = [e for e in alert["event_ids"] if e in attack_of]
    if not known:
        return "unsure"
    return "true_positive" if any(attack_of[e] for e in known) else "false_positive"


def _now() -> str:
    now = datetime.now(UTC)  # a human's verdict: the time it was given
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _alerts(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value or b"") for r in read_topic(bootstrap, topic)]


def _labelled(bootstrap: str, topic: str | None) -> set[str]:
    if topic is None:
        return set()
    return {orjson.loads(r.value or b"")["alert_id"] for r in read_topic(bootstrap, topic)}


def _produce(bootstrap: str, topic: str, labels: Sequence[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    tracker = DeliveryTracker()
    for label in labels:
        producer.produce(
            topic,
            key=label["alert_id"].encode(),
            value=orjson.dumps(label),
            on_delivery=tracker.callback,
        )
        tracker.sent()
        producer.poll(0)
    flush_or_raise(producer, tracker, 30.0)


def produce_labels(bootstrap: str, topic: str, labels: Sequence[dict[str, Any]]) -> None:
    """Send ``labels`` (made by ``make_label``) to ``topic``, keyed by alert id; raises if
    any is not acknowledged."""
    _produce(bootstrap, topic, labels)


def _list(args: argparse.Namespace) -> int:
    done = _labelled(args.bootstrap, args.labels_topic)
    open_alerts = [
        a for a in _alerts(args.bootstrap, args.alerts_topic) if a["alert_id"] not in done
    ]
    for alert in open_alerts[: args.limit]:
        why = ", ".join(f"{r['feature']} {r['direction']}" for r in alert["explanation"])
        print(
            f"{alert['alert_id']}  {alert['occurred_at']}  {alert['event_type']:<18}"
            f" {alert['entity']['type']} {alert['entity']['id']:<10}"
            f" score {alert['score']:.3f}  {why}"
        )
    print(f"{len(open_alerts)} open alerts", file=sys.stderr)
    return 0


def _label(args: argparse.Namespace) -> int:
    found = [
        a for a in _alerts(args.bootstrap, args.alerts_topic) if a["alert_id"] == args.alert_id
    ]
    if not found:
        print(f"vigil review: no alert {args.alert_id} on {args.alerts_topic}", file=sys.stderr)
        return 1
    label = make_label(found[-1], args.verdict, args.reviewer, _now(), args.reason)
    _produce(args.bootstrap, args.labels_topic, [label])
    print(label["label_id"])
    return 0


def _simulate(args: argparse.Namespace) -> int:
    attack_of = {label.event_id: label.attack for label in read_labels(args.truth)}
    done = _labelled(args.bootstrap, args.labels_topic)
    labels: list[dict[str, Any]] = []
    for alert in _alerts(args.bootstrap, args.alerts_topic):
        if len(labels) >= args.max_labels:
            break
        if alert["alert_id"] in done:
            continue
        verdict = truth_verdict(alert, attack_of)
        # Event time as the label's time keeps a simulation reproducible.
        labels.append(make_label(alert, verdict, args.reviewer, alert["occurred_at"]))
    _produce(args.bootstrap, args.labels_topic, labels)
    true = sum(1 for label in labels if label["verdict"] == "true_positive")
    false = sum(1 for label in labels if label["verdict"] == "false_positive")
    judged = true + false
    precision = f"{true / judged:.3f}" if judged else "n/a"
    print(f"labelled {len(labels)}: {true} true, {false} false, precision {precision}")
    return 0


def review_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vigil review", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bootstrap", required=True)
    common.add_argument("--alerts-topic", required=True)
    listing = commands.add_parser("list", parents=[common], help="alerts without a label")
    listing.add_argument("--labels-topic")
    listing.add_argument("--limit", type=int, default=50)
    labelling = commands.add_parser("label", parents=[common], help="record a verdict")
    labelling.add_argument("--labels-topic", required=True)
    labelling.add_argument("--alert-id", required=True)
    labelling.add_argument("--verdict", required=True, choices=VERDICTS)
    labelling.add_argument("--reviewer", required=True)
    labelling.add_argument("--reason")
    simulating = commands.add_parser("simulate", parents=[common], help="label from truth")
    simulating.add_argument("--labels-topic", required=True)
    simulating.add_argument("--truth", type=Path, required=True, help="generator labels file")
    simulating.add_argument("--max-labels", type=int, default=200)
    simulating.add_argument("--reviewer", default="simulated-reviewer")
    args = parser.parse_args(argv)
    handlers = {"list": _list, "label": _label, "simulate": _simulate}
    return handlers[args.command](args)
