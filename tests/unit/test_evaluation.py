from __future__ import annotations

from detectors.evaluation import Label, evaluate, format_evaluation


def test_recall_per_instance_and_false_alerts():
    labels = [
        Label("e1", "card_testing", "ct-1"),
        Label("e2", "card_testing", "ct-1"),
        Label("e3", "card_testing", "ct-2"),
        Label("e4", None, None),
        Label("e5", None, None),
        Label("e6", "review_bombing", "rb-1"),
    ]
    alerts = [
        {"event_ids": ["e1"], "event_type": "payment.attempted"},
        {"event_ids": ["e2"], "event_type": "payment.attempted"},
        {"event_ids": ["e4"], "event_type": "order.placed"},
        {"event_ids": ["nope"], "event_type": "order.placed"},
    ]
    result = evaluate(alerts, labels)
    assert result.alerts == 4
    assert result.true_alerts == 2
    assert result.false_alerts == 1
    assert result.unknown_alerts == 1
    card = result.by_attack["card_testing"]
    assert (card.instances, card.caught, card.attack_events, card.alerted_events) == (2, 1, 3, 2)
    assert card.recall == 0.5
    assert result.by_attack["review_bombing"].caught == 0
    assert result.precision == 2 / 3
    text = format_evaluation(result)
    assert "card_testing" in text
    assert "order.placed 1" in text
