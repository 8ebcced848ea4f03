"""The incident stage on a real broker: the patterns of one attack, found on two partitions
of the observations topic by ``vigil patterns``, become one incident alert with contiguous
sequences, across a restart of both stages, exactly once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from schemas.validation import validate_alert
from stream.incidents_stage import IncidentStage, load_incident_settings
from stream.kafka_io import DeliveryTracker, flush_or_raise
from stream.kafka_local import create_topics
from stream.observations import routing_key
from stream.patterns_stage import PatternStage, load_stage_settings
from stream.topic_reader import read_topic

pytestmark = pytest.mark.integration

T0 = 1_793_577_600.0
IP24, DEVICE = ("ip24:203.0.113",), ("device:d-attack",)


def observation(t: float, event_id: str, user: str, offset: int) -> bytes:
    return orjson.dumps(
        {
            "v": 1, "t": t, "a": True, "id": event_id, "type": "account.login", "user": user,
            "score": 0.97, "reasons": [["ip_users", "high"]], "src": ["events", 0, offset],
        }
    )  # fmt: skip


def attack(start: int, stop: int) -> list[tuple[int, bytes, bytes]]:
    """(observations partition, key, value): every event of one attack under its /24 (on
    partition 0) and under its device (on partition 1), as the scoring service writes them."""
    out = []
    for i in range(start, stop):
        value = observation(T0 + 30.0 * i, f"e-{i}", f"u-{i % 7}", i)
        out.append((0, routing_key(IP24), value))
        out.append((1, routing_key(DEVICE), value))
    return out


def later(t: float) -> list[tuple[int, bytes, bytes]]:
    """A normal observation on each partition much later: the watermarks move on."""
    value = orjson.dumps({"v": 1, "t": t, "a": False, "w": 8.0})
    return [(0, routing_key(("ip24:10.0.0",)), value), (1, routing_key(("device:d-x",)), value)]


def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    tracker = DeliveryTracker()
    for partition, key, value in records:
        producer.produce(topic, value, key, partition, on_delivery=tracker.callback)
        tracker.sent()
    flush_or_raise(producer, tracker, 30.0)


def test_an_attack_over_two_partitions_is_one_incident_across_restarts(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    observations, patterns = unique_name("observations"), unique_name("patterns")
    alerts = unique_name("alerts")
    create_topics(kafka_bootstrap, {observations: 2, patterns: 1, alerts: 1})
    stage2 = load_stage_settings(
        {
            "bootstrap": kafka_bootstrap,
            "observations_topic": observations,
            "alerts_topic": alerts,
            "pattern_topic": patterns,
            "dlq_topic": unique_name("patterns-dlq"),
            "group": unique_name("patterns"),
            "exit_when_idle": 2.0,
            "lateness_s": 0.0,
            "session_timeout_ms": 6000,
        },
        env={},
    )
    stage3 = load_incident_settings(
        {
            "bootstrap": kafka_bootstrap,
            "pattern_topic": patterns,
            "alerts_topic": alerts,
            "dlq_topic": unique_name("incidents-dlq"),
            "group": unique_name("incidents"),
            "exit_when_idle": 2.0,
            "session_timeout_ms": 6000,
            "group_wait_s": 0.0,  # reported at once, so that part one has its record
        },
        env={},
    )
    # Part one: the attack starts; both stages run, then stop (their state snapshotted).
    produce(kafka_bootstrap, observations, attack(0, 12))
    PatternStage(stage2).run()
    first = IncidentStage(stage3).run()
    assert first.alerts >= 1
    # Part two: the attack grows, then goes quiet; both stages restart from their state.
    produce(kafka_bootstrap, observations, attack(12, 40) + later(T0 + 40 * 30.0 + 7200.0))
    PatternStage(stage2).run()
    IncidentStage(stage3).run()

    pattern_records = [orjson.loads(r.value or b"") for r in read_topic(kafka_bootstrap, patterns)]
    found = {tuple(p["pattern"]["members"]) for p in pattern_records if p["kind"] == "pattern"}
    assert {IP24, DEVICE} <= found  # one pattern per key, on two partitions
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in read_topic(kafka_bootstrap, alerts):
        alert = orjson.loads(record.value or b"")
        validate_alert(alert)
        assert alert["kind"] == "incident"  # pattern records went to the pattern topic
        assert record.key == alert["alert_id"].encode()
        by_id[alert["alert_id"]].append(alert)
    assert len(by_id) == 1, {k: [s["status"] for s in v] for k, v in by_id.items()}
    [steps] = by_id.values()
    assert [s["sequence"] for s in steps] == list(range(1, len(steps) + 1))
    assert steps[0]["status"] == "new"
    assert steps[-1]["status"] == "resolved"
    assert "growing" in [s["status"] for s in steps]
    last = steps[-1]["incident"]
    assert set(last["members"]) >= {IP24[0], DEVICE[0]}
    assert last["events"] == 40
    assert last["open_patterns"] == 0
    assert steps[-1]["entity"] == {"type": "device", "id": "d-attack"}
