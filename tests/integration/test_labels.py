"""The label loop on a real broker: a simulated reviewer labels alerts onto the labels
topic, the service reads them back and holds event alerts below the threshold that meets
the precision target, so precision moves toward it."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest

from stream.kafka_local import create_topics
from stream.topic_reader import read_topic
from stream.traffic.generator import TrafficConfig, generate
from stream.traffic.sinks import produce_to_kafka, write_labels
from tests.integration.service_runner import ROOT, run_service

pytestmark = pytest.mark.integration

LABEL_ENV = {"VIGIL_MIN_LABELS": "15"}


def _alerts(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value or b"") for r in read_topic(bootstrap, topic)]


def _precision(alerts: list[dict[str, Any]], attack_events: set[str]) -> float:
    true = sum(1 for a in alerts if a["event_ids"][0] in attack_events)
    return true / len(alerts)


def test_labels_flow_back_and_move_precision_toward_the_target(
    kafka_bootstrap, unique_name, tmp_path
):
    records = list(generate(TrafficConfig(events=24_000, seed=41, attack_rate=3e-4)))
    truth = tmp_path / "truth.jsonl"
    write_labels(records, truth)
    attack_events = {r.event_id for r in records if r.attack is not None}
    half = len(records) // 2
    second_half = {r.event_id for r in records[half:]}
    names = {k: unique_name(k) for k in ("input", "alerts", "dlq", "labels", "plain")}
    create_topics(
        kafka_bootstrap,
        {names["input"]: 1, names["alerts"]: 1, names["dlq"]: 1, names["labels"]: 1,
         names["plain"]: 1},
    )  # fmt: skip
    topics = {"input": names["input"], "alerts": names["alerts"], "dlq": names["dlq"]}
    group = unique_name("group")
    env = {**LABEL_ENV, "VIGIL_LABELS_TOPIC": names["labels"]}

    produce_to_kafka(records[:half], kafka_bootstrap, names["input"])
    first = run_service(kafka_bootstrap, topics, group, extra_env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stopped["held_by_labels"] == 0  # no labels yet: the budget alone decides

    review = subprocess.run(
        [sys.executable, "-m", "stream.cli", "review", "simulate",
         "--bootstrap", kafka_bootstrap, "--alerts-topic", names["alerts"],
         "--labels-topic", names["labels"], "--truth", str(truth), "--max-labels", "200"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert review.returncode == 0, review.stderr
    labels = [orjson.loads(r.value or b"") for r in read_topic(kafka_bootstrap, names["labels"])]
    assert 0 < len(labels) <= 200

    produce_to_kafka(records[half:], kafka_bootstrap, names["input"])
    second = run_service(kafka_bootstrap, topics, group, extra_env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    (loaded, *_) = second.events("labels.applied")
    assert loaded["labels"] == len(labels)
    gated = [s for s in loaded["segments"] if s["source"] in ("labels", "labels_unmet")]
    assert gated, loaded["segments"]
    assert second.stopped["held_by_labels"] > 0

    # The same second half without labels: what the budget alone would have raised.
    plain = run_service(
        kafka_bootstrap,
        {**topics, "alerts": names["plain"]},
        unique_name("plain"),
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    budget_only = [
        a for a in _alerts(kafka_bootstrap, names["plain"]) if a["event_ids"][0] in second_half
    ]
    with_labels = [
        a for a in _alerts(kafka_bootstrap, names["alerts"]) if a["event_ids"][0] in second_half
    ]
    assert len(with_labels) == len(budget_only) - second.stopped["held_by_labels"]
    before = _precision(budget_only, attack_events)
    after = _precision(with_labels, attack_events)
    assert after > before + 0.1, (before, after, len(budget_only), len(with_labels))
    # Held alerts are only ever ones whose score the labels' threshold says is too low.
    thresholds = {(s["detector"], s["segment"]): s["threshold"] for s in gated}
    kept = {a["alert_id"] for a in with_labels}
    for alert in budget_only:
        bar = thresholds.get((alert["detector"], alert["event_type"]))
        if bar is not None:
            assert (alert["alert_id"] in kept) == (alert["score"] > bar)
