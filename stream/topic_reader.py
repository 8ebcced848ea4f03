"""Read a topic from the beginning to its end offsets as they are now (a bounded read).

Used by the demo's summary and by integration tests to look at what the service wrote,
from the outside, without joining any consumer group.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from stream.kafka_io import Record


def end_offsets(bootstrap: str, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"vigil-probe-{uuid.uuid4()}"})
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        partitions = sorted(meta.topics[topic].partitions)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def read_topic(
    bootstrap: str, topic: str, *, timeout_s: float = 60.0, isolation: str = "read_committed"
) -> list[Record]:
    """Every record now in ``topic``, in partition then offset order."""
    ends = end_offsets(bootstrap, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"vigil-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    records: list[Record] = []
    try:
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: partitions {sorted(pending)} not finished")
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                record = Record.of(msg)
                records.append(record)
                if record.offset + 1 >= ends[record.partition]:
                    pending.discard(record.partition)
            # Transaction markers take offsets too: a partition whose position reached the
            # end without a record at end - 1 is also finished.
            for tp in consumer.position([TopicPartition(topic, p) for p in list(pending)]):
                if tp.offset is not None and tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
    finally:
        consumer.close()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on ``topic`` (-1001 where none)."""
    ends = end_offsets(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=10)
        return {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()
