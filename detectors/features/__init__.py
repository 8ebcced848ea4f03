"""Per-entity features for marketplace events, computed in event time."""

from detectors.features import extractor, state
from detectors.features.extractor import FeatureExtractor
from detectors.features.specs import FEATURE_SPECS, FeatureSpec

__all__ = ["FEATURE_SPECS", "FeatureExtractor", "FeatureSpec", "compiled_modules"]

# The modules setup.py compiles with mypyc, when it did (VIGIL_COMPILE=0 skips it).
_COMPILABLE = (state, extractor)


def compiled_modules() -> list[str]:
    """Names of the feature modules running compiled; empty when all run as Python."""
    return [m.__name__ for m in _COMPILABLE if not str(m.__file__).endswith(".py")]
