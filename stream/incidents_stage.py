"""``vigil incidents``: the third stage, from pattern records to one alert per attack.

``vigil patterns --pattern-topic vigil.patterns`` writes its pattern records to an internal
topic instead of the alerts topic. The patterns of one attack are found on different keys,
hence on different partitions and members of stage 2, so they can only be grouped where
they all arrive: this stage reads the pattern topic and groups its records into incidents
(detectors/incidents.py, by the member events they share), writing one incident alert
(schemas/alert.v1.json, ``kind`` = ``incident``) per lifecycle step to the alerts topic,
keyed by the incident's alert id.

**One partition.** Grouping is correct only over all pattern records, so the pattern topic
has one partition and the group one active member (others stand by and take over on a
rebalance, with the state). That is enough at any scale: a pattern record is written per
lifecycle step of a pattern (new, each doubling, resolved), a few per attack, not per event.
With more partitions each is grouped on its own, and patterns on two of them are never
merged: the stage logs a warning at start.

The pattern topic also carries stage 2's watermark records (schemas/CONTRACTS.md): an
incident resolves once every observations partition has passed its patterns' resolution,
so a partition that lags hours behind another (catching up) cannot split an attack.

The loop is stage 2's (``IncidentStage`` subclasses ``PatternStage``; partitions and their
state in stream/owned_partitions.py): the grouper of each
partition is snapshotted to ``<group>.state`` every ``checkpoint_every`` records and on
revoke, restored on assignment and brought up to the committed offset silently; a batch's
incident alerts, snapshots and offsets are one Kafka transaction (``exactly-once``, the
default), or committed after delivery (``at-least-once``: a crash may repeat steps with
the same ids and sequences). Repeated pattern records (an at-least-once stage 2) are
ignored by their sequence.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import orjson
import structlog
from confluent_kafka import Producer
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from detectors.incidents import IncidentConfig, IncidentGrouper, IncidentUpdate, PatternRecord
from stream.checkpoint import fingerprint
from stream.delivery import Delivery
from stream.kafka_io import Record
from stream.observations import BadObservation
from stream.partition_state import ReadPartition
from stream.patterns_stage import (
    LOOP_FLAGS,
    PartitionPatterns,
    PatternStage,
    PatternStageSettings,
    StageMetrics,
    load_model_settings,
    stage_cli,
    timestamp,
)
from stream.service import ConsumerLike
from stream.state_store import ensure_state_topic

log = structlog.get_logger("vigil.incidents")

DETECTOR = "incidents/1"
ENV_PREFIX = "VIGIL_INCIDENTS_"


# -- settings -------------------------------------------------------------------------------


class IncidentStageSettings(BaseModel):
    """Everything ``vigil incidents`` needs; built once at start-up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str = Field(min_length=1)
    pattern_topic: str = Field(min_length=1, description="what `vigil patterns` writes")
    alerts_topic: str = Field(min_length=1)
    dlq_topic: str = Field(default="vigil.incidents.dlq", min_length=1)
    group: str = Field(min_length=1)
    exit_when_idle: float | None = Field(default=None, gt=0)
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    group_instance_id: str | None = Field(default=None, min_length=1)
    batch_size: int = Field(default=500, ge=1, le=100_000)
    poll_timeout_s: float = Field(default=0.5, gt=0, le=60)
    flush_timeout_s: float = Field(default=30.0, gt=0)
    guarantee: Literal["exactly-once", "at-least-once"] = "exactly-once"
    state_topic: str | None = Field(default=None, min_length=1)
    checkpoint_every: int = Field(default=5_000, ge=1)
    transactional_id: str | None = Field(default=None, min_length=1)
    transaction_timeout_ms: int = Field(default=10_000, ge=1_000)
    restore_timeout_s: float = Field(default=300.0, gt=0)
    # As `vigil run`'s: after a stop no Kafka call waits past this, and the process ends
    # itself SHUTDOWN_EXIT_GRACE_S later whatever still hangs.
    shutdown_timeout_s: float = Field(default=20.0, gt=0, le=600)
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The grouping (detectors/incidents.py).
    min_shared: int = Field(default=1, ge=1, description="named events shared to merge")
    growth_factor: float = Field(default=2.0, gt=1)
    group_wait_s: float = Field(
        default=300.0,
        ge=0,
        description="event time a new incident waits for its attack's other patterns "
        "before its first record",
    )
    kafka: dict[str, str] = Field(default_factory=dict)
    sasl_password: SecretStr | None = None

    def incident_config(self) -> IncidentConfig:
        return IncidentConfig(
            min_shared=self.min_shared,
            growth_factor=self.growth_factor,
            group_wait_s=self.group_wait_s,
        )

    @property
    def state_topic_name(self) -> str:
        return self.state_topic or f"{self.group}.state"

    @property
    def transactional_id_value(self) -> str:
        """Stable across restarts of one instance (see ServiceSettings)."""
        if self.transactional_id is not None:
            return self.transactional_id
        member = self.group_instance_id or socket.gethostname()
        return f"vigil-incidents-{self.group}-{member}"

    def fingerprint(self) -> str:
        # group_wait_s only delays reports, it never changes what the state means: it is
        # left out, so that snapshots from before it existed, or made under another
        # value, restore.
        config = self.incident_config()
        text = repr(config).replace(f", group_wait_s={config.group_wait_s!r}", "")
        return fingerprint(_Verbatim(text))

    def stage_settings(self) -> PatternStageSettings:
        """The same loop's settings as ``vigil patterns`` has them: the pattern topic is
        its input, its state, delivery and librdkafka settings are ours."""
        fields = {
            name: getattr(self, name)
            for name in IncidentStageSettings.model_fields
            if name in PatternStageSettings.model_fields and name != "pattern_topic"
        }
        fields.update(
            observations_topic=self.pattern_topic,
            transactional_id=self.transactional_id_value,
            state_topic=self.state_topic_name,
        )
        return PatternStageSettings.model_validate(fields)

    def kafka_common(self) -> dict[str, str | int | float | bool]:
        return self.stage_settings().kafka_common()


def load_incident_settings(
    cli: Mapping[str, Any],
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> IncidentStageSettings:
    """Defaults < TOML file (``[incidents]`` section) < ``VIGIL_INCIDENTS_*`` < flags.

    Raises ``ConfigError`` naming each bad setting and its source.
    """
    return load_model_settings(
        IncidentStageSettings, "incidents", ENV_PREFIX, cli, config_file=config_file, env=env
    )


# -- incident alerts (pure) -----------------------------------------------------------------


class _Verbatim:
    """An object whose repr is the given text (what ``fingerprint`` hashes)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def incident_alert(update: IncidentUpdate, config: IncidentConfig) -> dict[str, Any]:
    """The alert record (alert.v1.json, kind ``incident``) of one lifecycle step."""
    trigger = update.trigger
    strongest = update.max_risk
    topic, partition, offset = trigger.source
    listed = update.patterns[: config.max_listed]
    return {
        "alert_id": update.incident_id,
        "schema_version": 1,
        "kind": "incident",
        "detector": DETECTOR,
        "event_type": trigger.event_type,
        "event_ids": list(update.examples),
        "entity": update.entity(),
        "score": strongest.risk_ratio,
        "threshold": strongest.threshold,
        "occurred_at": timestamp(update.last_seen),
        # Its strongest pattern's evidence; what is anomalous about its events is in
        # incident.top_features.
        "explanation": [
            {
                "feature": "anomaly_rate",
                "value": strongest.risk_ratio * strongest.baseline_rate,
                "baseline": strongest.baseline_rate,
                "direction": "high",
            }
        ],
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "status": update.status,
        "sequence": update.sequence,
        "incident": {
            "patterns": [
                {
                    "alert_id": p.alert_id,
                    "members": list(p.members),
                    "events": p.events,
                    "status": p.status,
                }
                for p in listed
            ],
            "pattern_count": len(update.patterns),
            "open_patterns": update.open_patterns,
            "members": list(update.members[: config.max_listed]),
            "events": update.events,
            "users": update.users,
            "first_seen": timestamp(update.first_seen),
            "last_seen": timestamp(update.last_seen),
            "updated_at": timestamp(update.updated_at),
            "max_score": update.max_score,
            "top_features": [
                {"feature": f, "direction": d, "events": n}
                for f, d, n in update.top_features(config.top_features)
            ],
            "source_ranges": [
                {"topic": t, "partition": p, "from_offset": lo, "to_offset": hi}
                for t, p, lo, hi in update.source_ranges()
            ],
            "merged_into": update.merged_into,
        },
    }


class PartitionIncidents:
    """The grouper of one pattern-topic partition and the alerts of its updates (pure).

    The pattern topic also carries stage 2's watermark records (one per observations
    partition, ``kind`` = ``watermark``): the event time each partition has got to. Their
    minimum over every partition resolves incidents (``IncidentGrouper.advance``).
    """

    def __init__(self, config: IncidentConfig) -> None:
        self.config = config
        self.grouper = IncidentGrouper(config)
        self.watermarks: dict[int, float] = {}
        self.partitions = 0  # of the observations topic, as stage 2 says

    @property
    def open_patterns(self) -> int:
        """Open incidents (the stage's ``open`` gauge)."""
        return self.grouper.open_incidents

    @property
    def watermark(self) -> float:
        """The event time every stage-2 partition has passed (-inf until all are heard)."""
        if not self.partitions or len(self.watermarks) < self.partitions:
            return -math.inf
        return min(self.watermarks.values())

    def observe(self, value: bytes | None) -> list[dict[str, Any]]:
        """The incident alerts of one pattern-topic record; raises ValueError (or KeyError,
        TypeError) if it is neither a pattern alert nor a watermark."""
        body = orjson.loads(value or b"")
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        if body.get("kind") == "watermark":
            partition, t = int(body["partition"]), float(body["t"])
            self.partitions = max(self.partitions, int(body["partitions"]), partition + 1)
            self.watermarks[partition] = max(self.watermarks.get(partition, -math.inf), t)
            updates = self.grouper.advance(self.watermark)
        else:
            updates = self.grouper.observe(PatternRecord.from_alert(body))
        return [incident_alert(u, self.config) for u in updates]


# -- the consumer loop ----------------------------------------------------------------------


class IncidentStage(PatternStage):
    """One member of the ``vigil incidents`` group: ``vigil patterns``' loop (state,
    delivery, restore, readiness, metrics) over the pattern topic, with a
    ``PartitionIncidents`` per partition; run() returns when stopped or idle.

    With clients injected (unit tests) no state is kept and delivery is at-least-once.
    """

    NAME = "incidents"
    INPUT_SETTING = "pattern_topic"

    def __init__(
        self,
        settings: IncidentStageSettings,
        *,
        consumer: ConsumerLike | None = None,
        producer: Producer | None = None,
        delivery: Delivery | None = None,
        read_state: ReadPartition | None = None,
        metrics: StageMetrics | None = None,
    ) -> None:
        self.incidents = settings
        self.incident_config = settings.incident_config()
        super().__init__(
            settings.stage_settings(),
            consumer=consumer,
            producer=producer,
            delivery=delivery,
            read_state=read_state,
            metrics=metrics or StageMetrics(prefix="vigil_incidents"),
        )
        self.owned.fingerprint = settings.fingerprint()

    def _fresh(self, partition: int) -> PartitionPatterns:
        # The loop only hands a partition's model back to _observe and reads its
        # open_patterns, which PartitionIncidents has too.
        return cast(PartitionPatterns, PartitionIncidents(self.incident_config))

    def _clients(self) -> tuple[ConsumerLike, Producer, Delivery]:
        if self._consumer is None:  # also creates the dead-letter topic
            s = self.incidents
            partitions = ensure_state_topic(
                s, s.pattern_topic, input_setting=self.INPUT_SETTING, also=[s.dlq_topic]
            )
            if partitions > 1:
                log.warning("incidents.pattern_topic_partitioned", partitions=partitions)
        return super()._clients()

    def _observe(
        self, model: PartitionPatterns, record: Record
    ) -> list[dict[str, Any]] | BadObservation:
        try:
            return cast(PartitionIncidents, model).observe(record.value)
        except (ValueError, KeyError, TypeError) as exc:
            return BadObservation("schema_violation", f"not a pattern record: {exc!r}"[:1000])

    def _alert_fields(self, alert: dict[str, Any]) -> dict[str, Any]:
        incident = alert["incident"]
        return {
            "patterns": incident["pattern_count"],
            "events": incident["events"],
            "merged_into": incident["merged_into"],
        }


# -- command line ---------------------------------------------------------------------------

_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("bootstrap", str, "Kafka bootstrap servers"),
    ("pattern_topic", str, "topic `vigil patterns --pattern-topic` writes (one partition)"),
    ("alerts_topic", str, "topic the incident alerts go to"),
    ("dlq_topic", str, "dead-letter topic for records that are not pattern records"),
    ("group", str, "consumer group id (not the pattern stage's)"),
    ("min_shared", int, "named events two patterns must share to be one incident"),
    *LOOP_FLAGS,
)


def incidents_cli(argv: Sequence[str]) -> int:
    return stage_cli(
        argv,
        name="incidents",
        description="Incident alerts from the pattern topic.",
        prefix=ENV_PREFIX,
        flags=_FLAGS,
        load=load_incident_settings,
        stage=IncidentStage,
    )
