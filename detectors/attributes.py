"""What an event can have in common with other events: grouping attributes and graph edges.

Attributes are ``kind:value`` strings (``ip24:10.0.0``, ``cohort:new_account``) that the
pattern finder counts; a coordinated attack shows up as one value shared by many anomalous
events. Edges are (source, destination) pairs for MIDAS-R, one sketch per edge kind.
Both are pure functions of a validated event (schemas/event.v1.json).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from detectors.features.extractor import DAY, normalised_title, subnet24

# An account younger than this is in the new-account cohort: throwaway accounts of card
# testing, fake listing rings and review bombing are all created minutes before they act.
NEW_ACCOUNT_AGE_S: Final = DAY
NEW_ACCOUNT: Final = "cohort:new_account"
# The acting account itself. An account taken over acts alone (one victim, one attacker's
# device), so its pattern is a burst of one user's odd events, which the finder allows for
# this kind only (``PatternConfig.single_user_kinds``) and only after a new device (a
# throwaway account has no earlier device to differ from); it is never paired,
# being already as specific as a key can be. Not only for established accounts: the age is
# counted from the account's first event *seen*, so a victim first seen an hour before
# the takeover would look new.
USER: Final = "user"

DEVICE_CARD: Final = "device-card"
IP_ACCOUNT: Final = "ip-account"
BUYER_SHOP: Final = "buyer-shop"
REVIEWER_LISTING: Final = "reviewer-listing"
EDGE_KINDS: Final[tuple[str, ...]] = (DEVICE_CARD, IP_ACCOUNT, BUYER_SHOP, REVIEWER_LISTING)


def attributes(event: Mapping[str, Any], account_age_s: float | None = None) -> tuple[str, ...]:
    """The grouping attributes of ``event``, in a fixed order, without duplicates.

    ``account_age_s`` is the acting user's account age at the event (the feature state
    knows it); ``None`` leaves the cohort out.

    >>> listing = {
    ...     "event_type": "listing.created",
    ...     "entities": {"user_id": "u-1", "shop_id": "s-1", "listing_id": "l-1"},
    ...     "context": {"ip": "10.0.0.7", "device_id": "d-1", "country": "US"},
    ...     "payload": {"title": "Silver  ring", "category": "jewelry", "price": 9.0},
    ... }
    >>> attributes(listing, account_age_s=60.0)  # doctest: +NORMALIZE_WHITESPACE
    ('user:u-1', 'device:d-1', 'ip24:10.0.0', 'shop:s-1', 'title:ring silver',
     'category:jewelry', 'cohort:new_account', 'country:US')
    """
    context: Mapping[str, Any] = event["context"]
    entities: Mapping[str, Any] = event["entities"]
    payload: Mapping[str, Any] = event["payload"]
    event_type: str = event["event_type"]
    found = [
        f"{USER}:{entities['user_id']}",
        f"device:{context['device_id']}",
        f"ip24:{subnet24(context['ip'])}",
    ]
    if event_type == "payment.attempted":
        found.append(f"card_bin:{payload['card_bin']}")
    # Every event that names a shop: the listing's shop, the shop ordered from, the shop
    # reviewed, and the shop a payment pays (card testing hammers one cheap listing).
    shop = entities.get("shop_id")
    if shop is not None and event_type != "message.sent":
        found.append(f"shop:{shop}")
    if event_type == "listing.created":
        found.append(f"title:{normalised_title(payload['title'])}")
        found.append(f"category:{payload['category']}")
    if account_age_s is not None and account_age_s < NEW_ACCOUNT_AGE_S:
        found.append(NEW_ACCOUNT)
    found.append(f"country:{context['country']}")
    return tuple(dict.fromkeys(found))


def attribute_kind(attribute: str) -> str:
    """``ip24`` of ``ip24:10.0.0``.

    >>> attribute_kind("title:ring silver")
    'title'
    """
    return attribute.split(":", 1)[0]


class Edge(NamedTuple):
    """One edge for MIDAS-R: ``kind`` selects the sketch, ``src -> dst`` is the edge."""

    kind: str
    src: str
    dst: str


def edges(event: Mapping[str, Any]) -> tuple[Edge, ...]:
    """The MIDAS-R edges of ``event``.

    device-card (payments: many cards on one device is card testing), ip-account (every
    event: many accounts behind one IP), buyer-shop (orders) and reviewer-listing
    (reviews: many new reviewers on one listing is review bombing).

    >>> payment = {
    ...     "event_type": "payment.attempted",
    ...     "entities": {"user_id": "u-1", "shop_id": None, "listing_id": None},
    ...     "context": {"ip": "10.0.0.7", "device_id": "d-1", "country": "US"},
    ...     "payload": {"card_bin": "411111", "card_fingerprint": "card-1"},
    ... }
    >>> edges(payment)  # doctest: +NORMALIZE_WHITESPACE
    (Edge(kind='ip-account', src='10.0.0.7', dst='u-1'),
     Edge(kind='device-card', src='d-1', dst='card-1'))
    """
    event_type: str = event["event_type"]
    context: Mapping[str, Any] = event["context"]
    entities: Mapping[str, Any] = event["entities"]
    user: str = entities["user_id"]
    found = [Edge(IP_ACCOUNT, context["ip"], user)]
    if event_type == "payment.attempted":
        found.append(Edge(DEVICE_CARD, context["device_id"], event["payload"]["card_fingerprint"]))
    elif event_type == "order.placed":
        found.append(Edge(BUYER_SHOP, user, entities["shop_id"]))
    elif event_type == "review.posted":
        found.append(Edge(REVIEWER_LISTING, user, entities["listing_id"]))
    return tuple(found)
