"""The scoring step: features, one detector per event type, threshold, explanation.

Pure and deterministic: the same events in the same order give the same results, however
they are cut into batches. Each event is scored before it is learned. Scoring,
thresholding and explanation keep separate state so later stages (pattern grouping,
precision tuning) can replace any one of them.

A batch is scored in three passes: features event by event (entity state is sequential;
``detectors/feature_rows.py``, compiled), then each event type's rows, squashed as one
array, through its detector in one vectorised ``score_learn_many`` (types never share a
detector, so this keeps the per-event order within a model), then thresholds and
explanations per chunk of a type (``_TypeModel.judge_chunk``: the same per-event order,
with the explainer learning in blocks between the alerts it explains).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from detectors.arrival_tracker import DEFAULT_KINDS as DEFAULT_ARRIVAL_KINDS
from detectors.arrival_tracker import ArrivalTracker
from detectors.explain import DeviationExplainer, Reason
from detectors.explain_forest import isolation_reasons
from detectors.explain_hst import PathExplainer
from detectors.feature_rows import extract_rows
from detectors.features import FEATURE_SPECS, FeatureExtractor, FeatureSpec
from detectors.hst import HalfSpaceTrees
from detectors.iforest import FlatForest, IsolationForestASD
from detectors.protect import Protected, score_learn_except
from detectors.protocol import Detector, FloatArray
from detectors.river_hst import RiverHalfSpaceTrees
from detectors.threshold import QuantileThreshold

Engine = Literal["hst", "river-hst", "iforest", "ensemble"]
ENGINES: tuple[Engine, ...] = ("hst", "river-hst", "iforest", "ensemble")
COHORT_SEPARATOR = "|"
NEW_ACCOUNTS = "new_account"
DetectorFactory = Callable[[tuple[str, ...], int], Detector]


@dataclass(frozen=True)
class ScoringConfig:
    """Detector and threshold settings shared by every event type."""

    engine: Engine = "hst"
    n_trees: int = 10
    height: int = 8
    window_size: int = 250
    seed: int = 42
    quantile: float = 0.995
    # Events above this quantile (and every alert) are *suspicious*: they go to the pattern
    # stage as anomalous observations. Patterns need many of them sharing a value, so they
    # can afford a looser bar than an event alert sent to a human. None, or a bar above
    # ``quantile``: alerts only.
    suspicious_quantile: float | None = 0.98
    warmup: int = 300
    max_keys: int = 1_000_000
    explain_top: int = 3
    # Do not learn events scoring above this (poisoning protection); None learns all.
    protect_above: float | None = None
    # Cold start by cohort: events of accounts younger than this are scored by a model of
    # their own cohort (per event type), not against established accounts. None: off.
    cohort_age_h: float | None = None
    # Kinds of attribute values whose arriving users are tracked for the arrival-burst
    # patterns (detectors/arrivals.py); empty: none.
    arrival_kinds: tuple[str, ...] = DEFAULT_ARRIVAL_KINDS

    def __post_init__(self) -> None:
        bar = self.suspicious_quantile
        if bar is not None and not 0.0 < bar < 1.0:
            raise ValueError(f"suspicious_quantile must be within (0, 1), got {bar}")


class Scored(msgspec.Struct, frozen=True, gc=False):
    """What the scoring step says about one event.

    A msgspec Struct rather than a frozen dataclass: one is made for every event, and a
    frozen dataclass's ``__init__`` (an ``object.__setattr__`` per field) cost about a
    microsecond of it, the Struct's C constructor under a tenth of that. ``gc=False``: it
    refers to no container that could refer back to it, so it never needs collecting.
    """

    event_type: str
    score: float
    threshold: float
    is_anomaly: bool
    detector: str
    features: dict[str, float]
    reasons: tuple[Reason, ...]
    # An alert, or above the looser pattern bar (``ScoringConfig.suspicious_quantile``).
    is_suspicious: bool = False
    # The device, /24, title... values the acting user arrives at (detectors/arrivals.py).
    arrivals: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Unscorable:
    """An event the scorer could not turn into features (a contract gap or a bug)."""

    detail: str


def stable_seed(base: int, label: str) -> int:
    """A seed per event type that does not depend on Python's randomised ``hash``."""
    return (base * 1_000_003 + zlib.crc32(label.encode())) % (2**31)


@dataclass(frozen=True)
class EngineFactory:
    """Makes the configured detector for one event type (picklable, unlike a closure)."""

    config: ScoringConfig

    def __call__(self, feature_names: tuple[str, ...], seed: int) -> Detector:
        detector = self._make(feature_names, seed)
        if self.config.protect_above is not None:
            return Protected(detector, self.config.protect_above)
        return detector

    def _make(self, feature_names: tuple[str, ...], seed: int) -> Detector:
        c = self.config
        if c.engine in ("hst", "river-hst"):
            # Same constructor: ours and river's are interchangeable by design.
            kind = HalfSpaceTrees if c.engine == "hst" else RiverHalfSpaceTrees
            return kind(
                feature_names,
                n_trees=c.n_trees,
                height=c.height,
                window_size=c.window_size,
                seed=seed,
            )
        if c.engine in ("iforest", "ensemble"):
            from detectors.iforest import IsolationForestASD

            forest = IsolationForestASD(feature_names, seed=seed)
            if c.engine == "iforest":
                return forest
            from detectors.ensemble import RankEnsemble

            trees = HalfSpaceTrees(
                feature_names,
                n_trees=c.n_trees,
                height=c.height,
                window_size=c.window_size,
                seed=seed,
            )
            return RankEnsemble([trees, forest])
        raise ValueError(f"unknown engine {c.engine!r}; known: {', '.join(ENGINES)}")


@dataclass(frozen=True)
class _Layout:
    """How a type's feature dict becomes a row: derived from its specs, never pickled
    (snapshots of a ``_TypeModel`` keep the attributes they always had)."""

    values: Callable[[Mapping[str, float]], tuple[float, ...]]
    scales: FloatArray  # 1.0 for flags (their column is taken from the clipped value)
    is_flag: npt.NDArray[np.bool_]


@functools.cache
def _layout(specs: tuple[FeatureSpec, ...]) -> _Layout:
    names = tuple(s.name for s in specs)
    # A tuple for one feature too (a bare itemgetter would return the value itself).
    getter = itemgetter(*names) if len(names) > 1 else lambda raw: (raw[names[0]],)
    return _Layout(
        values=getter,
        scales=np.array([1.0 if s.scale is None else s.scale for s in specs]),
        is_flag=np.array([s.scale is None for s in specs]),
    )


class _TypeModel:
    """Detector, threshold and explainer for one event type."""

    def __init__(
        self, specs: tuple[FeatureSpec, ...], detector: Detector, config: ScoringConfig
    ) -> None:
        self.specs = specs
        self.detector = detector
        self.threshold = QuantileThreshold(config.quantile, config.warmup)
        bar = config.suspicious_quantile
        self.suspicion = None if bar is None else QuantileThreshold(bar, config.warmup)
        self.explainer = DeviationExplainer(tuple(s.name for s in specs))
        self.paths = PathExplainer()
        self.forest_in_force: FlatForest | None = None

    @property
    def _trees(self) -> HalfSpaceTrees | None:
        inner = self.detector.inner if isinstance(self.detector, Protected) else self.detector
        return inner if isinstance(inner, HalfSpaceTrees) else None

    @property
    def _forest(self) -> IsolationForestASD | None:
        inner = self.detector.inner if isinstance(self.detector, Protected) else self.detector
        return inner if isinstance(inner, IsolationForestASD) else None

    def chunks(self, n: int) -> Iterator[tuple[int, int]]:
        """Cut ``n`` rows where the model changes (a Half-Space Trees window swap, a forest
        refit), so every row is explained with the model that scored it. Lazy: each cut
        is decided after the previous chunk was learned."""
        start = 0
        while start < n:
            stop = start + max(1, min(self._rows_until_change(n - start), n - start))
            yield start, stop
            start = stop

    def _rows_until_change(self, remaining: int) -> int:
        trees, forest = self._trees, self._forest
        if trees is not None:
            return trees.window_size - trees.counter
        if forest is not None:
            return forest.rows_until_model_change() or remaining
        return remaining

    def before_chunk(self) -> None:
        trees, forest = self._trees, self._forest
        if trees is not None:
            self.paths.snapshot(trees)
        if forest is not None:
            self.forest_in_force = forest.forest

    def judge_chunk(
        self,
        event_type: str,
        raws: Sequence[dict[str, float]],
        values: FloatArray,
        rows: FloatArray,
        scores: list[float],
        top: int,
        arrivals: Sequence[tuple[str, ...]],
    ) -> list[Scored]:
        """Threshold, explanation and the explainer's learning for scored events in order.

        Per event this is: the threshold in force, then the score learned by it; if it
        alerts, the reasons (against the explainer as it was before this event); then the
        explainer learns the event. Thresholds and the explainer never read each other, so
        the thresholds run first for the whole chunk, and the explainer learns in blocks,
        up to each alert, before its reasons are read.
        """
        thresholds, flags = self.threshold.observe_many(scores)
        suspicious = flags if self.suspicion is None else self.suspicion.observe_many(scores)[1]
        detector = self.detector.name
        learned = 0
        judged: list[Scored] = []
        for k, is_anomaly in enumerate(flags):
            reasons: tuple[Reason, ...] = ()
            is_suspicious = is_anomaly or suspicious[k]
            if is_suspicious:  # the pattern stage wants the reasons of its events too
                self.explainer.learn_many(values[learned:k])
                learned = k
                reasons = self.reasons(raws[k], rows[k], top)
            judged.append(
                Scored(
                    event_type=event_type,
                    score=scores[k],
                    threshold=thresholds[k],
                    is_anomaly=is_anomaly,
                    detector=detector,
                    features=raws[k],
                    reasons=reasons,
                    is_suspicious=is_suspicious,
                    arrivals=arrivals[k],
                )
            )
        self.explainer.learn_many(values[learned:])
        return judged

    def reasons(self, raw: Mapping[str, float], row: FloatArray, top: int) -> tuple[Reason, ...]:
        """Half-Space Trees: the splits along the event's low-mass path; other detectors:
        the features furthest from their running mean."""
        baseline = self.explainer.baseline
        if self.forest_in_force is not None and self._forest is not None:
            found = isolation_reasons(
                self.forest_in_force,
                np.asarray(row, dtype=np.float64),
                self._forest.feature_names,
                top,
            )
            return tuple(
                Reason(r.feature, raw[r.feature], baseline(r.feature), r.direction, r.contribution)
                for r in found
            )
        trees = self._trees
        if trees is None:
            return tuple(self.explainer.explain(raw, top))
        credits = self.paths.explain(trees, np.asarray(row, dtype=np.float64), top)
        return tuple(
            Reason(
                c.feature, raw[c.feature], self.explainer.baseline(c.feature), c.direction, c.credit
            )
            for c in credits
        )

    def score_learn(self, rows: np.ndarray, exclude: Sequence[bool] | None) -> np.ndarray:
        if isinstance(self.detector, Protected):
            return self.detector.score_learn_many(rows, exclude)
        return score_learn_except(self.detector, rows, exclude)

    @property
    def values(self) -> Callable[[Mapping[str, float]], tuple[float, ...]]:
        """Gives the features of a feature dict in the model's order (KeyError if one is
        missing)."""
        return _layout(self.specs).values

    def squash(self, values: FloatArray) -> FloatArray:
        """``FeatureSpec.squash`` on every cell of an (events, features) array, with the
        same IEEE operations: ``max(v, 0)`` keeps ``v`` unless ``0 > v`` (so NaN and -0.0
        stay), ``min(v, 1)`` keeps ``v`` unless ``1 < v``."""
        layout = _layout(self.specs)
        clipped = np.where(values < 0.0, 0.0, values)
        with np.errstate(invalid="ignore", divide="ignore"):  # inf / inf is NaN, as in Python
            scaled = clipped / (clipped + layout.scales)
        flags = np.where(clipped > 1.0, 1.0, clipped)
        return np.where(layout.is_flag, flags, scaled)


class EventScorer:
    """Scores validated events, one model per event type, created on first sight."""

    def __init__(
        self, config: ScoringConfig | None = None, factory: DetectorFactory | None = None
    ) -> None:
        self.config = config or ScoringConfig()
        self._factory = factory or EngineFactory(self.config)
        self.features = FeatureExtractor(self.config.max_keys)
        self.arrivals = ArrivalTracker(self.config.arrival_kinds, max_keys=self.config.max_keys)
        self._models: dict[str, _TypeModel] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "arrivals" not in state:  # a checkpoint from before arrival tracking
            kinds = getattr(self.config, "arrival_kinds", DEFAULT_ARRIVAL_KINDS)
            self.arrivals = ArrivalTracker(kinds, max_keys=self.config.max_keys)

    def drop_observation_work(self) -> None:
        """Stop the work whose only reader is the observations topic: the pattern bar (its
        threshold, and the reasons of the events above it only) and arrival tracking. For
        a replay, which writes alerts only, of a scorer restored from a live service's
        snapshot: neither feeds alerts, which stay the same, and the replay runs faster
        (a replay's own scorers are made without them, ``stream.replay.replay_settings``)."""
        self.config = dataclasses.replace(self.config, suspicious_quantile=None, arrival_kinds=())
        self.arrivals = ArrivalTracker((), max_keys=self.config.max_keys)
        for model in self._models.values():
            model.suspicion = None

    def _model(self, key: str) -> _TypeModel:
        """The model of ``key``: an event type, or an event type and cohort."""
        model = self._models.get(key)
        if model is None:
            specs = FEATURE_SPECS[key.partition(COHORT_SEPARATOR)[0]]
            seed = stable_seed(self.config.seed, key)
            detector = self._factory(tuple(s.name for s in specs), seed)
            model = _TypeModel(specs, detector, self.config)
            self._models[key] = model
        return model

    def _row_of(self, event_type: str) -> Callable[[Mapping[str, float]], tuple[float, ...]]:
        return self._model(event_type).values

    def _key(self, event_type: str, features: Mapping[str, float]) -> str:
        limit = self.config.cohort_age_h
        if limit is not None and features["user_age_h"] < limit:
            return event_type + COHORT_SEPARATOR + NEW_ACCOUNTS
        return event_type

    def score(self, event: Mapping[str, Any]) -> Scored:
        """Score one event; raises ``ValueError`` if it cannot be scored."""
        (result,) = self.score_batch([event])
        if isinstance(result, Unscorable):
            raise ValueError(result.detail)
        return result

    def score_batch(
        self, events: Sequence[Mapping[str, Any]], exclude: Sequence[bool] | None = None
    ) -> list[Scored | Unscorable]:
        """Score ``events`` in order; identical to scoring them one by one.

        ``exclude[i]`` keeps event ``i`` out of its detector's learning (it is still
        scored, and its entities' feature state still updated): the learning guard for
        events of open patterns or of entities labeled as fraud.
        """
        results: list[Scored | Unscorable | None] = [None] * len(events)
        batch = extract_rows(
            self.features,
            self.arrivals if self.arrivals.kinds else None,
            events,
            self._row_of,
            self._key if self.config.cohort_age_h is not None else None,
        )
        for i, detail in batch.failures.items():  # the caller dead-letters them
            results[i] = Unscorable(detail)

        # Models never share state, so each model's events can run on their own, in order.
        top = self.config.explain_top
        for key, group in batch.by_model.items():
            raws, rows, indices = group.raws, group.rows, group.indices
            model = self._model(key)
            event_type = key.partition(COHORT_SEPARATOR)[0]
            # fromiter over the flattened rows: np.array on a list of tuples inspects each
            # tuple for its shape and type first, and took about half as long again.
            width = len(model.specs)
            matrix = np.fromiter(
                chain.from_iterable(rows), np.float64, count=len(rows) * width
            ).reshape(len(rows), width)
            array = model.squash(matrix)
            skip = None if exclude is None else [bool(exclude[i]) for i in indices]
            for start, stop in model.chunks(len(indices)):
                model.before_chunk()
                scores = model.score_learn(
                    array[start:stop], None if skip is None else skip[start:stop]
                )
                judged = model.judge_chunk(
                    event_type,
                    raws[start:stop],
                    matrix[start:stop],
                    array[start:stop],
                    np.asarray(scores, dtype=np.float64).tolist(),
                    top,
                    [batch.arrivals[i] for i in indices[start:stop]],
                )
                for i, scored in zip(indices[start:stop], judged, strict=True):
                    results[i] = scored
        return [r for r in results if r is not None]


def warm_up(config: ScoringConfig, factory: DetectorFactory | None = None) -> None:
    """Load the compiled kernels of ``config``'s engine now.

    numba loads a kernel from its on-disk cache at the kernel's first call, and the first
    load of all initialises numba itself: about 0.3 s, which otherwise falls inside the
    first batch (a readiness delay live, a stall in every forked replay worker). This runs
    a throwaway model through every step a batch takes (the detector, its explanation, the
    explainer's learning) on made-up rows; no state outside the throwaway is touched.
    """
    if config.engine == "river-hst":
        return  # nothing compiled; river builds its trees in Python, seconds at 25/15
    scorer = EventScorer(config, factory)
    model = scorer._model(next(iter(FEATURE_SPECS)))
    names = [spec.name for spec in model.specs]
    rows = np.full((2, len(names)), 0.5)
    for chunk in (rows, rows[:1]):  # a batch, and one event (its own path in HST)
        model.before_chunk()
        model.score_learn(chunk, None)
        model.explainer.learn_many(chunk)
        model.reasons(dict.fromkeys(names, 0.5), chunk[0], config.explain_top)
