"""Bounded reads of a topic: a fixed offset range per partition, fixed when the read
starts, in a throwaway consumer group that commits nothing.

``BoundedSource`` feeds the service for a replay; ``read_topic`` is the same read collected
into a list, for the demo's summary and for tests that look at what the service wrote.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from stream.kafka_io import Record
from stream.range_filter import filter_to_ranges


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


class ReplayError(ValueError):
    """A replay range or option is invalid; the message says which."""


class ReplayOptionError(ReplayError):
    """An option that cannot work, found once the broker is asked (a topic that does not
    exist, a warm-up that starts after the range): exit 2, as for a malformed one."""


def parse_bound(text: str) -> int | dict[int, int]:
    """``2026-11-02T10:00:00Z`` (event time, ms) or ``0:100,1:250`` (offsets per partition)."""
    if ":" in text and "T" not in text:
        try:
            pairs = (item.split(":") for item in text.split(","))
            return {int(p): int(o) for p, o in pairs}
        except ValueError as exc:
            raise ReplayError(f"bad offsets {text!r}: expected PARTITION:OFFSET,...") from exc
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError as exc:
        raise ReplayError(
            f"bad time {text!r}: expected RFC 3339, e.g. 2026-11-02T10:00:00Z"
        ) from exc


def _offsets_at(
    consumer: Consumer, topic: str, partitions: list[int], bound: Any
) -> dict[int, int]:
    if isinstance(bound, dict):
        return {p: bound.get(p, 0) for p in partitions}
    wanted = [TopicPartition(topic, p, bound) for p in partitions]
    found = consumer.offsets_for_times(wanted, timeout=10)
    result = {}
    for tp in found:
        if tp.offset is None or tp.offset < 0:  # no record at or after the time: the end
            result[tp.partition] = consumer.get_watermark_offsets(tp, timeout=10)[1]
        else:
            result[tp.partition] = tp.offset
    return result


def resolve_ranges(
    consumer: Consumer, topic: str, start: int | dict[int, int] | None, end: Any
) -> dict[int, tuple[int, int]]:
    """[start, end) offsets of every partition of ``topic``, within what the topic holds
    now: the end capped at its end (so a range is fixed when it is resolved), the start
    raised to its earliest offset (a read from below it would be reset to the end by the
    consumer, and the range read as empty)."""
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:
        raise ReplayOptionError(f"topic {topic!r} not found")
    partitions = sorted(meta.partitions)
    highs = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions
    }
    starts = (
        {p: low for p, (low, _) in highs.items()}
        if start is None
        else _offsets_at(consumer, topic, partitions, start)
    )
    ends = (
        {p: high for p, (_, high) in highs.items()}
        if end is None
        else _offsets_at(consumer, topic, partitions, end)
    )
    ranges = {}
    for p in partitions:
        low, high = highs[p]
        start_offset = max(starts[p], low)
        ranges[p] = (start_offset, max(start_offset, min(ends[p], high)))
    return ranges


def plan_ranges(
    bootstrap: str, topic: str, start: int | dict[int, int] | None, end: Any
) -> dict[int, tuple[int, int]]:
    """:func:`resolve_ranges` with a consumer of its own, closed before it returns."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"vigil-plan-{uuid.uuid4()}"})
    try:
        return resolve_ranges(consumer, topic, start, end)
    finally:
        consumer.close()


@dataclass
class BoundedSource:
    """Reads [start, end) of each partition, fixed when the replay starts; commits nothing."""

    bootstrap: str
    topic: str
    start: int | dict[int, int] | None = None
    end: int | dict[int, int] | None = None
    exhausted: bool = False
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    # Only these partitions (a parallel replay's share); None: all of the topic's.
    partitions: frozenset[int] | None = None
    # The ranges were planned already (``over``): they must still be what the topic holds.
    planned: bool = False
    _consumer: Consumer | None = None
    _pending: set[int] = field(default_factory=set)
    _next: dict[int, int] = field(default_factory=dict)  # next offset of each partition

    @classmethod
    def over(
        cls, bootstrap: str, topic: str, ranges: Mapping[int, tuple[int, int]]
    ) -> BoundedSource:
        """A source of exactly ``ranges`` ([start, end) by partition, as planned already):
        a parallel worker's share, a warm-up, a replay whose range was fixed beforehand."""
        return cls(
            bootstrap,
            topic,
            start={p: a for p, (a, _) in ranges.items()},
            end={p: b for p, (_, b) in ranges.items()},
            partitions=frozenset(ranges),
            planned=True,
        )

    def subscribe(self, topics: list[str], **kwargs: Any) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                # A throwaway group: replay must not touch the live group's offsets.
                "group.id": f"vigil-replay-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                # An end-of-partition event ends a poll at once: the last, partial batch of
                # a range is not kept waiting for records that will not come until the
                # poll's timeout.
                "enable.partition.eof": True,
                # Records retention deletes while the replay reads them: an error, not a
                # jump to the end (librdkafka's default), which would skip them silently.
                "auto.offset.reset": "error",
            }
        )
        self._consumer = consumer
        self.ranges = resolve_ranges(consumer, self.topic, self.start, self.end)
        if self.partitions is not None:
            self.ranges = {p: r for p, r in self.ranges.items() if p in self.partitions}
        if self.planned:
            self._check_still_held()
        todo = [TopicPartition(self.topic, p, a) for p, (a, b) in self.ranges.items() if a < b]
        self._pending = {tp.partition for tp in todo}
        self._next = {p: a for p, (a, _) in self.ranges.items()}
        self.exhausted = not todo
        consumer.assign(todo)
        on_assign: Callable[..., None] | None = kwargs.get("on_assign")
        if on_assign is not None:
            on_assign(consumer, todo)

    def _check_still_held(self) -> None:
        """A planned range whose start retention has deleted since it was planned would be
        raised to the earliest offset now, quietly: a warm-up or a worker's share would then
        start from other records than the plan's. ``ReplayError`` instead."""
        assert isinstance(self.start, dict)
        assert isinstance(self.end, dict)
        for partition in sorted(self.partitions or ()):
            wanted = (self.start[partition], self.end[partition])
            held = self.ranges.get(partition)
            if wanted[0] < wanted[1] and held != wanted:
                raise ReplayError(
                    f"partition {partition} of {self.topic} no longer holds the planned "
                    f"offsets {wanted[0]}-{wanted[1]} (now {held}): retention deleted records "
                    "since the replay started; run it again"
                )

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        assert self._consumer is not None
        if self.exhausted:
            # Nothing is assigned any more: a poll would only sit out its timeout.
            return []
        # Ask for no more than can come: a poll waits for all it asks for (or its timeout),
        # so the last, partial batch of a range would sit out the timeout. What can come:
        # the records left in each range and one end-of-partition event per partition.
        # (Transaction markers take offsets but come as no message: a range over them
        # ends on a position check after a timed-out poll, as before.)
        left = sum(self.ranges[p][1] - self._next[p] for p in self._pending)
        wanted = max(1, min(num_messages, left + len(self._pending)))
        done = filter_to_ranges(self._consumer.consume(wanted, timeout), self.ranges, self._next)
        for partition, reason in done.gone:
            raise ReplayError(
                f"partition {partition} of {self.topic}: records of the range were deleted "
                f"while the replay read them (retention): {reason}; run it again"
            )
        kept: list[Message] = done.kept
        # At the end of what the topic holds: done, if the range ends there too (its last
        # offset can be a transaction marker, which no record shows).
        for partition, position in done.ends_seen:
            if partition in self._pending:
                self._finish_at(partition, position)
        for partition in done.completed:
            self._finish(partition)
        if not kept and self._pending:
            # Transaction markers occupy offsets: a position at the end also finishes.
            positions = self._consumer.position(
                [TopicPartition(self.topic, p) for p in sorted(self._pending)]
            )
            for tp in positions:
                if tp.offset is not None:
                    self._finish_at(tp.partition, tp.offset)
        return kept

    def _finish_at(self, partition: int, position: int) -> None:
        if position >= self.ranges[partition][1]:
            self._finish(partition)

    def _finish(self, partition: int) -> None:
        if partition in self._pending:
            self._pending.discard(partition)
            assert self._consumer is not None
            self._consumer.incremental_unassign([TopicPartition(self.topic, partition)])
        self.exhausted = not self._pending

    def commit(self, **kwargs: Any) -> list[TopicPartition]:
        return []  # a replay leaves no trace in any group

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(self._pending)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        assert self._consumer is not None
        return self._consumer.position(partitions)

    def get_watermark_offsets(self, partition: TopicPartition, **kwargs: Any) -> Any:
        assert self._consumer is not None
        return self._consumer.get_watermark_offsets(partition, **kwargs)

    def committed(self, partitions: list[TopicPartition], **kwargs: Any) -> Any:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def pause(self, partitions: list[TopicPartition]) -> None:
        assert self._consumer is not None
        self._consumer.pause(partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        assert self._consumer is not None
        self._consumer.resume(partitions)

    def seek(self, partition: TopicPartition) -> None:
        # Only a service rewinding after an aborted transaction seeks; replays keep no
        # transactions, so this is here for the protocol's sake.
        assert self._consumer is not None
        self._consumer.seek(partition)
        if partition.partition in self._next and partition.offset >= 0:
            self._next[partition.partition] = partition.offset


def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 60.0) -> list[Record]:
    """Every committed record now in ``topic``, in partition then offset order."""
    source = BoundedSource(bootstrap, topic)
    source.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not source.exhausted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: not at its end after {timeout_s}s")
            records.extend(Record.of(m) for m in source.consume(1000, 0.5) if m.error() is None)
    finally:
        source.close()
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
