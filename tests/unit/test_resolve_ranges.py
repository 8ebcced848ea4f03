"""A replay's offset ranges stay within what the topic holds now, or fail if planned ranges no
longer are."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

import stream.topic_reader as topic_reader
from stream.topic_reader import BoundedSource, ReplayError, resolve_ranges

# Partition 0 holds offsets [100, 500) (retention removed those below 100), 1 holds [0, 300).
WATERMARKS = {0: (100, 500), 1: (0, 300)}


class FakeConsumer:
    def list_topics(self, topic, timeout):
        meta = SimpleNamespace(partitions={0: None, 1: None}, error=None)
        return SimpleNamespace(topics={topic: meta})

    def get_watermark_offsets(self, tp, timeout):
        return WATERMARKS[tp.partition]

    def offsets_for_times(self, wanted, timeout):
        # The first record at or after the time: say offset 50 of each partition.
        return [TopicPartition(tp.topic, tp.partition, 50) for tp in wanted]


CONSUMER: Any = FakeConsumer()  # what resolve_ranges asks of a confluent_kafka.Consumer


def test_a_start_below_the_earliest_offset_is_raised_to_it():
    # Read from below its earliest offset, a consumer is reset to the end (librdkafka's
    # default), and the range would be read as empty.
    assert resolve_ranges(CONSUMER, "t", {0: 20, 1: 20}, None) == {
        0: (100, 500),
        1: (20, 300),
    }
    assert resolve_ranges(CONSUMER, "t", 1_700_000_000_000, None) == {
        0: (100, 500),
        1: (50, 300),
    }


def test_an_end_is_capped_at_the_topic_end_and_never_before_the_start():
    assert resolve_ranges(CONSUMER, "t", None, {0: 900, 1: 200}) == {
        0: (100, 500),
        1: (0, 200),
    }
    # Offsets given for partition 0 only: partition 1's end is 0, an empty range; and an
    # end below partition 0's earliest offset leaves it empty too, not inverted.
    assert resolve_ranges(CONSUMER, "t", None, {0: 40}) == {0: (100, 100), 1: (0, 0)}


class AssignedConsumer(FakeConsumer):
    def __init__(self, config):
        self.assigned = None

    def assign(self, partitions):
        self.assigned = partitions


def test_a_planned_range_that_retention_has_cut_since_fails_instead_of_shrinking(monkeypatch):
    monkeypatch.setattr(topic_reader, "Consumer", AssignedConsumer)
    # Planned while partition 0 still held offset 60; it now starts at 100.
    cut = BoundedSource.over("b", "t", {0: (60, 400), 1: (10, 300)})
    with pytest.raises(ReplayError, match=r"partition 0 of t no longer holds .* 60-400"):
        cut.subscribe(["t"])
    # Still held, or empty (nothing to read, nothing lost): read as planned.
    for ranges in ({0: (100, 400), 1: (10, 300)}, {0: (60, 60), 1: (10, 300)}):
        source = BoundedSource.over("b", "t", ranges)
        source.subscribe(["t"])
        consumer: Any = source._consumer
        assert {tp.partition: tp.offset for tp in consumer.assigned} == {
            p: a for p, (a, b) in ranges.items() if a < b
        }
    # Not planned beforehand (a one-process replay's own bounds): raised, as always.
    raised = BoundedSource("b", "t", {0: 20, 1: 20}, None)
    raised.subscribe(["t"])
    assert raised.ranges == {0: (100, 500), 1: (20, 300)}


class FetchingConsumer(AssignedConsumer):
    """Answers a fetch with the error librdkafka gives (auto.offset.reset "error") once
    retention has deleted the offset the consumer stands at."""

    def consume(self, num_messages, timeout):
        gone = KafkaError(KafkaError._AUTO_OFFSET_RESET, "Offset out of range")
        return [Message(topic="t", partition=1, offset=120, error=gone)]


def test_records_deleted_while_they_are_read_fail_the_replay(monkeypatch):
    monkeypatch.setattr(topic_reader, "Consumer", FetchingConsumer)
    for source in (BoundedSource.over("b", "t", {1: (10, 300)}), BoundedSource("b", "t")):
        source.subscribe(["t"])
        with pytest.raises(ReplayError, match=r"partition 1 of t: records of the range were"):
            source.consume(100, 1.0)
