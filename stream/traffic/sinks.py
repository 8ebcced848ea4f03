"""Where generated records go: a JSON-lines file, a labels file, or a Kafka topic.

The only module of the package that does I/O. Every sink consumes its iterable once and
streams it, so a million records never sit in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final, Protocol

import orjson
from confluent_kafka import KafkaError, Message, Producer

from detectors.evaluation import Label
from stream.traffic.records import GeneratedRecord, label_line

# The broker's default max.message.bytes is ~1 MB; oversized test records stay at 70-200 KiB.
PRODUCER_MAX_MESSAGE_BYTES: Final = 1_048_576
FLUSH_TIMEOUT_S: Final = 120.0
# How long to let librdkafka drain its queue when it is full before producing again.
QUEUE_FULL_POLL_S: Final = 0.1


def write_file(records: Iterable[GeneratedRecord], path: str | Path) -> int:
    """One value per line, as produced (malformed values included); the count written."""
    written = 0
    with Path(path).open("wb") as out:
        for record in records:
            out.write(record.value)
            out.write(b"\n")
            written += 1
    return written


def write_labels(records: Iterable[GeneratedRecord], path: str | Path) -> int:
    """One label line per record (see ``label_line``); the count written."""
    with Path(path).open("wb") as out:
        return sum(1 for _ in tee_labels(records, out))


def read_labels(path: str | Path) -> list[Label]:
    """The labels file that ``write_labels`` wrote, for evaluation and simulated review."""
    with Path(path).open("rb") as lines:
        return [
            Label(row["event_id"], row.get("attack"), row.get("attack_id"))
            for row in map(orjson.loads, lines)
        ]


def tee_labels(records: Iterable[GeneratedRecord], out: IO[bytes]) -> Iterator[GeneratedRecord]:
    """Pass ``records`` through, writing each one's label line to ``out`` on the way."""
    for record in records:
        out.write(label_line(record))
        out.write(b"\n")
        yield record


def producer_config(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
        "message.max.bytes": PRODUCER_MAX_MESSAGE_BYTES,
        "batch.size": PRODUCER_MAX_MESSAGE_BYTES,
    }


class ProducerLike(Protocol):
    """The part of ``confluent_kafka.Producer`` the sink uses (a fake in tests)."""

    def produce(
        self,
        topic: str,
        value: bytes | None = ...,
        key: bytes | None = ...,
        *,
        timestamp: int = ...,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = ...,
    ) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...


class _Deliveries:
    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.first_error: KafkaError | None = None

    def __call__(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = err


def produce_to_kafka(
    records: Iterable[GeneratedRecord],
    bootstrap: str,
    topic: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Produce every record to ``topic`` with its event time as the record timestamp.

    ``progress`` is called with the number of records handed to the producer so far, after
    each one. Returns the number delivered; raises RuntimeError if any record failed.
    """
    return produce_with(Producer(producer_config(bootstrap)), records, topic, progress=progress)


def produce_with(
    producer: ProducerLike,
    records: Iterable[GeneratedRecord],
    topic: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """``produce_to_kafka`` on a given producer."""
    deliveries = _Deliveries()
    produced = 0
    for record in records:
        while True:
            try:
                producer.produce(
                    topic,
                    value=record.value,
                    key=record.key,
                    timestamp=record.timestamp_ms,
                    on_delivery=deliveries,
                )
                break
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                producer.poll(QUEUE_FULL_POLL_S)
        producer.poll(0)
        produced += 1
        if progress is not None:
            progress(produced)
    undelivered = producer.flush(FLUSH_TIMEOUT_S)
    if undelivered:
        raise RuntimeError(
            f"{undelivered} of {produced} records to {topic!r} still undelivered"
            f" after {FLUSH_TIMEOUT_S:.0f}s"
        )
    if deliveries.failed:
        raise RuntimeError(
            f"{deliveries.failed} of {produced} records to {topic!r} failed;"
            f" first error: {deliveries.first_error}"
        )
    return deliveries.delivered
