"""Each input partition's state (its model), where it stands, and its snapshots.

The model is whatever one partition's processing keeps: the service's ``EventScorer``,
the pattern stage's ``PartitionPatterns``. It must pickle, and it must depend only on the
partition's records in offset order, which is what makes the silent replay below exact.

Restore, on assignment: take the partition's latest snapshot (state as of input offset
``S``) and the group's committed offset ``C`` (outputs durable up to there; ``S <= C``
under exactly-once, since snapshots and offsets commit in the same transactions). Resume
reading at ``S`` and re-process ``[S, C)`` silently: processing is deterministic, so this
rebuilds the state of ``C`` exactly without repeating any output. With no snapshot (first
start, or a changed configuration) ``S`` is the partition's first offset, so the state is
still what an uninterrupted run would hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from stream.checkpoint import (
    SnapshotAssembler,
    SnapshotError,
    SnapshotWriter,
    StateRecord,
    decode_state,
    encode_state,
)

log = structlog.get_logger("vigil.state")

ReadPartition = Callable[[int], SnapshotAssembler]

M = TypeVar("M")


@dataclass
class PartitionState(Generic[M]):
    topic: str
    partition: int
    model: M
    writer: SnapshotWriter | None = None
    next_offset: int = -1  # the next input offset the model has not seen; -1: unknown
    replay_until: int = -1  # outputs of offsets below this are already durable
    since_snapshot: int = 0
    restoring_since: float | None = None  # monotonic time of assignment, until caught up

    def silent(self, offset: int) -> bool:
        """Re-processing what was already output: update the state, produce nothing."""
        return offset < self.replay_until

    def take(self, offset: int) -> bool | None:
        """``seen``, ``advance`` and ``silent`` in one call, as the per-record passes want
        them: None if ``offset`` is in the state already; otherwise the state advances past
        it and the answer is whether its outputs were made already."""
        if 0 <= offset < self.next_offset:
            return None
        self.next_offset = offset + 1
        self.since_snapshot += 1
        return offset < self.replay_until

    @property
    def caught_up(self) -> bool:
        return self.next_offset >= self.replay_until

    def snapshot(self) -> tuple[int, list[StateRecord]]:
        """The records of a snapshot of the state now; returns its compressed size too."""
        assert self.writer is not None, "snapshots need a writer"
        blob = encode_state(self.model)
        _, records = self.writer.records(self.next_offset, blob)
        self.since_snapshot = 0
        return len(blob), records


@dataclass(frozen=True, slots=True)
class Resumed(Generic[M]):
    state: PartitionState[M]
    start_offset: int | None  # where to resume reading; None: the group's position
    snapshot_bytes: int


def resume(
    topic: str,
    partition: int,
    *,
    fresh: Callable[[int], M],
    fingerprint: str,
    read: ReadPartition | None,
    committed: int,
    low_watermark: int,
) -> Resumed[M]:
    """The state of an assigned partition, from its snapshot if there is a usable one.

    ``committed`` is the group's offset (negative: none); ``read`` is None when state is
    not kept (replays, tests), and then everything starts fresh at the group's position.
    """
    if read is None:
        return Resumed(PartitionState(topic, partition, fresh(partition)), None, 0)
    # The restore's time counts from here: reading and decoding the snapshot are most of it.
    began = time.monotonic()
    found = read(partition)
    writer = SnapshotWriter.resume(topic, partition, fingerprint, found)
    restored = None
    try:
        restored = found.snapshot(topic, partition)
    except SnapshotError as exc:
        log.warning("state.snapshot_unusable", partition=partition, reason=str(exc))
    model: M | None = None
    start = low_watermark
    size = 0
    if restored is not None and restored.manifest.fingerprint != fingerprint:
        log.warning("state.config_changed", partition=partition, rebuilding_from=low_watermark)
    elif restored is not None:
        try:
            model = decode_state(restored.blob)
            start = restored.manifest.offset
            size = restored.manifest.size
        except Exception as exc:  # e.g. a class changed shape between releases
            log.warning("state.undecodable", partition=partition, reason=repr(exc))
    if model is None:
        model = fresh(partition)
        if committed < 0:
            start = low_watermark
    state = PartitionState(
        topic,
        partition,
        model,
        writer,
        next_offset=start,
        replay_until=max(committed, start),
        restoring_since=began,
    )
    return Resumed(state, start, size)
