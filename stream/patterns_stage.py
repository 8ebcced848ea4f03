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
Resolutions follow event time: before each observation its partition's finder is
advanced to the latest event time the partition has seen, less ``lateness_s`` for
observations still on their way from slower scoring consumers. So a partition's finder, and
every alert it raises, depend only on the partition's records in offset order, not on how
they were cut into batches.

That is what lets the stage keep its state across restarts and rebalances, as the detector
service does (stream/owned_partitions.py, stream/partition_state.py): each partition's
``PartitionPatterns`` (finder, open patterns, their sequence numbers) is snapshotted to a
compacted state topic (default ``<group>.state``) every ``checkpoint_every`` records and
when the partition is revoked, and restored on assignment; the records between the
snapshot and the committed offset are re-processed silently. A pattern open across a move
keeps its alert id and its sequence goes on.

Pattern records go to the alerts topic, or with ``pattern_topic`` set to an internal topic
that ``vigil incidents`` (stream/incidents_stage.py) reads to group the patterns of one
attack into one incident alert. Each record carries bottom-k samples of its member event
and user ids (``pattern.event_sample``, ``pattern.user_sample``) for that grouping.

Exactly-once by default: a batch's pattern alerts, dead letters, snapshots and input
offsets are one Kafka transaction; ``read_committed`` readers see each lifecycle step once.
``guarantee = "at-least-once"`` commits after every delivery is acknowledged instead (a
crash may repeat steps, with the same ids and sequences).
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, cast

import orjson
import structlog
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from detectors.arrivals import ArrivalConfig, ArrivalFinder
from detectors.attributes import attribute_kind
from detectors.incidents import BottomK
from detectors.patterns import Key, PatternConfig, PatternFinder, PatternUpdate
from stream.checkpoint import SnapshotAssembler, fingerprint
from stream.delivery import (
    AtLeastOnce,
    Delivery,
    ExactlyOnce,
    TransactionAbortedError,
    shutdown_problem,
)
from stream.gc_tuning import tune_collector
from stream.kafka_io import Record, VigilKafkaError, consumer_config, producer_config
from stream.metrics import Health, ServiceMetrics, serve
from stream.observations import BadObservation, Decoded, decode_observation
from stream.owned_partitions import OwnedPartitions, caught_up
from stream.partition_state import ReadPartition
from stream.service import (
    IDLE_GRACE_S,
    SHUTDOWN_EXIT_GRACE_S,
    ConsumerLike,
    ShutdownWatchdog,
    send_dead_letter,
    stop_on_signals,
)
from stream.settings import ConfigError, kafka_common
from stream.state_store import ensure_state_topic, read_state_partition

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
# Version of what a partition's state keeps for its records (2: member samples); in the
# fingerprint, so a snapshot of another version is not restored.
_RECORD = 2


# -- settings -------------------------------------------------------------------------------


class PatternStageSettings(BaseModel):
    """Everything ``vigil patterns`` needs; built once at start-up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str = Field(min_length=1)
    observations_topic: str = Field(min_length=1)
    alerts_topic: str = Field(min_length=1)
    pattern_topic: str | None = Field(
        default=None,
        min_length=1,
        description="where pattern records go, for `vigil incidents` (default: alerts_topic)",
    )
    dlq_topic: str = Field(default="vigil.patterns.dlq", min_length=1)
    group: str = Field(min_length=1)
    exit_when_idle: float | None = Field(default=None, gt=0)
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    group_instance_id: str | None = Field(default=None, min_length=1)
    batch_size: int = Field(default=2_000, ge=1, le=100_000)
    poll_timeout_s: float = Field(default=0.5, gt=0, le=60)
    flush_timeout_s: float = Field(default=30.0, gt=0)
    # Delivery and state, as `vigil run`'s.
    guarantee: Literal["exactly-once", "at-least-once"] = Field(
        default="exactly-once",
        description="exactly-once: alerts, state and offsets in one Kafka transaction",
    )
    state_topic: str | None = Field(
        default=None, min_length=1, description="compacted topic of state snapshots"
    )
    checkpoint_every: int = Field(
        default=50_000, ge=1, description="records per partition between state snapshots"
    )
    transactional_id: str | None = Field(
        default=None, min_length=1, description="stable per instance: fences its zombie"
    )
    transaction_timeout_ms: int = Field(default=10_000, ge=1_000)
    restore_timeout_s: float = Field(default=300.0, gt=0)
    # As `vigil run`'s: after a stop no Kafka call waits past this, and the process ends
    # itself SHUTDOWN_EXIT_GRACE_S later whatever still hangs.
    shutdown_timeout_s: float = Field(default=20.0, gt=0, le=600)
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = Field(
        default=None, ge=0, le=65_535, description="/metrics, /healthz, /readyz; 0: any port"
    )
    lateness_s: float = Field(
        default=300.0, ge=0, description="event-time slack before quiet patterns resolve"
    )
    log_level: str = "info"
    sample_size: int = Field(
        default=16, ge=1, le=256, description="member event and user ids a record samples"
    )
    # The finder (detectors/patterns.py); base_rate should be 1 - the scorer's
    # suspicious_quantile.
    base_rate: float = Field(default=0.02, gt=0, lt=1)
    min_support: int = Field(default=5, ge=1, le=64)
    min_users: int = Field(default=2, ge=1)
    window_s: float = Field(default=3600.0, gt=0)
    quiet_s: float = Field(default=3600.0, gt=0)
    # The arrival finder (detectors/arrivals.py): users turning up at one device or /24.
    arrival_min_users: int = Field(
        default=3, ge=2, le=64, description="distinct users of an arrival burst, within window_s"
    )
    arrival_prior_per_day: float = Field(
        default=1.0, gt=0, description="new users a day assumed of a value without history"
    )
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

    def arrival_config(self) -> ArrivalConfig:
        return ArrivalConfig(
            window_s=self.window_s,
            quiet_s=self.quiet_s,
            min_users=self.arrival_min_users,
            prior_per_day=self.arrival_prior_per_day,
        )

    @property
    def state_topic_name(self) -> str:
        return self.state_topic or f"{self.group}.state"

    @property
    def transactional_id_value(self) -> str:
        """Stable across restarts of one instance, as ``ServiceSettings``'s (which says
        why); ``vigil-patterns-`` keeps it apart from the scoring service's ids."""
        if self.transactional_id is not None:
            return self.transactional_id
        member = self.group_instance_id or socket.gethostname()
        return f"vigil-patterns-{self.group}-{member}"

    @property
    def pattern_topic_name(self) -> str:
        """The topic pattern records go to: the pattern topic, else the alerts topic."""
        return self.pattern_topic or self.alerts_topic

    def fingerprint(self) -> str:
        """What the state depends on: snapshots made under other values are not restored."""
        parts: tuple[Any, ...] = (self.pattern_config(), self.lateness_s, self.sample_size, _RECORD)
        arrivals = self.arrival_config()
        # Left out at its defaults, so that snapshots written before arrival patterns
        # existed still restore (PartitionPatterns.__setstate__ adds a fresh finder).
        if arrivals != ArrivalConfig(window_s=self.window_s, quiet_s=self.quiet_s):
            parts = (*parts, arrivals)
        return fingerprint(parts)

    def kafka_common(self) -> dict[str, str | int | float | bool]:
        return kafka_common(self.bootstrap, self.kafka, self.sasl_password)

    def consumer_config(self) -> dict[str, Any]:
        return consumer_config(self)

    def producer_config(self, *, transactional: bool = False) -> dict[str, Any]:
        return producer_config(self, transactional=transactional)


S = TypeVar("S", bound=BaseModel)


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
    settings = load_model_settings(
        PatternStageSettings, "patterns", ENV_PREFIX, cli, config_file=config_file, env=env
    )
    try:
        settings.pattern_config()
        settings.arrival_config()
    except ValueError as exc:  # PatternConfig's cross-field checks
        raise ConfigError(f"invalid configuration: {exc}") from None
    return settings


def load_model_settings(
    model: type[S],
    section: str,
    prefix: str,
    cli: Mapping[str, Any],
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> S:
    """A stage's settings ``model``: defaults < TOML file (``[section]``, or the top level)
    < ``<prefix><NAME>`` environment variables < flags; ``ConfigError`` naming each bad
    setting and its source (``vigil patterns``, ``vigil incidents``)."""
    env = os.environ if env is None else env
    merged: dict[str, tuple[Any, str]] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {config_file} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from exc
        found = data.get(section, data)
        merged.update(
            {str(k).replace("-", "_"): (v, f"file {config_file}") for k, v in found.items()}
        )
    for key, value in env.items():
        if key.startswith(prefix):
            merged[key[len(prefix) :].lower()] = (value, f"env {key}")
    merged.update(
        {k: (v, "flag --" + k.replace("_", "-")) for k, v in cli.items() if v is not None}
    )
    unknown = sorted(k for k in merged if k not in model.model_fields)
    if unknown:
        raise ConfigError(
            "unknown setting " + ", ".join(f"'{k}' ({merged[k][1]})" for k in unknown)
        )
    try:
        return model.model_validate({k: v for k, (v, _) in merged.items()})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            origin = merged.get(name, (None, "default"))[1]
            problems.append(f"setting '{name}' ({origin}): {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


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
    samples: tuple[Sequence[str], Sequence[str]] = ((), ()),
    rate: str = "anomaly_rate",
) -> dict[str, Any]:
    """The alert record (alert.v1.json, kind ``pattern``) of one lifecycle step;
    ``samples``: bottom-k samples of its member event ids and user ids (for incidents);
    ``rate``: what the evidence is a rate of (``anomaly_rate``: the share of the members'
    events that are anomalous; ``arrival_rate``: users arriving at them per hour)."""
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
        # What is anomalous about the pattern: its members' anomaly (arrival) rate against
        # their baseline; what is anomalous about its events is in pattern.top_features.
        "explanation": [
            {
                "feature": rate,
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
            "event_sample": list(samples[0]),
            "user_sample": list(samples[1]),
        },
    }


def watermark_record(partition: int, partitions: int, t: float) -> dict[str, Any]:
    """The pattern topic's progress record of one observations partition (CONTRACTS.md):
    every pattern step of ``partition`` up to event time ``t`` has been written."""
    return {"kind": "watermark", "v": 1, "partition": partition, "partitions": partitions, "t": t}


def _finite(value: float) -> float:
    return value if math.isfinite(value) else (1e300 if value > 0 else -1e300)


@dataclass(slots=True)
class _Open:
    """What the alerts of an open pattern need beyond the finder's update: the trigger,
    the sequence, and samples of its members (its examples, then the anomalous events of
    its key while it is open: those that join it unless its risk ratio has dropped below
    the finder's keep ratio)."""

    event_type: str
    source: tuple[str, int, int]
    events: BottomK
    users: BottomK
    sequence: int = 0
    arrival: bool = False  # an arrival finder's pattern


class PartitionPatterns:
    """The finder of one observations partition and the alerts of its updates (pure).

    >>> from stream.observations import decode_observation
    >>> stage = PartitionPatterns(PatternConfig(), lateness_s=0.0)
    >>> body = b'{"v":1,"t":1000.0,"a":false,"w":8.0}'
    >>> stage.observe(decode_observation(b"ip24:10.0.0", body))
    []

    Everything it holds depends only on the observations it was given, in order (it is
    what a partition's snapshot holds).
    """

    def __init__(
        self,
        config: PatternConfig,
        lateness_s: float,
        sample_size: int = 16,
        arrival_config: ArrivalConfig | None = None,
    ) -> None:
        self.config = config
        self.lateness_s = lateness_s
        self.sample_size = sample_size
        self.finder = PatternFinder(config)
        self.watermark = -math.inf
        self._open: dict[str, _Open] = {}
        self._of_key: dict[Key, str] = {}  # key of an open pattern -> its pattern id
        self._init_arrivals(arrival_config)

    def _init_arrivals(self, config: ArrivalConfig | None) -> None:
        self.arrivals = ArrivalFinder(config)
        self._of_arrival_key: dict[Key, str] = {}  # the same, of the arrival finder

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "arrivals" not in state:  # a snapshot from before arrival patterns
            self._init_arrivals(None)

    @property
    def open_patterns(self) -> int:
        return self.finder.open_patterns + self.arrivals.open_patterns

    def observe(self, decoded: Decoded) -> list[dict[str, Any]]:
        """The alerts of ``decoded``: first the resolutions its event time brings (of
        patterns quiet up to the new watermark less the lateness), then its own updates.
        An arrival goes to the arrival finder, any other observation to the pattern finder."""
        obs = decoded.observation
        alerts = []
        if obs.t > self.watermark:
            self.watermark = obs.t
            alerts = self.advance()
        finder, of_key = (
            (self.arrivals, self._of_arrival_key)
            if decoded.arrival
            else (self.finder, self._of_key)
        )
        updates = finder.observe_key(decoded.key, obs)
        for update in updates:
            if update.status == "new":
                self._opened(update, arrival=decoded.arrival)
        pid = of_key.get(decoded.key) if obs.is_anomalous else None
        if pid is not None:
            state = self._open[pid]
            state.events.add(obs.event_id)
            state.users.add(obs.user)
        alerts.extend(self._alert(u, decoded) for u in updates)
        return alerts

    def _opened(self, update: PatternUpdate, *, arrival: bool) -> None:
        k = self.sample_size
        state = _Open("unknown", ("", 0, 0), BottomK(k), BottomK(k), arrival=arrival)
        for event_id in update.examples:
            state.events.add(event_id)
        self._open[update.pattern_id] = state
        of_key = self._of_arrival_key if arrival else self._of_key
        of_key[update.members] = update.pattern_id

    def advance(self) -> list[dict[str, Any]]:
        """Resolve what has been quiet up to the watermark less the lateness (``observe``
        does it as the watermark moves; again, it finds nothing new)."""
        if not math.isfinite(self.watermark):
            return []
        until = self.watermark - self.lateness_s
        updates = [*self.finder.advance(until), *self.arrivals.advance(until)]
        updates.sort(key=lambda u: (u.at, u.pattern_id))
        return [self._alert(u, None) for u in updates]

    def _alert(self, update: PatternUpdate, decoded: Decoded | None) -> dict[str, Any]:
        state = self._open.get(update.pattern_id)
        if state is None:  # cannot happen: the finder reports new before anything else
            self._opened(update, arrival=decoded is not None and decoded.arrival)
            state = self._open[update.pattern_id]
            topic, partition, low, _ = update.offsets[0] if update.offsets else ("-", 0, 0, 0)
            state.source = (topic, partition, low)
        if update.status != "resolved" and decoded is not None and decoded.event_type:
            # new and growing are caused by an anomalous observation: the triggering event.
            state.event_type = decoded.event_type
            state.source = decoded.observation.source
        state.sequence += 1
        of_key = self._of_arrival_key if state.arrival else self._of_key
        if update.status == "resolved":
            self._open.pop(update.pattern_id, None)
            if of_key.get(update.members) == update.pattern_id:
                del of_key[update.members]
        samples = (state.events.items(), state.users.items())
        rate = "arrival_rate" if state.arrival else "anomaly_rate"
        return pattern_alert(
            update, state.sequence, state.event_type, state.source, self.config, samples, rate
        )


# -- the consumer loop ----------------------------------------------------------------------


@dataclass
class StageSummary:
    observations: int = 0
    dead_letters: int = 0
    alerts: int = 0
    batches: int = 0
    replayed: int = 0  # records re-processed silently after a restore
    statuses: dict[str, int] = field(default_factory=dict)
    # Why the shutdown did not finish cleanly (a transactional call given up); None: it did.
    shutdown_error: str | None = None

    @property
    def clean(self) -> bool:
        return self.shutdown_error is None


class StageMetrics:
    """Prometheus instruments of ``vigil patterns``, on a registry of their own; also the
    observer of its partitions' state (stream/owned_partitions.StateObserver)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, prefix: str = "vigil_patterns"
    ) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.observations = Counter(f"{prefix}_observations", "Records consumed", registry=r)
        self.alerts = Counter(f"{prefix}_alerts", "Alert records produced", ["status"], registry=r)
        self.dead_letters = Counter(
            f"{prefix}_dead_letters", "Records sent to the dead-letter topic", ["reason"],
            registry=r,
        )  # fmt: skip
        self.commits = Counter(f"{prefix}_commits", "Offset commits", registry=r)
        self.batch_seconds = Histogram(
            f"{prefix}_batch_seconds", "Time to process and commit a batch", registry=r
        )
        self.open_patterns = Gauge(
            f"{prefix}_open", "Open patterns (incidents)", ["partition"], registry=r
        )
        self.assigned_partitions = Gauge(
            f"{prefix}_assigned_partitions", "Partitions assigned", registry=r
        )
        self.restore_seconds = Histogram(
            f"{prefix}_state_restore_seconds",
            "From assignment to a partition's state restored and caught up",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, float("inf")),
            registry=r,
        )
        self.snapshots = Counter(f"{prefix}_state_snapshots", "State snapshots written", registry=r)
        self.state_bytes = Gauge(
            f"{prefix}_state_bytes", "Compressed size of the last snapshot", ["partition"],
            registry=r,
        )  # fmt: skip

    def restored(self, partition: int, seconds: float) -> None:
        self.restore_seconds.observe(seconds)

    def snapshotted(self, partition: int, size: int) -> None:
        self.snapshots.inc()
        self.state_bytes.labels(str(partition)).set(size)

    def assigned(self, count: int) -> None:
        self.assigned_partitions.set(count)


class PatternStage:
    """One member of the ``vigil patterns`` group; run() returns when stopped or idle.

    With clients injected (unit tests) no state is kept and delivery is at-least-once
    unless ``delivery`` and ``read_state`` say otherwise. ``vigil incidents``
    (stream/incidents_stage.py) is this loop over another input: it overrides ``NAME``,
    ``INPUT_SETTING``, ``_fresh``, ``_observe`` and ``_alert_fields``.
    """

    NAME: ClassVar[str] = "patterns"  # of its log events
    INPUT_SETTING: ClassVar[str] = "observations_topic"

    def __init__(
        self,
        settings: PatternStageSettings,
        *,
        consumer: ConsumerLike | None = None,
        producer: Producer | None = None,
        delivery: Delivery | None = None,
        read_state: ReadPartition | None = None,
        metrics: StageMetrics | None = None,
    ) -> None:
        # No network here: clients are created in run().
        self.settings = settings
        self.config = settings.pattern_config()
        self._consumer = consumer
        self._producer = producer
        self._delivery = delivery
        self.metrics = metrics or StageMetrics()
        self.health = Health()
        self.owned: OwnedPartitions[PartitionPatterns] = OwnedPartitions(
            fresh=self._fresh,
            fingerprint=settings.fingerprint(),
            read=read_state,
            state_topic=settings.state_topic_name,
            restore_timeout_s=settings.restore_timeout_s,
            observer=self.metrics,
        )
        self.summary = StageSummary()
        self.http_port: int | None = None
        self._stopping = False
        self._out: Delivery | None = None
        # The shutdown clock (ShutdownWatchdog reads these, as for the service).
        self.shutdown_started: float | None = None
        self.finished = False  # run() returned
        self._idle_since = time.monotonic()
        self._input_partitions: int | None = None  # of the observations topic, once known

    @property
    def partitions(self) -> dict[tuple[str, int], PartitionPatterns]:
        return {key: state.model for key, state in self.owned.states.items()}

    def _fresh(self, partition: int) -> PartitionPatterns:
        return PartitionPatterns(
            self.config,
            self.settings.lateness_s,
            self.settings.sample_size,
            self.settings.arrival_config(),
        )

    def stop(self, *_: object) -> None:
        """Finish the batch, commit and exit (SIGTERM, SIGINT). Plain assignments only: it
        runs in a signal handler (see ``stop_on_signals``). A Kafka call waiting now is cut
        short at the deadline too (stream/delivery.py)."""
        self._stopping = True
        self.health.ready = False
        self._begin_shutdown(self._out)

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stop)

    def _clients(self) -> tuple[ConsumerLike, Producer, Delivery]:
        s = self.settings
        exactly_once = s.guarantee == "exactly-once"
        if self._consumer is None:
            self._input_partitions = ensure_state_topic(
                s, s.observations_topic, input_setting=self.INPUT_SETTING
            )
            if self.owned.read is None:
                self.owned.read = self._read_state_partition
        consumer = self._consumer or cast(ConsumerLike, Consumer(s.consumer_config()))
        producer = self._producer or Producer(s.producer_config(transactional=exactly_once))
        delivery = self._delivery
        if delivery is None:
            kind = ExactlyOnce if exactly_once and self._producer is None else AtLeastOnce
            delivery = kind(producer, s.flush_timeout_s)
        return consumer, producer, delivery

    def _read_state_partition(self, partition: int) -> SnapshotAssembler:
        return read_state_partition(self.settings, partition, self.settings.restore_timeout_s)

    def run(self) -> StageSummary:
        s = self.settings
        tune_collector()  # a consumer loop of short-lived objects, as the service's
        consumer, producer, delivery = self._clients()
        self._out = delivery
        self.owned.bind(producer, delivery)
        delivery.start()
        server: ThreadingHTTPServer | None = None
        if s.metrics_port is not None:
            # serve() reads only the registry of what it is given.
            server, self.http_port = serve(
                cast(ServiceMetrics, self.metrics), self.health, s.metrics_host, s.metrics_port
            )
            log.info("http.listening", port=self.http_port)
        consumer.subscribe(
            [s.observations_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._idle_since = time.monotonic()
        log.info(
            f"{self.NAME}.started",
            observations_topic=s.observations_topic,
            group=s.group,
            guarantee=s.guarantee,
        )
        try:
            while not self._stopping:
                self.health.beat()
                messages = consumer.consume(s.batch_size, s.poll_timeout_s)
                if not messages:
                    if getattr(consumer, "exhausted", False) or self._idle_long_enough(consumer):
                        log.info(f"{self.NAME}.idle")
                        break
                    continue
                self._idle_since = time.monotonic()
                try:
                    self._process_batch(consumer, producer, delivery, messages)
                except TransactionAbortedError:
                    self.owned.rewind(consumer)
                    self._refresh_ready()
        finally:
            self.health.ready = False
            # Stopped, idle or failed: from here no Kafka call waits past the deadline.
            self._begin_shutdown(delivery)
            try:
                delivery.close()
            finally:
                # close() revokes our partitions: _on_revoke snapshots them.
                consumer.close()
                if server is not None:
                    server.shutdown()
                self.summary.shutdown_error = shutdown_problem(delivery)
                if self.summary.shutdown_error is not None:
                    log.error(
                        f"{self.NAME}.shutdown_incomplete", reason=self.summary.shutdown_error
                    )
                self.finished = True
            log.info(
                f"{self.NAME}.stopped",
                observations=self.summary.observations,
                replayed=self.summary.replayed,
                dead_letters=self.summary.dead_letters,
                alerts=self.summary.alerts,
                statuses=self.summary.statuses,
                clean=self.summary.clean,
            )
        return self.summary

    def _begin_shutdown(self, delivery: Delivery | None) -> None:
        """Start the shutdown clock (once): no Kafka call of ``delivery`` waits past it.
        Plain assignments only: ``stop`` calls it from a signal handler."""
        if self.shutdown_started is None:
            self.shutdown_started = time.monotonic()
        if delivery is not None:
            delivery.deadline = self.shutdown_started + self.settings.shutdown_timeout_s

    def _process_batch(
        self,
        consumer: ConsumerLike,
        producer: Producer,
        delivery: Delivery,
        messages: list[Message],
    ) -> None:
        started = time.monotonic()
        delivery.begin()
        processed: list[Record] = []
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise VigilKafkaError(f"fatal consumer error: {error.str()}", error.name())
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer.error", error=error.str(), code=error.name())
                continue
            record = Record.of(msg)
            state = self.owned.get(record.topic, record.partition)
            silent = state.take(record.offset)
            if silent is None:  # fetched again after a seek
                continue
            processed.append(record)
            alerts = self._observe(state.model, record)
            if isinstance(alerts, BadObservation):
                if not silent:
                    self._dead_letter(producer, record, alerts.reason, alerts.detail)
                continue
            if silent:  # re-processing what was output before a restore: state only
                self.summary.replayed += 1
                continue
            self.summary.observations += 1
            self.metrics.observations.inc()
            for alert in alerts:
                self._alert(producer, alert)
            producer.poll(0)
        advanced = sorted({(r.topic, r.partition) for r in processed})
        if self.settings.pattern_topic is not None:
            self._watermarks(producer, advanced)
        self.owned.snapshot_due(consumer, self.settings.checkpoint_every)
        offsets = self.owned.offsets_to_commit(advanced)
        delivery.commit(consumer, offsets)
        self.metrics.commits.inc()
        self.owned.finish_restores()
        self._refresh_ready()
        self.summary.batches += 1
        for (_, partition), state in self.owned.states.items():
            self.metrics.open_patterns.labels(str(partition)).set(state.model.open_patterns)
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        log.info(
            "batch.committed",
            batch=self.summary.batches,
            records=len(processed),
            offsets={f"{tp.topic}[{tp.partition}]": tp.offset for tp in offsets},
        )

    def _observe(
        self, model: PartitionPatterns, record: Record
    ) -> list[dict[str, Any]] | BadObservation:
        """The alerts of one input record, or why it cannot be read (a dead letter)."""
        decoded = decode_observation(record.key, record.value)
        if isinstance(decoded, BadObservation):
            return decoded
        return model.observe(decoded)

    def _alert_fields(self, alert: dict[str, Any]) -> dict[str, Any]:
        """What the log line of an alert record says beyond its id, status and sequence."""
        return {"members": alert["pattern"]["members"], "events": alert["pattern"]["events"]}

    def _alert(self, producer: Producer, alert: dict[str, Any]) -> None:
        assert self._out is not None
        producer.produce(
            self.settings.pattern_topic_name,
            key=alert["alert_id"].encode(),
            value=orjson.dumps(alert),
            on_delivery=self._out.tracker.callback,
        )
        self._out.tracker.sent()
        self.summary.alerts += 1
        status = alert["status"]
        self.summary.statuses[status] = self.summary.statuses.get(status, 0) + 1
        self.metrics.alerts.labels(status).inc()
        log.info(
            f"{alert['kind']}.alert",
            alert_id=alert["alert_id"],
            status=status,
            sequence=alert["sequence"],
            **self._alert_fields(alert),
        )

    def _watermarks(self, producer: Producer, advanced: list[tuple[str, int]]) -> None:
        """Per partition the batch moved, how far its event time has got (less the
        lateness), after its pattern records: ``vigil incidents`` resolves an incident only
        once every partition is past it, as patterns of one attack come from several."""
        assert self._out is not None
        partitions = self._input_partitions or 1 + max(p for _, p in self.owned.states)
        for topic, partition in advanced:
            state = self.owned.states.get((topic, partition))
            if state is None or state.silent(state.next_offset - 1):
                continue
            t = state.model.watermark - self.settings.lateness_s
            if not math.isfinite(t):
                continue
            producer.produce(
                self.settings.pattern_topic_name,
                key=f"watermark:{partition}".encode(),
                value=orjson.dumps(watermark_record(partition, partitions, t)),
                on_delivery=self._out.tracker.callback,
            )
            self._out.tracker.sent()

    def _dead_letter(self, producer: Producer, record: Record, reason: str, detail: str) -> None:
        assert self._out is not None
        send_dead_letter(
            producer, self.settings.dlq_topic, record, reason, detail, self._out.tracker
        )
        self.summary.dead_letters += 1
        self.metrics.dead_letters.labels(reason).inc()
        log.info("dead_letter", reason=reason, detail=detail[:200], offset=record.offset)

    # -- partitions come and go (stream/owned_partitions.py does the work) ----------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # cooperative-sticky: the callbacks carry only the partitions that changed.
        log.info("partitions.assigned", partitions=[p.partition for p in partitions])
        self.owned.assign(consumer, partitions)
        self._idle_since = time.monotonic()
        self._refresh_ready()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions.revoked", partitions=[p.partition for p in partitions])
        self.owned.revoke(consumer, partitions)
        self._refresh_ready()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions.lost", partitions=[p.partition for p in partitions])
        self.owned.forget((p.topic or "", p.partition or 0) for p in partitions)
        self._refresh_ready()

    def _refresh_ready(self) -> None:
        # Ready once assigned and every partition's state is restored and caught up.
        owned = self.owned
        self.health.ready = bool(owned.states) and not owned.restoring and not self._stopping

    def _idle_long_enough(self, consumer: ConsumerLike) -> bool:
        """Nothing new for ``exit_when_idle`` seconds and caught up on every partition
        (or, past a grace period, idle whatever the offsets say)."""
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
            log.warning(f"{self.NAME}.idle_not_caught_up", seconds=round(idle_s, 1))
            return True
        return False


# -- command line ---------------------------------------------------------------------------

# The flags of the loop itself, shared with `vigil incidents`.
LOOP_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("exit_when_idle", float, "exit after this many seconds without input"),
    ("guarantee", str, "exactly-once (default) or at-least-once"),
    ("state_topic", str, "compacted topic of state snapshots (default <group>.state)"),
    ("checkpoint_every", int, "records per partition between state snapshots"),
    ("shutdown_timeout_s", float, "after a stop, no Kafka call waits past this (then exit)"),
    ("group_instance_id", str, "static membership, for rolling restarts"),
    ("transactional_id", str, "stable per instance (default from group and instance)"),
    ("metrics_port", int, "serve /metrics, /healthz and /readyz on this port"),
    ("log_level", str, "debug, info, warning or error"),
)
_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("bootstrap", str, "Kafka bootstrap servers"),
    ("observations_topic", str, "topic of observations, keyed by pattern key"),
    ("alerts_topic", str, "topic the pattern alerts go to (unless --pattern-topic)"),
    ("pattern_topic", str, "write pattern records here instead, for `vigil incidents`"),
    ("dlq_topic", str, "dead-letter topic for observations that cannot be read"),
    ("group", str, "consumer group id (not the scoring service's)"),
    ("lateness_s", float, "event-time slack before a quiet pattern resolves"),
    (
        "base_rate",
        float,
        "share of events the scorer flags as suspicious (1 - its suspicious_quantile)",
    ),
    *LOOP_FLAGS,
)


def patterns_cli(argv: Sequence[str]) -> int:
    return stage_cli(
        argv,
        name="patterns",
        description="Pattern alerts from the observations topic.",
        prefix=ENV_PREFIX,
        flags=_FLAGS,
        load=load_stage_settings,
        stage=PatternStage,
    )


def stage_cli(
    argv: Sequence[str],
    *,
    name: str,
    description: str,
    prefix: str,
    flags: Sequence[tuple[str, type, str]],
    load: Callable[..., Any],
    stage: Callable[[Any], PatternStage],
) -> int:
    """``vigil <name>``: flags, settings (``load``), logging, then the stage until stopped."""
    parser = argparse.ArgumentParser(
        prog=f"vigil {name}",
        description=f"{description} Every flag can also be set as {prefix}<NAME> or in the "
        f"[{name}] section of a TOML file (--config).",
    )
    parser.add_argument("--config", type=Path, help="TOML config file")
    for flag, kind, help_text in flags:
        parser.add_argument("--" + flag.replace("_", "-"), dest=flag, type=kind, help=help_text)
    args = parser.parse_args(argv)
    try:
        settings = load(
            {flag: getattr(args, flag) for flag, _, _ in flags}, config_file=args.config
        )
    except ConfigError as exc:
        print(f"vigil {name}: {exc}", file=sys.stderr)
        return 2

    from stream.logs import configure_logging

    configure_logging(settings.log_level)
    running = stage(settings)
    running.install_signal_handlers()
    # As `vigil run`: a stop ends the process within shutdown_timeout_s and a grace period,
    # whatever hangs (a consumer close librdkafka does not return from).
    ShutdownWatchdog(running, settings.shutdown_timeout_s + SHUTDOWN_EXIT_GRACE_S).start()
    try:
        summary = running.run()
    except ConfigError as exc:  # e.g. the input topic does not exist
        print(f"vigil {name}: {exc}", file=sys.stderr)
        return 2
    return 0 if summary.clean else 1
