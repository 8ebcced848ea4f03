"""Event-time alignment across input partitions: no partition runs far ahead of the others.

Scores never depend on it: each input partition has its own scorer, fed in its own order.
What depends on it is everything downstream that meets several partitions' events on one
key: the pattern stage (observations keyed by /24, device, ...) resolves a pattern once
event time has moved ``quiet_s`` past it and trusts watermarks up to ``lateness_s``. When
the service catches up on a backlog (after downtime, or the demo, which produces its
traffic first), librdkafka hands over each partition in fetches of a megabyte, which in
sparse traffic are hours of event time apart. Hours-late observations then reach patterns
already resolved, open a second episode under the same id, and split incidents.

So, as Kafka Streams synchronises its tasks' inputs by record timestamp: the records in
hand are released merged in record-time order (the producer's timestamp; Vigil's
generators and sinks set it to the event time), each partition's in offset order, and
only up to ``max_skew_ms`` past the next record of any partition that has records still to
come but none in hand (its next one is no earlier than its last). The caller says which
partitions have records still to come (``more``: from its consumer lag); one never heard
from bounds everything, since its first record may be the earliest. The rest are held in
memory, in order, and their partitions paused (librdkafka stops fetching them and purges
what it prefetched; on resume it fetches from after the last record it handed over, which
is where the held records end), so the hold is bounded, and the partitions that bound it
keep fetching. Held records are not processed, so their offsets are not committed: after
a crash or a revocation they are read again. If a partition in ``more`` never delivers
(lag misread, a broker away), the caller drops it from ``more`` after a short wait
rather than stall the others. Records without a timestamp and consumer errors are
released at once.

Pure: records in, records out; the caller pauses and resumes what :meth:`paused` says.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

PartitionKey = tuple[str, int]


class RecordLike(Protocol):
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> object | None: ...


R = TypeVar("R", bound=RecordLike)


def _ts(record: RecordLike) -> int:
    kind, ts = record.timestamp()
    return ts if kind != 0 and ts >= 0 else -1  # 0: TIMESTAMP_NOT_AVAILABLE


class EventTimeAlignment(Generic[R]):
    """Holds back records that run ahead of the other partitions (see the module docstring).

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class R:
    ...     p: int
    ...     t: int
    ...     def topic(self): return "events"
    ...     def partition(self): return self.p
    ...     def timestamp(self): return (1, self.t)
    ...     def error(self): return None
    >>> align = EventTimeAlignment(max_skew_ms=10)
    >>> more = {("events", 1)}  # partition 1 has records still to come, 0 has not
    >>> out = align.release([R(0, 0), R(0, 5), R(0, 50), R(1, 1), R(1, 2)], more)
    >>> [(r.p, r.t) for r in out], align.paused()
    ([(0, 0), (1, 1), (1, 2), (0, 5)], {('events', 0)})
    >>> [(r.p, r.t) for r in align.release([R(1, 30)], more)], align.paused()
    ([(1, 30)], {('events', 0)})
    >>> [(r.p, r.t) for r in align.release([R(1, 45)], more)], align.paused()
    ([(1, 45), (0, 50)], set())
    """

    def __init__(self, max_skew_ms: int, pause_at: int = 1) -> None:
        if max_skew_ms < 0:
            raise ValueError(f"max_skew_ms must be >= 0, got {max_skew_ms}")
        if pause_at < 1:
            raise ValueError(f"pause_at must be >= 1, got {pause_at}")
        self.max_skew_ms = max_skew_ms
        self.pause_at = pause_at
        self._held: dict[PartitionKey, deque[R]] = {}
        self._paused: set[PartitionKey] = set()
        self._last: dict[PartitionKey, int] = {}  # record time of the last one released

    @property
    def held(self) -> int:
        """Records in hand, not yet released."""
        return sum(len(q) for q in self._held.values())

    def paused(self) -> set[PartitionKey]:
        """The partitions to keep paused: from when they hold ``pause_at`` records until
        they hold none (pausing purges librdkafka's prefetched records, which a resume
        fetches again: pausing at the first held record would do that at every step)."""
        held = self._held
        self._paused = {k for k in self._paused if k in held}
        self._paused |= {k for k, q in held.items() if len(q) >= self.pause_at}
        return set(self._paused)

    def release(self, records: Sequence[R], more: Collection[PartitionKey] = ()) -> list[R]:
        """Records to process now, from those held and ``records`` (one consume's worth,
        each partition's in offset order): consumer errors first, then records in
        record-time order, each partition's in offset order, up to ``max_skew_ms`` past
        the next record of any partition in ``more`` (those with records still to come
        that are not in hand, or not all: the caller knows from its lag; one that never
        released a record bounds everything, as its first may be the earliest).
        """
        released: list[R] = []
        queues = self._held
        for record in records:
            topic, partition = record.topic(), record.partition()
            if record.error() is not None or topic is None or partition is None:
                released.append(record)
                continue
            key = (topic, partition)
            queue = queues.get(key)
            if queue is None:
                queue = queues[key] = deque()
            queue.append(record)
        last = self._last
        skew = self.max_skew_ms
        limit = _NO_LIMIT
        for key in more:
            if key not in queues:  # nothing in hand: its next record is after its last
                limit = min(limit, last.get(key, _NEVER) + skew)
        heap = [(_ts(queue[0]), key) for key, queue in queues.items()]
        heapq.heapify(heap)
        while heap:
            ts, key = heap[0]
            if ts > limit:
                break
            queue = queues[key]
            record = queue.popleft()
            released.append(record)
            if ts >= 0:
                last[key] = ts
            if queue:
                heapq.heapreplace(heap, (_ts(queue[0]), key))
                continue
            heapq.heappop(heap)
            del queues[key]
            if key in more:  # its next record, not in hand, is no earlier than this one
                limit = min(limit, last.get(key, _NEVER) + skew)
        return released

    def drop(self, partitions: Iterable[PartitionKey]) -> None:
        """Forget ``partitions`` and what is held of them (revoked or lost: read again by
        the next owner from the committed offsets)."""
        for key in partitions:
            self._held.pop(key, None)
            self._last.pop(key, None)
            self._paused.discard(key)


_NO_LIMIT = 2**63
_NEVER = -(2**62)  # no record released yet: bounds everything
