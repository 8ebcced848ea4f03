"""The warm-up's edges: its ranges, outputs dropped as delivered, its own progress line (the
exactness of a warmed-up replay is checked on the real broker, tests/integration)."""

from __future__ import annotations

import io
from typing import Any

import pytest

import stream.replay
import stream.replay_warm_up as warm_up
from stream.replay import Progress
from stream.replay_warm_up import DiscardSink
from stream.service import RunSummary
from stream.topic_reader import ReplayError


def test_the_discard_sink_reports_every_output_delivered():
    delivered = []
    sink = DiscardSink()
    sink.produce("alerts", key=b"k", value=b"{}", on_delivery=lambda e, m: delivered.append(e))
    sink.produce("dead-letters", value=b"x", on_delivery=lambda e, m: delivered.append(e))
    sink.produce("alerts", value=b"{}")  # no callback asked for
    assert delivered == [None, None]  # the service's delivery tracker waits for these
    assert sink.poll(0) == 0
    assert sink.flush(1.0) == 0


def test_the_progress_line_names_the_warm_up():
    out = io.StringIO()
    progress = Progress(out)
    progress._last = 0.0  # as if the last line were long ago
    progress.show(500, 2000, 250.0, "warm-up")
    progress._last = 0.0
    progress.show(100, 1000, 50.0)
    first, second = out.getvalue().split("\r")[1:]
    assert first.startswith("warm-up: 500/2,000 records  250/s  ETA 6s")
    assert second.startswith("100/1,000 records  50/s  ETA 18s")
    assert len(second) == len(first)  # padded over the longer line it overwrites
    progress._last = 0.0
    progress.show(0, 1000, 0.0)  # nothing read yet
    assert out.getvalue().split("\r")[-1].startswith("0/1,000 records  0/s  ETA ?")


def test_warm_up_ranges_end_where_the_ranges_start_and_skip_empty_ones(monkeypatch):
    def plan(bootstrap, topic, start, end):
        # The earliest offset the topic still holds is 5 on both partitions.
        return {p: (5, e) for p, e in end.items()}

    monkeypatch.setattr(warm_up, "plan_ranges", plan)
    # Partition 1 has nothing to replay (offsets given for partition 0 only): no warm-up
    # there, and no complaint that its start (0) comes before the earliest offset.
    ranges = {0: (1000, 1200), 1: (0, 0)}
    assert warm_up.warm_up_ranges("b", "t", None, ranges) == {0: (5, 1000)}
    with pytest.raises(ReplayError, match=r"after --from on partition 0 \(offset 5 > 3\)"):
        warm_up.warm_up_ranges("b", "t", None, {0: (3, 10)})


def test_each_partition_gets_the_scorer_its_warm_up_left_once(monkeypatch):
    ran = {}
    done = RunSummary(events=12, dead_letters=2)

    def run_range(settings, source, sink, scores, on_batch, scorers):
        # What the service does with a bounded source: a scorer per assigned partition.
        ran["scorers"] = {p: scorers(p) for p in source.partitions}
        source.exhausted = True
        return done

    monkeypatch.setattr(stream.replay, "run_range", run_range)
    settings = stream.replay.replay_settings("b", "t", None, None)
    warmed, records = warm_up.warmed_scorers(settings, "b", "t", {0: (0, 10), 2: (5, 9)})
    assert records == 14
    assert warmed(0) is ran["scorers"][0]
    assert warmed(2) is ran["scorers"][2]
    assert warmed(1) is not None  # not warmed up: a fresh one
    with pytest.raises(RuntimeError, match="partition 0 is taken"):
        warmed(0)  # a second scorer would start cold, silently


def test_a_warm_up_that_stops_short_fails(monkeypatch):
    monkeypatch.setattr(stream.replay, "run_range", lambda *args: RunSummary())  # not exhausted
    settings = stream.replay.replay_settings("b", "t", None, None)
    with pytest.raises(ReplayError, match="the warm-up stopped before it reached --from"):
        warm_up.warmed_scorers(settings, "b", "t", {0: (0, 10)})


def test_a_warm_up_starts_from_the_scorers_it_is_given(monkeypatch):
    ran = {}
    started: dict[int, Any] = {p: object() for p in (0, 1, 2)}

    def run_range(settings, source, sink, scores, on_batch, scorers):
        ran["scorers"] = {p: scorers(p) for p in source.partitions}
        source.exhausted = True
        return RunSummary()

    monkeypatch.setattr(stream.replay, "run_range", run_range)
    settings = stream.replay.replay_settings("b", "t", None, None)
    # Partition 1's snapshot stands at --from: nothing to read there, its snapshot's scorer.
    warmed, _ = warm_up.warmed_scorers(
        settings, "b", "t", {0: (3, 10), 1: (7, 7)}, start=started.__getitem__
    )
    assert ran["scorers"] == {0: started[0], 1: started[1]}  # the source's partitions
    assert [warmed(p) for p in (0, 1, 2)] == [started[0], started[1], started[2]]


def test_a_warm_up_with_nothing_to_read_runs_nothing(monkeypatch):
    def run_range(*args):
        raise AssertionError("a warm-up over empty ranges reads nothing")

    monkeypatch.setattr(stream.replay, "run_range", run_range)
    settings = stream.replay.replay_settings("b", "t", None, None)
    started: dict[int, Any] = {0: object()}
    warmed, records = warm_up.warmed_scorers(
        settings, "b", "t", {0: (7, 7)}, start=started.__getitem__
    )
    assert records == 0
    assert warmed(0) is started[0]
