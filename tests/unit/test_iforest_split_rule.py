"""The isolation forest's random-cut options: ``split_rule="range"`` (split features drawn
in proportion to their range in the node, as RRCF cuts, Guha et al. 2016) and
``scoring="insertion"`` (the expected depth of RRCF's insertion instead of path length)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detectors.checks import detector_factories
from detectors.iforest import FlatForest, IntArray, IsolationForestASD, SplitRule, fit_forest


def _split_features(forest: FlatForest) -> IntArray:
    """The split feature of every internal node actually grown."""
    internal = (forest.children[0::2] != np.arange(forest.feature.size)) & (forest.size > 0)
    features: IntArray = forest.feature[internal]
    return features


def _root_features(forest: FlatForest) -> IntArray:
    return forest.feature[:: forest.max_nodes]


def test_the_suite_covers_the_range_rule() -> None:
    assert "rcf" in detector_factories()


@pytest.mark.parametrize("rule", ["uniform", "range"])
def test_numba_and_numpy_grow_the_same_trees(rule: SplitRule) -> None:
    pytest.importorskip("numba")
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(700, 5)) * np.array([1.0, 9.0, 0.1, 3.0, 1e6])
    rows[:50, 2] = 1.0  # constant stretches: nodes with a zero-range feature
    rows[:, 0] = np.round(rows[:, 0])  # ties
    for psi in (128, 700):
        fast = fit_forest(rows, 20, psi, np.random.default_rng(5), split_rule=rule, use_numba=True)
        slow = fit_forest(rows, 20, psi, np.random.default_rng(5), split_rule=rule, use_numba=False)
        for field in ("feature", "threshold", "children", "path_length", "size"):
            np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field), field)
        probe = np.random.default_rng(1).normal(size=(300, 5)) * 3
        np.testing.assert_allclose(
            fast.score(probe, use_numba=True), slow.score(probe, use_numba=False), rtol=1e-12
        )


@pytest.mark.parametrize("use_numba", [True, False])
def test_root_features_in_proportion_to_range(use_numba: bool) -> None:
    if use_numba:
        pytest.importorskip("numba")
    # Root boxes: feature 0 spans ~1, feature 1 ~9 (scaled copies of one uniform sample, so
    # the ratio is exact per tree), feature 2 is constant (never split), feature 3 spans ~1.
    rng = np.random.default_rng(0)
    base = rng.random((4096, 1))
    rows = np.hstack([base, 9.0 * base, np.full((4096, 1), 3.0), rng.random((4096, 1))])
    forest = fit_forest(
        rows, 4000, 64, np.random.default_rng(1), split_rule="range", use_numba=use_numba
    )
    roots = np.bincount(_root_features(forest), minlength=4)
    assert roots[2] == 0
    assert not (_split_features(forest) == 2).any()
    # Expected shares ~1/11, 9/11, 0, ~1/11 (ranges of 64 uniforms are ~0.97 each).
    ratio = roots[1] / roots[0]
    assert 7.5 < ratio < 10.8, roots
    assert 0.8 < roots[3] / roots[0] < 1.25, roots
    share = roots[1] / roots.sum()
    assert abs(share - 9 / 11) < 0.03, roots


def test_uniform_rule_ignores_ranges() -> None:
    rng = np.random.default_rng(0)
    base = rng.random((4096, 1))
    rows = np.hstack([base, 9.0 * base, np.full((4096, 1), 3.0)])
    forest = fit_forest(rows, 4000, 64, np.random.default_rng(1), split_rule="uniform")
    roots = np.bincount(_root_features(forest), minlength=3)
    assert roots[2] == 0
    assert 0.85 < roots[1] / roots[0] < 1.15, roots


def test_range_rule_picks_the_wide_feature_at_every_depth() -> None:
    # One feature spans 1e6 times the other: virtually every cut, at every depth, is on it.
    rng = np.random.default_rng(3)
    rows = np.hstack([rng.random((2000, 1)) * 1e6, rng.random((2000, 1))])
    forest = fit_forest(rows, 50, 256, np.random.default_rng(0), split_rule="range")
    features = _split_features(forest)
    assert (features == 0).mean() > 0.99


def test_range_rule_isolates_outliers() -> None:
    rows = np.random.default_rng(0).normal(size=(1000, 2))
    forest = fit_forest(rows, 50, 256, np.random.default_rng(0), split_rule="range")
    far, near = forest.score(np.array([[8.0, 8.0], [0.0, 0.0]]))
    assert far > 0.7 > 0.5 > near


def test_bad_split_rule_raises() -> None:
    with pytest.raises(ValueError, match="split_rule"):
        fit_forest(np.zeros((4, 2)), 2, 4, np.random.default_rng(0), split_rule="gini")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split_rule"):
        IsolationForestASD(("a",), split_rule="gini")  # type: ignore[arg-type]


def test_pickle_round_trip_keeps_the_rule() -> None:
    rng = np.random.default_rng(0)
    det = IsolationForestASD(
        ("a", "b", "c"), n_trees=20, max_samples=32, window_size=64, split_rule="range", seed=3
    )
    det.learn_many(rng.normal(size=(100, 3)) * np.array([1.0, 10.0, 0.1]))
    restored = pickle.loads(pickle.dumps(det))
    assert restored.split_rule == "range"
    later = rng.normal(size=(150, 3)) * np.array([1.0, 10.0, 0.1])
    np.testing.assert_array_equal(det.score_learn_many(later), restored.score_learn_many(later))
    assert det.forest is not None
    assert restored.forest is not None
    np.testing.assert_array_equal(det.forest.feature, restored.forest.feature)


def test_old_pickles_default_to_uniform() -> None:
    det = IsolationForestASD(("a", "b"), n_trees=5, max_samples=16, window_size=32)
    del det.__dict__["split_rule"]  # as pickled before the option existed
    restored = pickle.loads(pickle.dumps(det))
    assert restored.split_rule == "uniform"
    rows = np.random.default_rng(0).normal(size=(64, 2))
    assert np.isfinite(restored.score_learn_many(rows)).all()


def test_range_and_uniform_differ_on_skewed_ranges() -> None:
    rows = np.random.default_rng(0).normal(size=(500, 3)) * np.array([1.0, 20.0, 0.05])

    def fitted(rule: SplitRule) -> np.ndarray:
        return fit_forest(rows, 30, 128, np.random.default_rng(2), split_rule=rule).feature

    assert not np.array_equal(fitted("uniform"), fitted("range"))


# -- Insertion scoring: the expected depth of RRCF's insertion. ----------------------------


def test_the_suite_covers_insertion_scoring() -> None:
    assert "rcf-insert" in detector_factories()


@pytest.mark.parametrize("rule", ["uniform", "range"])
def test_numba_and_numpy_agree_on_boxes_and_insertion_depths(rule: SplitRule) -> None:
    pytest.importorskip("numba")
    rows = np.random.default_rng(0).normal(size=(900, 4)) * np.array([1.0, 9.0, 0.1, 3.0])
    rows[:60, 2] = 1.0
    fast = fit_forest(
        rows, 30, 128, np.random.default_rng(2), split_rule=rule, boxes=True, use_numba=True
    )
    slow = fit_forest(
        rows, 30, 128, np.random.default_rng(2), split_rule=rule, boxes=True, use_numba=False
    )
    plain = fit_forest(rows, 30, 128, np.random.default_rng(2), split_rule=rule)
    for field in ("feature", "threshold", "children", "path_length", "size"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(plain, field), field)
    for field in ("box_low", "box_high", "box_spread"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field), field)
    probe = np.random.default_rng(1).normal(size=(700, 4)) * 4
    np.testing.assert_allclose(
        fast.insertion_depths(probe, use_numba=True),
        slow.insertion_depths(probe, use_numba=False),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        fast.score(probe, scoring="insertion", use_numba=True),
        slow.score(probe, scoring="insertion", use_numba=False),
        rtol=1e-12,
    )


def test_boxes_bound_each_node_and_nest() -> None:
    rows = np.random.default_rng(0).normal(size=(300, 3))
    forest = fit_forest(rows, 5, 64, np.random.default_rng(0), split_rule="range", boxes=True)
    assert forest.box_low is not None
    assert forest.box_high is not None
    grown = np.flatnonzero(forest.size > 0)
    internal = grown[forest.children[2 * grown] != grown]
    for child in (forest.children[2 * internal], forest.children[2 * internal + 1]):
        assert (forest.box_low[child] >= forest.box_low[internal]).all()
        assert (forest.box_high[child] <= forest.box_high[internal]).all()
    # A split threshold lies inside its node's box, on the split feature.
    f = forest.feature[internal]
    assert (forest.threshold[internal] >= forest.box_low[internal, f]).all()
    assert (forest.threshold[internal] < forest.box_high[internal, f]).all()
    single = grown[forest.size[grown] == 1]
    np.testing.assert_array_equal(forest.box_low[single], forest.box_high[single])


@pytest.mark.parametrize("use_numba", [True, False])
def test_rows_inside_every_box_get_their_path_length(use_numba: bool) -> None:
    if use_numba:
        pytest.importorskip("numba")
    # Each tree samples every row, so a training row is inside every box on its path.
    rows = np.random.default_rng(0).normal(size=(100, 3))
    forest = fit_forest(rows, 10, 100, np.random.default_rng(0), split_rule="range", boxes=True)
    np.testing.assert_allclose(
        forest.insertion_depths(rows, use_numba=use_numba),
        forest.path_lengths(rows, use_numba=use_numba),
        rtol=1e-12,
    )


@pytest.mark.parametrize("use_numba", [True, False])
def test_insertion_depth_falls_with_distance_outside(use_numba: bool) -> None:
    if use_numba:
        pytest.importorskip("numba")
    rows = np.random.default_rng(0).random((2000, 2))
    forest = fit_forest(rows, 50, 256, np.random.default_rng(0), split_rule="range", boxes=True)
    # Path length cannot tell these apart (the same side of every cut); insertion can.
    probe = np.array([[0.5, 1.05], [0.5, 1.5], [0.5, 5.0], [0.5, 50.0]])
    plain = forest.path_lengths(probe, use_numba=use_numba)
    np.testing.assert_allclose(plain, plain[0])
    depths = forest.insertion_depths(probe, use_numba=use_numba)
    assert (np.diff(depths) < 0).all(), depths
    assert depths[-1] < 1.1  # far away: cut off at the root almost surely


def test_insertion_needs_boxes_and_a_known_scoring() -> None:
    forest = fit_forest(np.random.default_rng(0).random((50, 2)), 3, 16, np.random.default_rng(0))
    with pytest.raises(ValueError, match="boxes=True"):
        forest.insertion_depths(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="scoring"):
        IsolationForestASD(("a",), scoring="codisp")  # type: ignore[arg-type]


def test_insertion_detector_pickle_round_trip() -> None:
    rng = np.random.default_rng(0)
    det = IsolationForestASD(
        ("a", "b"),
        n_trees=20,
        max_samples=32,
        window_size=64,
        split_rule="range",
        scoring="insertion",
        seed=1,
    )
    det.learn_many(rng.normal(size=(100, 2)))
    restored = pickle.loads(pickle.dumps(det))
    assert restored.scoring == "insertion"
    later = rng.normal(size=(150, 2)) * 2
    np.testing.assert_array_equal(det.score_learn_many(later), restored.score_learn_many(later))


def test_declared_quality_detectors_are_registered() -> None:
    # make bench runs the Makefile's QUALITY_DETECTORS: each must be a bench detector.
    from pathlib import Path

    from stream.bench_quality import DETECTORS

    makefile = Path(__file__).resolve().parents[2] / "Makefile"
    line = next(
        ln for ln in makefile.read_text().splitlines() if ln.startswith("QUALITY_DETECTORS")
    )
    declared = line.split("=", 1)[1].strip().split(",")
    parts = {p for d in declared for p in d.removeprefix("ensemble:").split("+")}
    assert {"rcf-512x8k-insert", "iforest-insert"} <= parts
    assert parts <= set(DETECTORS)
