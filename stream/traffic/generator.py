"""The traffic stream: normal sessions, injected attacks and malformed records, in time order.

Sessions start as a non-homogeneous Poisson process; each is planned in full and its events
wait in a heap keyed by event time, together with the events of running attacks. The stream
pops the heap while its head is earlier than the next session start, so event time never
goes backwards. Memory is bounded by the population and the events in flight, never by the
length of the stream.

Randomness: one ``numpy.random.SeedSequence`` of the seed is split into independent streams
for the population, normal traffic, attacks and corruption, so that changing, say,
``bad_fraction`` corrupts different records without reshuffling the traffic itself.
Per-event draws use ``random.Random`` (seeded from its child sequence) because scalar draws
from it are an order of magnitude cheaper than from a numpy Generator.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson

from stream.traffic.attacks import AttackInjector, plan_attacks
from stream.traffic.clock import SessionArrivals, TimestampFormatter
from stream.traffic.config import ATTACK_TYPES, TrafficConfig
from stream.traffic.events import PendingEvent, envelope
from stream.traffic.identities import IdAllocator
from stream.traffic.malformed import MALFORMED_KINDS, corrupt
from stream.traffic.population import build_population
from stream.traffic.records import GeneratedRecord, label_line
from stream.traffic.sessions import MEAN_EVENTS_PER_SESSION, NormalTraffic

__all__ = [
    "ATTACK_TYPES",
    "MALFORMED_KINDS",
    "GeneratedRecord",
    "TrafficConfig",
    "generate",
    "label_line",
]


@dataclass(frozen=True, slots=True)
class _RandomStreams:
    population: np.random.Generator
    traffic: random.Random
    attacks: random.Random
    malformed: random.Random


def _random_streams(seed: int) -> _RandomStreams:
    population, traffic, attacks, malformed = np.random.SeedSequence(seed).spawn(4)

    def scalar(sequence: np.random.SeedSequence) -> random.Random:
        return random.Random(int(sequence.generate_state(1, np.uint64)[0]))

    return _RandomStreams(
        population=np.random.default_rng(population),
        traffic=scalar(traffic),
        attacks=scalar(attacks),
        malformed=scalar(malformed),
    )


def generate(config: TrafficConfig) -> Iterator[GeneratedRecord]:
    """Exactly ``config.events`` records in nondecreasing event time, lazily.

    The same config yields the same records, byte for byte.
    """
    streams = _random_streams(config.seed)
    population = build_population(config.events, streams.population, IdAllocator())
    normal = NormalTraffic(population, streams.traffic)
    attacks = AttackInjector(population, streams.attacks)
    plans = plan_attacks(config, streams.attacks)
    start_ms = config.start_ms
    arrivals = SessionArrivals(
        start_ms, config.events_per_day / MEAN_EVENTS_PER_SESSION, streams.traffic
    )
    format_time = TimestampFormatter()
    bad_rnd = streams.malformed
    bad_fraction = config.bad_fraction
    id_prefix = f"e-{config.seed}-"

    # (event time, push order, event): the push order breaks ties deterministically.
    pending: list[tuple[int, int, PendingEvent]] = []
    pushed = 0
    next_session_ms = arrivals.next_ms()
    next_plan = 0
    now_ms = start_ms
    # Corruptions owed: drawn for every record, paid by the next normal event, since an
    # attack event is never corrupted (its label would then describe a record no detector
    # ever sees).
    owed_corruptions = 0

    emitted = 0
    while emitted < config.events:
        while next_plan < len(plans) and plans[next_plan].position <= emitted:
            for event in attacks.launch(plans[next_plan], now_ms):
                heapq.heappush(pending, (event.at_ms, pushed, event))
                pushed += 1
            next_plan += 1
        if not pending or next_session_ms <= pending[0][0]:
            for event in normal.session(next_session_ms):
                heapq.heappush(pending, (event.at_ms, pushed, event))
                pushed += 1
            next_session_ms = arrivals.next_ms()
            continue

        now_ms, _, event = heapq.heappop(pending)
        if event.on_emit is not None:
            # Also for a record about to be corrupted: the action happened on the platform,
            # only its record broke on the way.
            event.on_emit()
        event_id = f"{id_prefix}{emitted}"
        body = envelope(event, event_id, format_time(now_ms))
        key = event.user_id.encode()
        if bad_fraction > 0.0 and bad_rnd.random() < bad_fraction:
            owed_corruptions += 1
        if owed_corruptions and event.attack is None:
            owed_corruptions -= 1
            broken = corrupt(body, key, bad_rnd)
            yield GeneratedRecord(
                key=broken.key,
                value=broken.value,
                timestamp_ms=now_ms,
                event_id=event_id,
                event_type=None,
                attack=None,
                attack_id=None,
                malformed=broken.kind,
            )
        else:
            yield GeneratedRecord(
                key=key,
                value=orjson.dumps(body),
                timestamp_ms=now_ms,
                event_id=event_id,
                event_type=event.event_type,
                attack=event.attack,
                attack_id=event.attack_id,
                malformed=None,
            )
        emitted += 1
