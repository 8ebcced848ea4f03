"""Observation records of generated traffic, scored per input partition (test helper).

What the scoring service does, without Kafka: generated events keyed by user are split over
``partitions`` input partitions, each partition scored in offset order by its own
``EventScorer``, and every scored event turned into observation records.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from detectors.arrivals import ArrivalFinder
from detectors.patterns import PatternFinder, PatternUpdate
from detectors.scoring import EventScorer, Scored, ScoringConfig
from stream.alerts import SourceCoordinates
from stream.observations import Decoded, decode_observation, observation_records
from stream.traffic import TrafficConfig, generate

EVENTS_TOPIC = "events"


@dataclass(frozen=True)
class Traffic:
    records: list[tuple[bytes, bytes]]  # (key, value) in event order
    events: list[dict[str, Any]]
    attack_of: dict[str, str | None]  # event id -> attack instance


def scored_traffic(
    events: int = 8000, seed: int = 3, attack_rate: float = 1e-3, partitions: int = 2
) -> Traffic:
    generated = list(generate(TrafficConfig(events=events, seed=seed, attack_rate=attack_rate)))
    decoded = [orjson.loads(r.value) for r in generated]
    part_of = [zlib.crc32(r.key or b"") % partitions for r in generated]
    per_event: list[list[tuple[bytes, bytes]]] = [[] for _ in generated]
    for p in range(partitions):
        indices = [i for i, q in enumerate(part_of) if q == p]
        scorer = EventScorer(ScoringConfig(warmup=100))
        results = scorer.score_batch([decoded[i] for i in indices])
        for offset, (i, scored) in enumerate(zip(indices, results, strict=True)):
            assert isinstance(scored, Scored), scored
            source = SourceCoordinates(EVENTS_TOPIC, p, offset)
            per_event[i] = observation_records(decoded[i], scored, source)
    records = [record for chunk in per_event for record in chunk]
    attack_of = {r.event_id: r.attack_id for r in generated}
    return Traffic(records, decoded, attack_of)


def decode_all(records: Sequence[tuple[bytes, bytes]]) -> list[Decoded]:
    out = []
    for key, value in records:
        decoded = decode_observation(key, value)
        assert isinstance(decoded, Decoded), decoded
        out.append(decoded)
    return out


def reference_updates(
    records: Sequence[tuple[bytes, bytes]], *, resolve_all: bool = False, arrivals: bool = True
) -> list[PatternUpdate]:
    """One finder over every record, in order (and one arrival finder over the arrival
    records, unless ``arrivals`` is false: then they are left out): what any routing by
    key must reproduce. ``resolve_all``: then advance far past the end, which resolves
    every open pattern."""
    finder = PatternFinder()
    arrival_finder = ArrivalFinder()
    updates: list[PatternUpdate] = []
    for decoded in decode_all(records):
        if not decoded.arrival:
            updates += finder.observe_key(decoded.key, decoded.observation)
        elif arrivals:
            updates += arrival_finder.observe_key(decoded.key, decoded.observation)
    if resolve_all:
        resolved = [*finder.advance(math.inf), *arrival_finder.advance(math.inf)]
        updates += sorted(resolved, key=lambda u: (u.at, u.pattern_id))
    return updates
