"""Offline thresholds per (detector, segment): ``precision.tune`` on a replay, with a budget.

``precision.tune`` chooses one segment's threshold from its labels. A replay adds what the
online ``PrecisionThreshold`` has in its state: every scored event of the segment, labeled
or not. That gives the fallback when labels are too few (the alert budget's quantile of the
segment's scores) and the number of alerts each threshold would have raised.

Thresholds here alert on ``score >= threshold`` (as ``tune`` counts), and ``source`` uses
``PrecisionThreshold``'s words: ``labels`` (the target is met), ``labels_unmet`` (enough
labels, but no labeled score meets it: alert only above all of them, and never more than the
budget) or ``budget`` (fewer decisive labels than ``min_labels``).

Pure and deterministic: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from detectors.precision import PrecisionConfig, TuneResult, tune, wilson_lower_bound

TuneSource = Literal["labels", "labels_unmet", "budget"]


@dataclass(frozen=True)
class SegmentTune:
    """The threshold of one (detector, segment) and what the labels say about it.

    ``precision`` and ``recall`` are NaN when no decisive label scores at or above the
    threshold, or no label is true. With reviewers' labels, which only exist for past
    alerts, recall is that of the labeled true positives, not of all attacks.
    """

    detector: str
    segment: str
    threshold: float
    source: TuneSource
    precision: float
    precision_lower_bound: float
    recall: float
    labels: int  # decisive (true or false) labels in the segment
    labels_true: int
    labels_unsure: int
    labels_at_threshold: int  # decisive labels scoring >= threshold
    events: int  # scored events in the segment
    alerts: int  # of them, scoring >= threshold
    result: TuneResult  # the labels' curve and what it alone would choose


def tune_segment(
    detector: str,
    segment: str,
    scores: ArrayLike,
    labels: Mapping[int, bool | None],
    config: PrecisionConfig,
) -> SegmentTune:
    """The threshold of one segment from all its ``scores`` and ``labels`` (index into
    ``scores`` -> verdict, ``None`` unsure; events without a label are left out).

    >>> scores = [0.1, 0.2, 0.3, 0.9, 0.95]
    >>> few = tune_segment("d", "s", scores, {4: True}, PrecisionConfig(budget_quantile=0.5))
    >>> few.source, few.threshold, few.alerts
    ('budget', 0.3, 3)
    >>> labels = {0: False, 1: False, 2: None, 3: True, 4: True}
    >>> config = PrecisionConfig(target=0.3, min_labels=4, min_support=2)
    >>> found = tune_segment("d", "s", scores, labels, config)
    >>> found.source, found.threshold, found.recall, found.labels_unsure
    ('labels', 0.9, 1.0, 1)
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"need a non-empty 1-d array of scores, got shape {values.shape}")
    indices = sorted(labels)
    labeled = values[indices]
    verdicts = [labels[i] for i in indices]
    result = tune(labeled, verdicts, config.target, config.confidence, config.min_support)
    # The budget picks an observed score, so that ``>=`` alerts on about 1 - quantile of them.
    budget = float(np.quantile(values, config.budget_quantile, method="higher"))
    source: TuneSource
    if result.labels < config.min_labels:
        threshold, source = budget, "budget"
    elif result.met:
        threshold, source = result.threshold, "labels"
    else:
        decisive = [s for s, v in zip(labeled, verdicts, strict=True) if v is not None]
        above_all = math.nextafter(max(decisive), math.inf)
        threshold, source = max(above_all, budget), "labels_unmet"
    decisive_true = np.array([v is True for v in verdicts], dtype=bool)
    decisive_any = np.array([v is not None for v in verdicts], dtype=bool)
    at = labeled >= threshold
    n_at = int((at & decisive_any).sum())
    true_at = int((at & decisive_true).sum())
    total_true = int(decisive_true.sum())
    return SegmentTune(
        detector=detector,
        segment=segment,
        threshold=threshold,
        source=source,
        precision=true_at / n_at if n_at else math.nan,
        precision_lower_bound=wilson_lower_bound(true_at, n_at, config.confidence),
        recall=true_at / total_true if total_true else math.nan,
        labels=result.labels,
        labels_true=total_true,
        labels_unsure=result.unsure,
        labels_at_threshold=n_at,
        events=int(values.size),
        alerts=int((values >= threshold).sum()),
        result=result,
    )


def tune_segments(
    keys: Sequence[tuple[str, str]],
    scores: Sequence[float],
    labels: Mapping[int, bool | None],
    config: PrecisionConfig,
) -> list[SegmentTune]:
    """One ``SegmentTune`` per distinct (detector, segment) of ``keys``, sorted by key.

    ``keys[i]`` and ``scores[i]`` describe event ``i``; ``labels`` maps event indices to
    verdicts (``None`` unsure); unlabeled events count for the budget and alert volume only.
    """
    if len(keys) != len(scores):
        raise ValueError(f"need one key per score, got {len(keys)} and {len(scores)}")
    members: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    tuned = []
    for (detector, segment), indices in sorted(members.items()):
        local = {j: labels[i] for j, i in enumerate(indices) if i in labels}
        segment_scores = [scores[i] for i in indices]
        tuned.append(tune_segment(detector, segment, segment_scores, local, config))
    return tuned
