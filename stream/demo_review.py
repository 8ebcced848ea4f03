"""The demo's reviewer: labels alerts as they were raised, from the ground truth, up to a budget."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from detectors.oncall_eval import alert_verdict, epoch_s
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
    """Label alerts in the order they were raised, each alert id once (a pattern as it was
    raised: its first record), until ``max_labels``.

    Raised means the event time of the alert's trigger (``occurred_at``), ties in arrival
    order (``records`` as on the alerts topic): the order on the topic itself interleaves
    the two stages by wall-clock timing, which would make a run irreproducible.

    The verdict is the evaluation's rule (``detectors.oncall_eval.alert_verdict``), so the
    reviewer and the measurement agree on what a true alert is. The label's time is the
    alert's event time, which keeps a simulation reproducible.
    """
    first: dict[str, Mapping[str, Any]] = {}
    for record in records:
        first.setdefault(record["alert_id"], record)
    raised = sorted(first.values(), key=lambda r: epoch_s(r["occurred_at"]))  # stable
    review = Review()
    for record in raised[:max_labels]:
        verdict = _VERDICT[alert_verdict(record["event_ids"], attack_of)]
        review.labels.append(make_label(record, verdict, REVIEWER, record["occurred_at"]))
        review.verdicts[(str(record.get("kind", "event")), verdict)] += 1
    return review
