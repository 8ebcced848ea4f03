"""Events of the contract (schemas/event.v1.json) before they get an id: one builder per type.

A ``PendingEvent`` is an event scheduled at an event time. The stream gives it its
``event_id`` and ``occurred_at`` text when it is emitted, because ids follow emission order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

SCHEMA_VERSION: Final = 1

Context = dict[str, str]
Entities = dict[str, str | None]


@dataclass(slots=True)
class PendingEvent:
    """An event waiting for its turn in the stream.

    on_emit: state change to apply when the event is emitted (a listing becomes orderable,
        a new user becomes active), so nothing scheduled later can see it before it happened.
    """

    at_ms: int
    event_type: str
    user_id: str
    entities: Entities
    context: Context
    payload: dict[str, Any]
    attack: str | None = None
    attack_id: str | None = None
    on_emit: Callable[[], None] | None = None


def context(ip: str, device_id: str, country: str) -> Context:
    return {"ip": ip, "device_id": device_id, "country": country}


def envelope(event: PendingEvent, event_id: str, occurred_at: str) -> dict[str, Any]:
    """The event as the JSON object of the contract."""
    return {
        "event_id": event_id,
        "event_type": event.event_type,
        "occurred_at": occurred_at,
        "schema_version": SCHEMA_VERSION,
        "entities": event.entities,
        "context": event.context,
        "payload": event.payload,
    }


def _entities(
    user_id: str,
    shop_id: str | None = None,
    listing_id: str | None = None,
    order_id: str | None = None,
) -> Entities:
    # All four keys always present: readers need not tell "absent" from null.
    return {"user_id": user_id, "shop_id": shop_id, "listing_id": listing_id, "order_id": order_id}


def account_created(
    at_ms: int,
    user_id: str,
    ctx: Context,
    *,
    account_kind: str,
    signup_method: str,
    email_domain: str,
) -> PendingEvent:
    payload = {
        "account_kind": account_kind,
        "signup_method": signup_method,
        "email_domain": email_domain,
    }
    return PendingEvent(at_ms, "account.created", user_id, _entities(user_id), ctx, payload)


def account_login(
    at_ms: int, user_id: str, ctx: Context, *, success: bool, method: str
) -> PendingEvent:
    payload = {"success": success, "method": method}
    return PendingEvent(at_ms, "account.login", user_id, _entities(user_id), ctx, payload)


def listing_created(
    at_ms: int,
    user_id: str,
    ctx: Context,
    *,
    shop_id: str,
    listing_id: str,
    title: str,
    category: str,
    price: float,
    currency: str,
    quantity: int,
) -> PendingEvent:
    payload = {
        "title": title,
        "category": category,
        "price": price,
        "currency": currency,
        "quantity": quantity,
    }
    entities = _entities(user_id, shop_id, listing_id)
    return PendingEvent(at_ms, "listing.created", user_id, entities, ctx, payload)


def order_placed(
    at_ms: int,
    user_id: str,
    ctx: Context,
    *,
    shop_id: str,
    listing_id: str,
    order_id: str,
    amount: float,
    currency: str,
    item_count: int,
    shipping_country: str,
) -> PendingEvent:
    payload = {
        "amount": amount,
        "currency": currency,
        "item_count": item_count,
        "shipping_country": shipping_country,
    }
    entities = _entities(user_id, shop_id, listing_id, order_id)
    return PendingEvent(at_ms, "order.placed", user_id, entities, ctx, payload)


def payment_attempted(
    at_ms: int,
    user_id: str,
    ctx: Context,
    *,
    order_id: str,
    shop_id: str | None,
    listing_id: str | None,
    amount: float,
    currency: str,
    card_bin: str,
    card_fingerprint: str,
    outcome: str,
    decline_reason: str | None,
) -> PendingEvent:
    payload: dict[str, Any] = {
        "amount": amount,
        "currency": currency,
        "card_bin": card_bin,
        "card_fingerprint": card_fingerprint,
        "outcome": outcome,
    }
    # Optional in the contract: approved payments leave it out, as payment APIs do.
    if decline_reason is not None:
        payload["decline_reason"] = decline_reason
    entities = _entities(user_id, shop_id, listing_id, order_id)
    return PendingEvent(at_ms, "payment.attempted", user_id, entities, ctx, payload)


def message_sent(
    at_ms: int,
    user_id: str,
    ctx: Context,
    *,
    recipient_id: str,
    length: int,
    has_link: bool,
    shop_id: str | None = None,
) -> PendingEvent:
    payload = {"recipient_id": recipient_id, "length": length, "has_link": has_link}
    entities = _entities(user_id, shop_id)
    return PendingEvent(at_ms, "message.sent", user_id, entities, ctx, payload)


def review_posted(
    at_ms: int,
    user_id: str,
    ctx: Context,
    *,
    shop_id: str,
    listing_id: str,
    rating: int,
    text_length: int,
) -> PendingEvent:
    payload = {"rating": rating, "text_length": text_length}
    entities = _entities(user_id, shop_id, listing_id)
    return PendingEvent(at_ms, "review.posted", user_id, entities, ctx, payload)
