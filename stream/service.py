"""The detector service: consume a batch, score, produce alerts and dead letters,
deliver, then commit.

At-least-once: offsets are committed only after every alert and dead letter the batch
caused is acknowledged by the broker. A record that cannot be decoded, validated or
scored goes to the dead-letter topic with its reason and its offset still advances;
nothing in the data can stop the loop.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any, Protocol, cast

import orjson
import structlog
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from detectors.scoring import EventScorer, Scored, ScoringConfig, Unscorable, stable_seed
from schemas.validation import PROCESSING_ERROR, EventValidator, Invalid
from stream.alerts import SourceCoordinates, event_alert
from stream.faults import FaultInjector
from stream.kafka_io import (
    DeliveryTracker,
    Record,
    VigilKafkaError,
    commit_or_raise,
    consumer_config,
    flush_or_raise,
    next_offsets,
    producer_config,
)
from stream.metrics import Health, ServiceMetrics, serve
from stream.settings import ServiceSettings

log = structlog.get_logger("vigil.service")

# How long past ``exit_when_idle`` to wait for partitions that are behind but silent.
IDLE_GRACE_S = 60.0


class ConsumerLike(Protocol):
    def subscribe(self, topics: list[str], **kwargs: Any) -> None: ...
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...
    def commit(self, **kwargs: Any) -> Any: ...
    def close(self) -> None: ...
    def assignment(self) -> list[TopicPartition]: ...
    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...
    def get_watermark_offsets(self, partition: TopicPartition, **kwargs: Any) -> Any: ...
    def committed(self, partitions: list[TopicPartition], **kwargs: Any) -> Any: ...


@dataclass
class RunSummary:
    events: int = 0
    dead_letters: int = 0
    alerts: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    first_batch_at: float | None = None
    last_commit_at: float | None = None

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def records(self) -> int:
        return self.events + self.dead_letters

    @property
    def busy_s(self) -> float:
        """From the first batch received to the last commit: time spent on records."""
        if self.first_batch_at is None or self.last_commit_at is None:
            return 0.0
        return self.last_commit_at - self.first_batch_at

    @property
    def records_per_s(self) -> float:
        return self.records / self.busy_s if self.busy_s > 0 else 0.0


def scoring_config(settings: ServiceSettings) -> ScoringConfig:
    return ScoringConfig(
        engine=settings.engine,
        n_trees=settings.n_trees,
        height=settings.height,
        window_size=settings.window_size,
        seed=settings.seed,
        quantile=settings.quantile,
        warmup=settings.warmup,
        max_keys=settings.max_keys,
        protect_above=settings.protect_above,
    )


@dataclass(frozen=True)
class PartitionScorers:
    """Makes the scorer of one input partition, seeded from the config and the partition."""

    config: ScoringConfig

    def __call__(self, partition: int) -> EventScorer:
        seed = stable_seed(self.config.seed, f"partition-{partition}")
        return EventScorer(replace(self.config, seed=seed))


def dead_letter_headers(
    record: Record, reason: str, detail: str
) -> list[tuple[str, str | bytes | None]]:
    return [
        ("vigil.dlq.reason", reason.encode()),
        ("vigil.dlq.detail", detail[:2000].encode()),
        ("vigil.source.topic", record.topic.encode()),
        ("vigil.source.partition", str(record.partition).encode()),
        ("vigil.source.offset", str(record.offset).encode()),
        ("vigil.dlq.schema_version", b"1"),
    ]


class Service:
    """One consumer in the group; run() returns when stopped or idle."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        consumer: ConsumerLike | None = None,
        producer: Producer | None = None,
        scorer_factory: Callable[[int], EventScorer] | None = None,
        metrics: ServiceMetrics | None = None,
        faults: FaultInjector | None = None,
        on_batch: Callable[[RunSummary], None] | None = None,
    ) -> None:
        # No network here: clients are created lazily in run(), as quix-streams does.
        self.settings = settings
        self._consumer = consumer
        self._producer = producer
        self._scorer_factory = scorer_factory or PartitionScorers(scoring_config(settings))
        # One scorer per input partition: its state depends only on that partition's
        # records in offset order, so a replay of the partition reproduces it exactly,
        # whatever the interleaving of partitions in a poll.
        self.scorers: dict[tuple[str, int], EventScorer] = {}
        self.validator = EventValidator(max_bytes=settings.max_event_bytes)
        self.metrics = metrics or ServiceMetrics()
        self.health = Health()
        self.faults = faults or FaultInjector()
        self.on_batch = on_batch
        self.summary = RunSummary()
        self.delivery = DeliveryTracker()
        self._stopping = False
        self.http_port: int | None = None
        self._assigned: set[tuple[str | None, int | None]] = set()
        self._idle_since = time.monotonic()

    def stop(self, *_: object) -> None:
        """Ask the loop to finish its batch, commit and exit (SIGTERM, SIGINT)."""
        self._stopping = True
        self.health.ready = False

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal", signal=signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> RunSummary:
        settings = self.settings
        # confluent-kafka's overloaded stubs do not match a Protocol structurally.
        consumer = self._consumer or cast(ConsumerLike, Consumer(consumer_config(settings)))
        producer = self._producer or Producer(producer_config(settings))
        server = None
        if settings.metrics_port is not None:
            server, self.http_port = serve(
                self.metrics, self.health, settings.metrics_host, settings.metrics_port
            )
            log.info("http.listening", port=self.http_port)
        consumer.subscribe(
            [settings.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._idle_since = time.monotonic()
        log.info("service.started", input_topic=settings.input_topic, group=settings.group)
        try:
            while not self._stopping:
                self.health.beat()
                messages = consumer.consume(settings.batch_size, settings.poll_timeout_s)
                if not messages:
                    if getattr(consumer, "exhausted", False):
                        log.info("service.end_of_input")
                        break
                    if self._idle_long_enough(consumer):
                        log.info("service.idle", seconds=settings.exit_when_idle)
                        break
                    continue
                self._idle_since = time.monotonic()
                self._process_batch(consumer, producer, messages)
        finally:
            self.health.ready = False
            self.summary.finished = time.monotonic()
            try:
                flush_or_raise(producer, self.delivery, settings.flush_timeout_s)
            finally:
                consumer.close()
                if server is not None:
                    server.shutdown()
            log.info(
                "service.stopped",
                events=self.summary.events,
                dead_letters=self.summary.dead_letters,
                alerts=self.summary.alerts,
                elapsed_s=round(self.summary.elapsed_s, 3),
            )
        return self.summary

    def _idle_long_enough(self, consumer: ConsumerLike) -> bool:
        """Idle means: nothing new for ``exit_when_idle`` seconds *and* caught up with the
        end of every assigned partition (a slow first fetch is not the end of the input).

        Without an assignment the group may still wait for a dead member's session to
        expire, so then the clock runs a session timeout longer.
        """
        limit = self.settings.exit_when_idle
        if limit is None:
            return False
        if not self._assigned:
            limit += self.settings.session_timeout_ms / 1000
        idle_s = time.monotonic() - self._idle_since
        if idle_s < limit:
            return False
        if self._caught_up(consumer):
            return True
        if idle_s >= limit + IDLE_GRACE_S:
            log.warning("service.idle_not_caught_up", seconds=round(idle_s, 1))
            return True
        return False

    def _caught_up(self, consumer: ConsumerLike) -> bool:
        try:
            assigned = consumer.assignment()
            if not assigned:
                return True
            positions = consumer.position(assigned)
            unknown = [tp for tp in positions if tp.offset is None or tp.offset < 0]
            # Nothing consumed yet on a partition: where the group would start is the answer.
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in (consumer.committed(unknown, timeout=5) if unknown else [])
            }
            for tp in positions:
                low, high = consumer.get_watermark_offsets(tp, timeout=5)
                at = tp.offset
                if at is None or at < 0:
                    at = committed.get((tp.topic, tp.partition), -1)
                log.debug("caught_up.check", partition=tp.partition, at=at, low=low, high=high)
                if high > low and (at is None or at < high):
                    return False
        except Exception:  # a broker hiccup here: try again on the next idle poll
            log.debug("caught_up.unknown", exc_info=True)
            return False
        return True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # cooperative-sticky: the callbacks carry only the partitions that changed.
        log.info("partitions.assigned", partitions=[p.partition for p in partitions])
        self._assigned.update((p.topic, p.partition) for p in partitions)
        self.metrics.assigned.set(len(self._assigned))
        self._idle_since = time.monotonic()
        self.health.ready = not self._stopping

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every batch is committed before the next consume(), so nothing is pending here.
        log.info("partitions.revoked", partitions=[p.partition for p in partitions])
        self._assigned.difference_update((p.topic, p.partition) for p in partitions)
        for p in partitions:
            # The partition's next owner starts its own state; ours would go stale.
            self.scorers.pop((p.topic or "", p.partition or 0), None)
        self.metrics.assigned.set(len(self._assigned))

    def _process_batch(
        self, consumer: ConsumerLike, producer: Producer, messages: list[Message]
    ) -> None:
        started = time.monotonic()
        if self.summary.first_batch_at is None:
            self.summary.first_batch_at = started
        alerts_before = self.summary.alerts
        processed: list[Record] = []
        valid: list[tuple[Record, dict[str, Any]]] = []
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise VigilKafkaError(f"fatal consumer error: {error.str()}", error.name())
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer.error", error=error.str(), code=error.name())
                continue
            record = Record.of(msg)
            processed.append(record)
            decoded = self.validator.decode(record.value)
            if isinstance(decoded, Invalid):
                self._dead_letter(producer, record, decoded.reason, decoded.detail)
            else:
                valid.append((record, decoded))
        by_partition: dict[tuple[str, int], list[tuple[Record, dict[str, Any]]]] = {}
        for item in valid:
            by_partition.setdefault((item[0].topic, item[0].partition), []).append(item)
        scored: list[tuple[Record, dict[str, Any], Scored | Unscorable]] = []
        for key, items in by_partition.items():
            results = self._scorer(key).score_batch([event for _, event in items])
            scored.extend((r, e, s) for (r, e), s in zip(items, results, strict=True))
        for record, event, result in scored:
            if isinstance(result, Unscorable):
                log.error("scoring.failed", partition=record.partition, offset=record.offset)
                self._dead_letter(producer, record, PROCESSING_ERROR, result.detail)
                continue
            self.summary.events += 1
            self.metrics.count_event(result.event_type)
            if result.is_anomaly:
                self._alert(producer, record, event, result)
            producer.poll(0)
        batch_no = self.summary.batches + 1
        self.faults.reached("after_produce", batch_no)
        flush_or_raise(producer, self.delivery, self.settings.flush_timeout_s)
        self.faults.reached("before_commit", batch_no)
        offsets = next_offsets(processed)
        commit_or_raise(consumer, offsets)
        self.metrics.commits.inc()
        self.summary.batches = batch_no
        self.summary.last_commit_at = time.monotonic()
        self._update_lag(consumer)
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        log.info(
            "batch.committed",
            batch=batch_no,
            records=len(processed),
            alerts=self.summary.alerts - alerts_before,
            offsets={f"{tp.topic}[{tp.partition}]": tp.offset for tp in offsets},
        )
        if self.on_batch is not None:
            self.on_batch(self.summary)

    def _scorer(self, key: tuple[str, int]) -> EventScorer:
        scorer = self.scorers.get(key)
        if scorer is None:
            scorer = self.scorers[key] = self._scorer_factory(key[1])
        return scorer

    def _alert(
        self, producer: Producer, record: Record, event: dict[str, Any], scored: Scored
    ) -> None:
        source = SourceCoordinates(record.topic, record.partition, record.offset)
        alert = event_alert(event, scored, source)
        producer.produce(
            self.settings.alerts_topic,
            key=alert["alert_id"].encode(),
            value=orjson.dumps(alert),
            on_delivery=self.delivery.callback,
        )
        self.delivery.sent()
        self.summary.alerts += 1
        self.metrics.alerts.labels(scored.event_type).inc()
        log.debug(
            "alert.produced",
            alert_id=alert["alert_id"],
            partition=record.partition,
            offset=record.offset,
        )

    def _dead_letter(self, producer: Producer, msg: Record, reason: str, detail: str) -> None:
        producer.produce(
            self.settings.dlq_topic,
            key=msg.key,
            value=msg.value,
            headers=dead_letter_headers(msg, reason, detail),
            on_delivery=self.delivery.callback,
        )
        self.delivery.sent()
        self.summary.dead_letters += 1
        self.metrics.dead_letters.labels(reason).inc()
        log.info(
            "dead_letter",
            reason=reason,
            detail=detail[:200],
            partition=msg.partition,
            offset=msg.offset,
        )

    def _update_lag(self, consumer: ConsumerLike) -> None:
        try:
            assigned = consumer.assignment()
            for tp in consumer.position(assigned):
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and high >= 0:
                    self.metrics.lag.labels(str(tp.partition)).set(high - tp.offset)
        except Exception:  # lag is telemetry; never fail a batch over it
            log.debug("lag.unavailable", exc_info=True)
