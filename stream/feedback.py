"""Feedback topics every instance follows whole: reviewers' labels and pattern alerts.

Thresholds are per detector and segment and the learning guard is global, neither per
input partition, so each instance reads *all* of such a topic (assigned, no group:
nothing to commit) from the beginning at start-up and then whatever arrives between
batches. The topic is the durable record of what it feeds: a restarted instance rebuilds
its thresholds from the labels topic in well under a second for thousands of labels.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import structlog
from confluent_kafka import Consumer, KafkaError, TopicPartition

from schemas.validation import validate_label
from stream.kafka_io import VigilKafkaError
from stream.settings import ServiceSettings

log = structlog.get_logger("vigil.feedback")


def decode_label(value: bytes | None) -> dict[str, Any]:
    """A label per the contract, or ``ValueError``."""
    label = orjson.loads(value or b"")
    validate_label(label)
    return dict(label)


def decode_pattern_alert(value: bytes | None) -> dict[str, Any] | None:
    """A pattern alert's latest state; None for the event alerts sharing the topic."""
    alert = orjson.loads(value or b"")
    if not isinstance(alert, dict):
        raise ValueError("not a JSON object")
    if alert.get("kind") != "pattern":
        return None
    pattern = alert.get("pattern")
    if not isinstance(pattern, dict) or not isinstance(pattern.get("members"), list):
        raise ValueError("a pattern alert without pattern.members")
    return alert


class TopicFollower:
    def __init__(
        self,
        settings: ServiceSettings,
        topic: str,
        decode: Callable[[bytes | None], dict[str, Any] | None],
    ) -> None:
        self.topic = topic
        self._decode = decode
        config: dict[str, Any] = {
            "group.id": f"vigil-feedback-{uuid.uuid4()}",  # assign() only: nothing is committed
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
        """Everything already on the topic (blocking until each partition's end)."""
        metadata = self._consumer.list_topics(self.topic, timeout=timeout_s)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise VigilKafkaError(f"topic {self.topic!r} does not exist")
        self._partitions = sorted(topic.partitions)
        self._consumer.assign(
            [TopicPartition(self.topic, p, 0) for p in self._partitions]  # 0: from the start
        )
        deadline = time.monotonic() + timeout_s
        while len(self._at_end) < len(self._partitions):
            if time.monotonic() > deadline:
                raise VigilKafkaError(f"topic {self.topic!r} not read to its end in time")
            # A short wait: consume() returns at its timeout unless 1,000 records came, so
            # at 0.5 s each read of a small topic's end added half a second. (The broker
            # still holds the fetch at the end for its fetch.wait.max.ms; not lowered here,
            # where the consumer lives on, fetching that often while idle.)
            yield from self._read(timeout_s=0.05)

    def poll(self) -> Iterator[dict[str, Any]]:
        """What arrived since the last call; never waits."""
        yield from self._read(timeout_s=0.0)

    def _read(self, timeout_s: float) -> Iterator[dict[str, Any]]:
        for msg in self._consumer.consume(1000, timeout_s):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(msg.partition() or 0)
                else:
                    log.warning("feedback.consumer_error", error=error.str())
                continue
            try:
                item = self._decode(msg.value())
            except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
                # The record stays on its topic; skipping it here loses nothing.
                self.invalid += 1
                log.warning(
                    "feedback.invalid", topic=self.topic, offset=msg.offset(), reason=str(exc)[:200]
                )
                continue
            if item is not None:
                yield item

    def close(self) -> None:
        self._consumer.close()
