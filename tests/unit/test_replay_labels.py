"""Reviewers' verdicts against a replay's alerts: joined by event, whatever the detector."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

import stream.replay_labels as replay_labels
from stream.alerts import alert_id
from stream.kafka_io import Record
from stream.replay_labels import (
    GroundTruth,
    Reviews,
    alerted_event_ids,
    evaluate_reviews,
    format_reviews,
    load_labels,
    scored_event_ids,
)
from stream.reviews import Review
from stream.scores import InputError
from stream.topic_reader import ReplayError


def _label_row() -> dict[str, Any]:
    return {
        "label_id": "lb-" + "1" * 32, "schema_version": 1, "alert_id": "al-" + "2" * 32,
        "verdict": "true_positive", "reason": None, "reviewer": "ana",
        "labeled_at": "2026-11-02T10:00:00Z", "detector": "hst/1", "segment": "order.placed",
        "score": 0.9,
    }  # fmt: skip


def _review(verdict: bool | None, detector: str = "hst/1") -> Review:
    return Review("2026-11-02T00:00:00Z", verdict, detector)


def test_verdicts_join_to_events_by_the_live_detector_whatever_the_replay_raised():
    # The live service (hst/1) alerted on e1..e4 and reviewers judged them; the replay ran
    # another detector (its alerts name iforest/1), yet the verdicts still find the events.
    reviews = {
        alert_id("hst/1", "event", ["e1"]): _review(True),
        alert_id("hst/1", "event", ["e2"]): _review(False),
        alert_id("hst/1", "event", ["e3"]): _review(None),
        alert_id("hst/1", "event", ["e4"]): _review(True),
        alert_id("hst/1", "event", ["e9"]): _review(True),  # not in the range
        "pa-" + "0" * 32: _review(True),  # a pattern alert: no event of its own
    }
    replay_alerts = [
        {"kind": "event", "detector": "iforest/1", "event_ids": [e]} for e in ("e1", "e2", "e3")
    ] + [{"kind": "event", "detector": "iforest/1", "event_ids": ["e5"]}]
    alerted = alerted_event_ids(replay_alerts)
    assert alerted == {"e1", "e2", "e3", "e5"}
    scored = ["e1", "e2", "e3", "e4", "e5", "e6"]  # e4 confirmed but missed; e5 unreviewed
    result = evaluate_reviews(scored, alerted, reviews)
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
    result = evaluate_reviews(["e1"], {"e1"}, reviews)
    assert (result.reviewed_events, result.alerts_true, result.confirmed) == (1, 1, 1)


def test_without_decisive_verdicts_there_is_no_precision_or_recall():
    result = evaluate_reviews(["e1"], {"e1"}, {})
    assert result.precision is None
    assert result.recall is None
    assert "precision: n/a" in format_reviews(result, "file x")


def test_a_labels_file_is_read_as_what_it_holds(tmp_path):
    truth = tmp_path / "truth.jsonl"
    truth.write_bytes(b'{"event_id": "e1", "attack": null, "attack_id": null}\n')
    assert isinstance(load_labels(str(truth), "unused:9092"), GroundTruth)
    label = _label_row()
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_bytes(orjson.dumps(label) + b"\n")
    loaded = load_labels(str(reviews), "unused:9092")
    assert isinstance(loaded, Reviews)
    assert loaded.by_alert == {"al-" + "2" * 32: Review("2026-11-02T10:00:00Z", True, "hst/1")}
    assert loaded.source == f"file {reviews}"
    reviews.write_bytes(orjson.dumps({**label, "verdict": "maybe"}) + b"\n")
    with pytest.raises(InputError, match=r"reviews.jsonl:1: not a label.v1 record"):
        load_labels(str(reviews), "unused:9092")


def test_the_scores_file_gives_the_events_of_the_range(tmp_path):
    scores = tmp_path / "scores.jsonl"
    scores.write_bytes(b'{"event_id": "e1", "score": 0.9}\n\n{"event_id": "e2", "score": 0.1}\n')
    assert scored_event_ids(scores) == ["e1", "e2"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "truth.jsonl: no labels in it"),
        (b"\n", "truth.jsonl: no labels in it"),
        (b'{"event_id": "e1", "attack": null}\n[1]\n', "truth.jsonl:2: not a JSON object"),
        (b'{"event_id": 7}\n', "truth.jsonl:1: need event_id (string)"),
    ],
)
def test_a_ground_truth_file_that_cannot_be_used_is_named(tmp_path, content, problem):
    truth = tmp_path / "truth.jsonl"
    truth.write_bytes(content)
    with pytest.raises(InputError, match=re.escape(problem)):
        load_labels(str(truth), "unused:9092")


def test_ground_truth_lines_may_end_with_a_blank_line(tmp_path):
    truth = tmp_path / "truth.jsonl"
    truth.write_bytes(b'{"event_id": "e1", "attack": "card_testing", "attack_id": "c-1"}\n\n')
    loaded = load_labels(str(truth), "unused:9092")
    assert isinstance(loaded, GroundTruth)
    assert [(x.event_id, x.attack, x.attack_id) for x in loaded.labels] == [
        ("e1", "card_testing", "c-1")
    ]


def test_records_of_the_labels_topic_that_are_not_labels_are_skipped_and_counted(monkeypatch):
    label = orjson.dumps(_label_row())
    values = [label, None, b"not json", orjson.dumps({**_label_row(), "verdict": "maybe"})]
    records = [Record("labels", 0, i, None, value, {}, 0) for i, value in enumerate(values)]
    monkeypatch.setattr(replay_labels, "read_topic", lambda bootstrap, topic: records)
    loaded = load_labels("labels", "broker:9092")
    assert isinstance(loaded, Reviews)
    assert list(loaded.by_alert) == ["al-" + "2" * 32]
    assert loaded.source == "topic labels, 3 records skipped: not labels"


def test_a_labels_name_that_is_neither_file_nor_topic_is_named(monkeypatch):
    def missing(bootstrap, topic):
        raise ReplayError(f"topic {topic!r} not found")

    monkeypatch.setattr(replay_labels, "read_topic", missing)
    with pytest.raises(ReplayError, match="--labels: no file or topic named 'nosuch'"):
        load_labels("nosuch", "broker:9092")


def test_an_event_scored_twice_counts_once():
    reviews = {alert_id("hst/1", "event", ["e1"]): _review(True)}
    result = evaluate_reviews(["e1", "e1", "e2"], {"e1"}, reviews)
    assert (result.alerts, result.reviewed_events, result.confirmed) == (1, 1, 1)
