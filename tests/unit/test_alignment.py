"""Event-time alignment (stream/alignment.py): nothing lost, nothing repeated, each
partition's order kept, and no record released far behind what other partitions released."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, cast

import pytest
from confluent_kafka import TopicPartition

from detectors.scoring import EventScorer
from stream.alignment import EventTimeAlignment
from stream.partition_state import PartitionState
from stream.service import Service
from stream.settings import load_settings

SKEW_MS = 60_000


@dataclass(frozen=True)
class Rec:
    p: int
    offset: int
    ts: int
    err: object | None = None

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return self.p

    def timestamp(self) -> tuple[int, int]:
        return (0, -1) if self.ts < 0 else (1, self.ts)

    def error(self) -> object | None:
        return self.err


def backlog(seed: int, partitions: int = 3, n: int = 3000) -> dict[int, list[Rec]]:
    """Partitions of one day of event time at different densities (as users spread over
    partitions by key), each in event-time order."""
    rnd = random.Random(seed)
    out = {}
    for p in range(partitions):
        count = n // (p + 1)
        times = sorted(rnd.randrange(0, 86_400_000) for _ in range(count))
        out[p] = [Rec(p, i, t) for i, t in enumerate(times)]
    return out


def drain(
    log: dict[int, list[Rec]], align: EventTimeAlignment[Rec] | None, fetch: int
) -> list[Rec]:
    """A consumer over ``log``: each consume hands over up to ``fetch`` records of every
    partition that is not paused (one fetch response), partition after partition."""
    positions = dict.fromkeys(log, 0)
    out: list[Rec] = []
    for _ in range(100_000):
        paused = align.paused() if align else set()
        batch = []
        for p, at in positions.items():
            if ("events", p) in paused:
                continue
            batch += log[p][at : at + fetch]
            positions[p] = min(at + fetch, len(log[p]))
        if align is None:
            out += batch
        else:
            more = {("events", p) for p, at in positions.items() if at < len(log[p])}
            out += align.release(batch, more)
        done = all(at == len(log[p]) for p, at in positions.items())
        if done and (align is None or not align.held):
            return out
    raise AssertionError("did not finish")


def lateness_ms(released: list[Rec]) -> int:
    """The most any record came after a later record (event time) of another partition."""
    worst = 0
    newest: dict[int, int] = {}
    for r in released:
        others = [t for p, t in newest.items() if p != r.p]
        if others:
            worst = max(worst, max(others) - r.ts)
        newest[r.p] = max(newest.get(r.p, r.ts), r.ts)
    return worst


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("fetch", "pause_at"), [(50, 1), (700, 1), (700, 500)])
def test_records_come_out_once_in_partition_order_and_never_far_behind(
    seed: int, fetch: int, pause_at: int
) -> None:
    log = backlog(seed)
    align: EventTimeAlignment[Rec] = EventTimeAlignment(SKEW_MS, pause_at=pause_at)
    released = drain(log, align, fetch)
    assert sorted(released, key=lambda r: (r.p, r.offset)) == [r for p in log for r in log[p]]
    for p in log:
        assert [r.offset for r in released if r.p == p] == list(range(len(log[p])))
    assert lateness_ms(released) <= SKEW_MS
    assert align.held == 0
    assert align.paused() == set()
    # What it prevents: the same consumer without alignment hands over records hours late.
    assert lateness_ms(drain(log, None, fetch)) > 10 * SKEW_MS


def test_a_lone_partition_is_never_held() -> None:
    align: EventTimeAlignment[Rec] = EventTimeAlignment(SKEW_MS)
    batch = [Rec(0, i, i * 3_600_000) for i in range(10)]
    assert align.release(batch) == batch
    assert align.paused() == set()


def test_errors_and_untimed_records_pass_and_held_records_can_be_dropped() -> None:
    align: EventTimeAlignment[Rec] = EventTimeAlignment(SKEW_MS)
    error = Rec(1, -1, -1, err="boom")
    untimed = Rec(1, 0, -1)
    ahead = [Rec(0, i, 10_000_000 + i) for i in range(3)]
    more = {("events", 1)}
    out = align.release([*ahead, error, untimed, Rec(1, 1, 5)], more)
    assert out[0] is error
    assert [(r.p, r.offset) for r in out[1:]] == [(1, 0), (1, 1)]
    assert align.paused() == {("events", 0)}
    assert align.held == 3
    align.drop([("events", 0)])  # revoked: the next owner reads them again
    assert (align.held, align.paused()) == (0, set())


def test_a_partition_never_heard_from_holds_everything_back() -> None:
    align: EventTimeAlignment[Rec] = EventTimeAlignment(SKEW_MS)
    first = [Rec(0, 0, 0), Rec(0, 1, 10)]
    # Partition 2 has records to come and none released yet: its first may be earliest.
    assert align.release(first, {("events", 2)}) == []
    assert align.paused() == {("events", 0)}
    assert align.release([Rec(2, 0, 5)]) == [first[0], Rec(2, 0, 5), first[1]]
    with pytest.raises(ValueError, match="max_skew_ms"):
        EventTimeAlignment(-1)


def test_a_partition_is_paused_from_pause_at_held_records_until_it_holds_none() -> None:
    align: EventTimeAlignment[Rec] = EventTimeAlignment(SKEW_MS, pause_at=3)
    more = {("events", 1)}
    ahead = [Rec(0, i, 10_000_000 + i * 100_000) for i in range(5)]
    align.release(ahead[:2], more)  # partition 1 never heard from: all held
    assert (align.held, align.paused()) == (2, set())
    align.release(ahead[2:], more)
    assert align.paused() == {("events", 0)}
    # Partition 1 catches up to all but the last: still paused while it holds any.
    align.release([Rec(1, 0, 10_250_000)], more)
    assert (align.held, align.paused()) == (1, {("events", 0)})
    align.release([Rec(1, 1, 10_400_000)], more)
    assert (align.held, align.paused()) == (0, set())
    with pytest.raises(ValueError, match="pause_at"):
        EventTimeAlignment(SKEW_MS, pause_at=0)


class _Lags:
    """A consumer that has read nothing yet, over a log of 100 records per partition."""

    def position(self, partitions: list[Any]) -> list[Any]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def get_watermark_offsets(self, partition: Any, **kwargs: Any) -> tuple[int, int]:
        return (0, 100)


def test_a_partition_resumed_at_its_end_does_not_hold_the_others_back() -> None:
    # Restarted after reading everything: the state resumes at offset 100 = the end, so
    # nothing is to come from it; another resumed at 50 has records to come.
    settings = load_settings(
        {"bootstrap": "b:1", "input_topic": "events", "alerts_topic": "a", "dlq_topic": "d",
         "group": "g", "metrics_port": None},
        env={},
    )  # fmt: skip
    service = Service(settings, consumer=cast(Any, _Lags()))
    for partition, start in ((0, 100), (1, 50)):
        state = PartitionState("events", partition, EventScorer(), next_offset=start)
        service.owned.states[("events", partition)] = state
    assert service._more(cast(Any, _Lags()), time.monotonic()) == {("events", 1)}
