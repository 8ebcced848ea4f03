"""``vigil patterns``: the second stage, from keyed observations to pattern alerts.

The scoring service writes one observation per scored event and pattern key to the
observations topic, keyed by the pattern key (stream/observations.py), so every
observation of a key lands on one partition. This stage is a consumer group over that
topic with one ``PatternFinder`` per assigned partition: a key's observations all reach one
finder, whichever input partition and consumer the events came from, so an attack that
spans the scoring service's partitions is one pattern, raised once.

Each lifecycle step of a pattern (``new``; ``growing`` at growth steps; ``resolved``) is one
alert record (schemas/alert.v1.json, ``kind`` = ``pattern``) keyed by the pattern's alert id,
with the same ``alert_id`` and a ``sequence`` that grows by one per step: the latest record
per key (a compacted alerts topic keeps exactly that) is the pattern's current state.
Resolutions follow event time: after each batch every finder is advanced to the latest
event time its partition has seen, less ``lateness_s`` for observations still on their way
from slower scoring consumers.

At-least-once, like ``vigil run``: offsets are committed only after every alert and dead
letter of the batch is acknowledged. A finder's state lives in memory only: a partition that
moves to another member (rebalance, restart) starts with an empty finder there, so a
pattern open across the move may be raised again under a new id or restart its sequence.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, cast

import orjson
import structlog
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from detectors.attributes import attribute_kind
from detectors.patterns import PatternConfig, PatternFinder, PatternUpdate
from stream.kafka_io import (
    DeliveryTracker,
    Record,
    VigilKafkaError,
    commit_or_raise,
    flush_or_raise,
    next_offsets,
)
from stream.observations import BadObservation, Decoded, decode_observation
from stream.service import ConsumerLike, dead_letter_headers
from stream.settings import ConfigError

log = structlog.get_logger("vigil.patterns")

DETECTOR = "patterns/1"
ENV_PREFIX = "VIGIL_PATTERNS_"
# Which entity a pattern is about, by the kind of its most specific member (first found).
_ENTITY_KINDS: tuple[tuple[str, str], ...] = (
    ("device", "device"),
    ("ip24", "ip"),
    ("shop", "shop"),
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- settings -------------------------------------------------------------------------------


class PatternStageSettings(BaseModel):
    """Everything ``vigil patterns`` needs; built once at start-up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str = Field(min_length=1)
    observations_topic: str = Field(min_length=1)
    alerts_topic: str = Field(min_length=1)
    dlq_topic: str = Field(default="vigil.patterns.dlq", min_length=1)
    group: str = Field(min_length=1)
    exit_when_idle: float | None = Field(default=None, gt=0)
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    group_instance_id: str | None = Field(default=None, min_length=1)
    batch_size: int = Field(default=2_000, ge=1, le=100_000)
    poll_timeout_s: float = Field(default=0.5, gt=0, le=60)
    flush_timeout_s: float = Field(default=30.0, gt=0)
    lateness_s: float = Field(
        default=300.0, ge=0, description="event-time slack before quiet patterns resolve"
    )
    log_level: str = "info"
    # The finder (detectors/patterns.py); base_rate should be 1 - the scorer's quantile.
    base_rate: float = Field(default=0.005, gt=0, lt=1)
    min_support: int = Field(default=5, ge=1, le=64)
    min_users: int = Field(default=2, ge=1)
    window_s: float = Field(default=3600.0, gt=0)
    quiet_s: float = Field(default=3600.0, gt=0)
    kafka: dict[str, str] = Field(default_factory=dict)
    sasl_password: SecretStr | None = None

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return value.lower()

    def pattern_config(self) -> PatternConfig:
        return PatternConfig(
            base_rate=self.base_rate,
            min_support=self.min_support,
            min_users=self.min_users,
            window_s=self.window_s,
            quiet_s=self.quiet_s,
        )

    def kafka_common(self) -> dict[str, str | int | float | bool]:
        common: dict[str, str | int | float | bool] = {"bootstrap.servers": self.bootstrap}
        common.update(self.kafka)
        if self.sasl_password is not None:
            common["sasl.password"] = self.sasl_password.get_secret_value()
        return common

    def consumer_config(self) -> dict[str, Any]:
        """As stream/kafka_io.consumer_config: manual offset store and commit."""
        config: dict[str, Any] = {
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.partition.eof": False,
            "session.timeout.ms": self.session_timeout_ms,
        }
        if self.group_instance_id is not None:
            config["group.instance.id"] = self.group_instance_id
        config.update(self.kafka_common())
        return config

    def producer_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "zstd",
        }
        config.update(self.kafka_common())
        return config


_FIELDS = frozenset(PatternStageSettings.model_fields)


def load_stage_settings(
    cli: Mapping[str, Any],
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> PatternStageSettings:
    """Defaults < TOML file (``[patterns]`` section) < ``VIGIL_PATTERNS_*`` < flags.

    Its own environment prefix: ``vigil run``'s ``VIGIL_GROUP`` must not become this
    stage's group. Raises ``ConfigError`` naming each bad setting and its source.
    """
    env = os.environ if env is None else env
    merged: dict[str, tuple[Any, str]] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {config_file} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from exc
        section = data.get("patterns", data)
        merged.update(
            {str(k).replace("-", "_"): (v, f"file {config_file}") for k, v in section.items()}
        )
    for key, value in env.items():
        if key.startswith(ENV_PREFIX):
            merged[key[len(ENV_PREFIX) :].lower()] = (value, f"env {key}")
    merged.update(
        {k: (v, "flag --" + k.replace("_", "-")) for k, v in cli.items() if v is not None}
    )
    unknown = sorted(k for k in merged if k not in _FIELDS)
    if unknown:
        raise ConfigError(
            "unknown setting " + ", ".join(f"'{k}' ({merged[k][1]})" for k in unknown)
        )
    try:
        settings = PatternStageSettings.model_validate({k: v for k, (v, _) in merged.items()})
        settings.pattern_config()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            origin = merged.get(name, (None, "default"))[1]
            problems.append(f"setting '{name}' ({origin}): {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    except ValueError as exc:  # PatternConfig's cross-field checks
        raise ConfigError(f"invalid configuration: {exc}") from None
    return settings


# -- pattern alerts (pure) ------------------------------------------------------------------


def pattern_alert_id(pattern_id: str) -> str:
    """``pa-`` and the 32 hex digits of the finder's ``pt-`` id: stable, like the pattern id.

    >>> pattern_alert_id("pt-" + "0f" * 16)
    'pa-0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f'
    """
    return "pa-" + pattern_id.removeprefix("pt-")


def timestamp(t: float) -> str:
    """RFC 3339 UTC with milliseconds and a ``Z``, as events have.

    >>> timestamp(1_793_577_600.123)
    '2026-11-02T00:00:00.123Z'
    """
    when = _EPOCH + timedelta(milliseconds=round(t * 1000.0))
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def pattern_entity(update: PatternUpdate) -> dict[str, str]:
    """The entity a reviewer acts on: a device, a /24 or a shop the pattern shares; for
    patterns on other attributes (country, category, title, card BIN, the new-account
    cohort) the pattern itself."""
    for kind, entity_type in _ENTITY_KINDS:
        for member in update.members:
            if attribute_kind(member) == kind:
                value = member.split(":", 1)[1]
                entity_id = f"{value}.0/24" if kind == "ip24" else value
                if len(entity_id) <= 64:
                    return {"type": entity_type, "id": entity_id}
    return {"type": "pattern", "id": update.pattern_id}


def pattern_alert(
    update: PatternUpdate,
    sequence: int,
    event_type: str,
    source: tuple[str, int, int],
    config: PatternConfig,
) -> dict[str, Any]:
    """The alert record (alert.v1.json, kind ``pattern``) of one lifecycle step."""
    topic, partition, offset = source
    recent_rate = update.risk_ratio * update.baseline_rate
    return {
        "alert_id": pattern_alert_id(update.pattern_id),
        "schema_version": 1,
        "kind": "pattern",
        "detector": DETECTOR,
        "event_type": event_type,
        "event_ids": list(update.examples),
        "entity": pattern_entity(update),
        "score": _finite(update.risk_ratio),
        "threshold": config.min_risk_ratio,
        "occurred_at": timestamp(update.last_seen),
        # What is anomalous about the pattern: its members' anomaly rate against their
        # baseline; what is anomalous about its events is in pattern.top_features.
        "explanation": [
            {
                "feature": "anomaly_rate",
                "value": _finite(recent_rate),
                "baseline": _finite(update.baseline_rate),
                "direction": "high",
            }
        ],
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "status": update.status,
        "sequence": sequence,
        "pattern": {
            "pattern_id": update.pattern_id,
            "attribute": update.attribute,
            "value": update.value,
            "members": list(update.members),
            "events": update.support,
            "users": update.users,
            "first_seen": timestamp(update.first_seen),
            "last_seen": timestamp(update.last_seen),
            "updated_at": timestamp(update.at),
            "baseline_rate": _finite(update.baseline_rate),
            "risk_ratio": _finite(update.risk_ratio),
            "p_value": _finite(update.p_value),
            "max_score": _finite(update.max_score),
            "top_features": [
                {"feature": f, "direction": d, "events": n} for f, d, n in update.top_features
            ],
            "source_ranges": [
                {"topic": t, "partition": p, "from_offset": lo, "to_offset": hi}
                for t, p, lo, hi in update.offsets
            ],
        },
    }


def _finite(value: float) -> float:
    return value if math.isfinite(value) else (1e300 if value > 0 else -1e300)


@dataclass(slots=True)
class _Open:
    """What the alerts of an open pattern need beyond the finder's update."""

    event_type: str
    source: tuple[str, int, int]
    sequence: int = 0


class PartitionPatterns:
    """The finder of one observations partition and the alerts of its updates (pure).

    >>> from stream.observations import decode_observation
    >>> stage = PartitionPatterns(PatternConfig(), lateness_s=0.0)
    >>> body = b'{"v":1,"t":1000.0,"a":false,"w":8.0}'
    >>> stage.observe(decode_observation(b"ip24:10.0.0", body))
    []
    """

    def __init__(self, config: PatternConfig, lateness_s: float) -> None:
        self.config = config
        self.lateness_s = lateness_s
        self.finder = PatternFinder(config)
        self.watermark = -math.inf
        self._open: dict[str, _Open] = {}

    def observe(self, decoded: Decoded) -> list[dict[str, Any]]:
        obs = decoded.observation
        self.watermark = max(self.watermark, obs.t)
        updates = self.finder.observe_key(decoded.key, obs)
        return [self._alert(u, decoded) for u in updates]

    def advance(self) -> list[dict[str, Any]]:
        """Resolve what has been quiet up to the watermark less the lateness."""
        if not math.isfinite(self.watermark):
            return []
        return [self._alert(u, None) for u in self.finder.advance(self.watermark - self.lateness_s)]

    def _alert(self, update: PatternUpdate, decoded: Decoded | None) -> dict[str, Any]:
        state = self._open.get(update.pattern_id)
        if update.status != "resolved" and decoded is not None and decoded.event_type:
            # new and growing are caused by an anomalous observation: the triggering event.
            if state is None:
                state = self._open[update.pattern_id] = _Open(decoded.event_type, ("", 0, 0))
            state.event_type = decoded.event_type
            state.source = decoded.observation.source
        if state is None:  # cannot happen: the finder reports new before anything else
            topic, partition, low, _ = update.offsets[0] if update.offsets else ("-", 0, 0, 0)
            state = _Open("unknown", (topic, partition, low))
        state.sequence += 1
        if update.status == "resolved":
            self._open.pop(update.pattern_id, None)
        return pattern_alert(update, state.sequence, state.event_type, state.source, self.config)


# -- the consumer loop ----------------------------------------------------------------------


@dataclass
class StageSummary:
    observations: int = 0
    dead_letters: int = 0
    alerts: int = 0
    batches: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


class PatternStage:
    """One member of the ``vigil patterns`` group; run() returns when stopped or idle."""

    def __init__(
        self,
        settings: PatternStageSettings,
        *,
        consumer: ConsumerLike | None = None,
        producer: Producer | None = None,
    ) -> None:
        # No network here: clients are created in run().
        self.settings = settings
        self.config = settings.pattern_config()
        self._consumer = consumer
        self._producer = producer
        self.partitions: dict[tuple[str, int], PartitionPatterns] = {}
        self.summary = StageSummary()
        self.delivery = DeliveryTracker()
        self._stopping = False
        self._assigned: set[tuple[str, int]] = set()
        self._idle_since = time.monotonic()

    def stop(self, *_: object) -> None:
        self._stopping = True

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal", signal=signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> StageSummary:
        s = self.settings
        consumer = self._consumer or cast(ConsumerLike, Consumer(s.consumer_config()))
        producer = self._producer or Producer(s.producer_config())
        consumer.subscribe(
            [s.observations_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._idle_since = time.monotonic()
        log.info("patterns.started", observations_topic=s.observations_topic, group=s.group)
        try:
            while not self._stopping:
                messages = consumer.consume(s.batch_size, s.poll_timeout_s)
                if not messages:
                    if getattr(consumer, "exhausted", False) or self._idle_long_enough(consumer):
                        log.info("patterns.idle")
                        break
                    continue
                self._idle_since = time.monotonic()
                self._process_batch(consumer, producer, messages)
        finally:
            try:
                flush_or_raise(producer, self.delivery, s.flush_timeout_s)
            finally:
                consumer.close()
            log.info(
                "patterns.stopped",
                observations=self.summary.observations,
                dead_letters=self.summary.dead_letters,
                alerts=self.summary.alerts,
                statuses=self.summary.statuses,
            )
        return self.summary

    def _process_batch(
        self, consumer: ConsumerLike, producer: Producer, messages: list[Message]
    ) -> None:
        processed: list[Record] = []
        touched: dict[tuple[str, int], PartitionPatterns] = {}
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
            decoded = decode_observation(record.key, record.value)
            if isinstance(decoded, BadObservation):
                self._dead_letter(producer, record, decoded.reason, decoded.detail)
                continue
            part = self._partition((record.topic, record.partition))
            touched[(record.topic, record.partition)] = part
            self.summary.observations += 1
            for alert in part.observe(decoded):
                self._alert(producer, alert)
            producer.poll(0)
        for part in touched.values():
            for alert in part.advance():
                self._alert(producer, alert)
        flush_or_raise(producer, self.delivery, self.settings.flush_timeout_s)
        offsets = next_offsets(processed)
        commit_or_raise(consumer, offsets)
        self.summary.batches += 1
        log.info(
            "batch.committed",
            batch=self.summary.batches,
            records=len(processed),
            offsets={f"{tp.topic}[{tp.partition}]": tp.offset for tp in offsets},
        )

    def _partition(self, key: tuple[str, int]) -> PartitionPatterns:
        part = self.partitions.get(key)
        if part is None:
            part = self.partitions[key] = PartitionPatterns(self.config, self.settings.lateness_s)
        return part

    def _alert(self, producer: Producer, alert: dict[str, Any]) -> None:
        producer.produce(
            self.settings.alerts_topic,
            key=alert["alert_id"].encode(),
            value=orjson.dumps(alert),
            on_delivery=self.delivery.callback,
        )
        self.delivery.sent()
        self.summary.alerts += 1
        status = alert["status"]
        self.summary.statuses[status] = self.summary.statuses.get(status, 0) + 1
        log.info(
            "pattern.alert",
            alert_id=alert["alert_id"],
            status=status,
            sequence=alert["sequence"],
            members=alert["pattern"]["members"],
            events=alert["pattern"]["events"],
        )

    def _dead_letter(self, producer: Producer, record: Record, reason: str, detail: str) -> None:
        producer.produce(
            self.settings.dlq_topic,
            key=record.key,
            value=record.value,
            headers=dead_letter_headers(record, reason, detail),
            on_delivery=self.delivery.callback,
        )
        self.delivery.sent()
        self.summary.dead_letters += 1
        log.info("dead_letter", reason=reason, detail=detail[:200], offset=record.offset)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions.assigned", partitions=[p.partition for p in partitions])
        self._assigned.update((p.topic or "", p.partition or 0) for p in partitions)
        self._idle_since = time.monotonic()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every batch is committed before the next consume(); the next owner starts afresh.
        log.info("partitions.revoked", partitions=[p.partition for p in partitions])
        for p in partitions:
            key = (p.topic or "", p.partition or 0)
            self._assigned.discard(key)
            self.partitions.pop(key, None)

    def _idle_long_enough(self, consumer: ConsumerLike) -> bool:
        """Nothing new for ``exit_when_idle`` seconds and caught up on every partition."""
        limit = self.settings.exit_when_idle
        if limit is None:
            return False
        if not self._assigned:
            limit += self.settings.session_timeout_ms / 1000
        if time.monotonic() - self._idle_since < limit:
            return False
        try:
            assigned = consumer.assignment()
            for tp in consumer.position(assigned) if assigned else []:
                low, high = consumer.get_watermark_offsets(tp, timeout=5)
                if high > low and (tp.offset is None or tp.offset < high):
                    committed = consumer.committed([tp], timeout=5)
                    at = committed[0].offset if committed else -1
                    if tp.offset is not None and tp.offset >= 0:
                        at = tp.offset
                    if at < high:
                        return False
        except Exception:  # a broker hiccup: try again on the next idle poll
            log.debug("caught_up.unknown", exc_info=True)
            return False
        return True


# -- command line ---------------------------------------------------------------------------

_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("bootstrap", str, "Kafka bootstrap servers"),
    ("observations_topic", str, "topic of observations, keyed by pattern key"),
    ("alerts_topic", str, "topic the pattern alerts go to"),
    ("dlq_topic", str, "dead-letter topic for observations that cannot be read"),
    ("group", str, "consumer group id (not the scoring service's)"),
    ("exit_when_idle", float, "exit after this many seconds without input"),
    ("lateness_s", float, "event-time slack before a quiet pattern resolves"),
    ("base_rate", float, "share of events the scorer flags (1 - its quantile)"),
    ("log_level", str, "debug, info, warning or error"),
)


def patterns_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vigil patterns",
        description="Pattern alerts from the observations topic. Every flag can also be set "
        f"as {ENV_PREFIX}<NAME> or in the [patterns] section of a TOML file (--config).",
    )
    parser.add_argument("--config", type=Path, help="TOML config file")
    for name, kind, help_text in _FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=help_text)
    args = parser.parse_args(argv)
    try:
        settings = load_stage_settings(
            {name: getattr(args, name) for name, _, _ in _FLAGS}, config_file=args.config
        )
    except ConfigError as exc:
        print(f"vigil patterns: {exc}", file=sys.stderr)
        return 2

    from stream.logs import configure_logging

    configure_logging(settings.log_level)
    stage = PatternStage(settings)
    stage.install_signal_handlers()
    stage.run()
    return 0
