from __future__ import annotations

import math
import pickle
from collections import defaultdict

import numpy as np
import pytest

from detectors.explain_hst import PathCredit, PathExplainer
from detectors.hst import HalfSpaceTrees


def _trained(seed: int = 0) -> HalfSpaceTrees:
    rng = np.random.default_rng(seed)
    det = HalfSpaceTrees(("a", "b", "c"), n_trees=25, height=8, window_size=100, seed=seed)
    normal = np.column_stack([rng.normal(0.5, 0.05, 400), rng.random(400), rng.random(400)])
    det.score_learn_many(np.clip(normal, 0, 1))
    return det


@pytest.mark.parametrize(("row", "feature", "direction"), [
    ([0.98, 0.5, 0.5], "a", "high"),
    ([0.02, 0.5, 0.5], "a", "low"),
])  # fmt: skip
def test_the_isolating_feature_and_its_side_come_first(row, feature, direction):
    top = PathExplainer().explain(_trained(), np.array(row))
    assert (top[0].feature, top[0].direction) == (feature, direction)
    assert top[0].credit > 1.4 * top[1].credit
    assert sum(c.credit for c in top) <= 1.0 + 1e-9


def test_snapshot_keeps_the_reference_mass_of_when_the_event_was_scored():
    det = _trained()
    explainer = PathExplainer()
    explainer.snapshot(det)
    before = explainer.explain(det, np.array([0.98, 0.5, 0.5]))
    rng = np.random.default_rng(9)
    det.score_learn_many(np.column_stack([np.full(300, 0.98), rng.random(300), rng.random(300)]))
    assert explainer.explain(det, np.array([0.98, 0.5, 0.5])) == before
    explainer.snapshot(det)  # a later window: the attack is the new normal
    assert explainer.explain(det, np.array([0.98, 0.5, 0.5])) != before


def test_missing_values_isolate_nothing_and_pickling_drops_the_cache():
    det = _trained()
    explainer = PathExplainer()
    assert all(c.feature != "a" for c in explainer.explain(det, np.array([np.nan, 0.5, 0.5])))
    clone = pickle.loads(pickle.dumps(explainer))
    assert clone.explain(det, np.array([0.98, 0.5, 0.5]))[0].feature == "a"


def _python_credits(det: HalfSpaceTrees, row: np.ndarray, top: int) -> list[PathCredit]:
    """The pure-Python walk the compiled one replaced, kept as its reference."""
    features, values, r_mass = det.split_feature, det.split_value, det.r_mass
    size_limit = 0.1 * det.window_size
    credit: dict[int, float] = defaultdict(float)
    upward: dict[int, float] = defaultdict(float)
    n_nodes = features.shape[1]
    for t in range(features.shape[0]):
        node = 0
        parent_mass = float(r_mass[t, 0])
        while parent_mass >= size_limit:
            feature = int(features[t, node])
            if feature < 0:
                break
            x = float(row[feature])
            if math.isnan(x):
                break
            went_high = x >= values[t, node]
            child = 2 * node + (2 if went_high else 1)
            if child >= n_nodes:
                break
            child_mass = float(r_mass[t, child])
            share = 1.0 - child_mass / parent_mass if parent_mass > 0 else 0.0
            credit[feature] += share
            upward[feature] += share if went_high else -share
            node, parent_mass = child, child_mass
    ranked = sorted(credit.items(), key=lambda item: (-item[1], item[0]))
    total = sum(credit.values()) or 1.0
    return [
        PathCredit(det.feature_names[f], c / total, "high" if upward[f] >= 0 else "low")
        for f, c in ranked[:top]
        if c > 0
    ]


def test_compiled_walk_equals_the_python_walk_exactly():
    rng = np.random.default_rng(4)
    names = tuple("abcdefg")
    det = HalfSpaceTrees(names, n_trees=10, height=8, window_size=250, seed=3)
    normal = np.clip(rng.normal(0.4, 0.1, (1500, len(names))), 0, 1)
    det.score_learn_many(normal)
    rows = np.concatenate([normal[:300], rng.random((300, len(names)))])
    rows[::7, 2] = np.nan
    explainer = PathExplainer()
    explainer.snapshot(det)
    nonempty = 0
    for row in rows:
        for top in (1, 3, 7):
            expected = _python_credits(det, row, top)
            assert explainer.explain(det, row, top) == expected
            nonempty += bool(expected)
    assert nonempty > len(rows)  # the walks credit something on most rows
