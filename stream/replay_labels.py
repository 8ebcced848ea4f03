"""``vigil replay --labels FILE_OR_TOPIC``: the replay's alerts against labels of either kind.

Two kinds of labels reach a replay:

- the generator's ground truth (``{event_id, attack, attack_id}`` lines, ``vigil generate
  --labels-out``): every event's truth, evaluated by ``detectors/evaluation.py`` on the
  events the replay scored (the file may cover more than the range);
- reviewers' verdicts (``label.v1.json``: the labels topic that ``vigil review`` writes, or
  a file of its records): verdicts on the *live* service's alerts, by alert id.

A verdict names an alert, and an event alert's id is a hash of its detector and event
(``stream/alerts.py``), so a replay with another detector raises other ids for the same
events. Verdicts are therefore joined to the replay's scored events by recomputing, for
each scored event, the id the live alert would have had under each detector the labels
name. That needs every scored event of the range, not only the alerts: the replay writes
its scores file (``--output-scores``, or a temporary one) and the join reads it back. Then:

- precision: of the replay's alerts on events with a decisive verdict, the share reviewers
  confirmed (unsure verdicts count as reviewed but decide neither);
- recall: of the confirmed events in the range, the share the replay alerts on.

A record of the labels topic that is not a label (a tombstone, a stray write) is skipped and
counted, as the live service's label follower does: the topic lives long.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.evaluation import Label
from stream.feedback import decode_label
from stream.reviews import Review, is_review_file, latest_reviews, read_review_file
from stream.scores import InputError, json_lines
from stream.topic_reader import ReplayError, read_topic


@dataclass(frozen=True)
class GroundTruth:
    labels: list[Label]

    def of_events(self, event_ids: Iterable[str]) -> list[Label]:
        """The labels of ``event_ids`` (a replay's scored events): an attack outside the
        range is not one the replay could catch, and counting it would understate recall.

        >>> truth = GroundTruth([Label("e1", "ato", "ato-1"), Label("e2", "ato", "ato-2")])
        >>> [label.attack_id for label in truth.of_events(["e2", "e3"])]
        ['ato-2']
        """
        wanted = set(event_ids)
        return [label for label in self.labels if label.event_id in wanted]


@dataclass(frozen=True)
class Reviews:
    by_alert: dict[str, Review]
    source: str  # where they came from, for the report


def load_labels(name: str, bootstrap: str) -> GroundTruth | Reviews:
    """``--labels``: a file of either kind, else a topic of reviewers' labels on
    ``bootstrap``. ``InputError`` or ``ReplayError`` say what could not be used."""
    path = Path(name)
    if path.is_file():
        if is_review_file(path):
            return Reviews(read_review_file(path), f"file {name}")
        return GroundTruth(read_ground_truth(path))
    try:
        records = read_topic(bootstrap, name)
    except ReplayError as exc:
        raise ReplayError(f"--labels: no file or topic named {name!r}") from exc
    rows, skipped = [], 0
    for record in records:
        try:
            rows.append(decode_label(record.value))
        except ValueError:  # orjson's decode error is one too
            skipped += 1
    source = f"topic {name}" + (f", {skipped:,} records skipped: not labels" if skipped else "")
    return Reviews(latest_reviews(rows), source)


def read_ground_truth(path: Path) -> list[Label]:
    """The generator's labels file (``{event_id, attack, attack_id}`` lines);
    ``InputError`` names a line it cannot use, or an empty file."""
    labels = []
    for number, row in json_lines(path):
        event_id, attack, attack_id = row.get("event_id"), row.get("attack"), row.get("attack_id")
        if not isinstance(event_id, str) or not all(
            isinstance(v, str | None) for v in (attack, attack_id)
        ):
            raise InputError(
                path, "need event_id (string), attack and attack_id (string or null)", number
            )
        labels.append(Label(event_id, attack, attack_id))
    if not labels:
        raise InputError(path, "no labels in it")
    return labels


@dataclass
class ReviewEvaluation:
    """The replay's alerts against reviewers' verdicts, joined by event."""

    reviews: int  # verdicts read, on alerts of any kind
    reviewed_events: int  # scored events of the range with a verdict
    alerts: int  # the replay's alerts (scored events it alerted on)
    alerts_true: int
    alerts_false: int
    alerts_unsure: int
    confirmed: int  # scored events of the range reviewers confirmed
    confirmed_alerted: int

    @property
    def precision(self) -> float | None:
        decided = self.alerts_true + self.alerts_false
        return self.alerts_true / decided if decided else None

    @property
    def recall(self) -> float | None:
        return self.confirmed_alerted / self.confirmed if self.confirmed else None


def scored_event_ids(path: Path) -> list[str]:
    """The events of a scores file (stream/score_tap.py), in its order."""
    return [str(row["event_id"]) for _, row in json_lines(path)]


def alerted_event_ids(alerts: Iterable[Mapping[str, Any]]) -> set[str]:
    """The events the replay's event alerts are about."""
    return {e for alert in alerts if alert.get("kind") == "event" for e in alert["event_ids"]}


def evaluate_reviews(
    scored: Sequence[str], alerted: AbstractSet[str], reviews: Mapping[str, Review]
) -> ReviewEvaluation:
    """Join ``reviews`` to the ``scored`` events of the range by the id each one's alert
    had under each detector the reviews name (see the module); ``alerted``: the events the
    replay alerted on. An event id that comes twice counts once."""
    # Here, not at the top: stream.alerts loads the detectors, which the rest need not.
    from stream.alerts import alert_id

    detectors = sorted({review.detector for review in reviews.values()})
    result = ReviewEvaluation(len(reviews), 0, 0, 0, 0, 0, 0, 0)
    for event_id in dict.fromkeys(scored):  # an event sent twice is one event
        alert = event_id in alerted
        result.alerts += alert
        verdicts = [
            review.verdict
            for review in (reviews.get(alert_id(d, "event", [event_id])) for d in detectors)
            if review is not None
        ]
        if not verdicts:
            continue
        # Reviewed under two detectors (a change of engine mid-range): confirmed if either
        # verdict says so, refuted only if one does and none confirms.
        verdict = True if True in verdicts else False if False in verdicts else None
        result.reviewed_events += 1
        if verdict is True:
            result.confirmed += 1
            result.confirmed_alerted += alert
        if alert:
            if verdict is None:
                result.alerts_unsure += 1
            elif verdict:
                result.alerts_true += 1
            else:
                result.alerts_false += 1
    return result


def format_reviews(result: ReviewEvaluation, source: str) -> str:
    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    r = result
    reviewed = r.alerts_true + r.alerts_false + r.alerts_unsure
    return "\n".join(
        [
            f"labels    {r.reviews:,} reviewers' verdicts ({source}); "
            f"{r.reviewed_events:,} on events of the range",
            f"  alerts reviewed: {reviewed:,} of {r.alerts:,} (true {r.alerts_true:,}, "
            f"false {r.alerts_false:,}, unsure {r.alerts_unsure:,})  "
            f"precision: {share(r.precision)}",
            f"  confirmed events: {r.confirmed:,}, alerted: {r.confirmed_alerted:,}  "
            f"recall: {share(r.recall)}",
        ]
    )
