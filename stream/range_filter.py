"""Which consumed messages of a replay fall inside its ranges (stream/topic_reader.py).

A replay reads [start, end) of each partition, so each poll's messages are sorted here:
those inside a range are kept, those past its end dropped, and the positions this reveals
(an end-of-partition event, a record at a range's last offset) are reported, for the
reader to finish those partitions. A partition whose next offset is gone (retention deleted
it while the replay read) is reported too, for the reader to fail the replay. Other
consumer errors are kept, for the service to judge.

Its own module because it runs for every record of a replay and is compiled with mypyc
(setup.py); the reader's bookkeeping around it stays in topic_reader.py.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

_PARTITION_EOF = KafkaError._PARTITION_EOF
# With auto.offset.reset "error": the consumer's offset is out of range.
_OFFSET_GONE = KafkaError._AUTO_OFFSET_RESET


class Filtered:
    """One poll, sorted."""

    def __init__(self) -> None:
        self.kept: list[Any] = []
        # (partition, offset) of each end-of-partition event, in order: the partition's
        # position then.
        self.ends_seen: list[tuple[int, int]] = []
        # Partitions whose range's last offset was read, in order.
        self.completed: list[int] = []
        # Partitions whose next offset the topic no longer holds, with librdkafka's words.
        self.gone: list[tuple[int, str]] = []


def filter_to_ranges(
    messages: list[Any], ranges: dict[int, tuple[int, int]], next_offsets: dict[int, int]
) -> Filtered:
    """Sort ``messages`` by ``ranges`` ([start, end) by partition); ``next_offsets`` (by
    partition, the offset after the last record read) is updated as it goes."""
    done = Filtered()
    for msg in messages:
        error = msg.error()
        partition: int | None = msg.partition()
        offset: int | None = msg.offset()
        if error is not None and error.code() == _PARTITION_EOF:
            if partition is not None and offset is not None:
                done.ends_seen.append((partition, offset))
            continue
        if error is not None and error.code() == _OFFSET_GONE:
            done.gone.append((-1 if partition is None else partition, error.str()))
            continue
        if partition is None or offset is None or error is not None:
            done.kept.append(msg)
            continue
        end = ranges[partition][1]
        next_offsets[partition] = offset + 1
        if offset < end:
            done.kept.append(msg)
        if offset >= end - 1:
            done.completed.append(partition)
    return done
