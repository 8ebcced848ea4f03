"""State that survives, exactly once, on a real broker: crashes, rebalances, restarts.

Each test compares what a disturbed group wrote (read with read_committed, as downstream
readers do) with what an undisturbed group wrote for the same input: the same alerts,
with the same content, each exactly once.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from stream.kafka_local import create_topics
from stream.topic_reader import committed_offsets, end_offsets, read_topic
from stream.traffic.generator import TrafficConfig, generate
from stream.traffic.records import GeneratedRecord
from stream.traffic.sinks import produce_to_kafka
from tests.integration.service_runner import ServiceProcess, run_service

pytestmark = pytest.mark.integration

# Snapshots every few batches, so restores start from a snapshot and re-score some records.
STATE_ENV = {"VIGIL_CHECKPOINT_EVERY": "1500", "VIGIL_BATCH_SIZE": "500"}


def _topics(unique_name: Any, suffix: str) -> dict[str, str]:
    return {kind: unique_name(f"{kind}-{suffix}") for kind in ("alerts", "dlq")}


def _alerts(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value or b"") for r in read_topic(bootstrap, topic)]


def _assert_same_alerts(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    counts = Counter(a["alert_id"] for a in got)
    duplicated = {k: n for k, n in counts.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} alerts duplicated"
    by_id = {a["alert_id"]: a for a in want}
    lost = set(by_id) - set(counts)
    extra = set(counts) - set(by_id)
    assert not lost, f"{len(lost)} of {len(by_id)} alerts lost"
    assert not extra, f"{len(extra)} alerts an undisturbed run did not raise"
    for alert in got:  # same scores, thresholds and explanations: the state was exact
        assert alert == by_id[alert["alert_id"]]


def _dead_letter_sources(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    return [
        (r.headers["vigil.source.partition"], r.headers["vigil.source.offset"])
        for r in read_topic(bootstrap, topic)
    ]


def _baseline(bootstrap: str, input_topic: str, unique_name: Any) -> dict[str, list[Any]]:
    """What an undisturbed group writes for ``input_topic``: alerts and dead letters."""
    topics = {"input": input_topic, **_topics(unique_name, "baseline")}
    create_topics(bootstrap, {topics["alerts"]: 1, topics["dlq"]: 1})
    run = run_service(bootstrap, topics, unique_name("baseline"), extra_env=STATE_ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    return {
        "alerts": _alerts(bootstrap, topics["alerts"]),
        "dead_letters": _dead_letter_sources(bootstrap, topics["dlq"]),
    }


def _wait_committed(bootstrap: str, group: str, topic: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    want = end_offsets(bootstrap, topic)
    while time.monotonic() < deadline:
        if committed_offsets(bootstrap, group, topic) == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"{group} did not commit to the end of {topic}: {want}")


def test_five_sigkills_end_with_exactly_the_alerts_of_an_uninterrupted_run(
    kafka_bootstrap, unique_name
):
    input_topic = unique_name("input")
    create_topics(kafka_bootstrap, {input_topic: 3})
    records = generate(TrafficConfig(events=24_000, seed=21, bad_fraction=0.01))
    produce_to_kafka(records, kafka_bootstrap, input_topic)
    want = _baseline(kafka_bootstrap, input_topic, unique_name)
    assert len(want["alerts"]) > 50

    topics = {"input": input_topic, **_topics(unique_name, "crashy")}
    create_topics(kafka_bootstrap, {topics["alerts"]: 1, topics["dlq"]: 1})
    group = unique_name("crashy")
    # Static membership and a stable transactional id: as a pod restarted in place.
    env = {**STATE_ENV, "VIGIL_GROUP_INSTANCE_ID": "crashy-0"}
    rng = random.Random(5)
    resumed_from_snapshot = 0
    for _ in range(5):
        service = ServiceProcess(kafka_bootstrap, topics, group, extra_env=env)
        service.wait_for("batch.committed", rng.randint(2, 7))
        time.sleep(rng.uniform(0.0, 0.3))  # anywhere in the next batch or snapshot
        service.kill()
        resumed_from_snapshot += sum(
            1 for line in service.events("state.resumed") if line["snapshot_bytes"] > 0
        )
    final = run_service(kafka_bootstrap, topics, group, extra_env=env)
    assert final.returncode == 0, final.stderr[-3000:]
    resumed_from_snapshot += sum(
        1 for line in final.events("state.resumed") if line["snapshot_bytes"] > 0
    )
    assert resumed_from_snapshot > 0, "no restart used a snapshot"

    _assert_same_alerts(_alerts(kafka_bootstrap, topics["alerts"]), want["alerts"])
    dead = _dead_letter_sources(kafka_bootstrap, topics["dlq"])
    assert sorted(dead) == sorted(want["dead_letters"])
    assert len(dead) == len(set(dead)) > 0


def _phases(records: list[GeneratedRecord], n: int) -> list[list[GeneratedRecord]]:
    size = -(-len(records) // n)
    return [records[i : i + size] for i in range(0, len(records), size)]


def test_a_consumer_joining_and_leaving_loses_no_state_and_duplicates_nothing(
    kafka_bootstrap, unique_name
):
    input_topic = unique_name("input")
    create_topics(kafka_bootstrap, {input_topic: 4})
    records = list(generate(TrafficConfig(events=24_000, seed=33)))
    first, second, third = _phases(records, 3)
    topics = {"input": input_topic, **_topics(unique_name, "pair")}
    create_topics(kafka_bootstrap, {topics["alerts"]: 1, topics["dlq"]: 1})
    group = unique_name("pair")

    produce_to_kafka(first, kafka_bootstrap, input_topic)
    one = ServiceProcess(
        kafka_bootstrap, topics, group, extra_env={**STATE_ENV, "VIGIL_GROUP_INSTANCE_ID": "one"}
    )
    _wait_committed(kafka_bootstrap, group, input_topic)
    two = ServiceProcess(
        kafka_bootstrap, topics, group, extra_env={**STATE_ENV, "VIGIL_GROUP_INSTANCE_ID": "two"}
    )
    two.wait_for("state.resumed")
    produce_to_kafka(second, kafka_bootstrap, input_topic)
    _wait_committed(kafka_bootstrap, group, input_topic)
    assert two.terminate() == 0, two.stderr()[-3000:]
    produce_to_kafka(third, kafka_bootstrap, input_topic)
    _wait_committed(kafka_bootstrap, group, input_topic)
    assert one.terminate() == 0, one.stderr()[-3000:]

    # The newcomer took over partitions with the state the first consumer handed over,
    # and the first consumer took them back with the newcomer's.
    assert any(line["snapshot_bytes"] > 0 for line in two.events("state.resumed"))
    taken_back = [line for line in one.events("state.resumed") if line["snapshot_bytes"] > 0]
    assert taken_back, "the first consumer never restored a handed-back partition"
    assert two.events("batch.committed"), "the second consumer never worked"

    want = _baseline(kafka_bootstrap, input_topic, unique_name)
    _assert_same_alerts(_alerts(kafka_bootstrap, topics["alerts"]), want["alerts"])


def test_a_snapshot_makes_the_round_trip_of_a_restore_through_its_topic(kafka_bootstrap):
    # vigil bench state --bootstrap: written as the service writes a snapshot, read back as
    # a restore reads it, byte for byte (through_kafka checks it), in several chunks.
    import pickle
    import zlib

    from confluent_kafka.admin import AdminClient

    from stream.bench_state import build_extractor, through_kafka
    from stream.checkpoint import CHUNK_BYTES

    extractor, _ = build_extractor(40_000, max_keys=40_000)
    packed = zlib.compress(pickle.dumps(extractor, protocol=5), 1)
    assert len(packed) > CHUNK_BYTES
    before = set(AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics().topics)
    figures = through_kafka(kafka_bootstrap, packed)
    assert figures["chunks"] == -(-len(packed) // CHUNK_BYTES)
    assert figures["restore_s"] == pytest.approx(
        figures["read_s"] + figures["assemble_s"] + figures["decode_s"]
    )
    after = set(AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics().topics)
    assert not {t for t in after - before if t.startswith("vigil-bench-state-")}
