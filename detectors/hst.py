"""Half-Space Trees (Tan, Ting & Liu, IJCAI 2011) on flat numpy arrays, jitted with numba.

Two scoring rules:

* ``"river"`` (default) reproduces ``river.anomaly.HalfSpaceTrees`` 0.26 event by event:
  the same trees for the same seed (river's ``random.Random`` draws are replayed: at each
  node a feature drawn with weights the widths of its current limits, a split drawn
  uniformly in the middle 70 % of them), the same score
  ``1 - s / (n_trees * window_size * (2**(height + 1) - 1))`` where ``s`` sums
  ``r_mass * 2**depth`` over every node of the walk until (and including) the first node
  with ``r_mass < 0.1 * window_size``, and 0 for every event scored before the first window
  swap.
* ``"paper"`` is the rule of the paper: each tree contributes ``r_mass * 2**depth`` of the
  node where the walk stops only (``r_mass < 0.1 * window_size`` or maximum depth). The
  paper calls lower scores more anomalous; here the score is
  ``1 - s / (n_trees * window_size * 2**height)`` so that, as everywhere in Vigil, higher
  means stranger. Scores before the first window swap are 0 as well.

Features are columns fixed up front by ``feature_names``; keys of an event that are not
in ``feature_names`` are ignored. A missing feature, NaN or ``None`` follows river's rule
for a missing key: at a node that splits on it the walk goes to the child with the larger
``l_mass`` in the current window (the "more common" side), the left child on a tie, so
right after a window swap, when every ``l_mass`` is 0, to the left. (river itself sends
NaN to the right child, since ``nan < threshold`` is false; its missing-key rule is the
deliberate one, so we apply it to both, and stay river-exact for missing keys.)

Speed (see :mod:`detectors._hst_kernels`): all of a node's data in one 16-byte record of
a ``(n_trees, 2**(height + 1))`` heap-layout array, numba loops instead of Python objects,
a window swap that costs O(1) instead of a pass over every node (1.6 million of them at 25
trees of height 15, every 250 events), learning that only walks as deep as scoring can
ever read, and batches whose paths are found ahead, many at a time. None of it changes a
score: the parity tests compare with river event by event.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from detectors import _hst_kernels as kernels
from detectors.protocol import Features, FloatArray

Scoring = Literal["river", "paper"]

# river's make_padded_tree keeps splits 15 % away from both ends of a feature's limits.
_PADDING = 0.15
_NAN = math.nan


def python_random_uniforms(seed: int, n: int) -> FloatArray:
    """``[random.Random(seed).random() for _ in range(n)]`` as an array, bit for bit.

    Both are the same Mersenne Twister, and numpy's ``random_sample`` makes a double from
    two 32-bit outputs exactly as CPython's ``random()`` does, so numpy continues from
    CPython's seeded state. About a hundred times faster than drawing in Python: 25 trees
    of height 15 take 1.6M draws.
    """
    _, internal, _ = random.Random(seed).getstate()
    generator = np.random.RandomState()
    key = np.array(internal[:-1], dtype=np.uint32)
    generator.set_state(("MT19937", key, internal[-1], 0, 0.0))  # no cached Gaussian
    return generator.random_sample(n)


class HalfSpaceTrees:
    """Half-Space Trees behind the Vigil detector protocol, river-exact by default.

    Parameters mirror river's: ``n_trees`` trees of height ``height`` (``height + 1``
    levels), masses over windows of ``window_size`` events, optional per-feature
    ``limits`` (default ``(0, 1)``; they only place the splits, values are not rescaled),
    and an integer ``seed``.

    >>> det = HalfSpaceTrees(("a", "b"), n_trees=5, height=4, window_size=10, seed=1)
    >>> for i in range(50):
    ...     det.learn_one({"a": 0.5 + (i % 5) / 100, "b": 0.5})
    >>> det.score_one({"a": 0.99, "b": 0.01}) > det.score_one({"a": 0.52, "b": 0.5})
    True

    The batch path scores each row before learning it, exactly as the per-event calls:

    >>> rows = np.random.default_rng(0).random((30, 2))
    >>> twin = HalfSpaceTrees(("a", "b"), n_trees=5, height=4, window_size=10, seed=1)
    >>> batch = twin.score_learn_many(rows)
    >>> single = HalfSpaceTrees(("a", "b"), n_trees=5, height=4, window_size=10, seed=1)
    >>> one_by_one = []
    >>> for a, b in rows:
    ...     one_by_one.append(single.score_one({"a": a, "b": b}))
    ...     single.learn_one({"a": a, "b": b})
    >>> bool(np.array_equal(batch, one_by_one)), float(batch[:10].max())
    (True, 0.0)
    """

    feature_names: tuple[str, ...]
    name: str

    def __init__(
        self,
        feature_names: Sequence[str],
        *,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 0,
        scoring: Scoring = "river",
        limits: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self._configure(feature_names, n_trees, height, window_size, seed, scoring, limits)
        self._adopt(*self._build_trees())

    # -- construction -------------------------------------------------------------------

    def _configure(
        self,
        feature_names: Sequence[str],
        n_trees: int,
        height: int,
        window_size: int,
        seed: int,
        scoring: Scoring,
        limits: Mapping[str, tuple[float, float]] | None,
    ) -> None:
        names = tuple(feature_names)
        if not names:
            raise ValueError("feature_names must not be empty")
        if len(set(names)) != len(names):
            raise ValueError("feature_names must be unique")
        if len(names) > kernels.MAX_FEATURES:
            raise ValueError(f"at most {kernels.MAX_FEATURES} features")
        if n_trees < 1 or height < 1 or window_size < 1:
            raise ValueError("n_trees, height and window_size must be >= 1")
        if window_size > kernels.MAX_WINDOW:
            # Masses are 16-bit counters, which is what keeps a node in 16 bytes.
            raise ValueError(f"window_size must be <= {kernels.MAX_WINDOW}")
        if scoring not in ("river", "paper"):
            raise ValueError(f"scoring must be 'river' or 'paper', not {scoring!r}")
        unknown = set(limits or {}) - set(names)
        if unknown:
            raise ValueError(f"limits for unknown features: {sorted(unknown)}")
        bounds: dict[str, tuple[float, float]] = {}
        for feature in names:
            low, high = (limits or {}).get(feature, (0.0, 1.0))
            if not (math.isfinite(low) and math.isfinite(high) and high > low):
                raise ValueError(f"limits of {feature!r} must be finite with high > low")
            bounds[feature] = (float(low), float(high))
        self.feature_names = names
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.scoring: Scoring = scoring
        self.limits = bounds
        self.name = "hst/1" if scoring == "river" else "hst-paper/1"
        # river stops a walk at r_mass < 0.1 * window_size (the paper's magic constant);
        # masses are integers, so that is r_mass < ceil(0.1 * window_size).
        self._open_at = math.ceil(0.1 * window_size)
        self._n_nodes = 2 ** (height + 1) - 1

    def _build_trees(self) -> tuple[npt.NDArray[Any], FloatArray]:
        # river builds its trees at the first learn_one from sorted(x): the population
        # order of rng.choices is the sorted feature names, whatever our column order.
        order = sorted(self.feature_names)
        column = {name: i for i, name in enumerate(self.feature_names)}
        n_draws = 2 * (2**self.height - 1) * self.n_trees
        uniforms = python_random_uniforms(self.seed, n_draws)
        feature, threshold = kernels.build_trees(
            uniforms,
            np.array([self.limits[name][0] for name in order], dtype=np.float64),
            np.array([self.limits[name][1] for name in order], dtype=np.float64),
            np.array([column[name] for name in order], dtype=np.int64),
            self.n_trees,
            self.height,
            _PADDING,
        )
        return feature, threshold

    def _adopt(
        self,
        feature: npt.NDArray[Any],
        threshold: FloatArray,
        l_mass: npt.NDArray[Any] | None = None,
        r_mass: npt.NDArray[Any] | None = None,
        counter: int = 0,
        first_window: bool = True,
    ) -> None:
        self._nodes = _aligned_nodes(self.n_trees, self._n_nodes + 1)
        heap = self._nodes[:, 1:]  # the 0-based heap view of the 1-based storage
        heap["threshold"] = threshold
        heap["feature"] = feature
        # Every stamp at the current generation (0): cnt is l_mass and prev is r_mass.
        heap["cnt"] = 0 if l_mass is None else l_mass
        heap["prev"] = 0 if r_mass is None else r_mass
        self._nodes[:, 0]["feature"] = -1
        # Rows and parking places of the current and previous window (lazy descent); an
        # imported state has its masses complete, so nothing is parked (node 0).
        self._park = np.zeros((2, self.n_trees, self.window_size), dtype=np.int32)
        self._window = np.zeros((2, self.window_size, len(self.feature_names)), dtype=np.float64)
        self._clock = np.array([0, counter, int(first_window), self.height], dtype=np.int64)
        self._one = np.empty(1, dtype=np.float64)

    @classmethod
    def from_river(
        cls,
        model: Any,
        feature_names: Sequence[str] | None = None,
        *,
        scoring: Scoring = "river",
    ) -> HalfSpaceTrees:
        """A copy of a river ``HalfSpaceTrees`` that has learned at least one event.

        Splits, masses, the window counter and the warm-up flag are copied, so the copy
        continues exactly where ``model`` is. ``feature_names`` defaults to the sorted
        names river built its trees from.
        """
        if not model.trees:
            raise ValueError("the river model has no trees yet: learn one event first")
        names = tuple(sorted(model.limits)) if feature_names is None else tuple(feature_names)
        limits = {name: model.limits[name] for name in names if name in model.limits}
        self = cls.__new__(cls)
        self._configure(
            names,
            model.n_trees,
            model.height,
            model.window_size,
            0 if model.seed is None else int(model.seed),
            scoring,
            limits,
        )
        shape = (self.n_trees, self._n_nodes)
        feature = np.full(shape, -1, dtype=np.int32)
        threshold = np.full(shape, np.nan, dtype=np.float64)
        l_mass = np.zeros(shape, dtype=np.int64)
        r_mass = np.zeros(shape, dtype=np.int64)
        column = {name: i for i, name in enumerate(names)}
        for t, root in enumerate(model.trees):
            stack = [(root, 0)]
            while stack:
                node, k = stack.pop()
                l_mass[t, k] = node.l_mass
                r_mass[t, k] = node.r_mass
                children = getattr(node, "children", ())
                if children:
                    if node.feature not in column:
                        raise ValueError(f"river splits on {node.feature!r}, not a feature")
                    feature[t, k] = column[node.feature]
                    threshold[t, k] = node.threshold
                    stack.append((children[0], 2 * k + 1))
                    stack.append((children[1], 2 * k + 2))
        self._adopt(
            feature, threshold, l_mass, r_mass, int(model.counter), bool(model._first_window)
        )
        return self

    # -- state views ---------------------------------------------------------------------

    @property
    def split_feature(self) -> npt.NDArray[np.int16]:
        """Column index of each node's split feature (-1 at the leaves), heap layout."""
        return np.array(self._nodes[:, 1:]["feature"])

    @property
    def split_value(self) -> FloatArray:
        """Each node's threshold: ``value < threshold`` goes left (NaN at the leaves)."""
        return np.array(self._nodes[:, 1:]["threshold"])

    def _masses(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        shape = (self.n_trees, self._n_nodes + 1)
        l_mass = np.zeros(shape, dtype=np.int32)
        r_mass = np.zeros(shape, dtype=np.int32)
        kernels.materialise(
            self._nodes,
            self._park,
            self._window,
            self._clock,
            self.window_size,
            self.height,
            l_mass,
            r_mass,
        )
        return l_mass[:, 1:], r_mass[:, 1:]

    @property
    def l_mass(self) -> npt.NDArray[np.int32]:
        """Mass of the current (latest) window per node, heap layout, a fresh array."""
        return self._masses()[0]

    @property
    def r_mass(self) -> npt.NDArray[np.int32]:
        """Reference mass (the last complete window) per node, heap layout, a fresh array."""
        return self._masses()[1]

    @property
    def counter(self) -> int:
        """Events learned in the current window."""
        return int(self._clock[kernels.COUNTER])

    @property
    def windows_completed(self) -> int:
        """Window swaps so far: the reference mass changes only when this does."""
        return int(self._clock[kernels.GEN])

    @property
    def first_window(self) -> bool:
        """True until the first window swap: scores are 0 until then."""
        return bool(self._clock[kernels.FIRST_WINDOW])

    # -- the detector protocol ---------------------------------------------------------

    def _row(self, x: Features) -> FloatArray:
        values = [_NAN if (v := x.get(name)) is None else v for name in self.feature_names]
        return np.array([values], dtype=np.float64)

    def _rows(self, rows: FloatArray) -> FloatArray:
        array = np.ascontiguousarray(rows, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != len(self.feature_names):
            raise ValueError(
                f"rows must have shape (n, {len(self.feature_names)}), not {array.shape}"
            )
        return array

    def _run(self, rows: FloatArray, out: FloatArray, *, score: bool, learn: bool) -> None:
        kernels.run_rows(
            rows,
            self._nodes,
            self._park,
            self._window,
            self._clock,
            self.window_size,
            self.height,
            self._open_at,
            self.scoring == "paper",
            score,
            learn,
            out,
        )

    def score_one(self, x: Features) -> float:
        self._run(self._row(x), self._one, score=True, learn=False)
        return float(self._one[0])

    def learn_one(self, x: Features) -> None:
        self._run(self._row(x), self._one, score=False, learn=True)

    def score_learn_one(self, x: Features) -> float:
        """``score_one(x)`` then ``learn_one(x)`` in a single walk."""
        self._run(self._row(x), self._one, score=True, learn=True)
        return float(self._one[0])

    def score_many(self, rows: FloatArray) -> FloatArray:
        """Scores of each row against the current state; nothing is learned."""
        array = self._rows(rows)
        out = np.empty(array.shape[0], dtype=np.float64)
        self._run(array, out, score=True, learn=False)
        return out

    def learn_many(self, rows: FloatArray) -> None:
        self._run(self._rows(rows), self._one, score=False, learn=True)

    def score_learn_many(self, rows: FloatArray) -> FloatArray:
        """Score each row, then learn it, in order: the per-event semantics, batched."""
        array = self._rows(rows)
        out = np.empty(array.shape[0], dtype=np.float64)
        self._run(array, out, score=True, learn=True)
        return out

    # -- pickling ------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # The lazy bookkeeping is materialised into plain l_mass/r_mass arrays, and only
        # the internal nodes' splits are kept (the leaves, half the nodes, have none).
        l_mass, r_mass = self._masses()
        internal = 2**self.height - 1
        return {
            "config": (
                self.feature_names,
                self.n_trees,
                self.height,
                self.window_size,
                self.seed,
                self.scoring,
                self.limits,
            ),
            "feature": self.split_feature[:, :internal].copy(),
            "threshold": self.split_value[:, :internal].copy(),
            "l_mass": l_mass.astype(np.uint16),
            "r_mass": r_mass.astype(np.uint16),
            "counter": self.counter,
            "first_window": self.first_window,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._configure(*state["config"])
        shape = (self.n_trees, self._n_nodes)
        internal = state["feature"].shape[1]
        feature = np.full(shape, -1, dtype=np.int16)
        threshold = np.full(shape, np.nan, dtype=np.float64)
        feature[:, :internal] = state["feature"]
        threshold[:, :internal] = state["threshold"]
        self._adopt(
            feature,
            threshold,
            state["l_mass"],
            state["r_mass"],
            state["counter"],
            state["first_window"],
        )


def _aligned_nodes(n_trees: int, width: int) -> npt.NDArray[np.void]:
    """Zeroed node records whose rows start on 64-byte cache-line boundaries.

    ``width`` is a power of two, so with 16-byte records every row (tree) is a whole number
    of lines and siblings ``2k``, ``2k + 1`` never straddle two lines.
    """
    size = n_trees * width * kernels.NODE.itemsize
    raw = np.zeros(size + 64, dtype=np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset : offset + size].view(kernels.NODE).reshape(n_trees, width)
