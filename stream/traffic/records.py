"""What the generator yields: a Kafka-ready record plus its ground-truth labels."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    """One record of the stream.

    key: the user id for good records (keeps a user's events on one partition); for a
        malformed record whatever the broken record had, possibly None.
    value: the bytes to produce, exactly as a consumer will see them.
    timestamp_ms: event time, also used as the Kafka record timestamp.
    event_id: the id the record has (or, if malformed, would have had).
    event_type: the event type of a good record; None for a malformed one.
    attack, attack_id: the attack type and instance (e.g. ``card_testing-3``) the event
        belongs to, or None for normal traffic.
    malformed: the kind of breakage (``invalid_json``, ``schema_violation``,
        ``absurd_value``, ``oversized``, ``not_an_object``), or None for a good record.
    """

    key: bytes | None
    value: bytes
    timestamp_ms: int
    event_id: str
    event_type: str | None
    attack: str | None
    attack_id: str | None
    malformed: str | None


def label_line(record: GeneratedRecord) -> bytes:
    """The record's line of the labels file (JSON, no trailing newline)."""
    return orjson.dumps(
        {
            "event_id": record.event_id,
            "attack": record.attack,
            "attack_id": record.attack_id,
            "malformed": record.malformed,
        }
    )
