"""The exactly-once loop when the transactional producer hangs: librdkafka's
send_offsets_to_transaction can block forever after a broker restart, whatever its timeout
(librdkafka #5456/#5511). The service must give that producer up, replace it, rewind and
end with exactly the output of an undisturbed run, instead of stalling with its input
fetched and nothing committed (the quarantined clean-broker-restart stall).

In-memory stand-ins: a "broker" that keeps what transactions commit (outputs, state
records, the group's offsets) and fences a producer once a new one with the same
transactional id initialises; a group member reading from wherever it is assigned or
seeked; transactional producers, the first of which can hang in send_offsets.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stream.checkpoint import SnapshotAssembler
from stream.delivery import ExactlyOnce
from stream.service import Service
from stream.settings import load_settings
from tests.unit.events import make_event
from tests.unit.fakes import FakeMessage

INPUT = "events"
GROUP = "g"
STATE = f"{GROUP}.state"
# A service that alerts and snapshots within a few hundred events (these tests and
# tests/unit/test_shutdown.py).
SMALL_SERVICE: dict[str, Any] = {
    "bootstrap": "unused:1",
    "input_topic": INPUT,
    "alerts_topic": "alerts",
    "dlq_topic": "dlq",
    "group": GROUP,
    "warmup": 20,
    "window_size": 20,
    "quantile": 0.98,
    "checkpoint_every": 200,
}


@dataclass
class Broker:
    inputs: dict[int, list[bytes]]
    outputs: list[tuple[str, bytes | None]] = field(default_factory=list)
    state: dict[int, list[tuple[bytes | None, bytes | None]]] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)
    epoch: int = 0

    def read_state(self, partition: int) -> SnapshotAssembler:
        found = SnapshotAssembler()
        for key, value in self.state.get(partition, []):
            found.add(key, value)
        return found


class TxnProducer:
    """One transactional.id on ``broker``; the ``stuck_at``-th send_offsets never returns
    (until the test releases it at the end)."""

    def __init__(self, broker: Broker, stuck_at: int | None = None) -> None:
        self.broker, self.stuck_at = broker, stuck_at
        self.release = threading.Event()
        self.sends = 0
        self.epoch = -1
        self._records: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self._offsets: list[TopicPartition] = []

    def init_transactions(self, timeout: float) -> None:
        self.broker.epoch += 1  # fences every earlier instance, aborting what it left
        self.epoch = self.broker.epoch

    def begin_transaction(self) -> None:
        self._records, self._offsets = [], []

    def produce(
        self,
        topic: str,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: Any = None,
        on_delivery: Any = None,
        partition: int | None = None,
    ) -> None:
        self._records.append((topic, key, value, partition))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.sends += 1
        if self.sends == self.stuck_at:
            self.release.wait()
            raise KafkaException(KafkaError(KafkaError._FENCED, fatal=True))
        self._offsets = list(offsets)

    def commit_transaction(self, timeout: float) -> None:
        if self.epoch != self.broker.epoch:
            raise KafkaException(KafkaError(KafkaError._FENCED, fatal=True))
        for topic, key, value, partition in self._records:
            if topic == STATE:
                self.broker.state.setdefault(partition or 0, []).append((key, value))
            else:
                self.broker.outputs.append((topic, value))
        for tp in self._offsets:
            self.broker.offsets[tp.partition] = tp.offset
        self._records, self._offsets = [], []

    def abort_transaction(self, timeout: float) -> None:
        self._records, self._offsets = [], []


@dataclass
class TimedMessage(FakeMessage):
    _ts: int = 0

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


class GroupMember:
    """Owns every input partition; reads from where it is assigned or seeked. A record's
    timestamp is its offset times its partition's ``ms_per_record`` (event-time
    alignment then holds back the partition whose time runs faster)."""

    def __init__(
        self, broker: Broker, per_partition: int, ms_per_record: dict[int, int] | None = None
    ) -> None:
        self.broker, self.per_partition = broker, per_partition
        self.ms_per_record = ms_per_record or {}
        self.positions: dict[int, int] = {}
        self.paused: set[int] = set()

    def pause(self, partitions: list[TopicPartition]) -> None:
        # As librdkafka: fetching stops; the position stays after the last record given.
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        callbacks["on_assign"](self, [TopicPartition(INPUT, p) for p in sorted(self.broker.inputs)])

    def incremental_assign(self, starts: list[TopicPartition]) -> None:
        for tp in starts:
            self.seek(tp)

    def seek(self, partition: TopicPartition) -> None:
        offset = partition.offset
        if offset < 0:
            offset = max(self.broker.offsets.get(partition.partition, 0), 0)
        self.positions[partition.partition] = offset

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[TimedMessage]:
        out = []
        for p, at in sorted(self.positions.items()):
            if p in self.paused:
                continue
            values = self.broker.inputs[p][at : at + self.per_partition]
            step = self.ms_per_record.get(p, 1)
            out += [
                TimedMessage(INPUT, p, at + i, v, _ts=1_700_000_000_000 + (at + i) * step)
                for i, v in enumerate(values)
            ]
            self.positions[p] = at + len(values)
        return out

    def consumer_group_metadata(self) -> str:
        return GROUP

    def committed(self, partitions: list[TopicPartition], **kwargs: Any) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.broker.offsets.get(tp.partition, -1001))
            for tp in partitions
        ]

    def get_watermark_offsets(self, partition: TopicPartition, **kwargs: Any) -> tuple[int, int]:
        return (0, len(self.broker.inputs[partition.partition]))

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(INPUT, p) for p in self.positions]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(INPUT, tp.partition, self.positions[tp.partition]) for tp in partitions
        ]

    def commit(self, **kwargs: Any) -> Any:
        raise AssertionError("exactly-once commits offsets in the transaction")

    def close(self) -> None:
        pass


def _inputs() -> dict[int, list[bytes]]:
    inputs: dict[int, list[bytes]] = {}
    for p in (0, 1):
        values = [
            orjson.dumps(
                make_event("payment.attempted", i, user=f"u{p}-{i % 7}", amount=10.0 + i % 13)
            )
            for i in range(600)
        ]
        values[97] = b"{not json"  # dead letters too
        values[401] = b"[]"
        inputs[p] = values
    return inputs


def _run(
    broker: Broker,
    stuck_at: int | None,
    monkeypatch: pytest.MonkeyPatch,
    ms_per_record: dict[int, int] | None = None,
) -> list[TxnProducer]:
    producers = [TxnProducer(broker, stuck_at)]

    def replacement(config: dict[str, Any]) -> TxnProducer:
        assert config["transactional.id"]
        producers.append(TxnProducer(broker))
        return producers[-1]

    monkeypatch.setattr("stream.service.Producer", replacement)
    monkeypatch.setattr("stream.delivery.STUCK_GRACE_S", 0.2)
    settings = load_settings(
        {
            **SMALL_SERVICE,
            "flush_timeout_s": 0.2,
            "exit_when_idle": 0.05,
            "metrics_port": 0,
        },
        env={},
    )
    service = Service(
        settings,
        consumer=cast(Any, GroupMember(broker, per_partition=50, ms_per_record=ms_per_record)),
        producer=cast(Any, producers[0]),
        delivery=ExactlyOnce(cast(Any, producers[0]), settings.flush_timeout_s),
        read_state=broker.read_state,
    )
    loop = threading.Thread(target=service.run, daemon=True)
    loop.start()
    try:
        loop.join(60.0)
        assert not loop.is_alive(), "the loop stalled in a transactional call"
    finally:
        for producer in producers:
            producer.release.set()
    return producers


# Partition 1's event time runs 20x faster: alignment holds its records back (fewer than
# a batch, so without pausing it), and the rewind must drop them too, or the records read
# again after the seek would be skipped as seen.
@pytest.mark.parametrize("ms_per_record", [None, {0: 1_000, 1: 20_000}])
def test_a_send_offsets_that_never_returns_is_replaced_and_nothing_is_lost(
    monkeypatch, ms_per_record
):
    undisturbed = Broker(_inputs())
    assert len(_run(undisturbed, None, monkeypatch, ms_per_record)) == 1
    assert undisturbed.offsets == {0: 600, 1: 600}

    broker = Broker(_inputs())
    producers = _run(broker, 5, monkeypatch, ms_per_record)  # batch 5: after snapshots
    assert len(producers) == 2, "the stuck producer was not replaced"
    assert producers[0].sends == 5
    assert broker.offsets == {0: 600, 1: 600}
    # Exactly what the undisturbed run committed: none lost, none twice.
    assert Counter(broker.outputs) == Counter(undisturbed.outputs)
    assert {topic for topic, _ in broker.outputs} >= {"alerts", "dlq"}
