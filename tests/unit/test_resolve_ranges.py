"""A replay's offset ranges stay within what the topic holds now."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from confluent_kafka import TopicPartition

from stream.topic_reader import resolve_ranges

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
