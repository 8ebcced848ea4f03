"""Every detector through the shared check suite of ``detectors.checks``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detectors.benchmarking import (
    _average_precision_numpy,
    _roc_auc_numpy,
    average_precision,
    causal_rank,
    minmax_scale,
    roc_auc,
    stream_order,
    stream_scores,
)
from detectors.checks import DetectorFactory, detector_factories, yield_checks
from detectors.explain_forest import explain_isolation, isolation_contributions
from detectors.iforest import IsolationForestASD, average_path_length, fit_forest
from detectors.river_hst import RiverHalfSpaceTrees
from stream.bench_quality import bench_quality_cli

FACTORIES = detector_factories()


@pytest.mark.parametrize("check", list(yield_checks()), ids=lambda c: c.__name__)
@pytest.mark.parametrize("factory", list(FACTORIES.values()), ids=list(FACTORIES))
def test_detector_check(factory: DetectorFactory, check) -> None:
    check(factory)


def test_every_detector_is_covered() -> None:
    # The suite must not silently shrink: our own detectors are always there.
    assert {"river-hst", "iforest", "iforest-numpy", "iforest-drift"} <= set(FACTORIES)


# -- Beyond the shared suite: what only the isolation forests promise. -------------------
# (Kept here, with the suite, because this file is the detectors' test module.)


def test_numba_and_numpy_grow_the_same_trees() -> None:
    pytest.importorskip("numba")
    rows = np.random.default_rng(0).normal(size=(700, 4))
    rows[:50, 2] = 1.0  # constant stretches: the non-constant-feature draw must agree
    fast = fit_forest(rows, 20, 128, np.random.default_rng(5), use_numba=True)
    slow = fit_forest(rows, 20, 128, np.random.default_rng(5), use_numba=False)
    for field in ("feature", "threshold", "children", "path_length", "size"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field), field)
    probe = np.random.default_rng(1).normal(size=(300, 4)) * 2
    np.testing.assert_allclose(
        fast.score(probe, use_numba=True), slow.score(probe, use_numba=False), rtol=1e-12
    )


def test_forest_shape_and_isolation() -> None:
    rows = np.random.default_rng(0).normal(size=(1000, 2))
    forest = fit_forest(rows, 30, 256, np.random.default_rng(0))
    assert forest.height_limit == 8
    assert forest.feature.shape == (30 * 511,)
    roots = forest.size[:: forest.max_nodes]
    assert (roots == 256).all()
    # Every training row ends in exactly one leaf per tree.
    leaves = forest.children[0::2] == np.arange(30 * 511)
    assert forest.size[leaves & (forest.size > 0)].sum() == 30 * 256
    far, near = forest.score(np.array([[8.0, 8.0], [0.0, 0.0]]))
    assert far > 0.7 > 0.5 > near


def test_duplicates_and_tiny_windows() -> None:
    same = np.ones((50, 3))
    forest = fit_forest(same, 5, 32, np.random.default_rng(0))
    assert forest.n_nodes == 5  # all features constant: each root is a leaf
    assert np.isfinite(forest.score(np.zeros((2, 3)))).all()
    single = fit_forest(np.zeros((1, 3)), 5, 32, np.random.default_rng(0))
    assert single.score(np.ones((1, 3)))[0] == 0.5


def test_refit_schedule() -> None:
    det = IsolationForestASD(("a",), n_trees=3, max_samples=8, window_size=32, warmup=4)
    fits = []
    for i in range(100):
        det.learn_one({"a": float(i % 7)})
        fits.append(det.n_fits)
    changes = [i + 1 for i in range(1, 100) if fits[i] != fits[i - 1]]
    assert changes == [4, 8, 16, 32, 64, 96]  # warm-up, doubling to the window, every 32


def test_scores_are_zero_until_the_first_fit() -> None:
    det = IsolationForestASD(("a", "b"), n_trees=5, max_samples=16, window_size=64, warmup=10)
    scores = det.score_learn_many(np.random.default_rng(0).random((20, 2)))
    assert (scores[:10] == 0.0).all()
    assert (scores[10:] > 0.0).all()


def test_drift_refits_only_when_the_anomaly_rate_is_high() -> None:
    rng = np.random.default_rng(0)
    names = ("a", "b")

    def make() -> IsolationForestASD:
        return IsolationForestASD(
            names,
            n_trees=20,
            max_samples=32,
            window_size=64,
            refit_every=None,
            drift_rate=0.2,
            drift_threshold=0.6,
        )

    steady = make()
    steady.learn_many(rng.normal(size=(640, 2)))
    fits_while_filling = 4  # at 16, 32 and 64 rows (warm-up 16, doubling)
    assert steady.n_fits <= fits_while_filling + 1

    shifted = make()
    shifted.learn_many(rng.normal(size=(64, 2)))
    before = shifted.n_fits
    shifted.learn_many(rng.normal(loc=8.0, size=(128, 2)))  # the whole window moves
    assert shifted.n_fits > before
    after_shift = shifted.score_many(rng.normal(loc=8.0, size=(50, 2)))
    assert np.median(after_shift) < 0.6  # the new regime is normal again


def test_window_only_keeps_the_last_rows() -> None:
    det = IsolationForestASD(("a",), n_trees=20, max_samples=32, window_size=64)
    det.learn_many(np.full((640, 1), 100.0))
    det.learn_many(np.zeros((64, 1)))  # exactly one window: the refit sees only zeros
    assert det.forest is not None
    assert det.forest.n_nodes == 20
    assert (det.forest.size[:: det.forest.max_nodes] == 32).all()


def test_bad_shapes_raise() -> None:
    det = IsolationForestASD(("a", "b"))
    with pytest.raises(ValueError, match="features"):
        det.score_many(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="features"):
        det.learn_many(np.zeros(2))


def test_explanation_points_at_the_isolating_feature() -> None:
    rng = np.random.default_rng(0)
    det = IsolationForestASD(("x", "y", "z"), n_trees=50, max_samples=128, window_size=512)
    assert explain_isolation(det, {"x": 0.0}) == []
    det.learn_many(rng.normal(size=(512, 3)))
    reasons = explain_isolation(det, {"x": 0.0, "y": -7.0, "z": 0.1}, top=2)
    assert reasons[0].feature == "y"
    assert reasons[0].direction == "low"
    assert reasons[0].contribution > 1.0
    assert det.forest is not None
    rows = rng.normal(size=(40, 3)) * 3
    total, high = isolation_contributions(det.forest, rows)
    saved = average_path_length(det.forest.sample_size) - det.forest.path_lengths(rows)
    np.testing.assert_allclose(total.sum(axis=1), saved, atol=1e-9)
    assert total.shape == high.shape == (40, 3)


# -- Benchmark helpers. --------------------------------------------------------------------


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.random(500) < 0.1
        s = np.round(rng.random(500) + 0.3 * y, 1).astype(np.float64)  # many ties
        assert _roc_auc_numpy(y, s) == pytest.approx(roc_auc(y, s), abs=1e-12)
        assert _average_precision_numpy(y, s) == pytest.approx(average_precision(y, s), abs=1e-12)


def test_causal_rank_only_looks_back() -> None:
    scores = np.random.default_rng(0).random(300)
    full = causal_rank(scores, window=50)
    prefix = causal_rank(scores[:120], window=50)
    np.testing.assert_array_equal(full[:120], prefix)
    assert ((full >= 0.0) & (full <= 1.0)).all()


def test_stream_scores_follow_the_order_and_caps() -> None:
    x = np.random.default_rng(0).random((500, 2))

    def make(names, seed):
        return IsolationForestASD(names, n_trees=5, max_samples=16, window_size=64, seed=seed)

    scores, seconds = stream_scores(make, x, "shuffled", 3, 64, max_rows=300)
    assert scores.shape == (300,)
    assert seconds > 0.0
    det = make(("x0", "x1"), 3)
    expected = det.score_learn_many(x[stream_order(500, "shuffled", 3)][:300])
    np.testing.assert_array_equal(scores, expected)
    # The protocol's batch path for detectors without score_learn_many.
    river, _ = stream_scores(
        lambda names, seed: RiverHalfSpaceTrees(names, n_trees=3, height=3, seed=seed),
        x,
        "original",
        0,
        100,
        max_rows=200,
    )
    assert river.shape == (200,)
    assert (minmax_scale(x * 7 - 3) >= 0).all()


def test_bench_quality_cli(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 3))
    y = np.zeros(1500, dtype=np.int64)
    y[::50] = 1
    x[y == 1] += 6.0
    path = tmp_path / "toy.npz"
    np.savez(path, X=x, y=y)
    argv = ["--data", str(path), "--json", "--max-rows", "1200", "--detectors"]
    assert bench_quality_cli([*argv, "iforest,river-hst,ensemble:iforest+river-hst"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["detector"] for r in records] == [
        "iforest",
        "river-hst",
        "ensemble:iforest+river-hst",
    ]
    for record in records:
        assert {"detector", "roc_auc", "average_precision", "events_per_s", "data", "order"} <= set(
            record
        )
        assert record["rows"] == 1200
        assert record["data"] == "toy"
        assert record["seed"] == 0
    assert records[0]["roc_auc"] > 0.95
    assert bench_quality_cli(["--data", str(path), "--max-rows", "300"]) == 0
    assert "ROC AUC" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_quality_cli(["--data", str(path), "--detectors", "nope"])
    assert bench_quality_cli(["--data", str(tmp_path / "missing.npz")]) == 2
