"""The scoring step: features, one detector per event type, threshold, explanation.

Pure and deterministic: the same events in the same order give the same results, however
they are cut into batches. Each event is scored before it is learned. Scoring,
thresholding and explanation keep separate state so later stages (pattern grouping,
precision tuning) can replace any one of them.

A batch is scored in three passes: features event by event (entity state is sequential),
then each event type's rows through its detector in one vectorised ``score_learn_many``
(types never share a detector, so this keeps the per-event order within a model), then
thresholds and explanations event by event.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from detectors.explain import DeviationExplainer, Reason
from detectors.explain_forest import isolation_reasons
from detectors.explain_hst import PathExplainer
from detectors.features import FEATURE_SPECS, FeatureExtractor, FeatureSpec
from detectors.hst import HalfSpaceTrees
from detectors.iforest import FlatForest, IsolationForestASD
from detectors.protect import Protected, score_learn_except
from detectors.protocol import Detector
from detectors.river_hst import RiverHalfSpaceTrees
from detectors.threshold import QuantileThreshold

Engine = Literal["hst", "river-hst", "iforest", "ensemble"]
ENGINES: tuple[Engine, ...] = ("hst", "river-hst", "iforest", "ensemble")
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
    warmup: int = 300
    max_keys: int = 1_000_000
    explain_top: int = 3
    # Do not learn events scoring above this (poisoning protection); None learns all.
    protect_above: float | None = None


@dataclass(frozen=True, slots=True)
class Scored:
    """What the scoring step says about one event."""

    event_type: str
    score: float
    threshold: float
    is_anomaly: bool
    detector: str
    features: dict[str, float]
    reasons: tuple[Reason, ...]


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


class _TypeModel:
    """Detector, threshold and explainer for one event type."""

    def __init__(
        self, specs: tuple[FeatureSpec, ...], detector: Detector, config: ScoringConfig
    ) -> None:
        self.specs = specs
        self.detector = detector
        self.threshold = QuantileThreshold(config.quantile, config.warmup)
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

    def judge(
        self, event_type: str, raw: dict[str, float], row: list[float], score: float, top: int
    ) -> Scored:
        """Threshold, explanation and the explainer's learning, for one scored event."""
        threshold = self.threshold.value
        is_anomaly = self.threshold.observe(score)
        reasons = self.reasons(raw, row, top) if is_anomaly else ()
        self.explainer.learn_one(raw)
        return Scored(
            event_type=event_type,
            score=score,
            threshold=threshold,
            is_anomaly=is_anomaly,
            detector=self.detector.name,
            features=raw,
            reasons=reasons,
        )

    def reasons(self, raw: Mapping[str, float], row: list[float], top: int) -> tuple[Reason, ...]:
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

    def row(self, raw: Mapping[str, float]) -> list[float]:
        return [spec.squash(raw[spec.name]) for spec in self.specs]


class EventScorer:
    """Scores validated events, one model per event type, created on first sight."""

    def __init__(
        self, config: ScoringConfig | None = None, factory: DetectorFactory | None = None
    ) -> None:
        self.config = config or ScoringConfig()
        self._factory = factory or EngineFactory(self.config)
        self.features = FeatureExtractor(self.config.max_keys)
        self._models: dict[str, _TypeModel] = {}

    def _model(self, event_type: str) -> _TypeModel:
        model = self._models.get(event_type)
        if model is None:
            specs = FEATURE_SPECS[event_type]
            seed = stable_seed(self.config.seed, event_type)
            detector = self._factory(tuple(s.name for s in specs), seed)
            model = _TypeModel(specs, detector, self.config)
            self._models[event_type] = model
        return model

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
        raw_of: dict[int, dict[str, float]] = {}
        rows_by_type: dict[str, list[list[float]]] = {}
        index_by_type: dict[str, list[int]] = {}
        for i, event in enumerate(events):
            try:
                features = self.features.extract(event)
                event_type: str = event["event_type"]
                row = self._model(event_type).row(features)
            except Exception as exc:  # the caller dead-letters it; the batch goes on
                results[i] = Unscorable(f"{type(exc).__name__}: {exc}")
                continue
            rows_by_type.setdefault(event_type, []).append(row)
            index_by_type.setdefault(event_type, []).append(i)
            raw_of[i] = features

        # Types never share state, so each type's events can run on their own, in order.
        for event_type, rows in rows_by_type.items():
            model = self._models[event_type]
            indices = index_by_type[event_type]
            array = np.asarray(rows, dtype=np.float64)
            skip = None if exclude is None else [bool(exclude[i]) for i in indices]
            for start, stop in model.chunks(len(rows)):
                model.before_chunk()
                scores = model.score_learn(
                    array[start:stop], None if skip is None else skip[start:stop]
                )
                for j, score in zip(range(start, stop), scores, strict=True):
                    i = indices[j]
                    results[i] = model.judge(
                        event_type, raw_of[i], rows[j], float(score), self.config.explain_top
                    )
        return [r for r in results if r is not None]
