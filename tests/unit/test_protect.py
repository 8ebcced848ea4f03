from __future__ import annotations

import numpy as np

from detectors.hst import HalfSpaceTrees
from detectors.protect import Protected


def _detector() -> HalfSpaceTrees:
    return HalfSpaceTrees(("a", "b"), n_trees=10, height=6, window_size=50, seed=3)


def _stream(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.clip(rng.normal(0.3, 0.05, size=(n, 2)), 0, 1)


def test_a_sustained_attack_is_not_learned_as_normal():
    rng = np.random.default_rng(0)
    normal = _stream(rng, 500)
    attack = np.clip(rng.normal(0.85, 0.01, size=(300, 2)), 0, 1)
    plain, guarded = _detector(), Protected(_detector(), cutoff=0.6)
    plain.score_learn_many(normal)
    guarded.score_learn_many(normal)
    plain_scores = plain.score_learn_many(attack)
    guarded_scores = guarded.score_learn_many(attack)
    # Unprotected, the attack becomes the normal and its late events look benign.
    assert plain_scores[-50:].mean() < 0.6 < guarded_scores[-50:].mean()
    assert guarded.skipped >= 250


def test_protection_with_an_unreachable_cutoff_changes_nothing():
    rng = np.random.default_rng(1)
    rows = _stream(rng, 400)
    plain, guarded = _detector(), Protected(_detector(), cutoff=np.inf)
    assert np.array_equal(plain.score_learn_many(rows), guarded.score_learn_many(rows))
    assert guarded.skipped == 0


def test_excluded_rows_are_scored_but_not_learned():
    rng = np.random.default_rng(2)
    rows = _stream(rng, 200)
    exclude = [i % 2 == 0 for i in range(200)]
    guarded, reference = Protected(_detector(), cutoff=np.inf), _detector()
    scores = guarded.score_learn_many(rows, exclude=exclude)
    expected = []
    for i, row in enumerate(rows):
        expected.append(reference.score_many(row[None, :])[0])
        if not exclude[i]:
            reference.learn_many(row[None, :])
    assert np.array_equal(scores, np.array(expected))
    assert guarded.skipped == 100
