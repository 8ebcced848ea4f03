from __future__ import annotations

import pickle

import numpy as np
import pytest

from detectors.explain_hst import PathExplainer
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
