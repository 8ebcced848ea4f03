"""Hand-made valid events for unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 11, 2, tzinfo=UTC)

_PAYLOADS: dict[str, dict[str, Any]] = {
    "account.created": {"account_kind": "buyer", "signup_method": "email", "email_domain": "x.com"},
    "account.login": {"success": True, "method": "password"},
    "listing.created": {
        "title": "silver ring",
        "category": "jewelry",
        "price": 40.0,
        "currency": "USD",
        "quantity": 1,
    },
    "order.placed": {"amount": 40.0, "currency": "USD", "item_count": 1, "shipping_country": "US"},
    "payment.attempted": {
        "amount": 40.0,
        "currency": "USD",
        "card_bin": "411111",
        "card_fingerprint": "card-1",
        "outcome": "approved",
        "decline_reason": None,
    },
    "message.sent": {"recipient_id": "u-2", "length": 120, "has_link": False},
    "review.posted": {"rating": 5, "text_length": 80},
}


def make_event(
    event_type: str,
    n: int = 0,
    *,
    user: str = "u-1",
    seconds: float | None = None,
    device: str = "d-1",
    ip: str = "10.0.0.1",
    country: str = "US",
    **payload: Any,
) -> dict[str, Any]:
    """A valid event of ``event_type``; ``payload`` overrides payload fields."""
    when = T0 + timedelta(seconds=float(n) if seconds is None else seconds)
    body = dict(_PAYLOADS[event_type])
    body.update(payload)
    return {
        "event_id": f"e-{event_type}-{n}",
        "event_type": event_type,
        "occurred_at": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        "schema_version": 1,
        "entities": {"user_id": user, "shop_id": "s-1", "listing_id": "l-1", "order_id": "o-1"},
        "context": {"ip": ip, "device_id": device, "country": country},
        "payload": body,
    }
