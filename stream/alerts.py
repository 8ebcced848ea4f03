"""Alert records per the alert contract (schemas/alert.v1.json)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detectors.scoring import Scored

# Which entity an event-level alert is about: the one a reviewer would act on.
_ENTITY_BY_EVENT_TYPE = {
    "listing.created": ("shop", "shop_id"),
    "review.posted": ("shop", "shop_id"),
}


@dataclass(frozen=True, slots=True)
class SourceCoordinates:
    topic: str
    partition: int
    offset: int


def stable_id(prefix: str, *parts: str) -> str:
    """``prefix-`` and 32 hex digits of blake2b over the parts joined by U+001F (a byte no
    id contains, so ("ab", "c") and ("a", "bc") differ): the contracts' id scheme."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16)
    return f"{prefix}-{digest.hexdigest()}"


def alert_id(detector: str, kind: str, event_ids: Sequence[str]) -> str:
    """Stable id: the same detector, kind and events always give the same id."""
    return stable_id("al", detector, kind, *event_ids)


def event_alert(
    event: Mapping[str, Any], scored: Scored, source: SourceCoordinates
) -> dict[str, Any]:
    """The alert for one anomalous event."""
    entity_type, entity_key = _ENTITY_BY_EVENT_TYPE.get(scored.event_type, ("user", "user_id"))
    event_ids = [event["event_id"]]
    return {
        "alert_id": alert_id(scored.detector, "event", event_ids),
        "schema_version": 1,
        "kind": "event",
        "detector": scored.detector,
        "event_type": scored.event_type,
        "event_ids": event_ids,
        "entity": {"type": entity_type, "id": event["entities"][entity_key]},
        "score": scored.score,
        "threshold": scored.threshold,
        "occurred_at": event["occurred_at"],
        "explanation": [
            {
                "feature": r.feature,
                "value": r.value,
                "baseline": r.baseline,
                "direction": r.direction,
            }
            for r in scored.reasons
        ],
        "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
    }
