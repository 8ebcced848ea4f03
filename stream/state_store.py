"""The state topic: where each input partition's snapshots live (Kafka I/O only).

Used by every stage that keeps state: the detector service and ``vigil patterns``.

A compacted topic with at least as many partitions as the input; input partition ``p``
writes to and restores from state partition ``p``. Restoring reads that partition from
the beginning to its end with ``read_committed``, so a snapshot in an aborted or still
open transaction is never seen.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from stream.checkpoint import SnapshotAssembler, StateRecord
from stream.kafka_io import VigilKafkaError
from stream.settings import ConfigError, ServiceSettings

log = structlog.get_logger("vigil.state")

STATE_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    # Snapshots are the only copy of the state: never delete them by age.
    "retention.ms": "-1",
    "max.message.bytes": str(2 * 1024 * 1024),
    # Roll segments often enough that compaction keeps the topic near two snapshots.
    "segment.ms": str(15 * 60 * 1000),
}


class StateTopicSettings(Protocol):
    """What the state topic's I/O needs of a stage's settings (``ServiceSettings``,
    ``PatternStageSettings``)."""

    @property
    def state_topic_name(self) -> str: ...

    def kafka_common(self) -> dict[str, str | int | float | bool]: ...


def ensure_topics(settings: ServiceSettings, timeout_s: float = 30.0) -> int:
    """Check the alerts and dead-letter topics exist (they are the operator's, with their
    own retention: a missing one is a configuration error, not something to create with
    broker defaults; without this check the first transaction waits for it for ever),
    create the state topic (compacted, as many partitions as the input) and the
    observations topic if missing, and check the state topic has enough partitions.
    Returns the input's partition count."""
    also = [settings.observations_topic] if settings.observations else []
    return ensure_state_topic(
        settings,
        settings.input_topic,
        also=also,
        required={"alerts_topic": settings.alerts_topic, "dlq_topic": settings.dlq_topic},
        timeout_s=timeout_s,
    )


def ensure_state_topic(
    settings: StateTopicSettings,
    input_topic: str,
    *,
    input_setting: str = "input_topic",
    also: Sequence[str] = (),
    required: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> int:
    """Create the state topic of ``input_topic`` (compacted, as many partitions as the
    input) and the plain topics ``also`` if missing; check the state topic has enough
    partitions. ``input_topic`` and the topics of ``required`` (setting -> topic) must
    exist: a missing one is a ``ConfigError`` naming its setting (``input_setting`` for
    the input). Returns the input's partition count."""
    admin = AdminClient(settings.kafka_common())
    metadata = admin.list_topics(timeout=timeout_s)
    bootstrap = settings.kafka_common().get("bootstrap.servers")
    for setting, name in {input_setting: input_topic, **(required or {})}.items():
        found = metadata.topics.get(name)
        if found is None or found.error is not None or not found.partitions:
            raise ConfigError(f"setting '{setting}': topic {name!r} does not exist on {bootstrap}")
    wanted = len(metadata.topics[input_topic].partitions)
    state = metadata.topics.get(settings.state_topic_name)
    if state is not None and state.error is None and len(state.partitions) < wanted:
        raise ConfigError(
            f"setting 'state_topic': {settings.state_topic_name!r} has "
            f"{len(state.partitions)} partitions, the input has {wanted}"
        )
    missing = {}
    if state is None or state.error is not None:
        missing[settings.state_topic_name] = STATE_TOPIC_CONFIG
    for name in also:
        seen = metadata.topics.get(name)
        if seen is None or seen.error is not None:
            missing[name] = {}
    create_missing_topics(admin, missing, wanted, timeout_s)
    return wanted


def create_missing_topics(
    admin: AdminClient, topics: dict[str, dict[str, str]], partitions: int, timeout_s: float
) -> None:
    """Create ``topics`` (name to topic config) with ``partitions`` each; one that exists
    already is left as it is."""
    from confluent_kafka.cimpl import NewTopic  # confluent_kafka.admin does not re-export it

    if not topics:
        return
    new = [
        # replication_factor -1: the broker's default.
        NewTopic(name, num_partitions=partitions, replication_factor=-1, config=config)
        for name, config in topics.items()
    ]
    for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            exists = (
                isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
            )
            if not exists:
                raise VigilKafkaError(f"cannot create topic {name}: {exc}") from exc
        log.info("topic.created", topic=name, partitions=partitions)


def read_state_partition(
    settings: StateTopicSettings, partition: int, timeout_s: float
) -> SnapshotAssembler:
    """Every committed record of one state partition, from its beginning to its end now."""
    found = SnapshotAssembler()
    config: dict[str, Any] = {
        "group.id": f"vigil-restore-{uuid.uuid4()}",  # assign() only: nothing is committed
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
        # The broker answers a fetch at the end of the partition after this wait (500 ms by
        # default): the end-of-partition event came a second after the last record.
        "fetch.wait.max.ms": 10,
    }
    config.update(settings.kafka_common())
    consumer = Consumer(config)
    tp = TopicPartition(settings.state_topic_name, partition)
    try:
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        if high <= low:
            return found
        consumer.assign([TopicPartition(settings.state_topic_name, partition, low)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # A short wait: a consume() returns when it has all it asked for or at its
            # timeout, and a state partition holds a few chunks (and transaction markers,
            # which take offsets but come as no message), so it is the timeout that ends it.
            for msg in consumer.consume(1000, 0.05):
                error = msg.error()
                if error is None:
                    found.add(msg.key(), msg.value())
                elif error.code() == KafkaError._PARTITION_EOF:
                    # read_committed: the end is the last stable offset, which is what we want.
                    return found
                else:
                    raise VigilKafkaError(f"restore read failed: {error.str()}", error.name())
        raise VigilKafkaError(
            f"restore of {settings.state_topic_name}[{partition}] did not reach the end "
            f"in {timeout_s:.0f}s"
        )
    finally:
        consumer.close()


def produce_state(
    producer: Any, topic: str, partition: int, records: list[StateRecord], on_delivery: Any
) -> int:
    """Produce one snapshot's records to ``partition`` of the state topic; returns bytes."""
    size = 0
    for record in records:
        producer.produce(
            topic,
            key=record.key,
            value=record.value,
            partition=partition,
            on_delivery=on_delivery,
        )
        size += len(record.value or b"")
        producer.poll(0)
    return size
