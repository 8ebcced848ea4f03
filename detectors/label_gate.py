"""Reviewers' labels raise the bar for event alerts, per detector and segment.

The detector's streaming quantile is an alert *budget*: it bounds how many events are
flagged, not how many of them are worth a human's time. Once a segment (an event type)
has ``min_labels`` decisive labels, an event alert fires only above the lowest score whose
Wilson lower bound on precision meets ``target`` (see ``precision.label_threshold``);
until then the budget alone decides, or, with ``unproven="hold"``, no event alert of that
segment fires at all: its events still reach the pattern stage, so on-call sees them
only through pattern and incident alerts until labels have shown what the segment's
alerts are worth. A verdict given again for the same alert replaces
the earlier one, and only the latest ``max_labels`` alerts per segment count, so the gate
follows a drifting detector.

Pure: labels come in as arguments; ``stream.label_feed`` reads them from Kafka.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, TypedDict

from detectors.precision import Source, label_threshold

Segment = tuple[str, str]  # (detector, segment)
Unproven = Literal["budget", "hold"]
UNPROVEN_CHOICES: tuple[Unproven, ...] = ("budget", "hold")


class GateState(TypedDict):
    detector: str
    segment: str
    threshold: float
    source: Source
    labels: int
    true: int
    false: int
    unsure: int


@dataclass
class LabelGate:
    """Per (detector, segment) thresholds from labels.

    >>> gate = LabelGate(target=0.8, min_labels=10, min_support=5)
    >>> for i in range(40):
    ...     gate.add(f"al-{i}", "hst", "order.placed", i / 40, i >= 20)
    >>> gate.allows("hst", "order.placed", 0.6), gate.allows("hst", "order.placed", 0.3)
    (True, False)
    >>> gate.allows("hst", "account.login", 0.01)  # no labels there: the budget decides
    True
    >>> LabelGate(unproven="hold").allows("hst", "account.login", 0.99)
    False
    """

    target: float = 0.9
    confidence: float = 0.95
    min_labels: int = 30
    min_support: int = 10
    max_labels: int = 5000
    # Segments without enough labels: "budget" lets the alert budget decide, "hold" sends
    # no event alert there.
    unproven: Unproven = "budget"
    _labels: dict[Segment, dict[str, tuple[float, bool | None]]] = field(default_factory=dict)
    _fits: dict[Segment, tuple[float, Source] | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"target must be in (0, 1), got {self.target}")
        if self.min_labels < 1 or self.min_support < 1 or self.max_labels < self.min_labels:
            raise ValueError("need 1 <= min_labels <= max_labels and min_support >= 1")
        if self.unproven not in UNPROVEN_CHOICES:
            raise ValueError(f"unproven must be one of {UNPROVEN_CHOICES}, got {self.unproven!r}")

    def add(
        self, alert_id: str, detector: str, segment: str, score: float, verdict: bool | None
    ) -> None:
        """A reviewer's verdict (None: unsure) on the alert ``alert_id`` that scored ``score``."""
        if not math.isfinite(score):
            raise ValueError(f"a labeled score must be finite, got {score}")
        key = (detector, segment)
        labels = self._labels.setdefault(key, {})
        labels.pop(alert_id, None)  # a corrected verdict counts as the newest
        labels[alert_id] = (float(score), verdict)
        if len(labels) > self.max_labels:
            del labels[next(iter(labels))]
        self._fits.pop(key, None)

    def threshold(self, detector: str, segment: str) -> float | None:
        """Alert only when a score exceeds this; None while labels are too few."""
        fit = self._fit((detector, segment))
        return None if fit is None else fit[0]

    def allows(self, detector: str, segment: str, score: float) -> bool:
        return self.decide(detector, segment, score)[0]

    def decide(self, detector: str, segment: str, score: float) -> tuple[bool, float | None]:
        """Whether an event alert scoring ``score`` fires, and the labels' bar it passed
        (None where the budget decided).

        A segment is *proven* once its labels meet the target at some threshold. Until then
        (too few labels, or ``labels_unmet``: none of its labeled scores reaches the target)
        ``unproven`` decides: "budget" lets the alert through (above every labeled score in
        the ``labels_unmet`` case, to keep labels coming from where precision is highest),
        "hold" keeps it back.
        """
        fit = self._fit((detector, segment))
        if fit is None:
            return self.unproven == "budget", None
        threshold, source = fit
        if source != "labels" and self.unproven == "hold":
            return False, threshold
        return score > threshold, threshold

    def state(self) -> list[GateState]:
        """Every segment with labels: its threshold, where it comes from, the counts."""
        out: list[GateState] = []
        for (detector, segment), labels in sorted(self._labels.items()):
            verdicts = [v for _, v in labels.values()]
            fit = self._fit((detector, segment))
            out.append(
                {
                    "detector": detector,
                    "segment": segment,
                    "threshold": -math.inf if fit is None else fit[0],
                    "source": "budget" if fit is None else fit[1],
                    "labels": len(verdicts),
                    "true": sum(1 for v in verdicts if v is True),
                    "false": sum(1 for v in verdicts if v is False),
                    "unsure": sum(1 for v in verdicts if v is None),
                }
            )
        return out

    def _fit(self, key: Segment) -> tuple[float, Source] | None:
        # Read for every flagged event, changed only by a label: fitted once per change.
        if key in self._fits:
            return self._fits[key]
        labels = list(self._labels.get(key, {}).values())
        fit = None
        if sum(1 for _, v in labels if v is not None) >= self.min_labels:
            fit = label_threshold(labels, self.target, self.confidence, self.min_support)
        self._fits[key] = fit
        return fit
