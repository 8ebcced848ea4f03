"""In-memory stand-ins for confluent-kafka clients (unit tier only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, TopicPartition


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _error: KafkaError | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def error(self) -> KafkaError | None:
        return self._error

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._offset)


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


@dataclass
class FakeProducer:
    journal: list[str]
    fail_topics: set[str] = field(default_factory=set)
    delivered: list[Produced] = field(default_factory=list)
    _pending: list[tuple[Produced, Callable[..., None] | None]] = field(default_factory=list)

    def produce(
        self,
        topic: str,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        on_delivery: Callable[..., None] | None = None,
        partition: int | None = None,  # taken as Producer.produce takes it, not recorded
    ) -> None:
        self.journal.append(f"produce {topic}")
        self._pending.append((Produced(topic, key, value, dict(headers or [])), on_delivery))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        self.journal.append("flush")
        pending, self._pending = self._pending, []
        for record, callback in pending:
            error = None
            if record.topic in self.fail_topics:
                error = KafkaError(KafkaError._MSG_TIMED_OUT)
            else:
                self.delivered.append(record)
            if callback is not None:
                callback(error, _DeliveredMessage(record.topic))
        return 0


@dataclass
class _DeliveredMessage:
    _topic: str

    def topic(self) -> str:
        return self._topic


@dataclass
class FakeConsumer:
    journal: list[str]
    batches: list[list[FakeMessage]]
    commits: list[list[TopicPartition]] = field(default_factory=list)
    closed: bool = False
    paused: set[tuple[str, int]] = field(default_factory=set)
    pauses: int = 0

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.pauses += 1
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def subscribe(self, topics: list[str], **kwargs: Any) -> None:
        self.journal.append("subscribe")
        if kwargs.get("on_assign") is not None:
            kwargs["on_assign"](self, [TopicPartition(t, 0) for t in topics])

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        return self.batches.pop(0) if self.batches else []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> list[Any]:
        assert asynchronous is False, "the service must commit synchronously"
        self.journal.append("commit")
        self.commits.append(offsets)
        return offsets

    def close(self) -> None:
        self.closed = True

    def assignment(self) -> list[TopicPartition]:
        return []

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return partitions

    def get_watermark_offsets(self, partition: TopicPartition, **kwargs: Any) -> tuple[int, int]:
        return (0, 0)

    def committed(self, partitions: list[TopicPartition], **kwargs: Any) -> list[TopicPartition]:
        return partitions
