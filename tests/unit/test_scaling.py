"""The streaming quantile scaler: robust bounds, missing and late features, exact batching."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from detectors.protocol import FloatArray
from detectors.scaling import QuantileScaler, _uniform, _uniforms

NAMES = ("x", "y")


def _rows(n: int, seed: int = 0) -> FloatArray:
    rng = np.random.default_rng(seed)
    rows = np.column_stack([rng.normal(10.0, 2.0, n), rng.exponential(3.0, n)])
    rows[rng.random(n) < 0.1, 1] = math.nan
    rows[::97, 0] = 1e6  # rare wild values
    return rows


def _event(row: FloatArray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(NAMES, row, strict=True)}


def _per_event(scaler: QuantileScaler, rows: FloatArray) -> FloatArray:
    out = []
    for row in rows:
        scaled = scaler.transform_one(_event(row))
        scaler.learn_one(_event(row))
        out.append([scaled[name] for name in NAMES])
    return np.array(out)


def test_bounds_are_the_quantiles_and_outliers_clip() -> None:
    scaler = QuantileScaler(NAMES, q_low=0.05, q_high=0.95, reservoir_size=2048)
    rows = _rows(20000)
    scaler.learn_many(rows)
    low, high = scaler.bounds["x"]
    assert low == pytest.approx(10.0 - 1.645 * 2.0, abs=0.25)
    assert high == pytest.approx(10.0 + 1.645 * 2.0, abs=0.25)
    out = scaler.transform_many(np.array([[1e6, 0.0], [-1e6, 1e9], [10.0, math.nan]]))
    np.testing.assert_allclose(out[:2], [[1.0, 0.0], [0.0, 1.0]])
    assert out[2, 0] == pytest.approx(0.5, abs=0.05)
    assert out[2, 1] == 0.5  # the default fill
    scaled = scaler.transform_many(rows)
    assert ((scaled >= 0.0) & (scaled <= 1.0)).all()


def test_missing_infinite_and_fill_values() -> None:
    scaler = QuantileScaler(NAMES, fill_value=math.nan)
    scaler.learn_many(_rows(500))
    before = scaler.n_seen("x")
    scaler.learn_one({"x": math.inf, "y": None})  # type: ignore[dict-item]
    assert scaler.n_seen("x") == before  # not learned
    out = scaler.transform_one({"x": -math.inf})
    assert out["x"] == 0.0
    assert math.isnan(out["y"])  # missing key -> fill (NaN passes the gap on)
    assert scaler.transform_one({"x": math.inf})["x"] == 1.0


def test_features_first_seen_late_and_constant_ones() -> None:
    scaler = QuantileScaler(("a",))
    scaler.learn_one({"a": 1.0})
    assert scaler.transform_one({"a": 1.0, "b": 7.0}) == {"a": 0.5, "b": 0.5}
    assert scaler.feature_names == ("a", "b")
    assert scaler.transform_one({"a": 0.0})["a"] == 0.0
    assert scaler.transform_one({"a": 2.0})["a"] == 1.0
    scaler.learn_one({"b": 7.0, "c": 1.0})
    assert list(scaler.feature_names) == ["a", "b", "c"]
    assert scaler.transform_many(np.array([[1.0, 8.0, 1.0]])).shape == (1, 3)
    with pytest.raises(ValueError, match="shape"):
        scaler.transform_many(np.zeros((1, 2)))


def test_refresh_schedule() -> None:
    scaler = QuantileScaler(("a",), refresh_every=10, reservoir_size=64)
    changes = []
    previous = None
    for i in range(1, 41):
        scaler.learn_one({"a": float(i)})
        bounds = scaler.bounds["a"]
        if bounds != previous:
            changes.append(i)
        previous = bounds
    assert changes == [1, 2, 4, 8, 10, 20, 30, 40]


@pytest.mark.parametrize("size", [1, 37, 1000, 5000])
def test_batches_equal_events(size: int) -> None:
    rows = _rows(3000, seed=1)
    reference = QuantileScaler(NAMES, reservoir_size=256, refresh_every=50, horizon=1000)
    expected = _per_event(reference, rows)
    batched = QuantileScaler(NAMES, reservoir_size=256, refresh_every=50, horizon=1000)
    out = np.concatenate(
        [batched.transform_learn_many(rows[i : i + size]) for i in range(0, len(rows), size)]
    )
    np.testing.assert_array_equal(out, expected)
    learned = QuantileScaler(NAMES, reservoir_size=256, refresh_every=50, horizon=1000)
    for i in range(0, len(rows), size):
        learned.learn_many(rows[i : i + size])
    assert learned.bounds == reference.bounds
    probe = _rows(50, seed=9)
    np.testing.assert_array_equal(learned.transform_many(probe), reference.transform_many(probe))


def test_follows_drift_within_the_horizon() -> None:
    rng = np.random.default_rng(3)
    before, after = rng.normal(0, 1, (20000, 1)), rng.normal(100, 1, (20000, 1))
    follows = QuantileScaler(("x",), horizon=2000)
    frozen = QuantileScaler(("x",), horizon=None)
    for scaler in (follows, frozen):
        scaler.learn_many(before)
        scaler.learn_many(after)
    assert follows.bounds["x"][0] > 95.0  # the old regime has left the sample
    assert frozen.bounds["x"][0] < 5.0  # a plain reservoir still holds half of it


def test_seeds_pickle_and_inputs() -> None:
    rows = _rows(4000)
    before = rows.copy()
    a = QuantileScaler(NAMES, reservoir_size=128, seed=1)
    b = QuantileScaler(NAMES, reservoir_size=128, seed=1)
    c = QuantileScaler(NAMES, reservoir_size=128, seed=2)
    for scaler in (a, b, c):
        scaler.learn_many(rows)
    np.testing.assert_array_equal(rows, before)
    assert a.bounds == b.bounds
    assert a.bounds != c.bounds
    restored = pickle.loads(pickle.dumps(a))
    more = _rows(500, seed=4)
    np.testing.assert_array_equal(restored.transform_learn_many(more), a.transform_learn_many(more))
    assert restored.bounds == a.bounds


def test_uniforms_are_uniform() -> None:
    u = _uniforms(np.uint64(12345), np.arange(1, 100001, dtype=np.uint64))
    assert ((u >= 0.0) & (u < 1.0)).all()
    assert u.mean() == pytest.approx(0.5, abs=0.01)
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 9500
    assert [_uniform(12345, c) for c in (1, 2, 99999)] == u[[0, 1, 99998]].tolist()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="q_low"):
        QuantileScaler(q_low=0.9, q_high=0.1)
    with pytest.raises(ValueError, match=">= 1"):
        QuantileScaler(reservoir_size=0)
    with pytest.raises(ValueError, match="horizon"):
        QuantileScaler(reservoir_size=100, horizon=10)
