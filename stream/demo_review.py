"""The demo's reviewer: labels alerts as they arrived, from the ground truth, up to a budget."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from detectors.oncall_eval import alert_verdict
from stream.review import make_label

REVIEWER = "simulated-reviewer"
_VERDICT = {True: "true_positive", False: "false_positive", None: "unsure"}


@dataclass
class Review:
    labels: list[dict[str, Any]] = field(default_factory=list)
    verdicts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, verdict)

    def count(self, kind: str, verdict: str) -> int:
        return self.verdicts[(kind, verdict)]


def simulate_review(
    records: Iterable[Mapping[str, Any]],
    attack_of: Mapping[str, str | None],
    max_labels: int,
) -> Review:
    """Label alerts in arrival order (``records`` as on the alerts topic), each alert id once
    (a pattern at its first record, as a reviewer sees it raised), until ``max_labels``.

    The verdict is the evaluation's rule (``detectors.oncall_eval.alert_verdict``), so the
    reviewer and the measurement agree on what a true alert is. The label's time is the
    alert's event time, which keeps a simulation reproducible.
    """
    review = Review()
    seen: set[str] = set()
    for record in records:
        if len(review.labels) >= max_labels:
            break
        if record["alert_id"] in seen:
            continue
        seen.add(record["alert_id"])
        verdict = _VERDICT[alert_verdict(record["event_ids"], attack_of)]
        review.labels.append(make_label(record, verdict, REVIEWER, record["occurred_at"]))
        review.verdicts[(str(record.get("kind", "event")), verdict)] += 1
    return review
