"""Pure helpers to benchmark detectors on labeled data: stream order, scaling, the
score-before-learn stream loop, and ranking metrics.

Nothing here reads files or prints; ``stream.bench_quality`` does the I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt

from detectors.ensemble import CausalRank
from detectors.protocol import Detector, FloatArray

Order = Literal["original", "shuffled"]
IndexArray = npt.NDArray[np.int64]
DetectorFactory = Callable[[tuple[str, ...], int], Detector]


def stream_order(n_rows: int, order: Order, seed: int) -> IndexArray:
    """Row indices in streaming order: as stored, or a permutation seeded by ``seed``.

    >>> stream_order(5, "original", 0).tolist()
    [0, 1, 2, 3, 4]
    >>> sorted(stream_order(5, "shuffled", 0).tolist())
    [0, 1, 2, 3, 4]
    """
    if order == "original":
        return np.arange(n_rows, dtype=np.int64)
    if order == "shuffled":
        return np.random.default_rng(seed).permutation(n_rows).astype(np.int64)
    raise ValueError(f"order must be 'original' or 'shuffled', got {order!r}")


def minmax_scale(
    x: npt.ArrayLike, lows: npt.ArrayLike | None = None, highs: npt.ArrayLike | None = None
) -> FloatArray:
    """Scale each column into [0, 1] with known ranges (default: the data's own min and
    max, "feature ranges given up front" as in the published HST protocol). A constant
    column maps to 0.

    >>> minmax_scale([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]]).tolist()
    [[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]]
    """
    data = np.asarray(x, dtype=np.float64)
    lo = np.nanmin(data, axis=0) if lows is None else np.asarray(lows, dtype=np.float64)
    hi = np.nanmax(data, axis=0) if highs is None else np.asarray(highs, dtype=np.float64)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.clip((data - lo) / span, 0.0, 1.0)


def robust_scale(x: npt.ArrayLike) -> FloatArray:
    """Centre each column on its median and divide by its interquartile range (1 when the
    IQR is 0): for detectors that are not scale-free and do not need a box.

    >>> robust_scale([[1.0], [2.0], [3.0], [100.0]]).ravel().round(2).tolist()
    [-0.06, -0.02, 0.02, 3.82]
    """
    data = np.asarray(x, dtype=np.float64)
    q1, median, q3 = np.nanpercentile(data, [25.0, 50.0, 75.0], axis=0)
    iqr = np.where(q3 > q1, q3 - q1, 1.0)
    return np.asarray((data - median) / iqr, dtype=np.float64)


def stream_scores(
    detector_factory: DetectorFactory,
    x: FloatArray,
    order: Order,
    seed: int,
    batch_size: int = 100,
    *,
    max_rows: int | None = None,
    time_budget: float | None = None,
    feature_names: tuple[str, ...] | None = None,
    learn_first: bool = False,
) -> tuple[FloatArray, float]:
    """Stream the rows of ``x`` through a fresh detector, each row scored before it is learned.

    Rows arrive in ``stream_order(len(x), order, seed)``, cut to ``max_rows``; the
    detector is built with ``seed``. A detector with ``score_learn_many`` gets each batch
    through it; otherwise a batch is ``score_many`` then ``learn_many`` (the protocol's
    batch path). ``learn_first`` learns each batch before scoring it instead: the protocol
    of the published Online Isolation Forest comparison, easier than ours as a row can be
    in the model that scores it. Streaming stops after the batch that exhausts
    ``time_budget`` seconds.
    Returns the scores in streaming order (score ``k`` belongs to the ``k``-th streamed
    row) and the seconds spent inside the detector.

    >>> from detectors.iforest import IsolationForestASD
    >>> x = np.random.default_rng(0).normal(size=(300, 2))
    >>> make = lambda names, seed: IsolationForestASD(names, n_trees=10, warmup=32, seed=seed)
    >>> scores, seconds = stream_scores(make, x, "shuffled", seed=0, batch_size=50)
    >>> scores.shape, bool((scores[:32] == 0).all() and (scores[32:] > 0).all())
    ((300,), True)
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    names = feature_names or tuple(f"x{j}" for j in range(x.shape[1]))
    index = stream_order(len(x), order, seed)[:max_rows]
    detector = detector_factory(names, seed)
    score_learn = getattr(detector, "score_learn_many", None)
    parts: list[FloatArray] = []
    spent = 0.0
    for start in range(0, len(index), batch_size):
        rows = np.ascontiguousarray(x[index[start : start + batch_size]], dtype=np.float64)
        began = time.perf_counter()
        if learn_first:
            detector.learn_many(rows)
            scores = detector.score_many(rows)
        elif score_learn is not None:
            scores = np.asarray(score_learn(rows), dtype=np.float64)
        else:
            scores = detector.score_many(rows)
            detector.learn_many(rows)
        spent += time.perf_counter() - began
        parts.append(scores)
        if time_budget is not None and spent >= time_budget:
            break
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
    return out, spent


def causal_rank(scores: npt.ArrayLike, window: int = 2048) -> FloatArray:
    """Each score's rank in [0, 1] among the ``window`` scores before it (ties count
    half; the first score gets 0.5): a streaming normalisation, as each value only
    depends on the past, that puts detectors with different score scales on one scale.

    >>> causal_rank([1.0, 3.0, 2.0, 2.0, 0.0], window=3).tolist()
    [0.5, 1.0, 0.5, 0.5, 0.0]
    """
    ranks = CausalRank(window)
    out = np.empty(np.size(scores), dtype=np.float64)
    for i, value in enumerate(np.asarray(scores, dtype=np.float64).tolist()):
        out[i] = ranks.rank(value)
        ranks.push(value)
    return out


def roc_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count half); scikit-learn's when installed.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.all() or not y.any():
        raise ValueError("ROC AUC needs both classes")
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:  # pragma: no cover - depends on the environment
        return _roc_auc_numpy(y, s)
    return float(roc_auc_score(y, s))


def _roc_auc_numpy(y: npt.NDArray[np.bool_], s: FloatArray) -> float:
    # Mann-Whitney U with mid-ranks for ties.
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    mid = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(mid, ends - starts)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Average precision (area under precision-recall, step-wise as scikit-learn).

    >>> round(average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if not y.any():
        raise ValueError("average precision needs at least one positive")
    try:
        from sklearn.metrics import average_precision_score
    except ImportError:  # pragma: no cover - depends on the environment
        return _average_precision_numpy(y, s)
    return float(average_precision_score(y, s))


def _average_precision_numpy(y: npt.NDArray[np.bool_], s: FloatArray) -> float:
    order = np.argsort(-s, kind="mergesort")
    sorted_s = s[order]
    hits = np.cumsum(y[order])
    # One threshold per distinct score: the last position of each tie group.
    last = np.r_[np.flatnonzero(sorted_s[1:] != sorted_s[:-1]), len(s) - 1]
    tp = hits[last].astype(np.float64)
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
