"""Event-time alignment on a real broker: a backlog over three partitions is read so that
no partition's observations run more than max_event_time_skew_s ahead of the others'
(stream/alignment.py), with nothing lost; without it, hours apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from stream.kafka_local import create_topics
from stream.topic_reader import committed_offsets, end_offsets, read_topic
from stream.traffic.generator import TrafficConfig, generate
from stream.traffic.sinks import produce_to_kafka
from tests.integration.service_runner import run_service

pytestmark = pytest.mark.integration

SKEW_S = 60.0


def lateness_s(bootstrap: str, observations: str) -> float:
    """The most an observation came after a later one (event time) from another input
    partition, in the order the service wrote them (one partition: its order)."""
    worst = 0.0
    newest: dict[int, float] = {}
    for record in read_topic(bootstrap, observations):
        body = orjson.loads(record.value or b"")
        if "src" not in body:  # sampled normal events do not say where they came from
            continue
        source, t = body["src"][1], body["t"]
        others = [seen for p, seen in newest.items() if p != source]
        if others:
            worst = max(worst, max(others) - t)
        newest[source] = max(newest.get(source, t), t)
    return worst


def run(
    bootstrap: str, unique_name: Callable[[str], str], records: list[Any], skew_s: float
) -> tuple[float, str, dict[str, str]]:
    topics = {kind: unique_name(kind) for kind in ("input", "alerts", "dlq", "observations")}
    create_topics(
        bootstrap,
        {topics["input"]: 3, topics["alerts"]: 1, topics["dlq"]: 1, topics["observations"]: 1},
    )
    produce_to_kafka(iter(records), bootstrap, topics["input"])
    group = unique_name("group")
    result = run_service(
        bootstrap,
        topics,
        group,
        extra_env={
            "VIGIL_OBSERVATIONS_TOPIC": topics["observations"],
            "VIGIL_BATCH_SIZE": "500",
            "VIGIL_MAX_EVENT_TIME_SKEW_S": str(skew_s),
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Nothing lost: every offset committed, every record an event or a dead letter.
    assert committed_offsets(bootstrap, group, topics["input"]) == end_offsets(
        bootstrap, topics["input"]
    )
    stopped = next(line for line in result.logs if line["event"] == "service.stopped")
    assert stopped["events"] + stopped["dead_letters"] == len(records)
    return lateness_s(bootstrap, topics["observations"]), group, topics


def test_a_backlog_is_read_in_event_time_step_across_partitions(kafka_bootstrap, unique_name):
    # About three hours of traffic, produced before the service starts: a backlog.
    records = list(generate(TrafficConfig(events=9_000, seed=5, bad_fraction=0.01)))
    aligned, _, _ = run(kafka_bootstrap, unique_name, records, SKEW_S)
    assert aligned <= SKEW_S
    # The same backlog read as librdkafka hands it over (a skew no backlog reaches).
    unaligned, _, _ = run(kafka_bootstrap, unique_name, records, 1e9)
    assert unaligned > 10 * SKEW_S, unaligned
