"""How a parallel replay deals partitions to its workers."""

from __future__ import annotations

import io
import random

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream.replay import Progress
from stream.replay_workers import _WorkersProgress, split_partitions
from stream.topic_reader import ReplayError, ReplayOptionError


def test_every_partition_with_records_goes_to_exactly_one_share():
    rng = random.Random(0)
    for _ in range(200):
        ranges = {}
        for p in range(rng.randint(0, 12)):
            start = rng.randint(0, 50)
            ranges[p] = (start, start + rng.choice([0, rng.randint(1, 1000)]))
        workers = rng.randint(1, 6)
        shares = split_partitions(ranges, workers)
        with_records = {p for p, (a, b) in ranges.items() if b > a}
        dealt = [p for share in shares for p in share]
        assert sorted(dealt) == sorted(with_records)  # each once, empty ranges left out
        assert len(shares) == min(workers, len(with_records))
        assert all(shares)
        loads = [sum(ranges[p][1] - ranges[p][0] for p in share) for share in shares]
        if loads:
            # Greedy largest-first: no share exceeds another by more than a partition.
            biggest = max(ranges[p][1] - ranges[p][0] for p in with_records)
            assert max(loads) - min(loads) <= biggest
        assert split_partitions(ranges, workers) == shares  # deterministic


def test_balances_equal_partitions_evenly():
    ranges = dict.fromkeys(range(12), (0, 100))
    assert [len(share) for share in split_partitions(ranges, 4)] == [3, 3, 3, 3]


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers must be >= 1"):
        split_partitions({0: (0, 1)}, 0)


def _settings():
    from stream.replay import replay_settings

    return replay_settings("127.0.0.1:1", "events", None, None)


def test_a_failing_worker_fails_the_replay_with_its_traceback(monkeypatch):
    import stream.replay_workers
    from stream.replay import Progress, ReplaySink
    from stream.replay_workers import replay_in_workers
    from stream.topic_reader import ReplayError

    def broken(*args, **kwargs):
        raise RuntimeError("scorer exploded")

    monkeypatch.setattr(stream.replay_workers, "run_range", broken)  # the forked workers inherit it
    sink = ReplaySink("alerts")
    ranges = {0: (0, 10), 1: (0, 10)}
    with pytest.raises(ReplayError, match=r"(?s)worker [01] failed.*RuntimeError: scorer exploded"):
        replay_in_workers(
            _settings(), "127.0.0.1:1", "events", ranges, 2, sink,
            forward=False, scores_path=None, progress=Progress(None),
        )  # fmt: skip
    assert sink.alerts == []


def test_a_worker_that_dies_without_a_word_is_noticed(monkeypatch):
    import os

    import stream.replay_workers
    from stream.replay import Progress, ReplaySink
    from stream.replay_workers import replay_in_workers
    from stream.topic_reader import ReplayError

    def dies(*args, **kwargs):
        os._exit(7)

    monkeypatch.setattr(stream.replay_workers, "run_range", dies)
    with pytest.raises(ReplayError, match=r"worker \d ended \(exit code 7\) without a result"):
        replay_in_workers(
            _settings(), "127.0.0.1:1", "events", {0: (0, 10)}, 1, ReplaySink("alerts"),
            forward=False, scores_path=None, progress=Progress(None),
        )  # fmt: skip


def test_the_progress_line_shows_the_warm_up_until_a_range_starts():
    out = io.StringIO()
    progress = Progress(out)
    done = [0, 0, 0, 0]  # two workers: warm-up records, range records
    shown = _WorkersProgress(progress, done, warm_total=1_000, total=500)

    def line() -> str:
        progress._last = 0.0  # as if the last line were long ago
        shown.show()
        return out.getvalue().split("\r")[-1]

    done[0], done[2] = 300, 100
    assert line().startswith("warm-up: 400/1,000 records")
    done[2], done[3] = 700, 20  # the second worker has started its range, the first has not
    assert line().startswith("20/500 records")
    # Without a warm-up, the range from the start.
    plain = _WorkersProgress(progress, [0, 0, 0, 7], warm_total=0, total=500)
    progress._last = 0.0
    plain.show()
    assert out.getvalue().split("\r")[-1].startswith("7/500 records")


OPTION = "the live state is after --from on partition 1"
DELETED = "partition 0 of events: records of the range were deleted"


@pytest.mark.parametrize(
    ("raised", "expected", "said"),
    [
        (ReplayOptionError(OPTION), ReplayOptionError, OPTION),
        (ReplayError(DELETED), ReplayError, DELETED),
        (
            KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down")),
            ReplayError,
            "Kafka at 127.0.0.1:1: broker down",
        ),
    ],
)
def test_a_workers_expected_failure_is_reported_as_the_parents_would_be(
    monkeypatch, raised, expected, said
):
    import stream.replay_workers
    from stream.replay import Progress, ReplaySink
    from stream.replay_workers import replay_in_workers

    def fails(*args, **kwargs):
        raise raised

    monkeypatch.setattr(stream.replay_workers, "run_range", fails)
    with pytest.raises(ReplayError) as caught:
        replay_in_workers(
            _settings(), "127.0.0.1:1", "events", {0: (0, 10), 1: (0, 10)}, 2,
            ReplaySink("alerts"), forward=False, scores_path=None, progress=Progress(None),
        )  # fmt: skip
    assert type(caught.value) is expected
    assert str(caught.value) == said  # what the worker met, as it said it: no traceback
