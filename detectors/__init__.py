"""Pure scoring code: features, detectors, thresholds. No I/O lives here."""
