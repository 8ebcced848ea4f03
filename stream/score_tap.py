"""Writes the scores file of ``stream/scores.py``: every scored event of a replay.

The file holds the input partitions one after another, each in offset order. A replay
meets the partitions' batches in whatever order they are fetched, and with ``--workers``
in several processes, so each partition is written to its own part and the parts are
joined in partition order at the end (``ScoreParts``): the same bytes whatever the timing
and the number of workers.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
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


class ScoreParts:
    """The scores file ``target`` as one part per input partition, next to it.

    Each process writes the parts of the partitions it replays (:meth:`writer`), closes
    them, and one process joins them all in partition order (:meth:`join`).
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self._open: dict[int, IO[bytes]] = {}

    def part(self, partition: int) -> Path:
        return self.target.with_name(f"{self.target.name}.part-{partition}")

    def writer(self, partition: int) -> IO[bytes]:
        """The part of ``partition``: started afresh at its first use in this process (one
        process replays a partition), the same file on later ones."""
        out = self._open.get(partition)
        if out is None:
            out = self._open[partition] = self.part(partition).open("wb")
        return out

    def close(self) -> None:
        for out in self._open.values():
            out.close()
        self._open.clear()

    def discard(self) -> None:
        """Remove every part of the file there is (this replay's, or a failed one's)."""
        for part in self.target.parent.glob(f"{glob.escape(self.target.name)}.part-*"):
            part.unlink()

    def join(self, partitions: Iterable[int]) -> None:
        """The parts of ``partitions`` into the file, in partition order; parts removed.
        A partition without a part (nothing scored) adds nothing."""
        with self.target.open("wb") as out:
            for partition in sorted(partitions):
                part = self.part(partition)
                if not part.exists():
                    continue
                with part.open("rb") as data:
                    while chunk := data.read(1 << 20):
                        out.write(chunk)
                part.unlink()


def tapped(
    factory: Callable[[int], EventScorer], writer: Callable[[int], IO[bytes]]
) -> Callable[[int], EventScorer]:
    """A scorer factory whose scorers also write every scored event, each partition's to
    ``writer(partition)``."""
    # The service calls nothing but ``score_batch`` on a scorer, which the tap provides.
    return lambda partition: cast(EventScorer, ScoreTap(factory(partition), writer(partition)))
