"""OwnedPartitions on revoke: a last snapshot of each revoked partition, then the states go.

A snapshot on revoke only saves the next owner some re-processing, so one that fails must
neither stop the rebalance (an exception in ``on_revoke`` would reach librdkafka's
callback) nor leave the revoked states behind, where a later assignment would find them
stale.
"""

from __future__ import annotations

from typing import Any

import structlog
from confluent_kafka import TopicPartition

from stream.checkpoint import SnapshotWriter
from stream.delivery import AtLeastOnce
from stream.owned_partitions import OwnedPartitions
from stream.partition_state import PartitionState
from tests.unit.fakes import FakeProducer

TOPIC, STATE_TOPIC = "events", "vigil-state"


def owned_with_states(producer: FakeProducer) -> OwnedPartitions[Any]:
    owned: OwnedPartitions[Any] = OwnedPartitions(
        fresh=lambda partition: {"partition": partition},
        fingerprint="fp",
        read=None,
        state_topic=STATE_TOPIC,
        restore_timeout_s=1.0,
    )
    owned.bind(producer, AtLeastOnce(producer, timeout_s=1.0))  # type: ignore[arg-type]
    for partition in (0, 1):
        owned.states[(TOPIC, partition)] = PartitionState(
            TOPIC,
            partition,
            {"partition": partition, "seen": 10},
            writer=SnapshotWriter(TOPIC, partition, "fp"),
            next_offset=10,
            since_snapshot=10,
        )
    return owned


def test_revoke_snapshots_the_revoked_partitions_then_forgets_them() -> None:
    producer = FakeProducer(journal=[])
    owned = owned_with_states(producer)
    owned.revoke(None, [TopicPartition(TOPIC, 1)])
    assert set(owned.states) == {(TOPIC, 0)}
    assert producer.delivered, "no snapshot was written"
    assert {record.topic for record in producer.delivered} == {STATE_TOPIC}
    assert producer.journal[-1] == "flush"  # the snapshot is delivered before revoke returns


def test_a_failed_snapshot_on_revoke_is_logged_and_the_states_still_go() -> None:
    producer = FakeProducer(journal=[], fail_topics={STATE_TOPIC})
    owned = owned_with_states(producer)
    with structlog.testing.capture_logs() as logs:
        owned.revoke(None, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    assert owned.states == {}
    assert producer.delivered == []
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
        "state.snapshot_on_revoke_failed"
    ]
