from __future__ import annotations

from pathlib import Path

import orjson
import pytest

import schemas
from detectors.explain import Reason
from detectors.scoring import Scored
from stream.alerts import SourceCoordinates, event_alert
from stream.review import label_id, make_label, truth_verdict
from tests.unit.events import make_event


def _alert(event_id_n: int = 0):
    event = make_event("payment.attempted", event_id_n)
    scored = Scored(
        "payment.attempted", 0.9, 0.8, True, "hst/1", {}, (Reason("x", 1.0, 0.0, "high", 2.0),)
    )
    return event_alert(event, scored, SourceCoordinates("t", 0, event_id_n))


def test_label_follows_the_contract_and_its_id_is_stable():
    alert = _alert()
    label = make_label(alert, "true_positive", "ana", "2026-11-02T10:00:00.000Z", "card test")
    assert label["alert_id"] == alert["alert_id"]
    assert label["segment"] == "payment.attempted"
    assert label["label_id"] == label_id(alert["alert_id"], "ana", "2026-11-02T10:00:00.000Z")
    again = make_label(alert, "true_positive", "ana", "2026-11-02T10:00:00.000Z", "card test")
    assert again == label
    other = make_label(alert, "true_positive", "bo", "2026-11-02T10:00:00.000Z")
    assert other["label_id"] != label["label_id"]


def test_bad_verdict_is_refused_by_the_contract():
    with pytest.raises(ValueError, match="verdict"):
        make_label(_alert(), "maybe", "ana", "2026-11-02T10:00:00.000Z")


def test_truth_verdicts():
    alert = _alert(3)
    event_id = alert["event_ids"][0]
    assert truth_verdict(alert, {event_id: "card_testing"}) == "true_positive"
    assert truth_verdict(alert, {event_id: None}) == "false_positive"
    assert truth_verdict(alert, {}) == "unsure"


def test_label_id_follows_the_documented_recipe():
    example = orjson.loads((Path(schemas.__file__).parent / "examples" / "label.json").read_bytes())
    assert example["label_id"] == label_id(
        example["alert_id"], example["reviewer"], example["labeled_at"]
    )
