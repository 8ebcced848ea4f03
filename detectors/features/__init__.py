"""Per-entity features for marketplace events, computed in event time."""

from detectors.features.extractor import FeatureExtractor
from detectors.features.specs import FEATURE_SPECS, FeatureSpec

__all__ = ["FEATURE_SPECS", "FeatureExtractor", "FeatureSpec"]
