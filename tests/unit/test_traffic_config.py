from __future__ import annotations

from typing import Any

import pytest

from stream.traffic import ATTACK_TYPES, TrafficConfig


def test_defaults_are_valid():
    config = TrafficConfig(events=100_000, seed=7)
    assert config.bad_fraction == 0.0
    assert config.attack_types == ATTACK_TYPES
    assert config.start_ms == 1_793_577_600_000  # 2026-11-02T00:00:00Z
    assert config.attack_instances_per_type() == 10


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"events": -1}, "events"),
        ({"events": 1.5}, "events"),
        ({"events": True}, "events"),
        ({"seed": -3}, "seed"),
        ({"seed": 2**63}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"bad_fraction": -0.1}, "bad_fraction"),
        ({"bad_fraction": 0.9}, "bad_fraction"),
        ({"bad_fraction": float("nan")}, "bad_fraction"),
        ({"bad_fraction": "0.1"}, "bad_fraction"),
        ({"attack_rate": 0.5}, "attack_rate"),
        ({"attack_rate": -1e-4}, "attack_rate"),
        ({"attack_types": ("card_testing", "phishing")}, "attack_types"),
        ({"attack_types": ("card_testing", "card_testing")}, "attack_types"),
        ({"attack_types": ["card_testing"]}, "attack_types"),
        ({"events_per_day": 0}, "events_per_day"),
        ({"events_per_day": float("inf")}, "events_per_day"),
        ({"start": "2026-11-02T00:00:00"}, "start"),
        ({"start": "2026-11-02T00:00:00+01:00"}, "start"),
        ({"start": "yesterdayZ"}, "start"),
        ({"start": "1900-01-01T00:00:00Z"}, "start"),
    ],
)
def test_invalid_values_name_the_field(changes: dict[str, Any], field: str):
    arguments: dict[str, Any] = {"events": 10, "seed": 1, **changes}
    with pytest.raises(ValueError, match=rf"^{field}"):
        TrafficConfig(**arguments)


def test_zero_events_and_no_attacks_are_allowed():
    config = TrafficConfig(events=0, seed=0, attack_rate=0.0, attack_types=())
    assert config.attack_instances_per_type() == 0
