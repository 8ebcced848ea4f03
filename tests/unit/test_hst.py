"""Our Half-Space Trees against river's, event by event, and their own promises."""

from __future__ import annotations

import copy
import math
import os
import pickle
import random
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from river import anomaly

from detectors import _hst_kernels as kernels
from detectors.hst import HalfSpaceTrees, python_random_uniforms
from detectors.protocol import Detector, FloatArray

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
# Column order on purpose not sorted: river orders its features by name, we by position.
NAMES = ("d", "a", "c", "b")
TOL = 1e-9


def _uniform_stream(n: int, seed: int = 0) -> FloatArray:
    """Rows in [0, 1] with a tight cluster, spread points and a few repeated outliers."""
    rng = np.random.default_rng(seed)
    rows = np.clip(rng.normal(0.4, 0.08, size=(n, len(NAMES))), 0.0, 1.0)
    spread = rng.random(n) < 0.3
    rows[spread] = rng.random((int(spread.sum()), len(NAMES)))
    rows[::53] = [0.97, 0.02, 0.95, 0.9]
    return rows


@cache
def _shuttle(n: int) -> tuple[FloatArray, tuple[str, ...]]:
    path = DATASETS / "shuttle" / "shuttle.npz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    data = np.load(path)["X"].astype(np.float64)
    rows = data[np.random.default_rng(0).permutation(len(data))[:n]]
    low, high = rows.min(axis=0), rows.max(axis=0)
    scaled = (rows - low) / np.where(high > low, high - low, 1.0)
    return scaled, tuple(f"f{i}" for i in range(rows.shape[1]))


def _event(names: tuple[str, ...], row: FloatArray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(names, row, strict=True) if not math.isnan(v)}


@cache
def _river_run(
    stream: str, n: int, n_trees: int, height: int, window: int, seed: int
) -> tuple[FloatArray, anomaly.HalfSpaceTrees]:
    """river's per-event scores (score, then learn) on a named stream; cached per module."""
    rows, names = _stream(stream, n)
    model = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window, seed=seed)
    scores = []
    for row in rows:
        x = _event(names, row)
        scores.append(model.score_one(x))
        model.learn_one(x)
    return np.array(scores, dtype=np.float64), model


def _stream(stream: str, n: int) -> tuple[FloatArray, tuple[str, ...]]:
    if stream == "shuttle":
        return _shuttle(n)
    rows = _uniform_stream(n)
    if stream == "missing":
        # First row complete: river builds its trees from the first event's keys.
        mask = np.random.default_rng(9).random(rows.shape) < 0.15
        mask[0] = False
        rows = np.where(mask, np.nan, rows)
    return rows, NAMES


def _per_event(det: HalfSpaceTrees, names: tuple[str, ...], rows: FloatArray) -> FloatArray:
    scores = []
    for row in rows:
        x = _event(names, row)
        scores.append(det.score_one(x))
        det.learn_one(x)
    return np.array(scores, dtype=np.float64)


def _batched(det: HalfSpaceTrees, rows: FloatArray, size: int) -> FloatArray:
    return np.concatenate(
        [det.score_learn_many(rows[i : i + size]) for i in range(0, len(rows), size)]
    )


def _river_masses(model: anomaly.HalfSpaceTrees) -> tuple[FloatArray, FloatArray]:
    n_nodes = 2 ** (model.height + 1) - 1
    l_mass = np.zeros((model.n_trees, n_nodes), dtype=np.int64)
    r_mass = np.zeros((model.n_trees, n_nodes), dtype=np.int64)
    for t, root in enumerate(model.trees):
        stack = [(root, 0)]
        while stack:
            node, k = stack.pop()
            l_mass[t, k], r_mass[t, k] = node.l_mass, node.r_mass
            for i, child in enumerate(getattr(node, "children", ())):
                stack.append((child, 2 * k + 1 + i))
    return l_mass, r_mass


# -- parity with river --------------------------------------------------------------------

PARITY = [
    # stream, rows, n_trees, height, window: several window swaps each
    pytest.param("uniform", 3000, 10, 8, 250, id="uniform-10-8-250"),
    pytest.param("shuttle", 3000, 10, 8, 250, id="shuttle-10-8-250"),
    pytest.param("missing", 1500, 10, 8, 250, id="missing-keys-10-8-250"),
    pytest.param("uniform", 1200, 4, 15, 250, id="uniform-4-15-250"),
    pytest.param("shuttle", 1200, 3, 15, 250, id="shuttle-3-15-250"),
    pytest.param("uniform", 600, 5, 6, 7, id="uniform-5-6-7"),
]


@pytest.mark.parametrize(("stream", "n", "n_trees", "height", "window"), PARITY)
def test_scores_equal_river_event_by_event(
    stream: str, n: int, n_trees: int, height: int, window: int
) -> None:
    expected, _ = _river_run(stream, n, n_trees, height, window, 42)
    rows, names = _stream(stream, n)

    def fresh() -> HalfSpaceTrees:
        return HalfSpaceTrees(names, n_trees=n_trees, height=height, window_size=window, seed=42)

    assert (expected != 0).sum() > n / 2  # past the warm-up for most of the stream
    np.testing.assert_allclose(_per_event(fresh(), names, rows), expected, rtol=0, atol=TOL)
    for size in (1, 97, 1000):
        np.testing.assert_allclose(
            _batched(fresh(), rows, size), expected, rtol=0, atol=TOL, err_msg=f"batch {size}"
        )


@pytest.mark.skipif(
    not os.environ.get("VIGIL_SLOW_TESTS"),
    reason="river takes ~10 s to build 25 trees of height 15; set VIGIL_SLOW_TESTS=1 "
    "(vigil bench speed checks this setting on 5,000 events every run)",
)
def test_scores_equal_river_at_the_papers_setting() -> None:
    expected, _ = _river_run("shuttle", 1500, 25, 15, 250, 42)
    rows, names = _stream("shuttle", 1500)
    for size in (None, 97, 1000):
        det = HalfSpaceTrees(names, n_trees=25, height=15, window_size=250, seed=42)
        ours = _per_event(det, names, rows) if size is None else _batched(det, rows, size)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=TOL, err_msg=f"batch {size}")


@pytest.mark.parametrize(("stream", "n", "n_trees", "height", "window"), PARITY[:4])
def test_trees_and_masses_equal_river(
    stream: str, n: int, n_trees: int, height: int, window: int
) -> None:
    _, model = _river_run(stream, n, n_trees, height, window, 42)
    rows, names = _stream(stream, n)
    det = HalfSpaceTrees(names, n_trees=n_trees, height=height, window_size=window, seed=42)
    copied = HalfSpaceTrees.from_river(model, names)
    for mine in (det, copied):
        assert mine.split_feature.shape == (n_trees, 2 ** (height + 1) - 1)
    np.testing.assert_array_equal(det.split_feature, copied.split_feature)
    np.testing.assert_array_equal(det.split_value, copied.split_value)  # bit for bit
    det.score_learn_many(rows)
    l_mass, r_mass = _river_masses(model)
    np.testing.assert_array_equal(det.l_mass, l_mass)
    np.testing.assert_array_equal(det.r_mass, r_mass)
    assert det.counter == model.counter
    assert det.first_window == model._first_window


def test_from_river_continues_in_lockstep() -> None:
    rows = _uniform_stream(900, seed=3)
    model = anomaly.HalfSpaceTrees(n_trees=6, height=7, window_size=100, seed=5)
    model.learn_one(_event(NAMES, rows[0]))
    det = HalfSpaceTrees.from_river(model)
    assert det.feature_names == tuple(sorted(NAMES))
    ours, theirs = [], []
    for row in rows[1:]:
        x = _event(NAMES, row)
        theirs.append(model.score_one(x))
        model.learn_one(x)
        ours.append(det.score_learn_one(x))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)
    assert max(theirs) > 0.5


def test_from_river_needs_trees_and_known_features() -> None:
    with pytest.raises(ValueError, match="learn one event"):
        HalfSpaceTrees.from_river(anomaly.HalfSpaceTrees())
    model = anomaly.HalfSpaceTrees(n_trees=2, height=3, window_size=10, seed=1)
    model.learn_one({"a": 0.5, "b": 0.5})
    with pytest.raises(ValueError, match="splits on"):
        HalfSpaceTrees.from_river(model, ("a",))


def test_limits_are_used_as_river_uses_them() -> None:
    limits = {"a": (0.0, 10.0), "b": (-1.0, 1.0)}
    rng = np.random.default_rng(2)
    rows = np.column_stack([rng.random(800) * 10, rng.random(800) * 2 - 1])
    model = anomaly.HalfSpaceTrees(
        n_trees=5,
        height=6,
        window_size=100,
        seed=3,
        limits=limits,  # type: ignore[arg-type]  # river types its keys as Hashable
    )
    det = HalfSpaceTrees(("b", "a"), n_trees=5, height=6, window_size=100, seed=3, limits=limits)
    theirs = []
    for a, b in rows:
        theirs.append(model.score_one({"a": a, "b": b}))
        model.learn_one({"a": a, "b": b})
    np.testing.assert_allclose(det.score_learn_many(rows[:, ::-1]), theirs, rtol=0, atol=TOL)


def test_the_same_trees_as_river_whatever_the_seed() -> None:
    for seed in (0, 1, 123):
        model = anomaly.HalfSpaceTrees(n_trees=3, height=5, window_size=10, seed=seed)
        model.learn_one(dict.fromkeys(("x", "y", "z"), 0.5))
        det = HalfSpaceTrees(("z", "x", "y"), n_trees=3, height=5, window_size=10, seed=seed)
        copied = HalfSpaceTrees.from_river(model, ("z", "x", "y"))
        np.testing.assert_array_equal(det.split_feature, copied.split_feature)
        np.testing.assert_array_equal(det.split_value, copied.split_value)


# -- missing, NaN and unknown features ----------------------------------------------------


def test_nan_and_none_are_missing_and_extra_keys_ignored() -> None:
    det = HalfSpaceTrees(NAMES, n_trees=5, height=6, window_size=50, seed=1)
    det.learn_many(_uniform_stream(300))
    missing = det.score_one({"d": 0.4, "a": 0.4})
    assert det.score_one({"d": 0.4, "a": 0.4, "c": math.nan, "b": None}) == missing  # type: ignore[dict-item]
    full = {"d": 0.4, "a": 0.4, "c": 0.4, "b": 0.4}
    assert det.score_one({**full, "zzz": 99.0, "other": -1.0}) == det.score_one(full)
    row = np.array([[0.4, 0.4, math.nan, math.nan]])
    assert det.score_many(row)[0] == missing


def test_missing_values_descend_to_the_heavier_child() -> None:
    # One tree of height 1 split on "a": after a window where most events went right, an
    # event without "a" is counted on the right, as the heavier child.
    det = HalfSpaceTrees(("a",), n_trees=1, height=1, window_size=10, seed=0)
    threshold = float(det.split_value[0, 0])
    det.learn_many(np.array([[threshold + 0.01]] * 6 + [[threshold - 0.01]] * 3))
    det.learn_one({})
    np.testing.assert_array_equal(det.r_mass, [[10, 3, 7]])
    det.learn_one({})  # a new window: no mass yet, the tie goes left
    np.testing.assert_array_equal(det.l_mass, [[1, 1, 0]])


def test_batches_with_nan_equal_river_missing_keys() -> None:
    expected, _ = _river_run("missing", 1500, 10, 8, 250, 42)
    rows, _ = _stream("missing", 1500)
    det = HalfSpaceTrees(NAMES, seed=42)
    np.testing.assert_allclose(_batched(det, rows, 64), expected, rtol=0, atol=TOL)


# -- paper scoring --------------------------------------------------------------------------


def _paper_reference(det: HalfSpaceTrees, row: FloatArray) -> float:
    """Tan et al.: r_mass * 2**depth of the node where the walk stops, summed over trees."""
    if det.first_window:
        return 0.0
    r_mass, size_limit = det.r_mass, 0.1 * det.window_size
    total = 0
    for t in range(det.n_trees):
        k, depth = 0, 0
        while depth < det.height and r_mass[t, k] >= size_limit:
            go_left = row[det.split_feature[t, k]] < det.split_value[t, k]
            k, depth = 2 * k + (1 if go_left else 2), depth + 1
        total += int(r_mass[t, k]) * 2**depth
    return float(1.0 - total / (det.n_trees * det.window_size * 2**det.height))


def test_paper_scoring_follows_the_paper() -> None:
    def make() -> HalfSpaceTrees:
        return HalfSpaceTrees(NAMES, n_trees=6, height=7, window_size=60, seed=4, scoring="paper")

    det = make()
    assert det.name != HalfSpaceTrees(NAMES).name
    rows = _uniform_stream(400, seed=8)
    rows[::9, 3] = math.nan
    scores = []
    for i, row in enumerate(rows):
        expected = _paper_reference(det, row) if not np.isnan(row).any() else None
        scores.append(det.score_one(_event(NAMES, row)))
        if expected is not None:
            assert scores[-1] == pytest.approx(expected)
        if i < 60:
            assert scores[-1] == 0.0
        det.learn_one(_event(NAMES, row))
    inlier = det.score_one(dict.fromkeys(NAMES, 0.4))
    outlier = det.score_one({"d": 0.99, "a": 0.01, "c": 0.99, "b": 0.01})
    assert 0.0 <= inlier < outlier <= 1.0
    np.testing.assert_array_equal(_batched(make(), rows, 33), scores)


# -- the detector protocol -------------------------------------------------------------------


def test_protocol_warm_up_and_shapes() -> None:
    det = HalfSpaceTrees(NAMES, n_trees=3, height=4, window_size=20, seed=0)
    assert isinstance(det, Detector)
    rows = _uniform_stream(60)
    scores = det.score_learn_many(rows)
    assert scores.dtype == np.float64
    assert scores.shape == (60,)
    assert (scores[:20] == 0.0).all()  # river: nothing to score against before a swap
    assert (scores[20:] > 0.0).all()
    assert det.score_learn_many(np.empty((0, 4))).shape == (0,)


def test_score_many_learns_nothing_and_inputs_stay() -> None:
    det = HalfSpaceTrees(NAMES, n_trees=4, height=6, window_size=30, seed=0)
    rows = _uniform_stream(200)
    rows[::7, 2] = math.nan
    before = rows.copy()
    det.learn_many(rows[:100])
    l_mass, counter = det.l_mass, det.counter
    first = det.score_many(rows)
    np.testing.assert_array_equal(det.score_many(rows), first)
    np.testing.assert_array_equal(det.l_mass, l_mass)
    assert det.counter == counter
    det.score_learn_many(rows)
    np.testing.assert_array_equal(rows, before)
    strided = np.asfortranarray(rows)[:, :]
    np.testing.assert_array_equal(det.score_many(strided), det.score_many(rows))


def test_score_many_and_learn_many_in_chunks_equal_one_at_a_time() -> None:
    # Batches are run in segments, tree by tree; score-only rows are walked from a scratch
    # copy, learned rows from their window slot. Chunks longer than a segment, shorter
    # than a window and across window swaps must all give what one event at a time gives.
    rows = _uniform_stream(2400, seed=3)
    rows[::9, 0] = math.nan
    chunks = (700, 1, 333, 250, 17, 600, 499)
    fast = HalfSpaceTrees(NAMES, n_trees=6, height=9, window_size=250, seed=1)
    slow = copy.deepcopy(fast)
    start = 0
    for size in chunks:
        chunk = rows[start : start + size]
        expected = np.array([slow.score_one(_event(NAMES, row)) for row in chunk])
        for row in chunk:
            slow.learn_one(_event(NAMES, row))
        np.testing.assert_array_equal(fast.score_many(chunk), expected, err_msg=f"chunk {size}")
        fast.learn_many(chunk)
        start += size
    assert start == len(rows)
    np.testing.assert_array_equal(fast.l_mass, slow.l_mass)
    np.testing.assert_array_equal(fast.r_mass, slow.r_mass)


def test_pickle_and_deepcopy_continue_exactly() -> None:
    rows = _uniform_stream(1000, seed=5)
    rows[::11, 1] = math.nan
    det = HalfSpaceTrees(NAMES, n_trees=8, height=10, window_size=100, seed=2)
    det.score_learn_many(rows[:437])  # mid-window, with events parked below open nodes
    restored = pickle.loads(pickle.dumps(det))
    cloned = copy.deepcopy(det)
    np.testing.assert_array_equal(restored.l_mass, det.l_mass)
    np.testing.assert_array_equal(restored.r_mass, det.r_mass)
    expected = det.score_learn_many(rows[437:])
    np.testing.assert_array_equal(restored.score_learn_many(rows[437:]), expected)
    np.testing.assert_array_equal(_per_event(cloned, NAMES, rows[437:]), expected)


def test_seeds() -> None:
    rows = _uniform_stream(500)

    def scores(seed: int) -> FloatArray:
        return HalfSpaceTrees(NAMES, n_trees=5, window_size=50, seed=seed).score_learn_many(rows)

    np.testing.assert_array_equal(scores(7), scores(7))
    assert not np.allclose(scores(7), scores(8))


def test_generation_stamps_survive_wrapping_around() -> None:
    # Windows of one event: 2**16 + change windows wrap the 16-bit stamps around, with
    # sweeps on the way; scores must still be river's.
    rng = np.random.default_rng(0)
    rows = rng.random((2**16 + 3000, 2))
    rows[40000:] *= 0.5  # nodes left alone for many windows
    model = anomaly.HalfSpaceTrees(n_trees=2, height=3, window_size=1, seed=0)
    det = HalfSpaceTrees(("a", "b"), n_trees=2, height=3, window_size=1, seed=0)
    ours = det.score_learn_many(rows)
    for i in (*range(100), *range(len(rows) - 3000, len(rows))):
        if i == 0:
            model.learn_one({"a": rows[0, 0], "b": rows[0, 1]})
            continue
        if i == len(rows) - 3000:
            model = anomaly.HalfSpaceTrees(n_trees=2, height=3, window_size=1, seed=0)
            model.learn_one({"a": rows[i - 1, 0], "b": rows[i - 1, 1]})
        x = {"a": rows[i, 0], "b": rows[i, 1]}
        assert ours[i] == pytest.approx(model.score_one(x), abs=TOL), i
        model.learn_one(x)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="empty"):
        HalfSpaceTrees(())
    with pytest.raises(ValueError, match="unique"):
        HalfSpaceTrees(("a", "a"))
    with pytest.raises(ValueError, match="scoring"):
        HalfSpaceTrees(("a",), scoring="other")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        HalfSpaceTrees(("a",), limits={"b": (0.0, 1.0)})
    with pytest.raises(ValueError, match="high > low"):
        HalfSpaceTrees(("a",), limits={"a": (1.0, 1.0)})
    with pytest.raises(ValueError, match="window_size"):
        HalfSpaceTrees(("a",), window_size=kernels.MAX_WINDOW + 1)
    with pytest.raises(ValueError, match=">= 1"):
        HalfSpaceTrees(("a",), height=0)
    det = HalfSpaceTrees(("a", "b"))
    with pytest.raises(ValueError, match="shape"):
        det.score_many(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="shape"):
        det.learn_many(np.zeros(2))


# -- the speed bench (stream/bench_speed.py) ------------------------------------------------


def test_rank_roc_auc_by_hand() -> None:
    from stream.bench_speed import rank_roc_auc, roc_auc

    # Positives at scores 0.8, 0.4 (tied with a negative); negatives at 0.4, 0.3, 0.1.
    # Pairs won: 0.8 beats all 3, 0.4 beats 0.3 and 0.1 and ties 0.4: (3 + 2.5) / 6.
    labels, scores = [1, 0, 1, 0, 0], [0.8, 0.4, 0.4, 0.3, 0.1]
    assert rank_roc_auc(labels, scores) == pytest.approx(5.5 / 6)
    assert roc_auc(labels, scores) == pytest.approx(5.5 / 6)
    assert rank_roc_auc([0, 1], [0.9, 0.1]) == 0.0
    assert roc_auc([1, 1], [0.2, 0.3]) is None


def test_bench_speed_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from stream.bench_speed import bench_speed_cli

    argv = ["--json", "--events", "700", "--dataset", "synthetic", "--repeat", "1"]
    assert bench_speed_cli([*argv, "--setting", "3/5/50", "--setting", "2/12/50"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["setting"] for line in lines] == ["3/5/50", "2/12/50"]
    for line in lines:
        assert line["ratio"] == pytest.approx(
            line["ours_events_per_s"] / line["river_events_per_s"]
        )
        assert line["max_abs_score_diff"] <= TOL
        assert line["ours_roc_auc"] == pytest.approx(line["river_roc_auc"], abs=TOL)
        assert line["state_bytes"] > 0
        assert line["ours_peak_memory_bytes"] > 0
    assert lines[0]["river_events"] == 700
    assert lines[1]["river_events"] == 700  # fewer than --river-events anyway
    assert bench_speed_cli(["--events", "300", "--dataset", "synthetic", "--repeat", "1",
                            "--setting", "2/4/30", "--river-events", "100"]) == 0  # fmt: skip
    assert "ours ev/s" in capsys.readouterr().out


@pytest.mark.parametrize("seed", [0, 1, 42, -7, 2**31 - 1, 2**40 + 5, 2**70 + 3])
def test_uniforms_continue_pythons_random_bit_for_bit(seed):
    rng = random.Random(seed)
    expected = [rng.random() for _ in range(2000)]
    assert python_random_uniforms(seed, 2000).tolist() == expected
