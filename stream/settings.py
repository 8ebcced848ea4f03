"""One frozen, typed settings object, built once at start-up.

Sources, lowest to highest precedence: defaults, a TOML config file, ``VIGIL_*``
environment variables, command-line flags. A bad value fails here, at start-up, with the
setting's name and where its value came from.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

ENV_PREFIX = "VIGIL_"


def kafka_common(
    bootstrap: str, extra: Mapping[str, str], sasl_password: SecretStr | None
) -> dict[str, str | int | float | bool]:
    """librdkafka settings every client of every stage shares: the broker, extra settings
    (security, timeouts) and the secret, revealed only here."""
    common: dict[str, str | int | float | bool] = {"bootstrap.servers": bootstrap}
    common.update(extra)
    if sasl_password is not None:
        common["sasl.password"] = sasl_password.get_secret_value()
    return common


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


class ServiceSettings(BaseModel):
    """Everything ``vigil run`` needs; nothing below this reads the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str = Field(min_length=1, description="Kafka bootstrap servers")
    input_topic: str = Field(min_length=1)
    alerts_topic: str = Field(min_length=1)
    dlq_topic: str = Field(min_length=1)
    group: str = Field(min_length=1, description="consumer group id")
    exit_when_idle: float | None = Field(
        default=None, gt=0, description="exit after this many seconds without input"
    )
    session_timeout_ms: int = Field(
        default=45_000, ge=1_000, description="how soon a dead member's partitions move on"
    )
    group_instance_id: str | None = Field(
        default=None, min_length=1, description="static membership, for rolling restarts"
    )
    # Stage 1 of pattern alerts: scored events, keyed by pattern key, for `vigil patterns`.
    observations: bool = Field(default=True, description="produce observations for patterns")
    observations_topic: str = Field(default="vigil.observations", min_length=1)
    # Labels from reviewers: event alerts below the precision-targeted threshold are held.
    labels_topic: str | None = Field(default=None, min_length=1)
    target_precision: float = Field(default=0.9, gt=0, lt=1)
    min_labels: int = Field(default=30, ge=1, description="decisive labels before gating")
    # Event types whose labels are still too few: the alert budget decides, or ("hold")
    # they raise no event alert, only patterns and incidents (detectors/label_gate.py).
    unproven_segments: Literal["budget", "hold"] = "budget"
    # Learning guard: events of open patterns (and of entities labeled fraud) not learned.
    pattern_alerts_topic: str | None = Field(
        default=None, min_length=1, description="where `vigil patterns` writes its alerts"
    )
    # Delivery and state.
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
    # One transaction per batch: 2,000 records ran 1.3x the records/s of 500 under
    # exactly-once (a transaction commit costs a few broker round trips).
    batch_size: int = Field(default=2_000, ge=1, le=100_000)
    poll_timeout_s: float = Field(default=0.5, gt=0, le=60)
    flush_timeout_s: float = Field(default=30.0, gt=0)
    # After a stop (SIGTERM, SIGINT, idle), the Kafka calls that finish the batch, commit
    # it and snapshot the state share this budget; `vigil run` exits at the latest
    # SHUTDOWN_EXIT_GRACE_S (10 s) later, non-zero if anything was given up.
    shutdown_timeout_s: float = Field(default=20.0, gt=0, le=600)
    max_event_bytes: int = Field(default=65_536, ge=1_024)
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = Field(default=9308, ge=0, le=65_535)
    log_level: str = "info"
    # Detector and threshold.
    engine: Literal["hst", "river-hst", "iforest", "ensemble"] = "hst"
    seed: int = 42
    n_trees: int = Field(default=10, ge=1, le=1_000)
    height: int = Field(default=8, ge=1, le=30)
    window_size: int = Field(default=250, ge=1)
    quantile: float = Field(default=0.995, gt=0, lt=1)
    suspicious_quantile: float | None = Field(
        default=0.98, gt=0, lt=1, description="pattern bar: scores above it feed the patterns"
    )
    warmup: int = Field(default=300, ge=0)
    max_keys: int = Field(default=1_000_000, ge=1)
    cohort_age_h: float | None = Field(
        default=None, gt=0, description="score accounts younger than this by a cohort model"
    )
    protect_above: float | None = Field(
        default=None, description="do not learn events scoring above this (anti-poisoning)"
    )
    max_event_time_skew_s: float | None = Field(
        default=120.0,
        ge=0,
        description="hold back records more than this far ahead (record time) of the other "
        "partitions' next records; none: read each partition as it comes",
    )
    arrival_kinds: tuple[Literal["device", "ip24", "title"], ...] = Field(
        default=("device", "ip24"),
        description="values whose arriving users feed the arrival-burst patterns; [] for none",
    )
    # Extra librdkafka settings (security, timeouts) for consumer and producer.
    kafka: dict[str, str] = Field(default_factory=dict)
    sasl_password: SecretStr | None = None

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return value.lower()

    @property
    def state_topic_name(self) -> str:
        return self.state_topic or f"{self.group}.state"

    @property
    def transactional_id_value(self) -> str:
        """A restarted instance must reuse its id so that the broker aborts at once what
        its previous life left open (otherwise readers wait ``transaction_timeout_ms``).
        Without static membership the host name stands in: a container restarted in its
        pod keeps it. Two instances of one group on one host need distinct
        ``group_instance_id`` values, or the second fences the first."""
        if self.transactional_id is not None:
            return self.transactional_id
        if self.group_instance_id is not None:
            return f"vigil-{self.group}-{self.group_instance_id}"
        return f"vigil-{self.group}-{socket.gethostname()}"

    def kafka_common(self) -> dict[str, str | int | float | bool]:
        """librdkafka settings shared by the consumer and the producer."""
        return kafka_common(self.bootstrap, self.kafka, self.sasl_password)


FIELD_NAMES = frozenset(ServiceSettings.model_fields)


def _from_env(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    found: dict[str, tuple[Any, str]] = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in FIELD_NAMES:
            found[name] = (value, f"env {key}")
    return found


def _from_file(path: Path) -> dict[str, tuple[Any, str]]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    section = data.get("vigil", data)
    return {str(k).replace("-", "_"): (v, f"file {path}") for k, v in section.items()}


def load_settings(
    cli: Mapping[str, Any],
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ServiceSettings:
    """Merge the sources and validate; raise ``ConfigError`` naming each bad setting."""
    env = os.environ if env is None else env
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    merged: dict[str, tuple[Any, str]] = {}
    if config_file is not None:
        merged.update(_from_file(config_file))
    merged.update(_from_env(env))
    merged.update(
        {k: (v, "flag --" + k.replace("_", "-")) for k, v in cli.items() if v is not None}
    )
    unknown = sorted(k for k in merged if k not in FIELD_NAMES)
    if unknown:
        where = ", ".join(f"'{k}' ({merged[k][1]})" for k in unknown)
        raise ConfigError(f"unknown setting {where}")
    try:
        return ServiceSettings.model_validate({k: v for k, (v, _) in merged.items()})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            origin = merged.get(name, (None, "default"))[1]
            problems.append(f"setting '{name}' ({origin}): {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
