"""Snapshots as records of a compacted topic: chunking, slots, tombstones, integrity."""

from __future__ import annotations

import os

import orjson
import pytest

from detectors.scoring import EventScorer, ScoringConfig
from stream.checkpoint import (
    CHUNK_BYTES,
    SnapshotAssembler,
    SnapshotError,
    SnapshotWriter,
    StateRecord,
    decode_state,
    encode_state,
    fingerprint,
)
from stream.traffic import TrafficConfig, generate

TOPIC, PARTITION = "events", 3


def compacted(records: list[StateRecord]) -> SnapshotAssembler:
    found = SnapshotAssembler()
    found.add_all(records)
    return found


def test_a_snapshot_round_trips_through_its_records():
    writer = SnapshotWriter(TOPIC, PARTITION, "fp")
    blob = os.urandom(3 * CHUNK_BYTES + 17)
    manifest, records = writer.records(1234, blob)
    assert manifest.chunks == 4
    assert manifest.offset == 1234
    assert manifest.generation == 1
    assert all(len(r.value or b"") <= CHUNK_BYTES + 8 for r in records)
    restored = compacted(records).snapshot(TOPIC, PARTITION)
    assert restored is not None
    assert restored.blob == blob
    assert restored.manifest == manifest
    assert compacted(records).snapshot(TOPIC, PARTITION + 1) is None


def test_a_half_written_snapshot_leaves_the_previous_one_usable():
    writer = SnapshotWriter(TOPIC, PARTITION, "fp")
    _, first = writer.records(10, b"first state" * 1000)
    _, second = writer.records(20, os.urandom(2 * CHUNK_BYTES))
    torn = first + second[:-2]  # the crash hit before the second manifest
    restored = compacted(torn).snapshot(TOPIC, PARTITION)
    assert restored is not None
    assert restored.manifest.offset == 10
    assert restored.blob == b"first state" * 1000


def test_shorter_snapshots_delete_their_slots_surplus_chunks():
    writer = SnapshotWriter(TOPIC, PARTITION, "fp")
    log: list[StateRecord] = []
    for offset, size in [(1, 3 * CHUNK_BYTES), (2, 10), (3, 10), (4, 10)]:
        log += writer.records(offset, os.urandom(size))[1]
    found = compacted(log)
    # Two slots of one chunk each, and the manifest: nothing stale survives compaction.
    assert found.slot_chunks(TOPIC, PARTITION) == {0: 1, 1: 1}
    restored = found.snapshot(TOPIC, PARTITION)
    assert restored is not None
    assert restored.manifest.offset == 4


def test_a_writer_resumes_after_what_the_topic_holds():
    first = SnapshotWriter(TOPIC, PARTITION, "fp")
    log = first.records(5, os.urandom(2 * CHUNK_BYTES))[1]
    log += first.records(6, b"x")[1]
    resumed = SnapshotWriter.resume(TOPIC, PARTITION, "fp", compacted(log))
    assert resumed.generation == 2
    log += resumed.records(7, b"y")[1]  # generation 3: slot 1, over generation 1's chunks
    found = compacted(log)
    assert found.slot_chunks(TOPIC, PARTITION) == {0: 1, 1: 1}
    restored = found.snapshot(TOPIC, PARTITION)
    assert restored is not None
    assert restored.blob == b"y"
    assert restored.manifest.generation == 3


def test_corrupt_or_mixed_chunks_are_refused():
    writer = SnapshotWriter(TOPIC, PARTITION, "fp")
    _, records = writer.records(1, os.urandom(2 * CHUNK_BYTES))
    flipped = [*records]
    value = flipped[1].value or b""
    flipped[1] = StateRecord(flipped[1].key, value[:-1] + bytes([value[-1] ^ 1]))
    with pytest.raises(SnapshotError, match="checksum"):
        compacted(flipped).snapshot(TOPIC, PARTITION)
    with pytest.raises(SnapshotError, match="missing"):
        compacted([records[0], records[-1]]).snapshot(TOPIC, PARTITION)


def test_a_restored_scorer_continues_exactly_like_the_original():
    config = ScoringConfig(warmup=20, window_size=30, quantile=0.9)
    events = [orjson.loads(r.value) for r in generate(TrafficConfig(events=3_000, seed=3))]
    original = EventScorer(config)
    original.score_batch(events[:1_500])
    copy = decode_state(encode_state(original))
    assert copy.score_batch(events[1_500:]) == original.score_batch(events[1_500:])


def test_the_fingerprint_follows_the_configuration():
    assert fingerprint(ScoringConfig()) == fingerprint(ScoringConfig())
    assert fingerprint(ScoringConfig()) != fingerprint(ScoringConfig(quantile=0.99))
