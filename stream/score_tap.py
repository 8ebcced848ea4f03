"""Writes the scores file of ``stream/scores.py``: every scored event of a replay."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, cast

import orjson

from detectors.attributes import NEW_ACCOUNT_AGE_S
from detectors.features.extractor import HOUR
from detectors.scoring import EventScorer, Scored, Unscorable


def cohort(scored: Scored) -> str:
    """The acting account's cohort, from the feature every event type has."""
    age_h = scored.features.get("user_age_h", math.inf)
    return "new_account" if age_h * HOUR < NEW_ACCOUNT_AGE_S else "established"


def score_line(event: Mapping[str, Any], scored: Scored) -> bytes:
    return orjson.dumps(
        {
            "event_id": event["event_id"],
            "event_type": scored.event_type,
            "cohort": cohort(scored),
            "detector": scored.detector,
            "score": scored.score,
            "threshold": scored.threshold,
            "alert": scored.is_anomaly,
            "occurred_at": event["occurred_at"],
        }
    )


class ScoreTap:
    """Passes ``score_batch`` through to a partition's scorer, writing each scored event.

    A wrapper rather than a subclass: the scorer is made by the service's own factory, so
    the replay's seeds and state stay exactly the live service's.
    """

    def __init__(self, inner: EventScorer, out: IO[bytes]) -> None:
        self.inner = inner
        self.out = out

    def score_batch(
        self, events: Sequence[Mapping[str, Any]], exclude: Sequence[bool] | None = None
    ) -> list[Scored | Unscorable]:
        """:meth:`EventScorer.score_batch`, every scored event also written out."""
        results = self.inner.score_batch(events, exclude)
        for event, result in zip(events, results, strict=True):
            if isinstance(result, Scored):
                self.out.write(score_line(event, result) + b"\n")
        return results


def tapped(factory: Callable[[int], EventScorer], out: IO[bytes]) -> Callable[[int], EventScorer]:
    """A scorer factory whose scorers also write every scored event to ``out``."""
    # The service calls nothing but ``score_batch`` on a scorer, which the tap provides.
    return lambda partition: cast(EventScorer, ScoreTap(factory(partition), out))
