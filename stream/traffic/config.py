"""What to generate: the validated knobs of one synthetic traffic run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from stream.traffic.clock import parse_start

ATTACK_TYPES: Final[tuple[str, ...]] = (
    "card_testing",
    "account_takeover",
    "fake_listing_ring",
    "review_bombing",
)

MAX_SEED: Final = 2**63 - 1
# Above this almost every record would be broken, which tests nothing a lower rate does not.
MAX_BAD_FRACTION: Final = 0.5
# Attacks average ~70 events; at 0.01 instances per type per event they would crowd out the
# normal traffic they are meant to hide in.
MAX_ATTACK_RATE: Final = 0.01


@dataclass(frozen=True)
class TrafficConfig:
    """One run of the generator. The same config always yields the same bytes.

    events: records to yield, good and malformed together.
    seed: the only source of randomness (0 .. 2**63-1).
    bad_fraction: share of records that are malformed (0 .. 0.5).
    attack_rate: instances of each attack type per record; the default injects about one
        instance of each type per 10,000 records.
    attack_types: which attack types to inject.
    events_per_day: mean event rate, which sets how many days the stream spans.
    start: the first instant of the stream, RFC 3339 UTC with a ``Z``.
    """

    events: int
    seed: int
    bad_fraction: float = 0.0
    attack_rate: float = 1e-4
    attack_types: tuple[str, ...] = ATTACK_TYPES
    events_per_day: float = 50_000.0
    start: str = "2026-11-02T00:00:00Z"

    def __post_init__(self) -> None:
        _require_int("events", self.events, 0, None)
        _require_int("seed", self.seed, 0, MAX_SEED)
        _require_fraction("bad_fraction", self.bad_fraction, MAX_BAD_FRACTION)
        _require_fraction("attack_rate", self.attack_rate, MAX_ATTACK_RATE)
        if not isinstance(self.attack_types, tuple):
            raise ValueError(f"attack_types must be a tuple, got {type(self.attack_types)}")
        unknown = [kind for kind in self.attack_types if kind not in ATTACK_TYPES]
        if unknown:
            raise ValueError(f"attack_types: unknown {unknown}, expected some of {ATTACK_TYPES}")
        if len(set(self.attack_types)) != len(self.attack_types):
            raise ValueError(f"attack_types has duplicates: {self.attack_types}")
        rate = self.events_per_day
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ValueError(f"events_per_day must be a number, got {rate!r}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"events_per_day must be positive and finite, got {rate}")
        if not isinstance(self.start, str):
            raise ValueError(f"start must be a string, got {self.start!r}")
        try:
            parse_start(self.start)
        except ValueError as exc:
            raise ValueError(f"start: {exc}") from exc

    @property
    def start_ms(self) -> int:
        """``start`` as epoch milliseconds."""
        return parse_start(self.start)

    def attack_instances_per_type(self) -> int:
        """How many instances of each enabled attack type the run injects."""
        return round(self.events * self.attack_rate)


def _require_int(name: str, value: object, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise ValueError(f"{name} must be >= {low}{upper}, got {value}")


def _require_fraction(name: str, value: object, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and 0.0 <= value <= high):
        raise ValueError(f"{name} must be within 0..{high}, got {value}")
