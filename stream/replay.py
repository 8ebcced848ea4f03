"""``vigil replay``: a bounded range of a topic through the live pipeline.

Replay is the service itself with two edges swapped: a bounded source that reads a fixed
offset range without joining the live group (nothing is committed), and, optionally, a
JSON-lines file instead of the alerts topic. Scoring state is per partition and depends
only on the records in offset order, so replaying from the same starting state gives the
live service's alerts exactly.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from detectors.evaluation import evaluate, format_evaluation
from stream.logs import configure_logging
from stream.service import Service
from stream.settings import ConfigError, load_settings
from stream.topic_reader import read_topic
from stream.traffic.sinks import read_labels


class ReplayError(ValueError):
    """A replay range or option is invalid; the message says which."""


def parse_bound(text: str) -> int | dict[int, int]:
    """``2026-11-02T10:00:00Z`` (event time, ms) or ``0:100,1:250`` (offsets per partition)."""
    if ":" in text and "T" not in text:
        try:
            pairs = (item.split(":") for item in text.split(","))
            return {int(p): int(o) for p, o in pairs}
        except ValueError as exc:
            raise ReplayError(f"bad offsets {text!r}: expected PARTITION:OFFSET,...") from exc
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError as exc:
        raise ReplayError(
            f"bad time {text!r}: expected RFC 3339, e.g. 2026-11-02T10:00:00Z"
        ) from exc


def _offsets_at(
    consumer: Consumer, topic: str, partitions: list[int], bound: Any
) -> dict[int, int]:
    if isinstance(bound, dict):
        return {p: bound.get(p, 0) for p in partitions}
    wanted = [TopicPartition(topic, p, bound) for p in partitions]
    found = consumer.offsets_for_times(wanted, timeout=10)
    result = {}
    for tp in found:
        if tp.offset is None or tp.offset < 0:  # no record at or after the time: the end
            result[tp.partition] = consumer.get_watermark_offsets(tp, timeout=10)[1]
        else:
            result[tp.partition] = tp.offset
    return result


@dataclass
class BoundedSource:
    """Reads [start, end) of each partition, fixed when the replay starts; commits nothing."""

    bootstrap: str
    topic: str
    start: int | dict[int, int] | None = None
    end: int | dict[int, int] | None = None
    exhausted: bool = False
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    _consumer: Consumer | None = None

    def subscribe(self, topics: list[str], **kwargs: Any) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                # A throwaway group: replay must not touch the live group's offsets.
                "group.id": f"vigil-replay-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._consumer = consumer
        meta = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if meta is None or meta.error is not None:
            raise ReplayError(f"topic {self.topic!r} not found")
        partitions = sorted(meta.partitions)
        highs = {
            p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
            for p in partitions
        }
        starts = (
            {p: low for p, (low, _) in highs.items()}
            if self.start is None
            else _offsets_at(consumer, self.topic, partitions, self.start)
        )
        ends = (
            {p: high for p, (_, high) in highs.items()}
            if self.end is None
            else _offsets_at(consumer, self.topic, partitions, self.end)
        )
        self.ranges = {p: (starts[p], min(ends[p], highs[p][1])) for p in partitions}
        todo = [TopicPartition(self.topic, p, a) for p, (a, b) in self.ranges.items() if a < b]
        self._pending = {tp.partition for tp in todo}
        self.exhausted = not todo
        consumer.assign(todo)
        on_assign: Callable[..., None] | None = kwargs.get("on_assign")
        if on_assign is not None:
            on_assign(consumer, todo)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        assert self._consumer is not None
        kept: list[Message] = []
        for msg in self._consumer.consume(num_messages, timeout):
            error = msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition is None or offset is None or error is not None:
                kept.append(msg)
                continue
            end = self.ranges[partition][1]
            if offset < end:
                kept.append(msg)
            if offset >= end - 1:
                self._finish(partition)
        if not kept and self._pending:
            # Transaction markers occupy offsets: a position at the end also finishes.
            positions = self._consumer.position(
                [TopicPartition(self.topic, p) for p in sorted(self._pending)]
            )
            for tp in positions:
                if tp.offset is not None and tp.offset >= self.ranges[tp.partition][1]:
                    self._finish(tp.partition)
        return kept

    def _finish(self, partition: int) -> None:
        if partition in self._pending:
            self._pending.discard(partition)
            assert self._consumer is not None
            self._consumer.incremental_unassign([TopicPartition(self.topic, partition)])
        self.exhausted = not self._pending

    def commit(self, **kwargs: Any) -> list[TopicPartition]:
        return []  # a replay leaves no trace in any group

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(self._pending)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        assert self._consumer is not None
        return self._consumer.position(partitions)

    def get_watermark_offsets(self, partition: TopicPartition, **kwargs: Any) -> Any:
        assert self._consumer is not None
        return self._consumer.get_watermark_offsets(partition, **kwargs)

    def committed(self, partitions: list[TopicPartition], **kwargs: Any) -> Any:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]


@dataclass
class FileSink:
    """A producer stand-in that writes alerts as JSON lines and counts dead letters."""

    alerts_topic: str
    out: IO[bytes]
    alerts: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)

    def produce(self, topic: str, key: Any = None, value: Any = None, **kwargs: Any) -> None:
        if topic == self.alerts_topic:
            self.out.write(value + b"\n")
            self.alerts.append(orjson.loads(value))
        else:
            headers = dict(kwargs.get("headers") or [])
            self.dead_letters[headers.get("vigil.dlq.reason", b"?").decode()] += 1
        callback = kwargs.get("on_delivery")
        if callback is not None:
            callback(None, None)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        self.out.flush()
        return 0


def replay_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vigil replay", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--from", dest="start", help="RFC 3339 time or P:OFFSET,...")
    parser.add_argument("--to", dest="end", help="RFC 3339 time or P:OFFSET,... (exclusive)")
    parser.add_argument("--config", type=Path, help="the live service's TOML config")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--output", type=Path, help="alerts as JSON lines")
    target.add_argument("--output-topic", help="alerts to this topic")
    parser.add_argument("--labels", type=Path, help="JSON lines {event_id, attack, attack_id}")
    parser.add_argument(
        "--compare-with",
        metavar="ALERTS_TOPIC",
        help="the live service's alerts topic: list every alert that differs (exit 1 if any)",
    )
    args = parser.parse_args(argv)
    if args.compare_with is not None and args.output is None:
        print("vigil replay: --compare-with needs --output FILE", file=sys.stderr)
        return 2
    try:
        start = parse_bound(args.start) if args.start else None
        end = parse_bound(args.end) if args.end else None
        settings = load_settings(
            {
                "bootstrap": args.bootstrap,
                "input_topic": args.topic,
                "alerts_topic": args.output_topic or "vigil-replay-alerts",
                "dlq_topic": "vigil-replay-dead-letters",
                "group": "vigil-replay",
                "metrics_port": None,
            },
            config_file=args.config,
        )
    except (ReplayError, ConfigError) as exc:
        print(f"vigil replay: {exc}", file=sys.stderr)
        return 2
    configure_logging("warning", sys.stderr.buffer)
    source = BoundedSource(args.bootstrap, args.topic, start, end)
    sink = None
    out = args.output.open("wb") if args.output else None
    if out is not None:
        sink = FileSink(settings.alerts_topic, out)
    last = [time.monotonic()]

    def progress(summary: Any) -> None:
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            total = sum(b - a for a, b in source.ranges.values())
            rate = summary.records_per_s
            eta = (total - summary.records) / rate if rate else float("nan")
            print(
                f"\r{summary.records:,}/{total:,} records  {rate:,.0f}/s  ETA {eta:,.0f}s",
                end="",
                file=sys.stderr,
                flush=True,
            )

    try:
        service = Service(
            settings,
            consumer=source,
            producer=sink,  # type: ignore[arg-type]
            on_batch=progress,
        )
        summary = service.run()
    finally:
        if out is not None:
            out.close()
    print(file=sys.stderr)
    alerts = sink.alerts if sink is not None else []
    per_day = Counter(a["occurred_at"][:10] for a in alerts)
    print(f"records   {summary.records:,} ({summary.records_per_s:,.0f}/s)")
    print(f"events    {summary.events:,}  dead letters {summary.dead_letters:,}")
    print(f"alerts    {summary.alerts:,}")
    for day, count in sorted(per_day.items()):
        print(f"  {day}  {count:,}")
    if args.labels is not None and sink is not None:
        print(format_evaluation(evaluate(alerts, read_labels(args.labels))))
    if args.compare_with is not None and sink is not None:
        live = [
            orjson.loads(r.value or b"")
            for r in read_topic(args.bootstrap, args.compare_with)
            if _in_ranges(_source_of(r.value), args.topic, source.ranges)
        ]
        differences = compare_alerts(live, alerts)
        for line in differences:
            print(line)
        print(f"compared with {args.compare_with}: {len(differences)} differences")
        return 1 if differences else 0
    return 0


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
