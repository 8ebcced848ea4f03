"""Each input partition's scorer, where it stands, and its snapshots.

Restore, on assignment: take the partition's latest snapshot (state as of input offset
``S``) and the group's committed offset ``C`` (outputs durable up to there; ``S <= C``
under exactly-once, since snapshots and offsets commit in the same transactions). Resume
reading at ``S`` and re-score ``[S, C)`` silently: scoring is deterministic, so this
rebuilds the state of ``C`` exactly without repeating any alert. With no snapshot (first
start, or a changed configuration) ``S`` is the partition's first offset, so the state is
still what an uninterrupted run would hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from detectors.scoring import EventScorer
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


@dataclass
class PartitionState:
    topic: str
    partition: int
    scorer: EventScorer
    writer: SnapshotWriter | None = None
    next_offset: int = -1  # the next input offset the scorer has not seen; -1: unknown
    replay_until: int = -1  # outputs of offsets below this are already durable
    since_snapshot: int = 0
    restoring_since: float | None = None  # monotonic time of assignment, until caught up

    def silent(self, offset: int) -> bool:
        """Re-scoring what was already output: update the state, produce nothing."""
        return offset < self.replay_until

    def seen(self, offset: int) -> bool:
        """Already in the state (a record fetched again after a seek)."""
        return 0 <= offset < self.next_offset

    def advance(self, offset: int) -> None:
        self.next_offset = offset + 1
        self.since_snapshot += 1

    @property
    def caught_up(self) -> bool:
        return self.next_offset >= self.replay_until

    def snapshot(self) -> tuple[int, list[StateRecord]]:
        """The records of a snapshot of the state now; returns its compressed size too."""
        assert self.writer is not None, "snapshots need a writer"
        blob = encode_state(self.scorer)
        _, records = self.writer.records(self.next_offset, blob)
        self.since_snapshot = 0
        return len(blob), records


@dataclass(frozen=True, slots=True)
class Resumed:
    state: PartitionState
    start_offset: int | None  # where to resume reading; None: the group's position
    snapshot_bytes: int


def resume(
    topic: str,
    partition: int,
    *,
    fresh: Callable[[int], EventScorer],
    fingerprint: str,
    read: ReadPartition | None,
    committed: int,
    low_watermark: int,
) -> Resumed:
    """The state of an assigned partition, from its snapshot if there is a usable one.

    ``committed`` is the group's offset (negative: none); ``read`` is None when state is
    not kept (replays, tests), and then everything starts fresh at the group's position.
    """
    if read is None:
        return Resumed(PartitionState(topic, partition, fresh(partition)), None, 0)
    found = read(partition)
    writer = SnapshotWriter.resume(topic, partition, fingerprint, found)
    restored = None
    try:
        restored = found.snapshot(topic, partition)
    except SnapshotError as exc:
        log.warning("state.snapshot_unusable", partition=partition, reason=str(exc))
    scorer = None
    start = low_watermark
    size = 0
    if restored is not None and restored.manifest.fingerprint != fingerprint:
        log.warning("state.config_changed", partition=partition, rebuilding_from=low_watermark)
    elif restored is not None:
        try:
            scorer = decode_state(restored.blob)
            start = restored.manifest.offset
            size = restored.manifest.size
        except Exception as exc:  # e.g. a class changed shape between releases
            log.warning("state.undecodable", partition=partition, reason=repr(exc))
    if scorer is None:
        scorer = fresh(partition)
        if committed < 0:
            start = low_watermark
    state = PartitionState(
        topic,
        partition,
        scorer,
        writer,
        next_offset=start,
        replay_until=max(committed, start),
        restoring_since=time.monotonic(),
    )
    return Resumed(state, start, size)
