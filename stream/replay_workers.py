"""``vigil replay --workers N``: a replay's partitions shared among N processes.

Scoring state is per input partition and depends only on that partition's records in
offset order, so any split of the partitions gives each partition's alerts exactly as one
process does, and the output file is written in the same fixed order (``ReplaySink``):
byte-identical whatever N. The range is fixed once, by the parent, before the workers
start; each worker gets explicit offsets for its share.

Workers are forked (POSIX): they start with the modules and compiled kernels the parent
has loaded, where spawned ones would spend seconds importing them again. The parent has
no Kafka client open when it forks (:func:`plan_ranges` closes its own).
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer

from detectors.scoring import warm_up
from stream.kafka_io import VigilKafkaError, producer_config
from stream.logs import configure_logging
from stream.replay import (
    Progress,
    ReplayRun,
    ReplaySink,
    kafka_failure,
    records_in,
    run_range,
)
from stream.replay_state import LiveState
from stream.replay_warm_up import warmed_scorers
from stream.score_tap import ScoreParts
from stream.service import RunSummary, scoring_config
from stream.settings import ServiceSettings
from stream.topic_reader import BoundedSource, ReplayError, ReplayOptionError

# How often the parent looks at the workers (progress line, a worker that died).
_WAKE_S = 0.2


def split_partitions(ranges: Mapping[int, tuple[int, int]], workers: int) -> list[list[int]]:
    """The partitions with records to replay, dealt into at most ``workers`` shares of
    about equal record counts: largest first, each to the share with the fewest records
    so far (the lowest share on a tie). Deterministic; no share is empty.

    >>> split_partitions({0: (0, 100), 1: (0, 60), 2: (0, 50), 3: (5, 5)}, 2)
    [[0], [1, 2]]
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    sizes = {p: end - start for p, (start, end) in ranges.items() if end > start}
    shares: list[list[int]] = [[] for _ in range(min(workers, len(sizes)))]
    loads = [0] * len(shares)
    for partition in sorted(sizes, key=lambda p: (-sizes[p], p)):
        lightest = loads.index(min(loads))
        shares[lightest].append(partition)
        loads[lightest] += sizes[partition]
    return [sorted(share) for share in shares]


@dataclass(frozen=True)
class Share:
    """One worker's part of the replay."""

    index: int
    settings: ServiceSettings
    bootstrap: str
    topic: str
    ranges: dict[int, tuple[int, int]]
    forward: bool  # alerts to the settings' alerts topic as well
    scores_path: Path | None
    # Read first, outputs dropped: the state the range starts from (--warm-up-from).
    warm: dict[int, tuple[int, int]] = field(default_factory=dict)
    # The live service's snapshots of the share's partitions (--warm-up-from state).
    live: LiveState | None = None


@dataclass
class ShareResult:
    index: int
    error: str | None = None
    # Why, when ``error`` is set: "option" (a ReplayOptionError), "replay" (a ReplayError
    # or the broker's failure, said in its message), or "crash" (its traceback).
    failure: str = "crash"
    sink: ReplaySink | None = None  # its alerts, lines and dead letters
    records: int = 0
    events: int = 0
    dead_letters: int = 0
    alerts: int = 0
    warm_up_records: int = 0
    first_batch_at: float | None = None
    last_commit_at: float | None = None


def _run_share(share: Share, done: Any, results: Any) -> None:
    """A worker: replay the share, report the outcome on ``results`` (a queue); ``done``
    (a shared array, two places a worker) gets its warm-up's records so far, then its
    range's. Never raises."""
    try:
        configure_logging("warning", sys.stderr.buffer)
        settings = share.settings
        scorers, warm_up_records = None, 0
        if share.warm or share.live is not None:

            def warming(summary: RunSummary) -> None:
                done[2 * share.index] = summary.records

            scorers, warm_up_records = warmed_scorers(
                settings,
                share.bootstrap,
                share.topic,
                share.warm,
                warming,
                None if share.live is None else share.live.scorers(settings),
            )
        source = BoundedSource.over(share.bootstrap, share.topic, share.ranges)
        forward = Producer(producer_config(settings)) if share.forward else None
        sink = ReplaySink(settings.alerts_topic, None, forward, collect=True)
        scores = ScoreParts(share.scores_path) if share.scores_path else None

        def count(summary: RunSummary) -> None:
            done[2 * share.index + 1] = summary.records

        summary = run_range(settings, source, sink, scores, count, scorers)
        sink.forward = None  # flushed by the service on its way out; not picklable
        results.put(
            ShareResult(
                share.index,
                sink=sink,
                records=summary.records,
                events=summary.events,
                dead_letters=summary.dead_letters,
                alerts=summary.alerts,
                warm_up_records=warm_up_records,
                first_batch_at=summary.first_batch_at,
                last_commit_at=summary.last_commit_at,
            )
        )
    except ReplayError as exc:  # the parent fails the replay with it, as it would its own
        kind = "option" if isinstance(exc, ReplayOptionError) else "replay"
        results.put(ShareResult(share.index, error=str(exc), failure=kind))
    except (KafkaException, VigilKafkaError, TimeoutError) as exc:
        failure = kafka_failure(share.bootstrap, exc)
        results.put(ShareResult(share.index, error=failure, failure="replay"))
    except BaseException:  # a bug: the parent fails the replay with its traceback
        results.put(ShareResult(share.index, error=traceback.format_exc()))


def _failure(outcome: ShareResult) -> ReplayError:
    """The error a worker's failure fails the replay with: an option's or the replay's
    as the worker met it, a crash with its traceback."""
    if outcome.failure == "option":
        return ReplayOptionError(str(outcome.error))
    if outcome.failure == "replay":
        return ReplayError(str(outcome.error))
    return ReplayError(f"worker {outcome.index} failed:\n{outcome.error}")


def _loads(
    ranges: Mapping[int, tuple[int, int]], warm: Mapping[int, tuple[int, int]]
) -> dict[int, tuple[int, int]]:
    """Each partition's records to read as a span from 0: its warm-up's and its range's
    (none for a partition with nothing in its range, which is not read at all).

    >>> _loads({0: (100, 150), 1: (40, 40), 2: (0, 10)}, {0: (0, 100), 1: (0, 40)})
    {0: (0, 150), 1: (0, 0), 2: (0, 10)}
    """
    spans = {}
    for partition, (start, end) in ranges.items():
        before = warm.get(partition, (0, 0))
        spans[partition] = (0, end - start + before[1] - before[0] if end > start else 0)
    return spans


@dataclass
class _WorkersProgress:
    """The progress line of the workers: the warm-up's until one starts its range, then the
    range's (a worker still warming up counts none of its range yet), each phase's rate
    over its own time."""

    progress: Progress
    done: Any  # per worker: warm-up records so far, range records so far
    warm_total: int
    total: int
    started: float = field(default_factory=time.monotonic)
    range_started: float | None = None

    def show(self) -> None:
        warmed, replayed = sum(self.done[0::2]), sum(self.done[1::2])
        now = time.monotonic()
        if self.warm_total and not replayed:
            elapsed = now - self.started
            rate = warmed / elapsed if elapsed > 0 else 0.0
            self.progress.show(warmed, self.warm_total, rate, "warm-up")
            return
        if self.range_started is None:
            self.range_started = now
        elapsed = now - self.range_started
        self.progress.show(replayed, self.total, replayed / elapsed if elapsed > 0 else 0.0)


def replay_in_workers(
    settings: ServiceSettings,
    bootstrap: str,
    topic: str,
    ranges: Mapping[int, tuple[int, int]],
    workers: int,
    sink: ReplaySink,
    *,
    warm: Mapping[int, tuple[int, int]] | None = None,
    live: LiveState | None = None,
    forward: bool,
    scores_path: Path | None,
    progress: Progress,
) -> ReplayRun:
    """Replay ``ranges`` in up to ``workers`` processes into ``sink`` (a ReplaySink);
    returns the ReplayRun of them all. Raises ReplayError if a worker fails. With
    ``scores_path``, each worker writes its partitions' parts of it (``ScoreParts``);
    joining them is the caller's. ``warm``: each partition's warm-up range, read first
    by the worker that replays the partition (stream/replay_warm_up.py), starting from the
    partition's snapshot in ``live`` if given (stream/replay_state.py)."""
    warm = warm or {}
    loads = _loads(ranges, warm)
    shares = [
        Share(
            index,
            settings,
            bootstrap,
            topic,
            {p: ranges[p] for p in partitions},
            forward,
            scores_path,  # each worker writes its partitions' parts of it
            {p: warm[p] for p in partitions if p in warm},
            None if live is None else live.only(partitions),
        )
        for index, partitions in enumerate(split_partitions(loads, workers))
    ]
    warm_total, total = records_in(warm), records_in(ranges)
    # Loaded once here, every worker inherits them: not once per worker after the fork.
    warm_up(scoring_config(settings))
    context = multiprocessing.get_context("fork")
    # Per worker: warm-up records so far, range records so far.
    done: Any = context.Array("q", max(2 * len(shares), 1), lock=False)
    results: Any = context.Queue()
    processes = [
        context.Process(target=_run_share, args=(share, done, results), name=f"replay-{i}")
        for i, share in enumerate(shares)
    ]
    shown = _WorkersProgress(progress, done, warm_total, total)
    for process in processes:
        process.start()
    outcomes: dict[int, ShareResult] = {}
    try:
        while len(outcomes) < len(processes):
            try:
                outcome: ShareResult = results.get(timeout=_WAKE_S)
            except queue.Empty:
                for i, process in enumerate(processes):
                    if i not in outcomes and process.exitcode is not None:
                        raise ReplayError(
                            f"worker {i} ended (exit code {process.exitcode}) without a result"
                        ) from None
                shown.show()
                continue
            if outcome.error is not None:
                raise _failure(outcome)
            outcomes[outcome.index] = outcome
    finally:
        for process in processes:
            if process.exitcode is None and len(outcomes) < len(processes):
                process.terminate()
            process.join()
    ordered = [outcomes[i] for i in range(len(shares))]
    for outcome in ordered:
        assert outcome.sink is not None  # set on every result without an error
        sink.absorb(outcome.sink)
    firsts = [o.first_batch_at for o in ordered if o.first_batch_at is not None]
    lasts = [o.last_commit_at for o in ordered if o.last_commit_at is not None]
    return ReplayRun(
        records=sum(o.records for o in ordered),
        events=sum(o.events for o in ordered),
        dead_letters=sum(o.dead_letters for o in ordered),
        alerts=sum(o.alerts for o in ordered),
        warm_up_records=sum(o.warm_up_records for o in ordered),
        # time.monotonic is one clock for every process of the machine (Linux).
        busy_s=max(lasts) - min(firsts) if firsts and lasts else 0.0,
    )
