"""One check suite for every Vigil detector, in the spirit of ``river.checks``.

Each ``check_*`` takes a factory ``(feature_names, seed) -> Detector`` and raises
``AssertionError`` when the detector breaks a promise of the protocol: inputs untouched,
pickling, seeding, tolerance of messy events, warm-up, and the batch path agreeing with
the event-by-event one. ``detector_factories`` lists every detector we have, in small
configurations (short windows, few trees) so the whole suite runs in seconds;
``tests/unit/test_detector_checks.py`` runs every check on every factory.

>>> from detectors.iforest import IsolationForestASD
>>> def make(names, seed):
...     return IsolationForestASD(names, n_trees=5, max_samples=16, window_size=32, seed=seed)
>>> for check in yield_checks():
...     check(make)
"""

from __future__ import annotations

import copy
import importlib
import math
import pickle
from collections.abc import Callable, Iterator

import numpy as np

from detectors.protocol import Detector, FloatArray

DetectorFactory = Callable[[tuple[str, ...], int], Detector]
Check = Callable[[DetectorFactory], None]

FEATURES = ("a", "b", "c")
# Long enough for every small configuration below to leave its warm-up and refit a few
# times, short enough to keep pure-Python detectors fast.
N_ROWS = 240
# Scores of the same rows on equal models may differ by summation order only.
_RTOL = 1e-12


def sample_rows(n: int = N_ROWS, seed: int = 0) -> FloatArray:
    """Rows in [0, 1] (what Half-Space Trees expect): a tight cluster plus 2% outliers."""
    rng = np.random.default_rng(seed)
    rows = np.clip(rng.normal(0.5, 0.05, size=(n, len(FEATURES))), 0.0, 1.0)
    outliers = rng.random(n) < 0.02
    rows[outliers] = rng.random((int(outliers.sum()), len(FEATURES)))
    return rows


def _as_dict(row: FloatArray) -> dict[str, float]:
    return {name: float(value) for name, value in zip(FEATURES, row, strict=True)}


def _per_event(detector: Detector, rows: FloatArray) -> FloatArray:
    """The reference stream: each row scored, then learned, one event at a time."""
    scores = []
    for row in rows:
        x = _as_dict(row)
        scores.append(detector.score_one(x))
        detector.learn_one(x)
    return np.array(scores, dtype=np.float64)


def _learned(factory: DetectorFactory, seed: int = 0, n: int = N_ROWS) -> Detector:
    detector = factory(FEATURES, seed)
    detector.learn_many(sample_rows(n, seed=1))
    return detector


def _assert_same(a: FloatArray, b: FloatArray, what: str) -> None:
    np.testing.assert_allclose(a, b, rtol=_RTOL, atol=_RTOL, err_msg=what)


def check_protocol(factory: DetectorFactory) -> None:
    """Implements ``Detector``; names its features as given; scores are floats."""
    detector = factory(FEATURES, 0)
    assert isinstance(detector, Detector)
    assert isinstance(detector.name, str)
    assert detector.name
    assert tuple(detector.feature_names) == FEATURES
    score = detector.score_one(_as_dict(sample_rows(1)[0]))
    assert isinstance(score, float)
    scores = detector.score_many(sample_rows(3))
    assert scores.shape == (3,)
    assert scores.dtype == np.float64


def check_input_not_mutated(factory: DetectorFactory) -> None:
    """Neither dict events nor arrays handed to any method are changed."""
    detector = factory(FEATURES, 0)
    rows = sample_rows()
    rows[5, 1] = math.nan
    before = rows.copy()
    for row in rows[:40]:
        x = _as_dict(row)
        kept = dict(x)
        detector.score_one(x)
        detector.learn_one(x)
        assert x == kept or all(
            (math.isnan(x[k]) and math.isnan(kept[k])) or x[k] == kept[k] for k in kept
        ), "a dict event was mutated"
    detector.score_many(rows)
    detector.learn_many(rows)
    score_learn = getattr(detector, "score_learn_many", None)
    if score_learn is not None:
        score_learn(rows)
    np.testing.assert_array_equal(rows, before, err_msg="an input array was mutated")


def check_pickle_round_trip(factory: DetectorFactory) -> None:
    """A pickled and restored detector scores and learns exactly as the original."""
    original = _learned(factory, n=N_ROWS // 2)
    restored = pickle.loads(pickle.dumps(original))
    rest = sample_rows(seed=2)
    _assert_same(_per_event(original, rest), _per_event(restored, rest), "after unpickling")


def check_seeded_determinism(factory: DetectorFactory) -> None:
    """Same seed, same scores; another seed, other scores."""
    rows = sample_rows()
    first = _per_event(factory(FEATURES, 7), rows)
    again = _per_event(factory(FEATURES, 7), rows)
    other = _per_event(factory(FEATURES, 8), rows)
    _assert_same(first, again, "same seed")
    assert not np.allclose(first, other), "a different seed gave the same scores"


def check_missing_and_unknown_features(factory: DetectorFactory) -> None:
    """Events lacking a feature or carrying unknown ones are scored and learned."""
    detector = _learned(factory)
    partial = {"a": 0.5}
    extra = {"a": 0.5, "b": 0.5, "c": 0.5, "zzz": 3.0}
    for x in (partial, extra, {}):
        assert math.isfinite(detector.score_one(x))
        detector.learn_one(x)
    assert math.isfinite(detector.score_one(extra))


def check_nan(factory: DetectorFactory) -> None:
    """NaN features do not raise and give finite scores, in dicts and in arrays."""
    detector = _learned(factory)
    x = {"a": math.nan, "b": 0.5, "c": 0.5}
    assert math.isfinite(detector.score_one(x))
    detector.learn_one(x)
    rows = sample_rows(20, seed=3)
    rows[::3, 0] = math.nan
    assert np.isfinite(detector.score_many(rows)).all()
    detector.learn_many(rows)
    assert math.isfinite(detector.score_one({"a": 0.5, "b": 0.5, "c": 0.5}))


def check_warm_up(factory: DetectorFactory) -> None:
    """A fresh detector scores at once, and every score of the first rows is finite."""
    detector = factory(FEATURES, 0)
    assert math.isfinite(detector.score_one(_as_dict(sample_rows(1)[0])))
    assert np.isfinite(detector.score_many(sample_rows(5))).all()
    scores = _per_event(detector, sample_rows())
    assert np.isfinite(scores).all()


def check_batch_equals_per_event(factory: DetectorFactory) -> None:
    """``score_many`` equals ``score_one`` row by row; ``learn_many`` leaves the state
    ``learn_one`` leaves; ``score_learn_many`` (when present) equals the per-event stream
    for any batch size."""
    rows = sample_rows(seed=4)
    detector = _learned(factory)
    singles = np.array([detector.score_one(_as_dict(row)) for row in rows])
    _assert_same(detector.score_many(rows), singles, "score_many vs score_one")

    one_by_one = factory(FEATURES, 0)
    for row in rows:
        one_by_one.learn_one(_as_dict(row))
    probe = sample_rows(30, seed=5)
    expected = one_by_one.score_many(probe)
    for size in (37, len(rows)):
        by_batch = factory(FEATURES, 0)
        for start in range(0, len(rows), size):
            by_batch.learn_many(rows[start : start + size])
        _assert_same(by_batch.score_many(probe), expected, f"learn_many, batches of {size}")

    reference = _per_event(factory(FEATURES, 0), rows)
    for size in (1, 7, 64, len(rows)):
        detector = factory(FEATURES, 0)
        batches = [rows[i : i + size] for i in range(0, len(rows), size)]
        scores = np.concatenate([detector.score_learn_many(b) for b in batches])
        _assert_same(scores, reference, f"score_learn_many, batches of {size}")


def check_outliers_score_higher(factory: DetectorFactory) -> None:
    """After learning a tight cluster, a far point scores above a central one."""
    detector = _learned(factory)
    inlier = detector.score_one({"a": 0.5, "b": 0.5, "c": 0.5})
    outlier = detector.score_one({"a": 0.98, "b": 0.02, "c": 0.97})
    assert outlier > inlier, f"outlier {outlier} <= inlier {inlier}"


def check_deepcopy_independent(factory: DetectorFactory) -> None:
    """A deep copy learns on its own: the original's scores do not move."""
    original = _learned(factory)
    probe = sample_rows(20, seed=6)
    before = original.score_many(probe)
    clone = copy.deepcopy(original)
    clone.learn_many(sample_rows(seed=7) * 0.2)
    _assert_same(original.score_many(probe), before, "original after the copy learned")


CHECKS: tuple[Check, ...] = (
    check_protocol,
    check_input_not_mutated,
    check_pickle_round_trip,
    check_seeded_determinism,
    check_missing_and_unknown_features,
    check_nan,
    check_warm_up,
    check_batch_equals_per_event,
    check_outliers_score_higher,
    check_deepcopy_independent,
)


def yield_checks() -> Iterator[Check]:
    """Every check, in a stable order."""
    yield from CHECKS


def detector_factories() -> dict[str, DetectorFactory]:
    """Every detector we have, small: the ones whose module or dependency is missing
    (``detectors.hst``, pyod) are left out rather than failing."""
    from detectors.iforest import IsolationForestASD
    from detectors.river_hst import RiverHalfSpaceTrees

    def river_hst(names: tuple[str, ...], seed: int) -> Detector:
        return RiverHalfSpaceTrees(names, n_trees=5, height=4, window_size=40, seed=seed)

    def iforest(names: tuple[str, ...], seed: int) -> Detector:
        return IsolationForestASD(names, n_trees=10, max_samples=32, window_size=64, seed=seed)

    def iforest_numpy(names: tuple[str, ...], seed: int) -> Detector:
        return IsolationForestASD(
            names, n_trees=10, max_samples=32, window_size=64, seed=seed, use_numba=False
        )

    def rcf(names: tuple[str, ...], seed: int) -> Detector:
        # The isolation forest with RRCF's random cut: split features in proportion to range.
        return IsolationForestASD(
            names, n_trees=10, max_samples=32, window_size=64, split_rule="range", seed=seed
        )

    def rcf_insert(names: tuple[str, ...], seed: int) -> Detector:
        # The random cut, scored by the expected depth of RRCF's insertion.
        return IsolationForestASD(
            names,
            n_trees=10,
            max_samples=32,
            window_size=64,
            split_rule="range",
            scoring="insertion",
            seed=seed,
        )

    def iforest_drift(names: tuple[str, ...], seed: int) -> Detector:
        # IForestASD proper: refit only when a window's anomaly rate says drift.
        return IsolationForestASD(
            names,
            n_trees=10,
            max_samples=32,
            window_size=48,
            refit_every=None,
            drift_rate=0.02,
            drift_threshold=0.55,
            seed=seed,
        )

    factories: dict[str, DetectorFactory] = {
        "river-hst": river_hst,
        "iforest": iforest,
        "iforest-numpy": iforest_numpy,
        "iforest-drift": iforest_drift,
        "rcf": rcf,
        "rcf-insert": rcf_insert,
    }
    try:
        importlib.import_module("pyod")
    except ImportError:  # pragma: no cover - depends on the environment
        pass
    else:
        from detectors.pyod_adapter import PyODIForest

        def pyod_iforest(names: tuple[str, ...], seed: int) -> Detector:
            return PyODIForest(names, n_trees=10, max_samples=32, window_size=64, seed=seed)

        factories["pyod-iforest"] = pyod_iforest
    try:
        hst_module = importlib.import_module("detectors.hst")
    except ImportError:  # pragma: no cover - depends on the tree
        hst_module = None
    if hst_module is not None and hasattr(hst_module, "HalfSpaceTrees"):
        hst_class = hst_module.HalfSpaceTrees

        def hst(names: tuple[str, ...], seed: int) -> Detector:
            detector: Detector = hst_class(names, n_trees=5, height=4, window_size=40, seed=seed)
            return detector

        factories["hst"] = hst

        def ensemble(names: tuple[str, ...], seed: int) -> Detector:
            from detectors.ensemble import RankEnsemble

            return RankEnsemble([hst(names, seed), iforest(names, seed)], window=64)

        factories["ensemble"] = ensemble
    return factories
