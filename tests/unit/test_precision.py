"""Precision-targeted thresholds: the Wilson bound, the online threshold, segments, the tuner.

The point of the module is one property: a threshold chosen from a couple of hundred labels
really has the target precision on new data, most of the time. test_target_precision_holds_*
measures exactly that on synthetic scores.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.stats import binomtest  # no stubs installed

from detectors.precision import (
    VERDICTS,
    PrecisionConfig,
    PrecisionThreshold,
    SegmentedThresholds,
    tune,
    wilson_lower_bound,
    z_score,
)
from detectors.threshold import QuantileThreshold

# ---------------------------------------------------------------- Wilson lower bound


def test_wilson_matches_hand_computed_values() -> None:
    z = 1.959963984540054
    assert z_score(0.95) == pytest.approx(z, abs=1e-12)
    # 9 of 10: p = 0.9, centre = p + z²/2n, margin = z·sqrt(p(1-p)/n + z²/4n²).
    centre = 0.9 + z * z / 20
    margin = z * math.sqrt(0.09 / 10 + z * z / 400)
    assert wilson_lower_bound(9, 10) == pytest.approx((centre - margin) / (1 + z * z / 10))
    assert wilson_lower_bound(9, 10) == pytest.approx(0.59585, abs=1e-5)
    # All successes: the bound simplifies to n / (n + z²).
    assert wilson_lower_bound(10, 10) == pytest.approx(10 / (10 + z * z))
    assert wilson_lower_bound(0, 10) == 0.0
    assert wilson_lower_bound(0, 0) == 0.0


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize(("k", "n"), [(1, 1), (3, 7), (50, 100), (95, 100), (199, 200), (0, 5)])
def test_wilson_matches_scipy(k: int, n: int, confidence: float) -> None:
    expected = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson").low
    assert wilson_lower_bound(k, n, confidence) == pytest.approx(expected, abs=1e-12)


def test_wilson_grows_with_evidence_and_confidence_lowers_it() -> None:
    bounds = [wilson_lower_bound(9 * m, 10 * m) for m in (1, 2, 5, 10, 100)]
    assert bounds == sorted(bounds)
    assert bounds[-1] < 0.9
    assert wilson_lower_bound(90, 100, 0.99) < wilson_lower_bound(90, 100, 0.8)


@pytest.mark.parametrize(
    ("k", "n", "confidence"), [(-1, 5, 0.95), (6, 5, 0.95), (0, -1, 0.95), (1, 2, 1.0)]
)
def test_wilson_rejects_nonsense(k: int, n: int, confidence: float) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        wilson_lower_bound(k, n, confidence)


# ---------------------------------------------------------------- the target-precision property

TARGET = 0.9
SEEDS = 50
LABELS = 200


def draw(rng: np.random.Generator, n: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Half true positives, which concentrate at high scores; false positives at low ones."""
    is_true = rng.random(n) < 0.5
    scores = np.where(is_true, rng.beta(5, 2, n), rng.beta(2, 5, n))
    return scores, is_true


class HeldOut:
    """A large sample of the same distribution: the real precision and recall of a threshold."""

    def __init__(self, n: int = 1_000_000) -> None:
        scores, is_true = draw(np.random.default_rng(2**20), n)
        order = np.argsort(scores)
        self.scores = scores[order]
        self.true_from = np.r_[np.cumsum(is_true[order][::-1])[::-1], 0]

    def precision_recall(self, threshold: float) -> tuple[float, float]:
        """Of the held-out scores that alert (score > threshold, as observe decides)."""
        start = int(np.searchsorted(self.scores, threshold, side="right"))
        alerts = self.scores.size - start
        true = int(self.true_from[start])
        precision = true / alerts if alerts else math.nan
        return precision, true / int(self.true_from[0])


@pytest.fixture(scope="module")
def held_out() -> HeldOut:
    return HeldOut()


def labeled_threshold(seed: int) -> PrecisionThreshold:
    """Default config, warmed up on unlabeled traffic, then given LABELS labels."""
    rng = np.random.default_rng(seed)
    threshold = PrecisionThreshold(target=TARGET)
    for score in draw(rng, 1500)[0]:
        threshold.observe(float(score))
    scores, is_true = draw(rng, LABELS)
    for score, label in zip(scores, is_true, strict=True):
        threshold.add_label(float(score), bool(label))
    return threshold


def test_target_precision_holds_on_held_out_data_in_most_seeds(held_out: HeldOut) -> None:
    met = from_labels = 0
    recalls = []
    for seed in range(SEEDS):
        threshold = labeled_threshold(seed)
        precision, recall = held_out.precision_recall(threshold.value)
        met += precision >= TARGET
        from_labels += threshold.state()["source"] == "labels"
        recalls.append(recall)
    # Measured: 49 of 50. 45 seeds found a labeled threshold and 44 of those met the target
    # (the miss: 0.874); in the other 5 no labeled score met it and the fallback alerted only
    # above every labeled score, at precision 1.0 and about 1% recall.
    assert met >= 0.9 * SEEDS
    # ...and not by being uselessly strict: most seeds find a threshold where ~70% of the true
    # positives alert (median; the best threshold meeting 0.9 has 88%).
    assert from_labels >= 0.8 * SEEDS
    assert float(np.median(recalls)) > 0.6


def test_point_estimate_rule_would_miss_the_target_far_more_often(held_out: HeldOut) -> None:
    # Why the Wilson bound: the lowest threshold whose observed precision reaches the target
    # is chosen on noise, and its real precision falls short in many seeds (measured: the
    # point estimate meets the target in 30 of 50 seeds, the Wilson bound in 48).
    wilson_met = naive_met = 0
    for seed in range(SEEDS):
        scores, is_true = draw(np.random.default_rng(seed), LABELS)
        result = tune(scores, list(is_true), target=TARGET)
        naive = next(r for r in result.curve if r.precision >= TARGET and r.alerts >= 10)
        # tune's threshold alerts on scores >= it: one ulp below for the held-out's >.
        wilson_met += held_out.precision_recall(math.nextafter(result.threshold, 0))[0] >= TARGET
        naive_met += held_out.precision_recall(math.nextafter(naive.threshold, 0))[0] >= TARGET
    assert naive_met <= 0.75 * SEEDS < wilson_met


# ---------------------------------------------------------------- PrecisionThreshold


def warmed(**kwargs: Any) -> PrecisionThreshold:
    threshold = PrecisionThreshold(**{"warmup": 100, **kwargs})
    for i in range(200):
        threshold.observe(i / 200)
    return threshold


def test_too_few_labels_use_the_budget_quantile() -> None:
    threshold = PrecisionThreshold(min_labels=30, budget_quantile=0.9, warmup=50)
    budget = QuantileThreshold(0.9, 50)
    rng = np.random.default_rng(1)
    for score in rng.random(500):
        assert threshold.observe(float(score)) == budget.observe(float(score))
    for i in range(29):
        threshold.add_label(0.5 + i / 100, True)
    for _ in range(10):
        threshold.add_label(0.1, None)  # unsure labels do not count towards min_labels
    assert threshold.value == budget.value
    assert threshold.state()["source"] == "budget"
    threshold.add_label(0.99, True)
    assert threshold.state()["source"] != "budget"


def test_no_alert_during_warm_up_even_with_labels() -> None:
    threshold = PrecisionThreshold(target=0.5, min_labels=1, min_support=1, warmup=10)
    for _ in range(50):
        threshold.add_label(0.5, True)
    assert [threshold.observe(0.9) for _ in range(10)] == [False] * 10
    assert threshold.state()["source"] == "labels"
    assert threshold.observe(0.9)


def test_alerts_on_scores_at_or_above_the_chosen_labeled_score() -> None:
    threshold = warmed(target=0.8, min_labels=10, min_support=5)
    for i in range(40):
        threshold.add_label(i / 40, i >= 20)
    chosen = tune([i / 40 for i in range(40)], [i >= 20 for i in range(40)], 0.8, min_support=5)
    assert chosen.threshold == 0.5
    assert threshold.value == math.nextafter(0.5, -math.inf)
    assert threshold.observe(0.5)
    assert not threshold.observe(math.nextafter(0.5, 0))


def test_false_positives_labeled_at_a_score_raise_the_threshold_above_it() -> None:
    threshold = warmed(min_labels=30)
    for i in range(100):
        threshold.add_label(0.5 + i / 200, True)  # all true over 0.5 .. 0.995
    assert threshold.state()["source"] == "labels"
    assert threshold.value < 0.5
    for _ in range(30):
        threshold.add_label(0.8, False)
    assert threshold.value > 0.8
    assert threshold.state()["precision_lower_bound"] >= 0.9
    # ...and true positives labeled below it bring it back down.
    for i in range(300):
        threshold.add_label(0.5 + i / 1000, True)
    assert threshold.value < 0.8


def test_threshold_rises_with_the_target() -> None:
    values = []
    for target in (0.6, 0.8, 0.9, 0.95):
        threshold = warmed(target=target)
        scores, is_true = draw(np.random.default_rng(3), 1000)
        for score, label in zip(scores, is_true, strict=True):
            threshold.add_label(float(score), bool(label))
        assert threshold.state()["precision_lower_bound"] >= target
        values.append(threshold.value)
    assert values == sorted(values)
    assert len(set(values)) == len(values)


def test_unmet_target_alerts_only_above_every_labeled_score_and_the_budget() -> None:
    threshold = warmed(budget_quantile=0.5)
    for i in range(50):
        threshold.add_label(0.2 + i / 100, False)
    state = threshold.state()
    assert state["source"] == "labels_unmet"
    assert threshold.value == pytest.approx(0.69)
    assert state["labels_above_threshold"] == 0
    assert math.isnan(state["precision"])
    assert state["precision_lower_bound"] == 0.0
    low = warmed(budget_quantile=0.99)
    for _ in range(50):
        low.add_label(0.1, False)
    assert low.value == low.budget.value > 0.1


def test_unsure_labels_are_counted_but_ignored_in_precision() -> None:
    scores, is_true = draw(np.random.default_rng(5), 300)
    plain, with_unsure = warmed(), warmed()
    for score, label in zip(scores, is_true, strict=True):
        plain.add_label(float(score), bool(label))
        with_unsure.add_label(float(score), bool(label))
        with_unsure.add_label(float(score) * 0.5, None)
    a, b = plain.state(), with_unsure.state()
    assert b["labels_unsure"] == 300
    assert a["labels_unsure"] == 0
    assert {**b, "labels_unsure": 0} == a


def test_state_reports_the_labels_that_alert_at_the_threshold() -> None:
    threshold = warmed(target=0.65, min_labels=10, min_support=5)
    for score, label in [(0.9, True)] * 18 + [(0.9, False)] * 2 + [(0.3, False)] * 10:
        threshold.add_label(score, label)
    state = threshold.state()
    assert state["source"] == "labels"
    assert state["threshold"] == threshold.value == math.nextafter(0.9, 0)
    assert state["precision"] == 0.9
    assert state["precision_lower_bound"] == pytest.approx(wilson_lower_bound(18, 20))
    assert (state["labels_true"], state["labels_false"], state["labels_unsure"]) == (18, 12, 0)
    assert state["labels_above_threshold"] == 20
    assert state["target"] == 0.65
    assert state["seen"] == 200
    assert state["budget_threshold"] == threshold.budget.value


def test_only_the_last_max_labels_count() -> None:
    threshold = warmed(min_labels=30, max_labels=50)
    for _ in range(50):
        threshold.add_label(0.9, False)
    assert threshold.state()["source"] == "labels_unmet"
    for _ in range(50):
        threshold.add_label(0.9, True)
    state = threshold.state()
    assert (state["labels_true"], state["labels_false"]) == (50, 0)
    assert state["source"] == "labels"


def test_online_threshold_agrees_with_the_offline_tuner() -> None:
    for seed in range(10):
        scores, is_true = draw(np.random.default_rng(seed), 300)
        # Ties: rounding makes many labels share a score.
        scores = np.round(scores, 2)
        labels: list[bool | None] = [bool(t) for t in is_true]
        labels[::7] = [None] * len(labels[::7])
        threshold = warmed()
        for score, label in zip(scores, labels, strict=True):
            threshold.add_label(float(score), label)
        result = tune(scores, labels, TARGET, threshold.confidence, threshold.min_support)
        state = threshold.state()
        if result.met:
            assert threshold.value == math.nextafter(result.threshold, -math.inf)
            assert state["precision"] == result.precision
            assert state["precision_lower_bound"] == result.wilson_lb
        else:
            assert state["source"] == "labels_unmet"


def state_equal(a: Any, b: Any) -> bool:
    # NaN (precision with no labels above the threshold) is never equal to itself.
    return bool(
        a.keys() == b.keys()
        and all(
            a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k]))
            for k in a
        )
    )


@pytest.mark.parametrize("labels", [0, 10, 200])
def test_pickle_round_trip_keeps_state_and_behaviour(labels: int) -> None:
    threshold = warmed()
    scores, is_true = draw(np.random.default_rng(9), labels)
    for score, label in zip(scores, is_true, strict=True):
        threshold.add_label(float(score), bool(label))
    _ = threshold.value  # pickle with a fitted cache as well
    copy = pickle.loads(pickle.dumps(threshold))
    assert state_equal(copy.state(), threshold.state())
    assert state_equal(pickle.loads(pickle.dumps(threshold.state())), threshold.state())
    stream = np.random.default_rng(10).random(300)
    assert [copy.observe(float(s)) for s in stream] == [threshold.observe(float(s)) for s in stream]
    copy.add_label(0.95, False)
    threshold.add_label(0.95, False)
    assert state_equal(copy.state(), threshold.state())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": 1.0}, "target"),
        ({"target": 0.0}, "target"),
        ({"confidence": 1.5}, "confidence"),
        ({"min_labels": 0}, "min_labels"),
        ({"min_support": 0}, "min_support"),
        ({"max_labels": 10, "min_labels": 30}, "max_labels"),
        ({"budget_quantile": 1.0}, "q must be"),
        ({"warmup": -1}, "warmup"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrecisionThreshold(**kwargs)


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf])
def test_non_finite_labeled_score_is_rejected(score: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        PrecisionThreshold().add_label(score, True)


# ---------------------------------------------------------------- SegmentedThresholds


def test_segments_are_independent_and_share_the_config() -> None:
    config = PrecisionConfig(target=0.8, min_labels=10, warmup=0)
    thresholds = SegmentedThresholds(config)
    for i in range(200):
        thresholds.observe("hst/1", "order.placed", i / 200)
    for _ in range(40):
        thresholds.add_label("hst/1", "order.placed", 0.7, True)
    thresholds.add_label("hst/1", "payment.attempted", 0.7, False)
    thresholds.add_label("iforest/1", "order.placed", 0.7, None)
    assert list(thresholds) == [
        ("hst/1", "order.placed"),
        ("hst/1", "payment.attempted"),
        ("iforest/1", "order.placed"),
    ]
    assert len(thresholds) == 3
    orders = thresholds.get("hst/1", "order.placed")
    assert orders.target == 0.8
    assert orders.min_labels == 10
    assert orders.value == math.nextafter(0.7, -math.inf)
    assert thresholds.get("hst/1", "payment.attempted").value == math.inf  # no score yet
    assert thresholds.observe("hst/1", "order.placed", 0.75)
    assert not thresholds.observe("hst/1", "payment.attempted", 0.75)
    states = thresholds.state()
    assert [(s["detector"], s["segment"], s["source"]) for s in states] == [
        ("hst/1", "order.placed", "labels"),
        ("hst/1", "payment.attempted", "budget"),
        ("iforest/1", "order.placed", "budget"),
    ]
    assert states[2]["labels_unsure"] == 1


def test_config_defaults_are_the_thresholds_defaults() -> None:
    made, plain = PrecisionConfig().make(), PrecisionThreshold()
    for name in ("target", "confidence", "min_labels", "min_support", "max_labels"):
        assert getattr(made, name) == getattr(plain, name), name
    assert (made.budget.q, made.budget.warmup) == (plain.budget.q, plain.budget.warmup)


def test_segmented_thresholds_pickle() -> None:
    thresholds = SegmentedThresholds(PrecisionConfig(warmup=0))
    thresholds.add_label("hst/1", "order.placed", 0.5, VERDICTS["true_positive"])
    copy = pickle.loads(pickle.dumps(thresholds))
    assert all(state_equal(a, b) for a, b in zip(copy.state(), thresholds.state(), strict=True))
    assert copy.config == thresholds.config


def test_verdicts_map_to_add_label_values() -> None:
    assert VERDICTS == {"true_positive": True, "false_positive": False, "unsure": None}


# ---------------------------------------------------------------- the offline tuner


def test_tune_curve_matches_a_brute_force_count() -> None:
    rng = np.random.default_rng(4)
    scores, is_true = draw(rng, 400)
    scores = np.round(scores, 2)
    result = tune(scores, list(is_true), target=0.85, confidence=0.9)
    thresholds = [row.threshold for row in result.curve]
    assert thresholds == sorted(set(scores.tolist()))
    total_true = int(is_true.sum())
    for row in result.curve:
        alerting = scores >= row.threshold
        true = int((alerting & is_true).sum())
        assert row.alerts == int(alerting.sum())
        assert row.precision == pytest.approx(true / row.alerts)
        assert row.recall == pytest.approx(true / total_true)
        assert row.wilson_lb == pytest.approx(wilson_lower_bound(true, row.alerts, 0.9))
    assert result.met
    chosen = next(r for r in result.curve if r.wilson_lb >= 0.85 and r.alerts >= 10)
    assert (result.threshold, result.precision, result.recall) == (
        chosen.threshold,
        chosen.precision,
        chosen.recall,
    )
    assert (result.labels, result.unsure, result.target, result.confidence) == (400, 0, 0.85, 0.9)
    # Rows convert to table rows and plot columns.
    assert result.curve[0]._asdict().keys() == {
        "threshold",
        "precision",
        "wilson_lb",
        "recall",
        "alerts",
    }


def test_tune_unmet_target_and_edge_cases() -> None:
    result = tune([0.5, 0.6, 0.7], [False, True, False], target=0.9)
    assert not result.met
    assert result.threshold == math.inf
    assert result.alerts == 0
    assert len(result.curve) == 3
    empty = tune([0.5, 0.6], [None, None])
    assert (empty.met, empty.labels, empty.unsure, empty.curve) == (False, 0, 2, ())
    no_true = tune([0.5], [False], target=0.5, min_support=1)
    assert math.isnan(no_true.curve[0].recall)
    with pytest.raises(ValueError, match="one score per label"):
        tune([0.5, 0.6], [True])
    with pytest.raises(ValueError, match="finite"):
        tune([math.nan], [True])
    with pytest.raises(ValueError, match="target"):
        tune([0.5], [True], target=1.0)
