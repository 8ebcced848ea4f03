"""Reviewers' verdicts against a replay's alerts: joined by event, whatever the detector."""

from __future__ import annotations

import orjson
import pytest

from stream.alerts import alert_id
from stream.replay_labels import (
    GroundTruth,
    Reviews,
    ScoredEvent,
    evaluate_reviews,
    format_reviews,
    load_labels,
    scored_events,
)
from stream.reviews import Review
from stream.scores import InputError


def _review(verdict: bool | None, detector: str = "hst/1") -> Review:
    return Review("2026-11-02T00:00:00Z", verdict, detector)


def test_verdicts_join_to_events_by_the_live_detector_whatever_the_replay_raised():
    # The live service (hst/1) alerted on e1..e4 and reviewers judged them; the replay ran
    # another detector, so its alert ids differ, yet the verdicts still find the events.
    reviews = {
        alert_id("hst/1", "event", ["e1"]): _review(True),
        alert_id("hst/1", "event", ["e2"]): _review(False),
        alert_id("hst/1", "event", ["e3"]): _review(None),
        alert_id("hst/1", "event", ["e4"]): _review(True),
        alert_id("hst/1", "event", ["e9"]): _review(True),  # not in the range
        "pa-" + "0" * 32: _review(True),  # a pattern alert: no event of its own
    }
    events = [
        ScoredEvent("e1", True),
        ScoredEvent("e2", True),
        ScoredEvent("e3", True),
        ScoredEvent("e4", False),  # confirmed, missed by the replay
        ScoredEvent("e5", True),  # never reviewed
        ScoredEvent("e6", False),
    ]
    result = evaluate_reviews(events, reviews)
    assert (result.reviews, result.reviewed_events, result.alerts) == (6, 4, 4)
    assert (result.alerts_true, result.alerts_false, result.alerts_unsure) == (1, 1, 1)
    assert result.precision == 0.5
    assert (result.confirmed, result.confirmed_alerted) == (2, 1)
    assert result.recall == 0.5
    text = format_reviews(result, "topic labels")
    assert "6 reviewers' verdicts (topic labels); 4 on events of the range" in text
    assert "alerts reviewed: 3 of 4 (true 1, false 1, unsure 1)  precision: 0.500" in text
    assert "confirmed events: 2, alerted: 1  recall: 0.500" in text


def test_an_event_reviewed_under_two_detectors_is_confirmed_if_either_says_so():
    reviews = {
        alert_id("hst/1", "event", ["e1"]): _review(False, "hst/1"),
        alert_id("iforest/1", "event", ["e1"]): _review(True, "iforest/1"),
    }
    result = evaluate_reviews([ScoredEvent("e1", True)], reviews)
    assert (result.reviewed_events, result.alerts_true, result.confirmed) == (1, 1, 1)


def test_without_decisive_verdicts_there_is_no_precision_or_recall():
    result = evaluate_reviews([ScoredEvent("e1", True)], {})
    assert result.precision is None
    assert result.recall is None
    assert "precision: n/a" in format_reviews(result, "file x")


def test_a_labels_file_is_read_as_what_it_holds(tmp_path):
    truth = tmp_path / "truth.jsonl"
    truth.write_bytes(b'{"event_id": "e1", "attack": null, "attack_id": null}\n')
    assert isinstance(load_labels(str(truth), "unused:9092"), GroundTruth)
    label = {
        "label_id": "lb-" + "1" * 32, "schema_version": 1, "alert_id": "al-" + "2" * 32,
        "verdict": "true_positive", "reason": None, "reviewer": "ana",
        "labeled_at": "2026-11-02T10:00:00Z", "detector": "hst/1", "segment": "order.placed",
        "score": 0.9,
    }  # fmt: skip
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_bytes(orjson.dumps(label) + b"\n")
    loaded = load_labels(str(reviews), "unused:9092")
    assert isinstance(loaded, Reviews)
    assert loaded.by_alert == {"al-" + "2" * 32: Review("2026-11-02T10:00:00Z", True, "hst/1")}
    assert loaded.source == f"file {reviews}"
    reviews.write_bytes(orjson.dumps({**label, "verdict": "maybe"}) + b"\n")
    with pytest.raises(InputError, match=r"reviews.jsonl:1: not a label.v1 record"):
        load_labels(str(reviews), "unused:9092")


def test_the_scores_file_gives_each_event_and_whether_it_alerted(tmp_path):
    scores = tmp_path / "scores.jsonl"
    scores.write_bytes(
        b'{"event_id": "e1", "alert": true, "score": 0.9}\n{"event_id": "e2", "score": 0.1}\n'
    )
    assert scored_events(scores) == [ScoredEvent("e1", True), ScoredEvent("e2", False)]
