"""The labels' gate on event alerts: per segment, from the lowest confident threshold."""

from __future__ import annotations

import math
import random

import pytest

from detectors.label_gate import LabelGate
from detectors.precision import label_threshold, wilson_lower_bound


def brute_force(labels: list[tuple[float, bool]], target: float, min_support: int) -> float:
    """The lowest labeled score t with Wilson LB of precision over scores >= t >= target."""
    for t in sorted({s for s, _ in labels}):
        above = [v for s, v in labels if s >= t]
        if len(above) >= min_support and wilson_lower_bound(sum(above), len(above)) >= target:
            return t
    return math.inf


@pytest.mark.parametrize("seed", range(5))
def test_the_threshold_is_the_lowest_confident_one(seed):
    rng = random.Random(seed)
    labels = [(s, rng.random() < s**2) for s in (rng.random() for _ in range(300))]
    want = brute_force(labels, 0.8, 10)
    got, source = label_threshold(labels, 0.8, min_support=10)
    if math.isinf(want):
        assert source == "labels_unmet"
        assert got == max(s for s, _ in labels)
    else:
        assert source == "labels"
        assert got < want  # alert when score > got: want itself alerts
        assert math.nextafter(got, math.inf) == want


def test_no_gate_until_enough_decisive_labels():
    gate = LabelGate(target=0.9, min_labels=5, min_support=2)
    for i in range(4):
        gate.add(f"al-{i}", "hst", "order.placed", 0.5 + i / 10, False)
    gate.add("al-x", "hst", "order.placed", 0.99, None)  # unsure: not decisive
    assert gate.threshold("hst", "order.placed") is None
    assert gate.allows("hst", "order.placed", 0.1)
    gate.add("al-4", "hst", "order.placed", 0.95, False)
    # Five false positives: nothing meets the target, so only scores above them all pass.
    assert gate.threshold("hst", "order.placed") == 0.95
    assert not gate.allows("hst", "order.placed", 0.9)
    assert gate.allows("hst", "order.placed", 0.96)
    assert gate.allows("hst", "account.login", 0.1)  # another segment is untouched


def test_a_corrected_verdict_replaces_the_first():
    gate = LabelGate(target=0.6, min_labels=10, min_support=5)
    for i in range(10):
        gate.add(f"al-{i}", "hst", "s", 0.5 + i / 100, False)
    assert gate.state()[0]["false"] == 10
    for i in range(10):
        gate.add(f"al-{i}", "hst", "s", 0.5 + i / 100, True)
    (state,) = gate.state()
    assert (state["true"], state["false"], state["labels"]) == (10, 0, 10)
    assert state["source"] == "labels"
    assert gate.allows("hst", "s", 0.5)


def test_only_the_latest_labels_count():
    gate = LabelGate(target=0.9, min_labels=10, min_support=5, max_labels=20)
    for i in range(20):
        gate.add(f"old-{i}", "hst", "s", 0.9, False)
    for i in range(20):
        gate.add(f"new-{i}", "hst", "s", 0.9, True)
    (state,) = gate.state()
    assert (state["true"], state["false"]) == (20, 0)


def test_bad_settings_and_scores_are_refused():
    with pytest.raises(ValueError, match="target"):
        LabelGate(target=1.0)
    with pytest.raises(ValueError, match="finite"):
        LabelGate().add("al-1", "hst", "s", math.nan, True)


def test_hold_sends_event_alerts_only_where_labels_prove_the_target():
    hold = LabelGate(target=0.8, min_labels=10, min_support=5, unproven="hold")
    budget = LabelGate(target=0.8, min_labels=10, min_support=5)
    for gate in (hold, budget):
        for i in range(40):  # proven: the top half of order.placed is all true
            gate.add(f"o-{i}", "hst", "order.placed", i / 40, i >= 20)
        for i in range(40):  # unmet: login alerts are all false
            gate.add(f"l-{i}", "hst", "account.login", i / 40, False)
        for i in range(5):  # too few labels
            gate.add(f"m-{i}", "hst", "message.sent", i / 5, True)
    # Proven segments behave the same either way, with the labels' bar.
    for gate in (hold, budget):
        allowed, bar = gate.decide("hst", "order.placed", 0.9)
        assert allowed
        assert bar is not None
        assert bar < 0.5
        assert gate.decide("hst", "order.placed", 0.3)[0] is False
    # Unproven ones: the budget lets them through (above every labeled score when unmet) ...
    assert budget.decide("hst", "message.sent", 0.99) == (True, None)
    assert budget.decide("hst", "account.login", 0.99)[0] is True
    assert budget.decide("hst", "account.login", 0.5)[0] is False
    # ... hold keeps every one of them back.
    assert hold.decide("hst", "message.sent", 0.99) == (False, None)
    assert hold.decide("hst", "account.login", 0.99)[0] is False
    assert hold.decide("hst", "payment.attempted", 0.99) == (False, None)


def test_unknown_unproven_mode_fails():
    with pytest.raises(ValueError, match="unproven"):
        LabelGate(unproven="page")  # type: ignore[arg-type]
