"""Where a partition resumes after assignment, and what it re-scores silently."""

from __future__ import annotations

import time
from collections.abc import Callable

from detectors.scoring import EventScorer, ScoringConfig
from stream.checkpoint import SnapshotAssembler, SnapshotWriter, encode_state
from stream.partition_state import ReadPartition, resume

TOPIC = "events"


def fresh(partition: int) -> EventScorer:
    return EventScorer(ScoringConfig(seed=partition))


def topic_with(offset: int, scorer: EventScorer, fp: str = "fp") -> ReadPartition:
    found = SnapshotAssembler()
    found.add_all(SnapshotWriter(TOPIC, 0, fp).records(offset, encode_state(scorer))[1])
    return lambda partition: found


def empty_topic() -> Callable[[int], SnapshotAssembler]:
    return lambda partition: SnapshotAssembler()


def test_without_a_state_topic_everything_starts_fresh_at_the_group_position():
    resumed = resume(
        TOPIC, 0, fresh=fresh, fingerprint="fp", read=None, committed=7, low_watermark=0
    )
    assert resumed.start_offset is None
    assert resumed.state.restoring_since is None or resumed.state.caught_up


def test_no_snapshot_rebuilds_from_the_first_offset_silently_up_to_the_committed_one():
    resumed = resume(
        TOPIC, 0, fresh=fresh, fingerprint="fp", read=empty_topic(), committed=100, low_watermark=5
    )
    state = resumed.state
    assert resumed.start_offset == 5
    assert state.silent(5)
    assert state.silent(99)
    assert not state.silent(100)
    assert not state.caught_up


def test_a_snapshot_resumes_at_its_offset_and_replays_to_the_committed_one():
    scorer = fresh(0)
    resumed = resume(
        TOPIC, 0, fresh=fresh, fingerprint="fp", read=topic_with(80, scorer), committed=100,
        low_watermark=0,
    )  # fmt: skip
    assert resumed.start_offset == 80
    assert resumed.state.replay_until == 100
    assert resumed.snapshot_bytes > 0
    assert resumed.state.writer is not None
    assert resumed.state.writer.generation == 1


def test_a_snapshot_ahead_of_the_commit_resumes_live_at_its_offset():
    # At-least-once: the snapshot was delivered, the commit after it was not.
    resumed = resume(
        TOPIC, 0, fresh=fresh, fingerprint="fp", read=topic_with(120, fresh(0)), committed=100,
        low_watermark=0,
    )  # fmt: skip
    assert resumed.start_offset == 120
    assert resumed.state.caught_up


def test_a_snapshot_of_another_configuration_is_not_restored():
    resumed = resume(
        TOPIC, 0, fresh=fresh, fingerprint="new", read=topic_with(80, fresh(0), fp="old"),
        committed=100, low_watermark=3,
    )  # fmt: skip
    assert resumed.start_offset == 3
    assert resumed.snapshot_bytes == 0
    assert resumed.state.replay_until == 100


def test_seen_offsets_are_skipped_after_a_seek():
    resumed = resume(
        TOPIC, 0, fresh=fresh, fingerprint="fp", read=empty_topic(), committed=-1, low_watermark=0
    )
    state = resumed.state
    assert state.take(0) is False  # nothing was committed: outputs are to be made
    assert state.take(1) is False
    assert state.take(1) is None  # fetched again: skipped, the state does not move
    assert state.take(0) is None
    assert state.next_offset == 2
    assert state.since_snapshot == 2
    assert state.take(2) is False  # the next offset is new


def test_take_says_which_records_replay_silently_up_to_the_committed_offset():
    resumed = resume(
        TOPIC, 0, fresh=fresh, fingerprint="fp", read=empty_topic(), committed=3, low_watermark=0
    )
    state = resumed.state
    assert [state.take(offset) for offset in range(5)] == [True, True, True, False, False]
    assert state.caught_up


def test_the_restore_time_counts_the_snapshots_read(monkeypatch):
    # The restore-time metric runs from restoring_since: reading the state partition and
    # unpickling the snapshot are most of a restore, so it starts before them. A clock
    # that ticks at every reading tells before from after.
    ticks = iter(range(1, 1000))
    monkeypatch.setattr(time, "monotonic", lambda: float(next(ticks)))
    read_at = []
    topic = topic_with(80, fresh(0))

    def read(partition: int) -> SnapshotAssembler:
        read_at.append(time.monotonic())
        return topic(partition)

    resumed = resume(
        TOPIC, 0, fresh=fresh, fingerprint="fp", read=read, committed=100, low_watermark=0
    )
    assert resumed.state.restoring_since is not None
    assert resumed.state.restoring_since < read_at[0]
