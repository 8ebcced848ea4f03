from __future__ import annotations

from detectors.explain import Reason
from detectors.scoring import Scored
from schemas.validation import validate_alert
from stream.alerts import SourceCoordinates, alert_id, event_alert
from tests.unit.events import make_event


def _scored(event_type: str) -> Scored:
    return Scored(
        event_type=event_type,
        score=0.97,
        threshold=0.9,
        is_anomaly=True,
        detector="hst-river/1",
        features={"device_new_cards_1h": 30.0},
        reasons=(Reason("device_new_cards_1h", 30.0, 1.1, "high", 12.0),),
    )


def test_alert_id_is_stable_and_distinguishes_inputs():
    assert alert_id("d", "event", ["e1"]) == alert_id("d", "event", ["e1"])
    assert alert_id("d", "event", ["e1"]) != alert_id("d", "event", ["e2"])
    assert alert_id("d", "event", ["e1"]) != alert_id("d2", "event", ["e1"])
    assert alert_id("d", "event", ["a", "b"]) != alert_id("d", "event", ["ab"])


def test_event_alert_follows_the_contract():
    event = make_event("payment.attempted")
    alert = event_alert(event, _scored("payment.attempted"), SourceCoordinates("t", 2, 41))
    validate_alert(alert)
    assert alert["event_ids"] == [event["event_id"]]
    assert alert["entity"] == {"type": "user", "id": "u-1"}
    assert alert["source"] == {"topic": "t", "partition": 2, "offset": 41}
    assert alert["explanation"][0]["feature"] == "device_new_cards_1h"


def test_review_alert_is_about_the_shop():
    event = make_event("review.posted")
    alert = event_alert(event, _scored("review.posted"), SourceCoordinates("t", 0, 0))
    validate_alert(alert)
    assert alert["entity"] == {"type": "shop", "id": "s-1"}
