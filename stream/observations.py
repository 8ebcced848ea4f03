"""Stage 1 -> stage 2 of pattern alerts: scored events as observations keyed by pattern key.

The scoring service keeps its state per input partition (records are keyed by user), so
the events that share an attribute (a /24, a device, a shop) are spread over partitions and
consumers. To find patterns correctly anyway, every scored event becomes one record per
pattern key (``PatternFinder.keys`` of its grouping attributes) on an observations topic,
**keyed by that pattern key**: the partitioner puts every observation of a key on one
partition, so one ``vigil patterns`` consumer sees all of them and the finder's updates
for the key are those of a single finder (see the independence paragraph of
detectors/patterns.py). This module is pure: records in, records out.

Record key: the key's members joined by U+001F (``ip24:10.0.0`` or
``cohort:new_account\\x1fip24:10.0.0``), UTF-8. The key is the authority for the members;
the value does not repeat them.

Record value (orjson), ``v`` = 1:

* anomalous event (``a`` true: the event alerted or scored above the scorer's
  ``suspicious_quantile``): ``t`` (event time, epoch seconds), ``id`` (event id),
  ``type`` (event type), ``user``, ``score``, ``reasons`` (``[[feature, direction], ...]``,
  most important first), ``src`` (``[topic, partition, offset]`` of the event), ``alert``
  (whether it was also over the alert budget; informational, the finder ignores it);
* normal event (``a`` false): ``t`` and ``w``, the number of events it stands for;
* arrival (``n`` true, no ``a``): the acting user uses the key's value (a device, a /24)
  for the first time in a day (``Scored.arrivals``, detectors/arrivals.py): ``t``, ``id``,
  ``type``, ``user``, ``src``. One per (user, value) and day, never sampled: the arrival
  finder counts distinct users. Keyed by the value alone (never a pair).

Volume. An event has 3 to 7 attributes and, for a new account, as many pairs with the
new-account cohort, so one record per key and event would multiply the input by about 5
to 10. Anomalous events (2% at the default suspicious quantile) are always sent, each with
what its pattern alert shows. Normal events only feed the keys' event counts, so they are
*sampled*, deterministically: an event is kept when the hash of its id falls below
``normal_rate`` (the same decision for all its keys, in any process, on any replay) and then
counts ``1 / normal_rate`` events (``Observation.weight``), an unbiased (Horvitz-Thompson)
estimate of the count. At the default rate of 1/8, output is about 1.6 records per input
event, of about 40 bytes for a normal one. Sampling adds noise only where counts are
small, where a pattern also needs ``min_support`` anomalous events from ``min_users`` users
and a Poisson test against a baseline floored at the base rate; a stateless function
cannot aggregate without a wall clock or a flush point, which is why it samples rather
than pre-aggregates. ``normal_rate=1.0`` sends every event.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from detectors.arrivals import ARRIVAL_REASON
from detectors.attributes import attributes
from detectors.features.extractor import HOUR, event_time_s
from detectors.patterns import Key, Observation, PatternConfig, Source, pattern_keys
from detectors.scoring import Scored
from stream.alerts import SourceCoordinates

OBSERVATION_VERSION: Final = 1
KEY_SEPARATOR: Final = "\x1f"
# Share of normal events sent (see the module docstring).
DEFAULT_NORMAL_RATE: Final = 0.125
# Every reason an anomalous event has (the scorer's explain_top, 3 by default), capped.
MAX_REASONS: Final = 8
_DEFAULT_CONFIG: Final = PatternConfig()


def routing_key(members: Key) -> bytes:
    """The Kafka key of a pattern key's observations.

    >>> routing_key(("cohort:new_account", "ip24:10.0.0"))
    b'cohort:new_account\\x1fip24:10.0.0'
    """
    return KEY_SEPARATOR.join(members).encode()


def sampled(event_id: str, rate: float) -> bool:
    """Whether a normal event is sent: a hash of its id below ``rate`` (deterministic).

    >>> sampled("e-1", 1.0), sampled("e-1", 0.0)
    (True, False)
    """
    if rate >= 1.0:
        return True
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2.0**64


def event_attributes(event: Mapping[str, Any], scored: Scored) -> tuple[str, ...]:
    """The grouping attributes of a scored event; the account age comes from its features
    (``user_age_h``, which every event type has), so the new-account cohort is included."""
    age_h = scored.features.get("user_age_h")
    age_s = None if age_h is None or not math.isfinite(age_h) else age_h * HOUR
    return attributes(event, account_age_s=age_s)


def observation_records(
    event: Mapping[str, Any],
    scored: Scored,
    source: SourceCoordinates,
    *,
    config: PatternConfig = _DEFAULT_CONFIG,
    normal_rate: float = DEFAULT_NORMAL_RATE,
) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of one scored event for the observations topic.

    One record per pattern key of the event, in ``pattern_keys`` order; none for a normal
    event that the sampling leaves out. ``config`` must be the stage's (its
    ``pair_kinds`` and ``max_attributes`` decide the keys).
    """
    if not 0.0 < normal_rate <= 1.0:
        raise ValueError(f"normal_rate must be within (0, 1], got {normal_rate}")
    event_id: str = event["event_id"]
    # Anomalous to the pattern stage: an alert or, below that, a suspicious score.
    flagged = scored.is_anomaly or scored.is_suspicious
    kept = flagged or sampled(event_id, normal_rate)
    if not kept and not scored.arrivals:
        return []
    t = event_time_s(event["occurred_at"])
    records = _arrival_records(event, scored, source, t) if scored.arrivals else []
    if not kept:
        return records
    body: dict[str, Any] = {"v": OBSERVATION_VERSION, "t": t}
    if flagged:
        body.update(
            a=True,
            id=event_id,
            type=scored.event_type,
            user=event["entities"]["user_id"],
            score=scored.score,
            reasons=[[r.feature, r.direction] for r in scored.reasons[:MAX_REASONS]],
            src=[source.topic, source.partition, source.offset],
            alert=scored.is_anomaly,
        )
    else:
        body.update(a=False, w=1.0 / normal_rate)
    value = orjson.dumps(body)
    keys = pattern_keys(event_attributes(event, scored), config.pair_kinds, config.max_attributes)
    return [(routing_key(key), value) for key in keys] + records


def _arrival_records(
    event: Mapping[str, Any], scored: Scored, source: SourceCoordinates, t: float
) -> list[tuple[bytes, bytes]]:
    value = orjson.dumps(
        {
            "v": OBSERVATION_VERSION,
            "t": t,
            "n": True,
            "id": event["event_id"],
            "type": scored.event_type,
            "user": event["entities"]["user_id"],
            "src": [source.topic, source.partition, source.offset],
        }
    )
    return [(routing_key((arrival,)), value) for arrival in scored.arrivals]


# -- stage 2: reading them back -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decoded:
    """One observation record read back: the key, what the finder needs, the event type."""

    key: Key
    observation: Observation
    event_type: str | None
    # An arrival (for the arrival finder), not an event count (for the pattern finder).
    arrival: bool = False


@dataclass(frozen=True, slots=True)
class BadObservation:
    """Why an observation record cannot be used; ``reason`` is a dead-letter reason."""

    reason: str
    detail: str


_MAX_RECORD_BYTES: Final = 65_536
_MAX_TEXT: Final = 256


def decode_observation(key: bytes | None, value: bytes | None) -> Decoded | BadObservation:
    """The observation in a record, or why not; never raises on input."""
    if value is None:
        return BadObservation("invalid_json", "record value is null")
    if len(value) > _MAX_RECORD_BYTES:
        return BadObservation("oversized", f"{len(value)} bytes exceeds {_MAX_RECORD_BYTES}")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return BadObservation("invalid_json", str(exc)[:500])
    if not isinstance(body, dict):
        return BadObservation("not_an_object", f"top-level JSON value is {type(body).__name__}")
    try:
        members = _members(key)
        return _decoded(members, body)
    except _InvalidObservationError as exc:
        return BadObservation("schema_violation", str(exc))


class _InvalidObservationError(ValueError):
    pass


def _members(key: bytes | None) -> Key:
    if not key:
        raise _InvalidObservationError("record key is missing (it is the pattern key)")
    try:
        text = key.decode()
    except UnicodeDecodeError as exc:
        raise _InvalidObservationError("record key is not UTF-8") from exc
    members = tuple(text.split(KEY_SEPARATOR))
    if len(members) > 2 or not all(":" in m and len(m) <= 512 for m in members):
        raise _InvalidObservationError("record key is not one or two kind:value attributes")
    return members


def _decoded(members: Key, body: dict[str, Any]) -> Decoded:
    if body.get("v") != OBSERVATION_VERSION:
        raise _InvalidObservationError(f"v must be {OBSERVATION_VERSION}, got {body.get('v')!r}")
    t = _number(body, "t")
    if "n" in body:
        return _arrival(members, body, t)
    anomalous = body.get("a")
    if anomalous is False:
        weight = _number(body, "w")
        if weight < 1.0:
            raise _InvalidObservationError(f"w must be >= 1, got {weight}")
        obs = Observation(t, "", "", False, (), ("", 0, 0), weight=weight)
        return Decoded(members, obs, None)
    if anomalous is not True:
        raise _InvalidObservationError("a must be a boolean")
    event_id = _text(body, "id")
    event_type = _text(body, "type")
    user = _text(body, "user")
    source = _source(body)
    score = _number(body, "score")
    reasons = body.get("reasons")
    if not isinstance(reasons, list) or len(reasons) > MAX_REASONS:
        raise _InvalidObservationError(f"reasons must be a list of at most {MAX_REASONS}")
    pairs: list[tuple[str, str]] = []
    for reason in reasons:
        if not (
            isinstance(reason, list)
            and len(reason) == 2
            and isinstance(reason[0], str)
            and 0 < len(reason[0]) <= _MAX_TEXT
            and reason[1] in ("high", "low")
        ):
            raise _InvalidObservationError("reasons must hold [feature, high|low] pairs")
        pairs.append((reason[0], reason[1]))
    obs = Observation(t, event_id, user, True, (), source, score=score, reasons=tuple(pairs))
    return Decoded(members, obs, event_type)


def _arrival(members: Key, body: dict[str, Any], t: float) -> Decoded:
    if body["n"] is not True or "a" in body:
        raise _InvalidObservationError("n must be true, and an arrival has no a")
    if len(members) != 1:
        raise _InvalidObservationError("an arrival's record key is one attribute")
    event_id = _text(body, "id")
    event_type = _text(body, "type")
    user = _text(body, "user")
    obs = Observation(t, event_id, user, True, (), _source(body), reasons=(ARRIVAL_REASON,))
    return Decoded(members, obs, event_type, arrival=True)


def _source(body: Mapping[str, Any]) -> Source:
    src = body.get("src")
    if not (
        isinstance(src, list)
        and len(src) == 3
        and isinstance(src[0], str)
        and 0 < len(src[0]) <= 249
        and _count(src[1])
        and _count(src[2])
    ):
        raise _InvalidObservationError("src must be [topic, partition >= 0, offset >= 0]")
    return (src[0], src[1], src[2])


def _number(body: Mapping[str, Any], name: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _InvalidObservationError(f"{name} must be a finite number")
    return float(value)


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
        raise _InvalidObservationError(f"{name} must be a string of 1 to {_MAX_TEXT} characters")
    return value


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


__all__: Sequence[str] = (
    "BadObservation",
    "Decoded",
    "decode_observation",
    "event_attributes",
    "observation_records",
    "routing_key",
    "sampled",
)
