from __future__ import annotations

import math
import os
import pickle
import random
import subprocess
import sys
from collections import defaultdict

import pytest

from detectors.midas import MidasR, chi_squared


class ReferenceMidasR:
    """MIDAS-R with exact dict counts: what the sketch computes when nothing collides."""

    def __init__(self, alpha: float, tick_seconds: float) -> None:
        self.alpha = alpha
        self.tick_seconds = tick_seconds
        self.origin: int | None = None
        self.tick = 0
        self.current: dict[object, float] = defaultdict(float)
        self.total: dict[object, float] = defaultdict(float)

    def score_edge(self, src: str, dst: str, t: float) -> float:
        absolute = math.floor(t / self.tick_seconds)
        if self.origin is None:
            self.origin, self.tick = absolute, 1
        tick = absolute - self.origin + 1
        if tick > self.tick:
            for key in self.current:
                self.current[key] *= self.alpha ** (tick - self.tick)
            self.tick = tick
        keys = [("edge", src, dst), ("src", src), ("dst", dst)]
        for key in keys:
            self.current[key] += 1.0
            self.total[key] += 1.0
        return max(chi_squared(self.current[k], self.total[k], self.tick) for k in keys)


def _edges(n: int, seed: int) -> list[tuple[str, str, float]]:
    rnd = random.Random(seed)
    t = 1_000_000.0
    out = []
    for _ in range(n):
        t += rnd.expovariate(1 / 7.0)  # some ticks stay empty
        out.append((f"d{rnd.randrange(15)}", f"c{rnd.randrange(25)}", t))
    return out


def test_hand_computed_example():
    m = MidasR(rows=2, buckets=1024, alpha=0.5, tick_seconds=60.0, seed=0)
    assert m.score_edge("a", "b", 30.0) == 0.0  # tick 1: no history, no statistic
    assert m.tick == 1
    # Tick 2: edge a->b current 1 * 0.5 + 1 = 1.5, total 2, t = 2:
    # ((1.5 - 2/2) * 2)^2 / (2 * 1) = 0.5; source a and destination b alike.
    assert m.score_edge("a", "b", 61.0) == pytest.approx(0.5)
    # Same tick, new destination c: edge a->c is (1, 1) -> (1 - 0.5)^2 * 4 / 1 = 1;
    # source a is current 2.5 of total 3 -> (2.5 - 1.5)^2 * 4 / 3 = 4/3 (the maximum).
    assert m.score_edge("a", "c", 119.0) == pytest.approx(4.0 / 3.0)
    # Tick 4 (tick 3 empty, so two decays): a->b current 1.5 * 0.25 + 1 = 1.375, total 3:
    # ((1.375 - 0.75) * 4)^2 / (3 * 3) = 0.6944...; source a: 2.5 * 0.25 + 1 = 1.625 of 4:
    # ((1.625 - 1) * 4)^2 / (4 * 3) = 0.5208...; destination b as the edge.
    assert m.score_edge("a", "b", 200.0) == pytest.approx(6.25 / 9.0)
    assert m.tick == 4


def test_sketch_equals_exact_counts_without_collisions():
    sketch = MidasR(rows=3, buckets=1 << 16, alpha=0.6, tick_seconds=60.0, seed=11)
    reference = ReferenceMidasR(alpha=0.6, tick_seconds=60.0)
    for src, dst, t in _edges(3000, seed=1):
        assert sketch.score_edge(src, dst, t) == pytest.approx(reference.score_edge(src, dst, t))


def test_collisions_only_inflate_counts():
    # Count-min never undercounts, so with tiny sketches the current count can only be
    # overestimated; scores still come out finite and non-negative.
    sketch = MidasR(rows=2, buckets=4, alpha=0.6, tick_seconds=60.0, seed=0)
    scores = [sketch.score_edge(s, d, t) for s, d, t in _edges(500, seed=2)]
    assert all(math.isfinite(s) and s >= 0.0 for s in scores)


def test_burst_of_a_new_edge_scores_far_above_steady_edges():
    m = MidasR(rows=2, buckets=1024, alpha=0.6, tick_seconds=60.0, seed=0)
    rnd = random.Random(5)
    steady: list[float] = []
    for minute in range(120):
        for _ in range(20):  # the same 40 device->card edges, spread evenly over time
            i = rnd.randrange(40)
            score = m.score_edge(f"dev-{i}", f"card-{i}", minute * 60.0 + rnd.random() * 59)
            if minute >= 60:
                steady.append(score)
    burst = [m.score_edge("dev-evil", "card-new", 120 * 60.0 + k) for k in range(50)]
    steady.sort()
    assert burst[-1] > 100 * steady[int(0.99 * len(steady))]
    assert burst[-1] > 1000.0


def test_memory_is_constant():
    m = MidasR(rows=2, buckets=256, alpha=0.6, tick_seconds=60.0, seed=0)
    before = m.nbytes
    for i in range(20_000):
        m.score_edge(f"src-{i}", f"dst-{i}", i * 0.5)
    assert m.nbytes == before == 2 * 3 * 2 * 256 * 8
    assert len(vars(m)) == len(vars(MidasR()))


def test_pickle_round_trip_continues_identically():
    edges = _edges(400, seed=3)
    m = MidasR(rows=2, buckets=128, alpha=0.6, seed=4)
    for src, dst, t in edges[:200]:
        m.score_edge(src, dst, t)
    copy = pickle.loads(pickle.dumps(m))
    rest = edges[200:]
    assert [copy.score_edge(*e) for e in rest] == [m.score_edge(*e) for e in rest]


def test_seed_changes_the_hashes():
    edges = _edges(300, seed=6)
    a = MidasR(rows=1, buckets=8, seed=0)
    b = MidasR(rows=1, buckets=8, seed=1)
    assert [a.score_edge(*e) for e in edges] != [b.score_edge(*e) for e in edges]


def test_out_of_order_event_counts_in_the_current_tick():
    m = MidasR(tick_seconds=60.0)
    m.score_edge("a", "b", 600.0)
    m.score_edge("a", "b", 700.0)
    assert m.tick == 2
    m.score_edge("a", "b", 10.0)  # earlier than the first event
    assert m.tick == 2


_SCRIPT = """
from detectors.midas import MidasR
m = MidasR(rows=2, buckets=64, alpha=0.6, seed=3)
print([m.score_edge(f"d{i % 7}", f"c{i % 11}", i * 13.0) for i in range(300)])
"""


def test_same_scores_whatever_the_python_hash_seed():
    outputs = set()
    for hash_seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rows": 0},
        {"buckets": 1},
        {"alpha": 1.5},
        {"alpha": -0.1},
        {"tick_seconds": 0.0},
        {"tick_seconds": math.inf},
        {"seed": -1},
    ],
)
def test_rejects_bad_construction(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MidasR(**kwargs)
