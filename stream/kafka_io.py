"""Thin, typed wrappers over confluent-kafka: configs, delivery tracking, commits."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition


class VigilKafkaError(RuntimeError):
    """A Kafka operation failed; ``code`` is librdkafka's error code name."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message if code is None else f"{message} [{code}]")
        self.code = code


class Record(msgspec.Struct, frozen=True, gc=False):
    """A consumed record, with librdkafka's optional getters resolved once at the edge.

    A msgspec Struct: one is made for every consumed record, and its C constructor is a
    fraction of a frozen dataclass's ``__init__`` (an ``object.__setattr__`` per field).
    ``gc=False``: its only container, ``headers``, holds bytes, so no cycle can pass
    through it.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int

    @classmethod
    def of(cls, msg: Message) -> Record:
        # Once per consumed record in the pattern stage and topic readers (the service
        # makes one only for a record with an output), so kept lean: no header work when
        # there are none. stream/ingest.py resolves topic, partition and offset alike.
        raw_headers = msg.headers()
        headers: dict[str, bytes] = {}
        if raw_headers:
            pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
            for name, raw in pairs:
                headers[name] = raw.encode() if isinstance(raw, str) else (raw or b"")
        key, value = msg.key(), msg.value()
        if isinstance(key, str):
            key = key.encode()
        if isinstance(value, str):
            value = value.encode()
        partition, offset = msg.partition(), msg.offset()
        return cls(
            msg.topic() or "",
            -1 if partition is None else partition,
            -1 if offset is None else offset,
            key,
            value,
            headers,
            msg.timestamp()[1],
        )


class ClientSettings(Protocol):
    """What the librdkafka configs need: ``ServiceSettings`` and the stages' settings."""

    @property
    def group(self) -> str: ...
    @property
    def session_timeout_ms(self) -> int: ...
    @property
    def group_instance_id(self) -> str | None: ...
    @property
    def transactional_id_value(self) -> str: ...
    @property
    def transaction_timeout_ms(self) -> int: ...
    def kafka_common(self) -> dict[str, str | int | float | bool]: ...


def consumer_config(settings: ClientSettings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "group.id": settings.group,
        "enable.auto.commit": False,
        # Offsets are stored and committed by hand, after the alerts they caused are delivered.
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.partition.eof": False,
        "session.timeout.ms": settings.session_timeout_ms,
        # Alerts and state written in transactions are read only once committed.
        "isolation.level": "read_committed",
        # A partition resumed after event-time alignment paused it (stream/alignment.py)
        # is fetched in the next fetch request; with the 500 ms default that request can
        # wait on the broker's long poll for the partitions that have nothing: a 30k-event
        # backlog over 3 partitions was read at 9k records/s aligned, 20k with 50 ms
        # (17k-22k unaligned).
        "fetch.wait.max.ms": 50,
    }
    if settings.group_instance_id is not None:
        config["group.instance.id"] = settings.group_instance_id
    config.update(settings.kafka_common())
    return config


def producer_config(settings: ClientSettings, *, transactional: bool = False) -> dict[str, Any]:
    config: dict[str, Any] = {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "zstd",
        # A dead letter carries the raw record, which may be larger than a good event.
        "message.max.bytes": 2_000_000,
    }
    if transactional:
        config["transactional.id"] = settings.transactional_id_value
        config["transaction.timeout.ms"] = settings.transaction_timeout_ms
    config.update(settings.kafka_common())
    return config


class DeliveryTracker:
    """Counts outstanding produces and remembers the first delivery failure."""

    def __init__(self) -> None:
        self.pending = 0
        self.failures: list[str] = []

    def callback(self, err: KafkaError | None, msg: Message) -> None:
        self.pending -= 1
        if err is not None:
            self.failures.append(f"{msg.topic()}: {err.str()} [{err.name()}]")

    def sent(self) -> None:
        self.pending += 1


def flush_or_raise(producer: Producer, tracker: DeliveryTracker, timeout_s: float) -> None:
    """Wait until every produced record is acknowledged; raise if any is not."""
    remaining = producer.flush(timeout_s)
    if remaining or tracker.pending:
        raise VigilKafkaError(f"{max(remaining, tracker.pending)} records not delivered in time")
    if tracker.failures:
        failures, tracker.failures = tracker.failures, []
        raise VigilKafkaError("delivery failed: " + "; ".join(failures[:5]))


def commit_or_raise(consumer: Any, offsets: list[TopicPartition]) -> None:
    """Commit synchronously and check each partition's result."""
    if not offsets:
        return
    try:
        results = consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        err = exc.args[0]
        raise VigilKafkaError(f"commit failed: {err.str()}", err.name()) from exc
    for tp in results or []:
        if tp.error is not None:
            raise VigilKafkaError(f"commit failed for {tp.topic}[{tp.partition}]", str(tp.error))
