"""``vigil replay``: a bounded range of a topic through the live pipeline.

Replay is the service itself with two edges swapped: a bounded source that reads a fixed
offset range without joining the live group (nothing is committed), and, optionally, a
JSON-lines file instead of the alerts topic. Scoring state is per partition and depends
only on the records in offset order, so replaying from the same starting state gives the
live service's alerts exactly (for a range that starts mid-topic, ``--warm-up-from`` builds
that state first, from the topic or from the live service's snapshots: stream/replay_warm_up.py,
stream/replay_state.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from detectors.evaluation import evaluate, format_evaluation
from detectors.scoring import EventScorer
from stream.kafka_io import VigilKafkaError, producer_config
from stream.logs import configure_logging
from stream.replay_labels import (
    GroundTruth,
    Reviews,
    alerted_event_ids,
    evaluate_reviews,
    format_reviews,
    load_labels,
    scored_event_ids,
)
from stream.replay_state import (
    STATE,
    LiveState,
    check_held,
    live_settings,
    ranges_from,
    read_live_state,
)
from stream.replay_warm_up import EARLIEST, warm_up_ranges, warmed_scorers
from stream.score_tap import ScoreParts, tapped
from stream.scores import InputError
from stream.service import PartitionScorers, RunSummary, Service, scoring_config
from stream.settings import ConfigError, ServiceSettings, load_settings
from stream.topic_reader import (
    BoundedSource,
    ReplayError,
    ReplayOptionError,
    parse_bound,
    plan_ranges,
    read_topic,
)

# A time (ms) or offsets by partition, as parse_bound gives them.
Bound = int | dict[int, int]
# An output line's place in the file: event time, partition, offset, alert id.
SortKey = tuple[str, int, int, str]


@dataclass
class ReplaySink:
    """A producer stand-in: keeps the alerts (for the report), writes them as JSON lines
    and/or forwards them to a topic, and counts dead letters instead of producing them.

    The file is written at the end (:meth:`write_out`), in event time, then input
    partition and offset: the order in which the service met the partitions depends on
    fetch timing, and two replays of a range must give the same bytes."""

    alerts_topic: str
    out: IO[bytes] | None = None
    forward: Producer | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)
    # Keep the file's lines without a file: a parallel replay's worker, whose lines the
    # parent merges (:meth:`absorb`) and writes.
    collect: bool = False
    lines: list[tuple[SortKey, bytes]] = field(default_factory=list)

    def produce(self, topic: str, key: Any = None, value: Any = None, **kwargs: Any) -> None:
        callback = kwargs.get("on_delivery")
        if topic == self.alerts_topic:
            alert = orjson.loads(value)
            self.alerts.append(alert)
            if self.out is not None or self.collect:
                source = alert["source"]
                order = (alert["occurred_at"], source["partition"], source["offset"])
                self.lines.append(((*order, alert["alert_id"]), value))
            if self.forward is not None:
                self.forward.produce(topic, key=key, value=value, on_delivery=callback)
                return
        else:
            headers = dict(kwargs.get("headers") or [])
            self.dead_letters[headers.get("vigil.dlq.reason", b"?").decode()] += 1
        if callback is not None:
            callback(None, None)

    def poll(self, timeout: float = 0) -> int:
        return 0 if self.forward is None else self.forward.poll(timeout)

    def flush(self, timeout: float = -1) -> int:
        return 0 if self.forward is None else self.forward.flush(timeout)

    def absorb(self, other: ReplaySink) -> None:
        """Take over what another sink (a worker's) kept: alerts, lines, dead letters."""
        self.alerts.extend(other.alerts)
        self.lines.extend(other.lines)
        self.dead_letters.update(other.dead_letters)

    def write_out(self) -> None:
        """The alerts so far to the file, in a deterministic order (see the class)."""
        if self.out is None:
            return
        self.lines.sort(key=lambda line: line[0])
        for _, value in self.lines:
            self.out.write(value + b"\n")
        self.lines.clear()
        self.out.flush()


def replay_settings(
    bootstrap: str, topic: str, output_topic: str | None, config: Path | None
) -> ServiceSettings:
    """The live service's settings (its ``config`` file, if given) as a replay runs them."""
    settings = load_settings(
        {
            "bootstrap": bootstrap,
            "input_topic": topic,
            "alerts_topic": output_topic or "vigil-replay-alerts",
            "dlq_topic": "vigil-replay-dead-letters",
            "group": "vigil-replay",
            # A replay is a bounded read outside any group: no transactions to fence,
            # and the pattern stage's observations are not part of its output.
            "guarantee": "at-least-once",
            "observations": False,
        },
        config_file=config,
    )
    # Set here, not above: a None among the flags counts as not given. No metrics port (a
    # live service may be serving one on this host), and no event-time alignment: scores
    # are per partition, so the order across partitions changes nothing a replay writes;
    # each partition is read as fast as it comes (with alignment on by mistake, a replay
    # ran at 5k instead of 28k records/s). And none of the work whose only reader is the
    # observations topic: the looser pattern bar (and the reasons of the events above it
    # only) and arrival tracking (detectors/arrivals.py). Alerts never read either. And no
    # feedback topics: what a follower of labels or pattern alerts reads depends on when
    # reviewers and the pattern stage wrote them, and a replay must depend only on its range.
    return settings.model_copy(
        update={
            "labels_topic": None,
            "pattern_alerts_topic": None,
            # Without labels, "hold" would hold every alert back (detectors/label_gate.py).
            "unproven_segments": "budget",
            "metrics_port": None,
            "max_event_time_skew_s": None,
            "suspicious_quantile": None,
            "arrival_kinds": (),
        }
    )


@dataclass(frozen=True)
class ReplayRun:
    """What a replay did, in one process or over several."""

    records: int
    events: int
    dead_letters: int
    alerts: int
    busy_s: float  # first batch to last commit (over all workers)
    warm_up_records: int = 0  # read before the range, outputs dropped (--warm-up-from)

    @property
    def records_per_s(self) -> float:
        return self.records / self.busy_s if self.busy_s > 0 else 0.0

    @classmethod
    def of(cls, summary: RunSummary, warm_up_records: int = 0) -> ReplayRun:
        return cls(
            summary.records,
            summary.events,
            summary.dead_letters,
            summary.alerts,
            summary.busy_s,
            warm_up_records,
        )


def run_range(
    settings: ServiceSettings,
    source: BoundedSource,
    sink: ReplaySink,
    scores: ScoreParts | None,
    on_batch: Callable[[RunSummary], None] | None = None,
    scorers: Callable[[int], EventScorer] | None = None,
) -> RunSummary:
    """The service over a bounded source, into a sink: one process's replay. The parts of
    ``scores`` it wrote are closed at the end; joining them is the caller's. ``scorers``
    makes each partition's scorer (by default a fresh one, as the live service's)."""
    if scorers is None:
        scorers = PartitionScorers(scoring_config(settings))
    service = Service(
        settings,
        consumer=source,
        producer=sink,  # type: ignore[arg-type]
        scorer_factory=tapped(scorers, scores.writer) if scores else scorers,
        on_batch=on_batch,
    )
    try:
        return service.run()
    finally:
        if scores is not None:
            scores.close()


class Progress:
    """The progress line: records, events/s, ETA; at most once a second, on ``out``
    (stderr; None: nowhere, for benchmarks and tests)."""

    def __init__(self, out: IO[str] | None = sys.stderr) -> None:
        self._out = out
        self._last = time.monotonic()
        self._width = 0  # of the last line shown

    def show(self, records: int, total: int, rate: float, phase: str = "") -> None:
        """``phase``: what the records are read for, if not for the range (the warm-up)."""
        if self._out is None or time.monotonic() - self._last < 1.0:
            return
        self._last = time.monotonic()
        # No rate yet (nothing read in the first second): no ETA rather than "nans".
        eta = f"{(total - records) / rate:,.0f}s" if rate else "?"
        prefix = f"{phase}: " if phase else ""
        line = f"{prefix}{records:,}/{total:,} records  {rate:,.0f}/s  ETA {eta}"
        # Padded over what a longer line before it left (the warm-up's, say).
        padding = " " * max(0, self._width - len(line))
        self._width = len(line)
        print(f"\r{line}{padding}", end="", file=self._out, flush=True)


class Bounds(NamedTuple):
    """``--from``, ``--to`` and ``--warm-up-from`` as parsed (None: not given, earliest or
    state), and with ``--warm-up-from state`` the live service's settings (its state topic,
    its scoring configuration)."""

    start: Bound | None
    end: Bound | None
    warm_up: Bound | None
    live: ServiceSettings | None = None


def replay_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vigil replay", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--from", dest="start", help="RFC 3339 time or P:OFFSET,...")
    parser.add_argument("--to", dest="end", help="RFC 3339 time or P:OFFSET,... (exclusive)")
    parser.add_argument(
        "--warm-up-from",
        dest="warm_up",
        metavar="START",
        help="first run the records from START (RFC 3339 time, P:OFFSET,... or earliest) up "
        "to --from, outputs dropped, so that the range starts from the state the live "
        "service had there; or state: start from the live service's latest snapshots (and "
        "without --from, replay from where they stand)",
    )
    parser.add_argument(
        "--state-topic",
        metavar="TOPIC",
        help="with --warm-up-from state: the live service's state topic (default: the one "
        "its --config names, or <group>.state)",
    )
    parser.add_argument("--config", type=Path, help="the live service's TOML config")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--output", type=Path, help="alerts as JSON lines")
    target.add_argument("--output-topic", help="alerts to this topic")
    parser.add_argument(
        "--labels",
        metavar="FILE_OR_TOPIC",
        help="ground truth (JSON lines {event_id, attack, attack_id}), or reviewers' labels: "
        "the labels topic, or a file of its label.v1 records",
    )
    parser.add_argument(
        "--output-scores",
        type=Path,
        metavar="FILE",
        help="every scored event (id, type, cohort, detector, score) as JSON lines, for vigil tune",
    )
    parser.add_argument(
        "--compare-with",
        metavar="ALERTS_TOPIC",
        help="the live service's alerts topic: list every alert that differs (exit 1 if any)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default="auto",
        help="processes sharing the partitions: a number, or auto (the default: the cores "
        "this process may use, at most one per partition); the alerts and the output file "
        "are the same whatever the number, since scoring state is per partition",
    )
    args = parser.parse_args(argv)
    if args.compare_with is not None and args.output is None:
        print("vigil replay: --compare-with needs --output FILE", file=sys.stderr)
        return 2
    if args.warm_up not in (None, STATE) and args.start is None:
        print("vigil replay: --warm-up-from needs --from (where the warm-up ends)", file=sys.stderr)
        return 2
    if args.state_topic is not None and args.warm_up != STATE:
        print("vigil replay: --state-topic needs --warm-up-from state", file=sys.stderr)
        return 2
    try:
        bounds = Bounds(
            parse_bound(args.start) if args.start else None,
            parse_bound(args.end) if args.end else None,
            None if args.warm_up in (None, EARLIEST, STATE) else parse_bound(args.warm_up),
            None
            if args.warm_up != STATE
            else live_settings(args.bootstrap, args.topic, args.config, args.state_topic),
        )
        settings = replay_settings(args.bootstrap, args.topic, args.output_topic, args.config)
        labels = None if args.labels is None else load_labels(args.labels, args.bootstrap)
        if args.output is not None:
            _check_writable(args.output)
    except (ReplayError, ConfigError, InputError) as exc:
        print(f"vigil replay: {exc}", file=sys.stderr)
        return 2
    except (KafkaException, TimeoutError) as exc:  # the broker, not the options
        print(f"vigil replay: --labels: {exc}", file=sys.stderr)
        return 1
    configure_logging("warning", sys.stderr.buffer)
    if labels is None or args.output_scores is not None:
        return _replay(args, settings, bounds, labels, args.output_scores)
    # Labels are joined to the events the replay scored (stream/replay_labels.py).
    with tempfile.TemporaryDirectory(prefix="vigil-replay-") as scratch:
        return _replay(args, settings, bounds, labels, Path(scratch) / "scores.jsonl")


def _replay(
    args: argparse.Namespace,
    settings: ServiceSettings,
    bounds: Bounds,
    labels: GroundTruth | Reviews | None,
    scores_path: Path | None,
) -> int:
    """The replay ``replay_cli`` checked the options of, and its report; the exit code."""
    start, end = bounds.start, bounds.end
    # The file's lines are kept and written at the end: a replay that fails before it
    # read a record leaves an earlier output file as it was.
    sink = ReplaySink(settings.alerts_topic, collect=args.output is not None)
    scores = ScoreParts(scores_path) if scores_path is not None else None
    if scores is not None:
        scores.discard()  # parts a failed replay left: joined, they would add their events
    progress = Progress()
    finished = False
    ranges: dict[int, tuple[int, int]]
    try:
        planned, warm, live_state = _plan(
            args.bootstrap, args.topic, bounds, args.workers, warming=args.warm_up is not None
        )
        workers = 1 if planned is None else _resolve_workers(args.workers, planned)
        if planned is None or workers == 1:
            warm_total = records_in(warm)
            scorers = None
            warm_up_records = 0
            if warm or live_state is not None:
                scorers, warm_up_records = warmed_scorers(
                    settings,
                    args.bootstrap,
                    args.topic,
                    warm,
                    lambda s: progress.show(s.records, warm_total, s.records_per_s, "warm-up"),
                    None if live_state is None else live_state.scorers(settings),
                )
            source = (
                BoundedSource(args.bootstrap, args.topic, start, end)
                if planned is None
                else BoundedSource.over(args.bootstrap, args.topic, planned)  # its end fixed
            )
            if args.output_topic:
                sink.forward = Producer(producer_config(settings))
            summary = run_range(
                settings,
                source,
                sink,
                scores,
                lambda s: progress.show(s.records, records_in(source.ranges), s.records_per_s),
                scorers,
            )
            run, ranges = ReplayRun.of(summary, warm_up_records), source.ranges
        else:
            from stream.replay_workers import replay_in_workers

            ranges = planned
            run = replay_in_workers(
                settings,
                args.bootstrap,
                args.topic,
                ranges,
                workers,
                sink,
                warm=warm,
                live=live_state,
                forward=bool(args.output_topic),
                scores_path=scores_path,
                progress=progress,
            )
        if scores is not None:  # the parts, however many processes wrote them
            scores.join(p for p, (a, b) in ranges.items() if a < b)
        finished = True
    except ReplayError as exc:
        print(f"\nvigil replay: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ReplayOptionError) else 1
    except (KafkaException, VigilKafkaError, TimeoutError) as exc:  # the broker's failure
        print(f"\nvigil replay: {kafka_failure(args.bootstrap, exc)}", file=sys.stderr)
        return 1
    finally:
        if scores is not None and not finished:
            scores.discard()
        if args.output is not None and (finished or sink.lines):
            with args.output.open("wb") as out:
                sink.out = out
                sink.write_out()
    print(file=sys.stderr)
    alerts = sink.alerts
    per_day = Counter(a["occurred_at"][:10] for a in alerts)
    if live_state is not None:
        stands = live_state.describe(ranges)
        print(f"state     the snapshots in {live_state.state_topic}, as of {stands}")
    if records_in(warm):
        print(f"warm-up   {run.warm_up_records:,} records before the range, outputs dropped")
    print(f"records   {run.records:,} ({run.records_per_s:,.0f}/s)")
    print(f"events    {run.events:,}  dead letters {run.dead_letters:,}")
    print(f"alerts    {run.alerts:,}")
    for day, count in sorted(per_day.items()):
        print(f"  {day}  {count:,}")
    if labels is not None:
        assert scores_path is not None
        scored = scored_event_ids(scores_path)
        if isinstance(labels, Reviews):
            judged = evaluate_reviews(scored, alerted_event_ids(alerts), labels.by_alert)
            print(format_reviews(judged, labels.source))
        else:  # the truth about the events of the range, not the whole file's
            print(format_evaluation(evaluate(alerts, labels.of_events(scored))))
    if args.compare_with is not None:
        try:
            written = read_topic(args.bootstrap, args.compare_with)
        except (ReplayError, KafkaException, TimeoutError) as exc:
            print(f"vigil replay: --compare-with: {exc}", file=sys.stderr)
            return 1
        live = [
            orjson.loads(r.value or b"")
            for r in written
            if _in_ranges(_source_of(r.value), args.topic, ranges)
        ]
        differences = compare_alerts(live, alerts)
        for line in differences:
            print(line)
        print(f"compared with {args.compare_with}: {len(differences)} differences")
        return 1 if differences else 0
    return 0


class Plan(NamedTuple):
    """What a replay reads, fixed before it starts."""

    ranges: dict[int, tuple[int, int]] | None  # None: a one-process replay's own to resolve
    warm: dict[int, tuple[int, int]]  # each partition's warm-up, read first, outputs dropped
    live: LiveState | None  # the live snapshots it starts from (--warm-up-from state)


def _plan(bootstrap: str, topic: str, bounds: Bounds, workers: int | str, *, warming: bool) -> Plan:
    """The ranges, the warm-up (``warming``: --warm-up-from given) and the live state of a
    replay; ``ReplayOptionError`` for bounds the topic or the snapshots cannot serve."""
    start, end, warm_bound, live_config = bounds
    if live_config is not None:  # --warm-up-from state
        # The snapshots first: the range's end is fixed after them, so none is past it.
        live = read_live_state(live_config)
        held = plan_ranges(bootstrap, topic, None, end)
        if start is None:  # the range starts where the snapshots stand
            planned = ranges_from(live, held)
            check_held(live, held, planned)
            return Plan(planned, {}, live)
        planned = plan_ranges(bootstrap, topic, start, end)
        check_held(live, held, planned)
        warm = warm_up_ranges(bootstrap, topic, live.offsets, planned, "the live state")
        return Plan(planned, warm, live)
    if workers == 1 and not warming:
        return Plan(None, {}, None)
    planned = plan_ranges(bootstrap, topic, start, end)
    warm = warm_up_ranges(bootstrap, topic, warm_bound, planned) if warming else {}
    return Plan(planned, warm, None)


def kafka_failure(bootstrap: str, exc: BaseException) -> str:
    """What a Kafka client's failure says, without the ``KafkaError{...}`` wrapping."""
    error = exc.args[0] if exc.args else exc
    detail = error.str() if isinstance(error, KafkaError) else str(exc)
    return f"Kafka at {bootstrap}: {detail}"


def _check_writable(path: Path) -> None:
    """``ReplayError`` now, rather than a traceback at the end, if ``path`` cannot be
    written."""
    if path.is_dir():
        raise ReplayError(f"--output: {path} is a directory")
    if not path.parent.is_dir():
        raise ReplayError(f"--output: no directory {path.parent}")
    where = path if path.exists() else path.parent
    if not os.access(where, os.W_OK):
        raise ReplayError(f"--output: {where} is not writable")


def records_in(ranges: Mapping[int, tuple[int, int]]) -> int:
    """The offsets ``ranges`` span (the records, but for a transaction's markers)."""
    return sum(b - a for a, b in ranges.values())


def _workers(text: str) -> int | str:
    """``--workers``: ``auto`` or a number of processes, at least 1."""
    if text == "auto":
        return text
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, not {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {count}")
    return count


def usable_cores() -> int:
    """The cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def _resolve_workers(workers: int | str, ranges: dict[int, tuple[int, int]]) -> int:
    """``auto``: the cores this process may run on, at most one per partition to replay."""
    if workers != "auto":
        return int(workers)
    with_records = sum(1 for start, end in ranges.values() if end > start)
    return max(1, min(usable_cores(), with_records))


def _source_of(value: bytes | None) -> dict[str, Any]:
    source: dict[str, Any] = orjson.loads(value or b"{}").get("source", {})
    return source


def _in_ranges(source: dict[str, Any], topic: str, ranges: dict[int, tuple[int, int]]) -> bool:
    """Whether a live alert was caused by a record inside the replayed range."""
    if source.get("topic") != topic:
        return False
    start, end = ranges.get(source.get("partition", -1), (0, 0))
    return bool(start <= source.get("offset", -1) < end)


def compare_alerts(live: Sequence[dict[str, Any]], replayed: Sequence[dict[str, Any]]) -> list[str]:
    """One line per alert only one side has, or whose content differs (by ``alert_id``).

    >>> a = {"alert_id": "al-1", "score": 0.9}
    >>> compare_alerts([a, {"alert_id": "al-2"}], [{**a, "score": 0.8}, {"alert_id": "al-3"}])
    ['differs al-1: score live=0.9 replay=0.8', 'live only al-2', 'replay only al-3']
    """
    live_by_id = {a["alert_id"]: a for a in live}
    replay_by_id = {a["alert_id"]: a for a in replayed}
    lines = []
    for alert_id in sorted(live_by_id.keys() | replay_by_id.keys()):
        if alert_id not in replay_by_id:
            lines.append(f"live only {alert_id}")
        elif alert_id not in live_by_id:
            lines.append(f"replay only {alert_id}")
        elif live_by_id[alert_id] != replay_by_id[alert_id]:
            a, b = live_by_id[alert_id], replay_by_id[alert_id]
            fields = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            details = ", ".join(f"{k} live={a.get(k)} replay={b.get(k)}" for k in fields)
            lines.append(f"differs {alert_id}: {details}")
    return lines
