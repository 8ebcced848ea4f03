"""``vigil replay --warm-up-from START``: start a replay where the live service stood.

A replay that starts in the middle of a topic starts from empty state: its thresholds warm
up again, its features have not seen the accounts, devices and shops of the days before,
and it gives other alerts than the live service gave for the same records. With a warm-up
the replay first runs the same service over the records from START up to the range's
start, dropping every output, and then replays the range with the scorers that warm-up
left. Scoring state depends only on a partition's records in offset order, so a warm-up
from where the live service started (``earliest``, if the topic still holds it) gives the
live service's alerts for the range exactly; ``tests/integration/test_replay.py`` checks it.

The same thing the live service does with the records between a snapshot and its committed
offset (stream/partition_state.py), here as a run of its own, before the range's: the
range's run stays the plain replay it always was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from detectors.scoring import EventScorer
from stream.service import PartitionScorers, RunSummary, scoring_config
from stream.settings import ServiceSettings
from stream.topic_reader import BoundedSource, ReplayError, ReplayOptionError, plan_ranges

EARLIEST = "earliest"

Ranges = dict[int, tuple[int, int]]


class DiscardSink:
    """A producer stand-in for the warm-up: every output is dropped as if delivered."""

    def produce(self, topic: str, key: Any = None, value: Any = None, **kwargs: Any) -> None:
        callback = kwargs.get("on_delivery")
        if callback is not None:
            callback(None, None)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        return 0


def warm_up_ranges(
    bootstrap: str,
    topic: str,
    start: int | dict[int, int] | None,
    ranges: Mapping[int, tuple[int, int]],
    what: str = "--warm-up-from",
) -> Ranges:
    """The warm-up's [start, range start) of each partition with records in ``ranges``
    (``start``: a time, offsets, or None for the earliest the topic holds; a start below
    the earliest offset is raised to it, as a range's is). A start after the range's is a
    ``ReplayOptionError`` that names the partition and ``what`` the start is."""
    range_starts = {p: a for p, (a, _) in ranges.items()}
    resolved = plan_ranges(bootstrap, topic, start, range_starts)
    warm: Ranges = {}
    for partition, (begin, end) in sorted(ranges.items()):
        if begin >= end:  # nothing to replay there, so nothing to warm up
            continue
        warm_start = resolved[partition][0]
        if warm_start > begin:
            raise ReplayOptionError(
                f"{what} is after --from on partition {partition} (offset {warm_start} > {begin})"
            )
        warm[partition] = (warm_start, begin)
    return warm


def warmed_scorers(
    settings: ServiceSettings,
    bootstrap: str,
    topic: str,
    warm: Mapping[int, tuple[int, int]],
    on_batch: Callable[[RunSummary], None] | None = None,
    start: Callable[[int], EventScorer] | None = None,
) -> tuple[Callable[[int], EventScorer], int]:
    """Run the service over the ``warm`` ranges with every output dropped; returns the
    scorer factory that hands out each partition's scorer as the warm-up left it and the
    records the warm-up read. ``start`` makes the scorer a partition's warm-up starts from
    (by default a fresh one, as the live service's first); a partition the warm-up did not
    read gets that one. ``ReplayError`` if the warm-up stopped before the end of its
    ranges."""
    # Here, not at the top: stream.replay imports this module.
    from stream.replay import records_in, run_range

    scorers = start or PartitionScorers(scoring_config(settings))
    made: dict[int, EventScorer] = {}

    def make(partition: int) -> EventScorer:
        made[partition] = scorer = scorers(partition)
        return scorer

    records = 0
    if records_in(warm) > 0:  # a warm-up from a snapshot that stands at --from reads nothing
        source = BoundedSource.over(bootstrap, topic, warm)
        summary = run_range(settings, source, DiscardSink(), None, on_batch, make)  # type: ignore[arg-type]
        if not source.exhausted:
            raise ReplayError("the warm-up stopped before it reached --from")
        records = summary.records
    handed: set[int] = set()

    def warmed(partition: int) -> EventScorer:
        # A replay makes each partition's scorer once: a second one would start cold.
        if partition in handed:
            raise RuntimeError(f"the warmed-up scorer of partition {partition} is taken")
        handed.add(partition)
        scorer = made.get(partition)
        return scorer if scorer is not None else scorers(partition)

    return warmed, records
