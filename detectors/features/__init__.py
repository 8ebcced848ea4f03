"""Per-entity features for marketplace events, computed in event time."""

from detectors.features.extractor import FEATURE_SPECS, FeatureExtractor, FeatureSpec

__all__ = ["FEATURE_SPECS", "FeatureExtractor", "FeatureSpec"]
