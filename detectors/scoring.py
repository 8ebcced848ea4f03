"""The scoring step: features, one detector per event type, threshold, explanation.

Pure and deterministic: the same events in the same order give the same results. Each
event is scored before it is learned. Scoring, thresholding and explanation keep separate
state so later stages (pattern grouping, precision tuning) can replace any one of them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from detectors.explain import DeviationExplainer, Reason
from detectors.features import FEATURE_SPECS, FeatureExtractor, FeatureSpec
from detectors.protocol import Detector
from detectors.river_hst import RiverHalfSpaceTrees
from detectors.threshold import QuantileThreshold

DetectorFactory = Callable[[tuple[str, ...], int], Detector]


@dataclass(frozen=True)
class ScoringConfig:
    """Detector and threshold settings shared by every event type."""

    n_trees: int = 10
    height: int = 8
    window_size: int = 250
    seed: int = 42
    quantile: float = 0.995
    warmup: int = 1000
    max_keys: int = 1_000_000
    explain_top: int = 3


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


def stable_seed(base: int, label: str) -> int:
    """A seed per event type that does not depend on Python's randomised ``hash``."""
    return (base * 1_000_003 + zlib.crc32(label.encode())) % (2**31)


@dataclass(frozen=True)
class RiverHSTFactory:
    """Makes river Half-Space Trees with the configured shape (picklable, unlike a closure)."""

    config: ScoringConfig

    def __call__(self, feature_names: tuple[str, ...], seed: int) -> Detector:
        return RiverHalfSpaceTrees(
            feature_names,
            n_trees=self.config.n_trees,
            height=self.config.height,
            window_size=self.config.window_size,
            seed=seed,
        )


class _TypeModel:
    """Detector, threshold and explainer for one event type."""

    def __init__(
        self, specs: tuple[FeatureSpec, ...], detector: Detector, config: ScoringConfig
    ) -> None:
        self.specs = specs
        self.detector = detector
        self.threshold = QuantileThreshold(config.quantile, config.warmup)
        self.explainer = DeviationExplainer(tuple(s.name for s in specs))


class EventScorer:
    """Scores validated events, one model per event type, created on first sight."""

    def __init__(
        self, config: ScoringConfig | None = None, factory: DetectorFactory | None = None
    ) -> None:
        self.config = config or ScoringConfig()
        self._factory = factory or RiverHSTFactory(self.config)
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
        event_type: str = event["event_type"]
        raw = self.features.extract(event)
        model = self._model(event_type)
        scaled = {spec.name: spec.squash(raw[spec.name]) for spec in model.specs}
        threshold = model.threshold.value
        score = model.detector.score_one(scaled)
        is_anomaly = model.threshold.observe(score)
        reasons = tuple(model.explainer.explain(raw, self.config.explain_top)) if is_anomaly else ()
        model.detector.learn_one(scaled)
        model.explainer.learn_one(raw)
        return Scored(
            event_type=event_type,
            score=score,
            threshold=threshold,
            is_anomaly=is_anomaly,
            detector=model.detector.name,
            features=raw,
            reasons=reasons,
        )
