"""The detector service: consume a batch, score, produce alerts and dead letters,
deliver, then commit.

At-least-once: offsets are committed only after every alert and dead letter the batch
caused is acknowledged by the broker. A record that cannot be decoded, validated or
scored goes to the dead-letter topic with its reason and its offset still advances;
nothing in the data can stop the loop.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any, Protocol, cast

import msgspec
import orjson
import structlog
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from detectors.compiled import compiled_modules
from detectors.guard import LearningGuard
from detectors.label_gate import LabelGate
from detectors.scoring import (
    EventScorer,
    Scored,
    ScoringConfig,
    Unscorable,
    stable_seed,
    warm_up,
)
from schemas.validation import PROCESSING_ERROR, EventValidator
from stream.alerts import SourceCoordinates, event_alert
from stream.alignment import EventTimeAlignment
from stream.checkpoint import fingerprint
from stream.delivery import (
    AtLeastOnce,
    Delivery,
    ExactlyOnce,
    ProducerFatalError,
    TransactionAbortedError,
    shutdown_problem,
)
from stream.faults import FaultInjector
from stream.feedback import TopicFollower, decode_label, decode_pattern_alert
from stream.gc_tuning import freeze_long_lived, tune_collector
from stream.ingest import ingest
from stream.kafka_io import (
    DeliveryTracker,
    Record,
    VigilKafkaError,
    consumer_config,
    producer_config,
)
from stream.metrics import Health, ServiceMetrics, StateMetrics, serve
from stream.observations import observation_records
from stream.owned_partitions import OwnedPartitions, caught_up
from stream.partition_state import PartitionState, ReadPartition
from stream.settings import ServiceSettings
from stream.state_store import ensure_topics, read_state_partition

log = structlog.get_logger("vigil.service")

# How long past ``exit_when_idle`` to wait for partitions that are behind but silent.
IDLE_GRACE_S = 60.0

# How long past ``shutdown_timeout_s`` `vigil run` still waits for itself before it ends
# the process (ShutdownWatchdog): for what the deadline cannot cut short, e.g.
# librdkafka's consumer close, which takes no timeout.
SHUTDOWN_EXIT_GRACE_S = 10.0


class ConsumerLike(Protocol):
    def subscribe(self, topics: list[str], **kwargs: Any) -> None: ...
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...
    def commit(self, **kwargs: Any) -> Any: ...
    def close(self) -> None: ...
    def assignment(self) -> list[TopicPartition]: ...
    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...
    def get_watermark_offsets(self, partition: TopicPartition, **kwargs: Any) -> Any: ...
    def committed(self, partitions: list[TopicPartition], **kwargs: Any) -> Any: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...


# How long event-time alignment waits on a partition that has records to come but
# delivers none (see Service._more). Wall-clock, but it only orders partitions: no score
# depends on it.
ALIGNMENT_WAIT_S = 10.0


@dataclass
class RunSummary:
    events: int = 0
    dead_letters: int = 0
    alerts: int = 0
    held_by_labels: int = 0  # flagged, but below the threshold reviewers' labels set
    not_learned: int = 0  # scored, but kept out of learning by the guard
    batches: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    first_batch_at: float | None = None
    last_commit_at: float | None = None
    # Why the shutdown did not finish cleanly (a batch or a snapshot given up); None: it did.
    shutdown_error: str | None = None

    @property
    def clean(self) -> bool:
        return self.shutdown_error is None

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


def _consumer_error(error: KafkaError) -> None:
    """A consumer error met in a batch: a fatal one stops the service; the others are
    logged, but for end-of-partition events, which are not errors."""
    if error.fatal():
        raise VigilKafkaError(f"fatal consumer error: {error.str()}", error.name())
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer.error", error=error.str(), code=error.name())


def scoring_config(settings: ServiceSettings) -> ScoringConfig:
    return ScoringConfig(
        engine=settings.engine,
        n_trees=settings.n_trees,
        height=settings.height,
        window_size=settings.window_size,
        seed=settings.seed,
        quantile=settings.quantile,
        suspicious_quantile=settings.suspicious_quantile,
        warmup=settings.warmup,
        max_keys=settings.max_keys,
        protect_above=settings.protect_above,
        cohort_age_h=settings.cohort_age_h,
        arrival_kinds=settings.arrival_kinds,
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


def send_dead_letter(
    producer: Producer,
    topic: str,
    record: Record,
    reason: str,
    detail: str,
    tracker: DeliveryTracker,
) -> None:
    """The raw record, as it came, with its reason and source in ``vigil.*`` headers."""
    producer.produce(
        topic,
        key=record.key,
        value=record.value,
        headers=dead_letter_headers(record, reason, detail),
        on_delivery=tracker.callback,
    )
    tracker.sent()


def stop_on_signals(stop: Callable[[str], None]) -> None:
    """SIGTERM and SIGINT call ``stop(name)``: the loop finishes its batch, commits and
    exits.

    The handler must not log, nor take any lock: Python runs it on the main thread between
    two bytecodes, possibly inside structlog's ``with lock: write()`` of another line, and
    that lock is not reentrant, so a log call here deadlocked the process for good (seen:
    a SIGTERM sent just as ``batch.committed`` was being written). The loop logs the signal
    once it sees the stop."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class Outcome(Protocol):
    """A run's summary, as far as the watchdog's exit code goes."""

    @property
    def clean(self) -> bool: ...


class Stoppable(Protocol):
    """What ShutdownWatchdog watches (a Service, a pattern or incident stage)."""

    @property
    def shutdown_started(self) -> float | None: ...
    @property
    def finished(self) -> bool: ...
    @property
    def summary(self) -> Outcome: ...


class ShutdownWatchdog:
    """Ends the process if it is still running ``limit_s`` after its service began to
    shut down: exit 1, or 0 if the service had finished cleanly (everything it processed
    committed) and only what came after it hung.

    The service's deadline bounds the Kafka calls it makes; this bounds the rest (a
    consumer close librdkafka does not return from, a state restore in progress). Only for
    a process that is the service (`vigil run`): it never returns, it exits. Ending there is
    as safe as a crash: what was not committed is read again by the next owner.
    """

    def __init__(
        self,
        service: Stoppable,
        limit_s: float,
        *,
        exit: Callable[[int], object] = os._exit,
        poll_s: float = 0.2,
    ) -> None:
        self.service = service
        self.limit_s = limit_s
        self._exit = exit
        self._poll_s = poll_s

    def start(self) -> threading.Thread:
        # A daemon: a process that exits normally does not wait for it.
        thread = threading.Thread(target=self._watch, name="vigil-shutdown-watchdog", daemon=True)
        thread.start()
        return thread

    def _watch(self) -> None:
        while (started := self.service.shutdown_started) is None:
            time.sleep(self._poll_s)
        while time.monotonic() < started + self.limit_s:
            time.sleep(self._poll_s)
        service = self.service
        code = 0 if service.finished and service.summary.clean else 1
        # From a helper, waited for a second at most: the thread that is stuck may be the
        # one holding the log's lock (a write to a stdout nobody reads).
        message = threading.Thread(
            target=log.error,
            args=("service.shutdown_timeout",),
            kwargs={"seconds": self.limit_s, "finished": service.finished, "exit_code": code},
            daemon=True,
        )
        message.start()
        message.join(1.0)
        self._exit(code)


class Service:
    """One consumer in the group; run() returns when stopped or idle.

    With clients injected (replays, unit tests) no state is kept and delivery is
    at-least-once unless ``delivery`` and ``read_state`` say otherwise.
    """

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
        delivery: Delivery | None = None,
        read_state: ReadPartition | None = None,
    ) -> None:
        # No network here: clients are created lazily in run(), as quix-streams does.
        self.settings = settings
        self._consumer = consumer
        self._producer = producer
        self._delivery = delivery
        self._scorer_factory = scorer_factory or PartitionScorers(scoring_config(settings))
        self._fingerprint = fingerprint(scoring_config(settings))
        self.metrics = metrics or ServiceMetrics()
        # One scorer per input partition: its state depends only on that partition's
        # records in offset order, so a replay of the partition reproduces it exactly,
        # whatever the interleaving of partitions in a poll.
        self.owned: OwnedPartitions[EventScorer] = OwnedPartitions(
            fresh=self._scorer_factory,
            fingerprint=self._fingerprint,
            read=read_state,
            state_topic=settings.state_topic_name,
            restore_timeout_s=settings.restore_timeout_s,
            observer=StateMetrics(self.metrics),
        )
        self.validator = EventValidator(max_bytes=settings.max_event_bytes)
        self.health = Health()
        self.faults = faults or FaultInjector()
        self.on_batch = on_batch
        self.summary = RunSummary()
        self._stopping = False
        self._stop_reason: str | None = None  # the signal's name, or "stop()"
        # time.monotonic() of the stop; no Kafka call of the shutdown waits past deadline.
        self.shutdown_started: float | None = None
        self._shutdown_deadline: float | None = None
        self.finished = False  # run() returned
        self.http_port: int | None = None
        self._idle_since = time.monotonic()
        self._live: Producer | None = None
        self._out: Delivery | None = None
        self.gate = LabelGate(
            target=settings.target_precision,
            min_labels=settings.min_labels,
            unproven=settings.unproven_segments,
        )
        self._label_feed: TopicFollower | None = None
        self._pattern_feed: TopicFollower | None = None
        self.guard = LearningGuard()
        skew = settings.max_event_time_skew_s
        self.alignment: EventTimeAlignment[Message] | None = (
            None
            if skew is None
            else EventTimeAlignment(round(skew * 1000.0), pause_at=settings.batch_size)
        )
        self._paused: set[tuple[str, int]] = set()
        # Partition -> time.monotonic() it last delivered a record (or was assigned).
        self._heard: dict[tuple[str, int], float] = {}

    @property
    def partitions(self) -> dict[tuple[str, int], PartitionState[EventScorer]]:
        return self.owned.states

    @property
    def scorers(self) -> dict[tuple[str, int], EventScorer]:
        return {key: state.model for key, state in self.owned.states.items()}

    def stop(self, reason: str = "stop()") -> None:
        """Ask the loop to finish its batch, commit and exit (SIGTERM, SIGINT).

        Called from a signal handler: plain assignments only, no logging or locks (see
        ``stop_on_signals``)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stopping = True
        self.health.ready = False
        self._begin_shutdown()

    def _begin_shutdown(self) -> None:
        """Start the shutdown clock once: from now on no Kafka call waits past the
        deadline (a call already waiting is cut short too, see stream/delivery.py)."""
        if self._shutdown_deadline is not None:
            return
        now = time.monotonic()
        self.shutdown_started = now
        self._shutdown_deadline = now + self.settings.shutdown_timeout_s
        out = self._out
        if out is not None:
            out.deadline = self._shutdown_deadline

    def _use(self, producer: Producer, delivery: Delivery) -> None:
        """The clients to produce and commit with from now on."""
        # A stop may have come first (before run(), or before a replacement producer).
        delivery.deadline = self._shutdown_deadline
        self._live, self._out = producer, delivery
        self.owned.bind(producer, delivery)

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stop)

    # -- the loop ------------------------------------------------------------------------

    def _clients(self) -> tuple[ConsumerLike, Producer, Delivery]:
        settings = self.settings
        exactly_once = settings.guarantee == "exactly-once"
        if self._consumer is None:
            ensure_topics(settings)
            if self.owned.read is None:
                self.owned.read = self._read_state_partition
        # confluent-kafka's overloaded stubs do not match a Protocol structurally.
        consumer = self._consumer or cast(ConsumerLike, Consumer(consumer_config(settings)))
        producer = self._producer or Producer(producer_config(settings, transactional=exactly_once))
        delivery = self._delivery
        if delivery is None:
            # Transactions need the group's metadata: only a live consumer has it.
            live = self._consumer is None and self._producer is None
            kind = ExactlyOnce if exactly_once and live else AtLeastOnce
            delivery = kind(producer, settings.flush_timeout_s)
        return consumer, producer, delivery

    def _read_state_partition(self, partition: int) -> Any:
        return read_state_partition(self.settings, partition, self.settings.restore_timeout_s)

    def run(self) -> RunSummary:
        settings = self.settings
        tune_collector()
        consumer, producer, delivery = self._clients()
        self._use(producer, delivery)
        delivery.start()
        if settings.labels_topic is not None:
            self._label_feed = TopicFollower(settings, settings.labels_topic, decode_label)
            self._apply_labels(self._label_feed.start(settings.restore_timeout_s))
        if settings.pattern_alerts_topic is not None:
            self._pattern_feed = TopicFollower(
                settings, settings.pattern_alerts_topic, decode_pattern_alert
            )
            self._apply_patterns(self._pattern_feed.start(settings.restore_timeout_s))
        server = None
        if settings.metrics_port is not None:
            server, self.http_port = serve(
                self.metrics, self.health, settings.metrics_host, settings.metrics_port
            )
            log.info("http.listening", port=self.http_port)
        # The kernels are loaded before the first batch, not in it (detectors/scoring.py).
        warm_up(scoring_config(settings))
        freeze_long_lived()  # modules, settings, the labels and patterns read so far
        consumer.subscribe(
            [settings.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._idle_since = time.monotonic()
        log.info(
            "service.started",
            input_topic=settings.input_topic,
            group=settings.group,
            guarantee=settings.guarantee,
            # An install without them (VIGIL_COMPILE=0, setup.py) scores the same, slower.
            compiled=compiled_modules(),
        )
        try:
            while not self._stopping:
                self.health.beat()
                messages = consumer.consume(settings.batch_size, settings.poll_timeout_s)
                if self.alignment is not None:
                    messages = self._align(consumer, messages)
                    if not messages and self.alignment.held:
                        continue  # records in hand: not idle
                if not messages:
                    if getattr(consumer, "exhausted", False):
                        log.info("service.end_of_input")
                        break
                    if self._idle_long_enough(consumer):
                        log.info("service.idle", seconds=settings.exit_when_idle)
                        break
                    continue
                self._idle_since = time.monotonic()
                if self._label_feed is not None:
                    self._apply_labels(self._label_feed.poll())
                if self._pattern_feed is not None:
                    self._apply_patterns(self._pattern_feed.poll())
                producer, delivery = self._batch(consumer, producer, delivery, messages)
                # A slow batch (a broker away) is not idle time.
                self._idle_since = time.monotonic()
            if self._stopping:
                log.info("service.stopping", reason=self._stop_reason)
        except BaseException:
            # The in-memory state may be ahead of what is durable: close() must not
            # snapshot it on revoke, or a restart would skip the batch's outputs.
            self.owned.states.clear()
            raise
        finally:
            self.health.ready = False
            self.summary.finished = time.monotonic()
            # Idle, end of input or an error: the close is bounded like a stop.
            self._begin_shutdown()
            try:
                delivery.close()
            finally:
                # With cooperative-sticky, close() revokes our partitions: _on_revoke
                # snapshots them, so a clean restart has nothing to re-score.
                consumer.close()
                for feed in (self._label_feed, self._pattern_feed):
                    if feed is not None:
                        feed.close()
                if server is not None:
                    server.shutdown()
                self._check_shutdown()
                self.finished = True
            log.info(
                "service.stopped",
                events=self.summary.events,
                dead_letters=self.summary.dead_letters,
                alerts=self.summary.alerts,
                held_by_labels=self.summary.held_by_labels,
                not_learned=self.summary.not_learned,
                elapsed_s=round(self.summary.elapsed_s, 3),
                clean=self.summary.clean,
                shutdown_s=round(time.monotonic() - (self.shutdown_started or 0.0), 3),
            )
        return self.summary

    def _check_shutdown(self) -> None:
        """A transactional call given up on the way out (a snapshot on revoke cut short
        by the deadline) makes the shutdown unclean: say so, and `vigil run` exits 1."""
        if self.summary.shutdown_error is None:
            self.summary.shutdown_error = shutdown_problem(self._out)
        if self.summary.shutdown_error is not None:
            log.error("service.shutdown_incomplete", reason=self.summary.shutdown_error)

    def _batch(
        self,
        consumer: ConsumerLike,
        producer: Producer,
        delivery: Delivery,
        messages: list[Message],
    ) -> tuple[Producer, Delivery]:
        """Process one batch; on a failed transaction, roll the state back to what is
        durable. Returns the clients to go on with (a fatally failed producer is replaced)."""
        try:
            try:
                self._process_batch(consumer, producer, delivery, messages)
            except KafkaException as exc:
                # produce() refuses once the transaction must be aborted (a record the
                # broker rejected, e.g. MSG_SIZE_TOO_LARGE): abort it.
                if not isinstance(delivery, ExactlyOnce):
                    raise
                delivery.abort(exc)
        except TransactionAbortedError as exc:
            if self._stopping:
                self._give_up_batch(str(exc))
            else:
                self._rewind(consumer)
        except ProducerFatalError as exc:
            if self._stopping:  # no new producer (its init_transactions) on the way out
                self._give_up_batch(str(exc))
                return producer, delivery
            # A broker away mid-transaction can leave the producer fatally failed (e.g.
            # INVALID_TXN_STATE on abort) or stuck in a call librdkafka never returns from
            # (send_offsets_to_transaction after a restart, see stream/delivery.py): a new
            # one with the same transactional.id fences the old one and aborts what it left
            # open; then read again from the snapshots.
            log.warning("producer.replacing", error=str(exc))
            producer = Producer(producer_config(self.settings, transactional=True))
            delivery = ExactlyOnce(producer, self.settings.flush_timeout_s)
            delivery.start()
            self._use(producer, delivery)
            self._rewind(consumer)
        return producer, delivery

    def _give_up_batch(self, reason: str) -> None:
        """Stopping, and the batch's transaction did not commit. Rewinding would only
        re-read what the next owner reads anyway: instead drop the in-memory state, which
        is ahead of what is durable, so that close() does not snapshot it on revoke. The
        batch's records are read again from the last snapshot and committed offsets."""
        self.owned.states.clear()
        self.summary.shutdown_error = f"the last batch was not committed: {reason}"
        log.error("service.batch_given_up", reason=reason)

    def _rewind(self, consumer: ConsumerLike) -> None:
        # Held records are re-read from the committed offsets like the rest: all of them,
        # paused or not (a held record kept across the seek would be processed before the
        # earlier ones read again, which would then be skipped as seen).
        self._unhold(consumer, set(self.owned.states) | self._paused)
        self.owned.rewind(consumer)
        self._refresh_ready()

    # -- event-time alignment (stream/alignment.py) ----------------------------------------

    def _align(self, consumer: ConsumerLike, messages: list[Message]) -> list[Message]:
        """The records to process now; those running ahead of a partition with records
        still to come are held and their partitions paused."""
        alignment = self.alignment
        assert alignment is not None
        now = time.monotonic()
        heard = self._heard
        for msg in messages:
            heard[(msg.topic() or "", msg.partition() or 0)] = now
        released = alignment.release(messages, self._more(consumer, now))
        held = alignment.paused()
        pause, resume = held - self._paused, self._paused - held
        if pause:
            consumer.pause([TopicPartition(t, p) for t, p in sorted(pause)])
        if resume:
            consumer.resume([TopicPartition(t, p) for t, p in sorted(resume)])
            for key in resume:
                heard[key] = now  # fetching again: its next records are due shortly
        self._paused = held
        self.metrics.held.set(alignment.held)
        return released

    def _more(self, consumer: ConsumerLike, now: float) -> set[tuple[str, int]]:
        """Owned partitions with records still to come (behind the high watermark, or not
        read yet) that are paused or delivered within ALIGNMENT_WAIT_S: one silent for
        longer (a lag misread, a broker away) does not hold the others back."""
        # A paused partition is silent because it is paused: it counts while it holds
        # records (once they are released, its next ones are still to come).
        keys = [
            key
            for key in self.owned.states
            if key in self._paused or now - self._heard.get(key, now) < ALIGNMENT_WAIT_S
        ]
        if not keys:
            return set()
        try:
            positions = consumer.position([TopicPartition(t, p) for t, p in keys])
            more = set()
            for tp in positions:
                low, high = consumer.get_watermark_offsets(tp, cached=True)
                offset = tp.offset
                if offset < 0:  # not read yet: it starts where its state resumed
                    state = self.owned.states.get((tp.topic or "", tp.partition or 0))
                    offset = state.next_offset if state is not None else -1
                if offset < 0:  # nor that known: unless the log is known to be empty
                    ahead = high < 0 or low < 0 or high > low
                else:
                    ahead = high < 0 or offset < high
                if ahead:
                    more.add((tp.topic or "", tp.partition or 0))
            return more
        except Exception:  # no lag to go by: let every partition run
            log.debug("alignment.lag_unavailable", exc_info=True)
            return set()

    def _unhold(self, consumer: ConsumerLike, partitions: set[tuple[str, int]]) -> None:
        """Forget what is held of ``partitions`` and resume those still assigned."""
        if self.alignment is None:
            return
        self.alignment.drop(partitions)
        for key in partitions:
            self._heard.pop(key, None)
        paused = self._paused & partitions
        self._paused -= partitions
        owned = [key for key in sorted(paused) if key in self.owned.states]
        if owned:
            consumer.resume([TopicPartition(t, p) for t, p in owned])

    def _idle_long_enough(self, consumer: ConsumerLike) -> bool:
        """Idle means: nothing new for ``exit_when_idle`` seconds *and* caught up with the
        end of every assigned partition (a slow first fetch is not the end of the input).

        Without an assignment the group may still wait for a dead member's session to
        expire, so then the clock runs a session timeout longer.
        """
        limit = self.settings.exit_when_idle
        if limit is None:
            return False
        if not self.owned.states:
            limit += self.settings.session_timeout_ms / 1000
        idle_s = time.monotonic() - self._idle_since
        if idle_s < limit:
            return False
        if caught_up(consumer):
            return True
        if idle_s >= limit + IDLE_GRACE_S:
            log.warning("service.idle_not_caught_up", seconds=round(idle_s, 1))
            return True
        return False

    # -- partitions come and go ----------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # cooperative-sticky: the callbacks carry only the partitions that changed.
        log.info("partitions.assigned", partitions=[p.partition for p in partitions])
        self.owned.assign(consumer, partitions)
        if self.alignment is not None:
            # librdkafka keeps a partition paused across a reassignment: start it fetching.
            consumer.resume(partitions)
            now = time.monotonic()
            for p in partitions:
                self._heard[(p.topic or "", p.partition or 0)] = now
        self._idle_since = time.monotonic()
        self._refresh_ready()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions.revoked", partitions=[p.partition for p in partitions])
        self._unhold(
            cast(ConsumerLike, consumer), {(p.topic or "", p.partition or 0) for p in partitions}
        )
        self.owned.revoke(consumer, partitions)
        self._idle_since = time.monotonic()
        self._refresh_ready()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: another member may already own them; write nothing.
        log.warning("partitions.lost", partitions=[p.partition for p in partitions])
        self._unhold(
            cast(ConsumerLike, consumer), {(p.topic or "", p.partition or 0) for p in partitions}
        )
        self.owned.forget((p.topic or "", p.partition or 0) for p in partitions)
        self._idle_since = time.monotonic()
        self._refresh_ready()

    def _refresh_ready(self) -> None:
        # Ready once assigned and every partition's state is restored and caught up.
        owned = self.owned
        self.health.ready = bool(owned.states) and not owned.restoring and not self._stopping

    # -- one batch -----------------------------------------------------------------------

    def _process_batch(
        self,
        consumer: ConsumerLike,
        producer: Producer,
        delivery: Delivery,
        messages: list[Message],
    ) -> None:
        started = time.monotonic()
        if self.summary.first_batch_at is None:
            self.summary.first_batch_at = started
        delivery.begin()
        alerts_before = self.summary.alerts
        batch = ingest(
            messages, self.owned.get, self.validator.fast, self.validator.judge, _consumer_error
        )
        valid = batch.valid
        for msg, invalid, already_out in batch.invalid:
            if not already_out:
                self._dead_letter(producer, Record.of(msg), invalid.reason, invalid.detail)
        results: list[Scored | Unscorable | None] = [None] * len(valid)
        for key, indices in batch.by_partition.items():
            state = self.owned.states[key]
            events = [valid[i][1] for i in indices]
            exclude = None
            if self._label_feed is not None or self._pattern_feed is not None:
                exclude = [self.guard.blocks(event) for event in events]
                self.metrics.not_learned.inc(sum(exclude))
                self.summary.not_learned += sum(exclude)
            for i, scored in zip(indices, state.model.score_batch(events, exclude), strict=True):
                results[i] = scored
        # Outputs in the batch's order, which is event-time order across partitions when
        # aligned (stream/alignment.py): the observations of a batch spanning hours of a
        # sparse backlog must not come partition after partition.
        scored_by_type: Counter[str] = Counter()
        # Without observations, an event below its threshold has nothing to output.
        observing = self.settings.observations
        for (msg, event), outcome, already_out in zip(valid, results, batch.silent, strict=True):
            assert outcome is not None
            if already_out:
                continue
            if isinstance(outcome, Scored):
                scored_by_type[outcome.event_type] += 1
                if not (outcome.is_anomaly or observing):
                    continue
            self._output(producer, Record.of(msg), event, outcome)
        self.summary.events += scored_by_type.total()
        self.metrics.count_events(scored_by_type)
        # Serve delivery callbacks once per batch (the commit flushes anyway).
        producer.poll(0)
        batch_no = self.summary.batches + 1
        self.faults.reached("after_produce", batch_no)
        self.owned.snapshot_due(consumer, self.settings.checkpoint_every)
        self.faults.reached("before_commit", batch_no)
        offsets = self.owned.offsets_to_commit(batch.advanced)
        delivery.commit(consumer, offsets)
        self.metrics.commits.inc()
        self.owned.finish_restores()
        self._refresh_ready()
        self.summary.batches = batch_no
        self.summary.last_commit_at = time.monotonic()
        self._update_lag(consumer)
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        log.info(
            "batch.committed",
            batch=batch_no,
            records=batch.processed,
            alerts=self.summary.alerts - alerts_before,
            offsets={f"{tp.topic}[{tp.partition}]": tp.offset for tp in offsets},
        )
        if self.on_batch is not None:
            self.on_batch(self.summary)

    def _output(
        self, producer: Producer, record: Record, event: dict[str, Any], result: Scored | Unscorable
    ) -> None:
        if isinstance(result, Unscorable):
            log.error("scoring.failed", partition=record.partition, offset=record.offset)
            self._dead_letter(producer, record, PROCESSING_ERROR, result.detail)
            return
        if result.is_anomaly:
            allowed, bar = self.gate.decide(result.detector, result.event_type, result.score)
            if allowed:  # ``bar``: the labels' threshold it passed; None: the budget decided
                self._alert(
                    producer,
                    record,
                    event,
                    result if bar is None else msgspec.structs.replace(result, threshold=bar),
                )
            else:  # below the labels' bar, or a segment held until labels prove it
                self.summary.held_by_labels += 1
                self.metrics.held_by_labels.labels(result.event_type).inc()
        if self.settings.observations:
            self._observe(producer, record, event, result)

    def _alert(
        self, producer: Producer, record: Record, event: dict[str, Any], scored: Scored
    ) -> None:
        source = SourceCoordinates(record.topic, record.partition, record.offset)
        alert = event_alert(event, scored, source)
        assert self._out is not None
        producer.produce(
            self.settings.alerts_topic,
            key=alert["alert_id"].encode(),
            value=orjson.dumps(alert),
            on_delivery=self._out.tracker.callback,
        )
        self._out.tracker.sent()
        self.summary.alerts += 1
        self.metrics.alerts.labels(scored.event_type).inc()
        log.debug(
            "alert.produced",
            alert_id=alert["alert_id"],
            partition=record.partition,
            offset=record.offset,
        )

    def _apply_labels(self, labels: Iterable[dict[str, Any]]) -> None:
        verdicts = {"true_positive": True, "false_positive": False, "unsure": None}
        count = 0
        for label in labels:
            verdict = verdicts[label["verdict"]]
            self.gate.add(
                label["alert_id"], label["detector"], label["segment"], label["score"], verdict
            )
            entity = label.get("entity")
            if verdict and entity is not None:
                self.guard.fraud(f"{entity['type']}:{entity['id']}")
            count += 1
        if not count:
            return
        self.metrics.guarded.labels("fraud_entities").set(self.guard.fraud_entities)
        self.metrics.label_threshold.clear()
        for st in self.gate.state():
            self.metrics.label_threshold.labels(st["detector"], st["segment"], st["source"]).set(
                st["threshold"]
            )
            for name, count_of in (("true", st["true"]), ("false", st["false"])):
                self.metrics.labels.labels(st["detector"], st["segment"], name).set(count_of)
            self.metrics.labels.labels(st["detector"], st["segment"], "unsure").set(st["unsure"])
        log.info("labels.applied", labels=count, segments=self.gate.state())

    def _apply_patterns(self, alerts: Iterable[dict[str, Any]]) -> None:
        for alert in alerts:
            pattern = alert["pattern"]
            self.guard.pattern(pattern["pattern_id"], pattern["members"], alert.get("status", ""))
        self.metrics.guarded.labels("patterns").set(self.guard.open_patterns)

    def _observe(
        self, producer: Producer, record: Record, event: dict[str, Any], scored: Scored
    ) -> None:
        """Stage 1 of pattern alerts: the keyed observations `vigil patterns` groups. The
        default partitioner puts every observation of one key on one partition."""
        assert self._out is not None
        source = SourceCoordinates(record.topic, record.partition, record.offset)
        for key, value in observation_records(event, scored, source):
            producer.produce(
                self.settings.observations_topic,
                key=key,
                value=value,
                on_delivery=self._out.tracker.callback,
            )
            self._out.tracker.sent()

    def _dead_letter(self, producer: Producer, msg: Record, reason: str, detail: str) -> None:
        assert self._out is not None
        send_dead_letter(producer, self.settings.dlq_topic, msg, reason, detail, self._out.tracker)
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
