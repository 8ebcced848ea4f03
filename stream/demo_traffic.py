"""The demo's traffic: one generated stream, produced in phases, its ground truth kept."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from detectors.evaluation import Label
from detectors.oncall_eval import TruthEvent
from stream.traffic.generator import GeneratedRecord, TrafficConfig, generate
from stream.traffic.sinks import produce_to_kafka


@dataclass
class PhasedTraffic:
    """``config``'s stream, produced to ``topic`` a phase at a time.

    For each phase it keeps the valid events in stream order with their ground truth (the
    evaluation's input); for the whole stream, the labels of every record and the kinds of
    malformed ones.
    """

    config: TrafficConfig
    bootstrap: str
    topic: str
    phases: list[list[TruthEvent]] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    malformed: Counter[str] = field(default_factory=Counter)
    _records: Iterator[GeneratedRecord] | None = None

    def produce(self, records: int, progress: Callable[[int], None] | None = None) -> int:
        """Produce the next ``records`` records (fewer at the end); returns how many."""
        if self._records is None:
            self._records = generate(self.config)
        source = self._records
        phase: list[TruthEvent] = []
        self.phases.append(phase)

        def kept() -> Iterator[GeneratedRecord]:
            for record in itertools.islice(source, records):
                self.labels.append(Label(record.event_id, record.attack, record.attack_id))
                if record.malformed is not None:
                    self.malformed[record.malformed] += 1
                else:
                    phase.append(
                        TruthEvent(
                            record.event_id,
                            record.timestamp_ms / 1000.0,
                            record.attack,
                            record.attack_id,
                        )
                    )
                yield record

        return produce_to_kafka(kept(), self.bootstrap, self.topic, progress=progress)

    @property
    def attack_of(self) -> dict[str, str | None]:
        """Ground truth of every record so far: event id -> attack type (None: normal)."""
        return {label.event_id: label.attack for label in self.labels}

    def instances_starting_in(self, phase: int) -> set[str]:
        """Attack instances whose first event is in ``phase`` (0-based)."""
        before = {e.attack_id for p in self.phases[:phase] for e in p if e.attack_id}
        return {e.attack_id for e in self.phases[phase] if e.attack_id} - before
