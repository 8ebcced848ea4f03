"""The partitions one group member owns, each with its state, kept across rebalances and
restarts: restored on assignment, snapshotted every N records and on revoke, rewound after
an aborted transaction. Any stateful consumer loop uses it (``vigil patterns``; the
detector service keeps the same logic in stream/service.py).

A partition's model (``M``) is whatever its processing keeps; it must pickle and depend
only on the partition's records in offset order (stream/partition_state.py says why).
The loop around it does, per batch::

    state = owned.get(record.topic, record.partition)
    silent = state.take(record.offset)          # advances past the record
    if silent is None: skip                     # fetched again after a seek
    ... update state.model; produce outputs only if not silent
    owned.snapshot_due(consumer, every, ...)    # inside the batch's transaction
    delivery.commit(consumer, owned.offsets_to_commit(partitions advanced))
    owned.finish_restores()

and on ``TransactionAbortedError`` calls ``owned.rewind(consumer)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import structlog
from confluent_kafka import KafkaException, TopicPartition

from stream.gc_tuning import freeze_long_lived
from stream.partition_state import PartitionState, ReadPartition, resume
from stream.state_store import produce_state

if TYPE_CHECKING:
    from stream.delivery import Delivery
    from stream.service import ConsumerLike

log = structlog.get_logger("vigil.state")

M = TypeVar("M")
Key = tuple[str, int]


class StateObserver(Protocol):
    """Where restore and snapshot figures go (metrics); every method may do nothing."""

    def restored(self, partition: int, seconds: float) -> None: ...
    def snapshotted(self, partition: int, size: int) -> None: ...
    def assigned(self, count: int) -> None: ...


class NoObserver:
    def restored(self, partition: int, seconds: float) -> None:
        pass

    def snapshotted(self, partition: int, size: int) -> None:
        pass

    def assigned(self, count: int) -> None:
        pass


class OwnedPartitions(Generic[M]):
    """The states of the partitions assigned to this member.

    ``read`` is None when no state is kept (bounded sources, unit tests with injected
    clients): then every partition starts fresh at the group's position and nothing is
    snapshotted.
    """

    def __init__(
        self,
        *,
        fresh: Callable[[int], M],
        fingerprint: str,
        read: ReadPartition | None,
        state_topic: str,
        restore_timeout_s: float,
        observer: StateObserver | None = None,
    ) -> None:
        self.fresh = fresh
        self.fingerprint = fingerprint
        self.read = read
        self.state_topic = state_topic
        self.restore_timeout_s = restore_timeout_s
        self.observer: StateObserver = observer or NoObserver()
        self.states: dict[Key, PartitionState[M]] = {}
        self._producer: Any = None
        self._delivery: Delivery | None = None

    def bind(self, producer: Any, delivery: Delivery) -> None:
        """The live clients snapshots are written with (set once run() made them)."""
        self._producer, self._delivery = producer, delivery

    @property
    def restoring(self) -> bool:
        return any(s.restoring_since is not None for s in self.states.values())

    def get(self, topic: str, partition: int) -> PartitionState[M]:
        state = self.states.get((topic, partition))
        if state is None:  # assigned without a callback: bounded sources, fakes
            state = PartitionState(topic, partition, self.fresh(partition))
            self.states[(topic, partition)] = state
        return state

    # -- partitions come and go ----------------------------------------------------------

    def assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """``on_assign``: restore each partition; with state kept, start reading each at
        its snapshot (librdkafka then skips its own assign)."""
        starts = self.restore(consumer, partitions)
        if self.read is not None:
            consumer.incremental_assign(starts)
        self.observer.assigned(len(self.states))

    def restore(
        self, consumer: ConsumerLike, partitions: list[TopicPartition]
    ) -> list[TopicPartition]:
        """Make each partition's state; returns where to start reading each one."""
        if not partitions:
            return []
        committed: dict[Key, int] = {}
        deadline = time.monotonic() + self.restore_timeout_s
        if self.read is not None:
            found = _until(deadline, lambda: consumer.committed(partitions, timeout=10))
            for tp in found:
                committed[(tp.topic, tp.partition)] = tp.offset if tp.offset is not None else -1
        starts = []
        for tp in partitions:
            topic, partition = tp.topic or "", tp.partition or 0
            low = 0
            if self.read is not None:
                low, _ = _until(deadline, partial(consumer.get_watermark_offsets, tp, timeout=10))
            resumed = resume(
                topic,
                partition,
                fresh=self.fresh,
                fingerprint=self.fingerprint,
                read=self.read,
                committed=committed.get((topic, partition), -1),
                low_watermark=low,
            )
            state = resumed.state
            self.states[(topic, partition)] = state
            self._finish_restore_if_caught_up(state)
            start = resumed.start_offset
            starts.append(TopicPartition(topic, partition, start if start is not None else -1001))
            log.info(
                "state.resumed",
                partition=partition,
                snapshot_bytes=resumed.snapshot_bytes,
                from_offset=start,
                replay_until=state.replay_until,
            )
        freeze_long_lived()  # the restored states: see stream/gc_tuning.py
        return starts

    def revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """``on_revoke``: every batch is committed before the next consume(), so nothing
        is pending; a last snapshot spares the next owner the re-processing."""
        keys = [(p.topic or "", p.partition or 0) for p in partitions]
        try:
            self.snapshot([self.states[k] for k in keys if k in self.states], consumer)
        except Exception:  # a snapshot only saves time; the next owner can re-process
            log.warning("state.snapshot_on_revoke_failed", exc_info=True)
        self.forget(keys)

    def forget(self, keys: Iterable[Key]) -> None:
        """``on_lost`` (another member may own them already: write nothing), and revoke."""
        for key in keys:
            self.states.pop(key, None)
        self.observer.assigned(len(self.states))

    def rewind(self, consumer: ConsumerLike) -> None:
        """After an aborted transaction the in-memory state is ahead of what is durable:
        restore every partition from its snapshot and read again from there."""
        tps = [TopicPartition(t, p) for (t, p) in self.states]
        log.warning("state.rewinding", partitions=[tp.partition for tp in tps])
        for start in self.restore(consumer, tps):
            if start.offset >= 0:
                consumer.seek(start)

    # -- per batch -----------------------------------------------------------------------

    def snapshot_due(self, consumer: Any, every: int) -> None:
        """Snapshot, within the open batch's transaction, partitions ``every`` records on."""
        due = [s for s in self.states.values() if s.since_snapshot >= every]
        self.snapshot(due, consumer, within_batch=True)

    def snapshot(
        self, states: list[PartitionState[M]], consumer: Any, *, within_batch: bool = False
    ) -> None:
        """Write snapshots of ``states``; inside a batch they join its transaction."""
        states = [s for s in states if s.writer is not None and s.since_snapshot > 0]
        out = self._delivery
        if not states or self._producer is None or out is None:
            return
        if not within_batch:
            out.begin()
        for state in states:
            started = time.monotonic()
            size, records = state.snapshot()
            produce_state(
                self._producer, self.state_topic, state.partition, records, out.tracker.callback
            )
            for _ in records:
                out.tracker.sent()
            self.observer.snapshotted(state.partition, size)
            log.info(
                "state.snapshot",
                partition=state.partition,
                offset=state.next_offset,
                bytes=size,
                seconds=round(time.monotonic() - started, 3),
            )
        if not within_batch:
            out.commit(consumer, [])

    def offsets_to_commit(self, advanced: Iterable[tuple[str, int]]) -> list[TopicPartition]:
        """After a batch that advanced the ``advanced`` partitions: each one's next offset
        (one past the last record it processed; records only advance it)."""
        offsets = []
        for topic, partition in sorted(set(advanced)):
            state = self.states[(topic, partition)]
            # Never move a committed offset back: [S, C) was output before.
            if state.next_offset > state.replay_until:
                offsets.append(TopicPartition(topic, partition, state.next_offset))
        return offsets

    def finish_restores(self) -> None:
        for state in self.states.values():
            self._finish_restore_if_caught_up(state)

    def _finish_restore_if_caught_up(self, state: PartitionState[M]) -> None:
        if state.restoring_since is not None and state.caught_up:
            seconds = time.monotonic() - state.restoring_since
            state.restoring_since = None
            self.observer.restored(state.partition, seconds)
            log.info("state.restored", partition=state.partition, seconds=round(seconds, 3))


T = TypeVar("T")


def _until(deadline: float, call: Callable[[], T]) -> T:
    """``call()``, tried again while the broker is away (a restart, a leader moving: the
    metadata is briefly unknown) until ``deadline``; then its error."""
    while True:
        try:
            return call()
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("state.broker_unavailable", error=str(exc.args[0]))
            time.sleep(1.0)


def caught_up(consumer: ConsumerLike) -> bool:
    """Whether this member has read to the end of every partition assigned to it."""
    try:
        assigned = consumer.assignment()
        if not assigned:
            return True
        positions = consumer.position(assigned)
        unknown = [tp for tp in positions if tp.offset is None or tp.offset < 0]
        # Nothing consumed yet on a partition: where the group would start is the answer.
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in (consumer.committed(unknown, timeout=5) if unknown else [])
        }
        for tp in positions:
            low, high = consumer.get_watermark_offsets(tp, timeout=5)
            at = tp.offset
            if at is None or at < 0:
                at = committed.get((tp.topic, tp.partition), -1)
            if high > low and (at is None or at < high):
                return False
    except Exception:  # a broker hiccup here: try again on the next idle poll
        log.debug("caught_up.unknown", exc_info=True)
        return False
    return True
