"""Counts of what a stream contained, for progress and summary lines."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from stream.traffic.records import GeneratedRecord


@dataclass
class TrafficTally:
    """Records seen so far, by event type, attack type and instance, and malformed kind."""

    records: int = 0
    event_types: Counter[str] = field(default_factory=Counter)
    attack_events: Counter[str] = field(default_factory=Counter)
    attack_instances: dict[str, set[str]] = field(default_factory=dict)
    malformed: Counter[str] = field(default_factory=Counter)

    def add(self, record: GeneratedRecord) -> None:
        self.records += 1
        if record.malformed is not None:
            self.malformed[record.malformed] += 1
        elif record.event_type is not None:
            self.event_types[record.event_type] += 1
        if record.attack is not None and record.attack_id is not None:
            self.attack_events[record.attack] += 1
            self.attack_instances.setdefault(record.attack, set()).add(record.attack_id)

    def counted(self, records: Iterable[GeneratedRecord]) -> Iterator[GeneratedRecord]:
        """Pass ``records`` through, counting each."""
        for record in records:
            self.add(record)
            yield record

    def summary(self) -> str:
        """One line: records, malformed by kind, attack instances and events by type."""
        malformed = sum(self.malformed.values())
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(self.malformed.items()))
        attacks = ", ".join(
            f"{attack} {len(self.attack_instances[attack])} ({n:,} events)"
            for attack, n in sorted(self.attack_events.items())
        )
        return (
            f"{self.records:,} records; malformed {malformed:,}"
            + (f" ({kinds})" if kinds else "")
            + f"; attacks: {attacks or 'none'}"
        )
