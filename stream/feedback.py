"""Reviewers' labels, read from the labels topic by every instance (Kafka I/O only).

Thresholds are per detector and segment, not per input partition, so each instance reads
*all* of the labels topic (assigned, no group: nothing to commit) from the beginning at
start-up and then whatever arrives between batches. The labels topic is the durable
record of the thresholds: a restarted instance rebuilds them from it in well under a
second for thousands of labels.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import structlog
from confluent_kafka import Consumer, KafkaError, TopicPartition

from schemas.validation import validate_label
from stream.kafka_io import VigilKafkaError
from stream.settings import ServiceSettings

log = structlog.get_logger("vigil.labels")


class LabelFeed:
    def __init__(self, settings: ServiceSettings, topic: str) -> None:
        self.topic = topic
        config: dict[str, Any] = {
            "group.id": f"vigil-labels-{uuid.uuid4()}",  # assign() only: nothing is committed
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
        config.update(settings.kafka_common())
        self._consumer = Consumer(config)
        self.invalid = 0
        self._at_end: set[int] = set()
        self._partitions: list[int] = []

    def start(self, timeout_s: float) -> Iterator[dict[str, Any]]:
        """Every label already on the topic (blocking until each partition's end)."""
        metadata = self._consumer.list_topics(self.topic, timeout=timeout_s)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise VigilKafkaError(f"labels topic {self.topic!r} does not exist")
        self._partitions = sorted(topic.partitions)
        self._consumer.assign(
            [TopicPartition(self.topic, p, 0) for p in self._partitions]  # 0: from the start
        )
        deadline = time.monotonic() + timeout_s
        while len(self._at_end) < len(self._partitions):
            if time.monotonic() > deadline:
                raise VigilKafkaError(f"labels topic {self.topic!r} not read to its end in time")
            yield from self._read(timeout_s=0.5)

    def poll(self) -> Iterator[dict[str, Any]]:
        """Labels that arrived since the last call; never waits."""
        yield from self._read(timeout_s=0.0)

    def _read(self, timeout_s: float) -> Iterator[dict[str, Any]]:
        for msg in self._consumer.consume(1000, timeout_s):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(msg.partition() or 0)
                else:
                    log.warning("labels.consumer_error", error=error.str())
                continue
            try:
                label = orjson.loads(msg.value() or b"")
                validate_label(label)
            except (orjson.JSONDecodeError, ValueError) as exc:
                # The record stays on the labels topic; skipping it here loses nothing.
                self.invalid += 1
                log.warning("labels.invalid", offset=msg.offset(), reason=str(exc)[:200])
                continue
            yield label

    def close(self) -> None:
        self._consumer.close()
