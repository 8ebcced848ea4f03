"""Turns a validated event into the features its detector scores.

One pure object holds all per-entity state; ``extract`` reads the state *before* the event
(how new is this device for this user?) and then updates it with the event, so an event is
always judged against the past only. Every feature is non-negative; ``FeatureSpec.scale``
maps it into [0, 1) as ``v / (v + scale)`` (binary features have no scale), which is the
box Half-Space Trees split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from detectors.compiled import attributes
from detectors.features.specs import FEATURE_SPECS

# FeatureSpec was defined here: checkpoints written then name it by this module.
from detectors.features.specs import FeatureSpec as FeatureSpec
from detectors.features.state import (
    DEFAULT_MAX_KEYS,
    DecayingCounts,
    DistinctSets,
    FirstSeen,
    RunningMeans,
    UserHistories,
)

# The tables ``users`` replaced, by the names checkpoints written before it give them.
_PER_USER_TABLES = (
    "user_first_seen",
    "user_events",
    "user_devices",
    "user_countries",
    "user_new_device",
    "user_new_country",
)

HOUR = 3600.0
DAY = 24 * HOUR
# How long a device (country) new to an account keeps counting as new: a session, so that
# every event of a takeover's session says so, not only its first.
NEW_FOR_S = HOUR


def event_time_s(occurred_at: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC timestamp (``...Z``)."""
    return datetime.fromisoformat(occurred_at).timestamp()


def subnet24(ip: str) -> str:
    return ip.rsplit(".", 1)[0]


def normalised_title(title: str) -> str:
    return " ".join(sorted(set(title.lower().split())))


class FeatureExtractor:
    """All per-entity feature state, bounded by ``max_keys`` per table."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        velocity = DecayingCounts
        # What every event reads and updates about its user, in one table.
        self.users = UserHistories(max_keys, half_life_s=HOUR, new_for_s=NEW_FOR_S)
        self.shop_first_seen = FirstSeen(max_keys)
        self.device_users = DistinctSets(max_keys)
        self.ip_users = DistinctSets(max_keys)
        self.ip_signups = velocity(HOUR, max_keys)
        self.device_signups = velocity(HOUR, max_keys)
        self.user_failed_logins = velocity(HOUR, max_keys)
        self.category_price = RunningMeans(0.01, 10_000)
        self.shop_listings = velocity(HOUR, max_keys)
        self.subnet_new_shops = velocity(DAY, max_keys)
        self.title_counts = velocity(DAY, max_keys)
        self.user_amount = RunningMeans(0.2, max_keys)
        self.global_amount = RunningMeans(0.001, 8)
        self.user_orders = velocity(HOUR, max_keys)
        self.device_payments = velocity(HOUR, max_keys)
        self.device_cards = DistinctSets(max_keys, max_values=256)
        self.ip_cards = DistinctSets(max_keys, max_values=256)
        self.device_new_cards = velocity(HOUR, max_keys)
        self.ip_new_cards = velocity(HOUR, max_keys)
        self.device_declines = velocity(HOUR, max_keys)
        self.user_messages = velocity(HOUR, max_keys)
        self.user_recipients = DistinctSets(max_keys)
        self.user_shops_ordered = DistinctSets(max_keys, max_values=1024)
        self.shop_reviews = velocity(HOUR, max_keys)
        self.shop_low_reviews = velocity(HOUR, max_keys)

    # Pickled as its attributes, as a plain object would be. Spelled out because mypyc gives
    # a compiled class that defines ``__setstate__`` no default ``__getstate__``.
    def __getstate__(self) -> dict[str, Any]:
        return attributes(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        # A checkpoint from before ``users`` holds its six per-user tables instead (and,
        # from before session newness, four of them).
        tables = [state.pop(name, None) for name in _PER_USER_TABLES]
        if "users" not in state:
            first_seen, events, devices, countries, new_devices, new_countries = tables
            state["users"] = UserHistories.merged(
                first_seen, events, devices, countries, new_devices, new_countries, HOUR, NEW_FOR_S
            )
        # Attribute by attribute: a compiled extractor has no ``__dict__``.
        for name, value in state.items():
            setattr(self, name, value)

    def extract(self, event: Mapping[str, Any], t: float | None = None) -> dict[str, float]:
        """Raw (unsquashed) features of ``event``; updates the state with it. ``t``: its
        event time in seconds, when the caller has parsed ``occurred_at`` already."""
        event_type: str = event["event_type"]
        if t is None:
            t = event_time_s(event["occurred_at"])
        entities: Mapping[str, Any] = event["entities"]
        context: Mapping[str, Any] = event["context"]
        payload: Mapping[str, Any] = event["payload"]
        user: str = entities["user_id"]
        device: str = context["device_id"]
        ip: str = context["ip"]

        # A device (country) is new for a user who had devices (countries) before, within
        # NEW_FOR_S of the first event from it.
        age_s, events, new_device, new_country = self.users.observe(
            user, device, context["country"], t
        )
        features: dict[str, float] = {
            "user_age_h": age_s / HOUR,
            "user_events_1h": events,
            "device_users": float(self.device_users.observe(device, user)[1]),
            "ip_users": float(self.ip_users.observe(ip, user)[1]),
            "new_device": float(new_device),
            "new_country": float(new_country),
        }
        specific = _SPECIFIC.get(event_type)
        if specific is None:  # not an event type of the contract: fails as it always did
            getattr(self, "_" + event_type.replace(".", "_"))(
                features, t, entities, context, payload
            )
        else:
            specific(self, features, t, entities, context, payload)
        return features

    # Each adds its event type's features to ``features``, in FEATURE_SPECS order.

    def _account_created(
        self,
        features: dict[str, float],
        t: float,
        entities: Mapping[str, Any],
        context: Mapping[str, Any],
        payload: Any,
    ) -> None:
        features["ip_signups_1h"] = self.ip_signups.add(context["ip"], t)
        features["device_signups_1h"] = self.device_signups.add(context["device_id"], t)

    def _account_login(
        self,
        features: dict[str, float],
        t: float,
        entities: Mapping[str, Any],
        context: Mapping[str, Any],
        payload: Any,
    ) -> None:
        failed = not payload["success"]
        user = entities["user_id"]
        features["failed"] = float(failed)
        features["user_failed_logins_1h"] = self.user_failed_logins.add(user, t, float(failed))

    def _listing_created(
        self,
        features: dict[str, float],
        t: float,
        entities: Mapping[str, Any],
        context: Mapping[str, Any],
        payload: Any,
    ) -> None:
        shop = entities["shop_id"]
        price = float(payload["price"])
        category = payload["category"]
        typical = self.category_price.update(category, price)  # the mean before this price
        shop_is_new = not self.shop_first_seen.seen(shop)
        shop_age = self.shop_first_seen.age(shop, t)
        subnet = subnet24(context["ip"])
        features["price_vs_category"] = 1.0 if typical is None else price / typical
        features["shop_age_h"] = shop_age / HOUR
        features["shop_listings_1h"] = self.shop_listings.add(shop, t)
        features["subnet_new_shops_1d"] = self.subnet_new_shops.add(subnet, t, float(shop_is_new))
        features["same_title_1d"] = self.title_counts.add(normalised_title(payload["title"]), t)

    def _amount_features(self, features: dict[str, float], user: str, amount: float) -> None:
        # Each update returns the mean before it: the user's usual amount, else everyone's.
        usual = self.user_amount.update(user, amount)
        usual_all = self.global_amount.update("all", amount)
        if usual is None:
            usual = usual_all or amount
        features["amount_log"] = math.log1p(amount)
        features["amount_vs_user"] = amount / max(usual, 0.01)

    def _order_placed(
        self,
        features: dict[str, float],
        t: float,
        entities: Mapping[str, Any],
        context: Mapping[str, Any],
        payload: Any,
    ) -> None:
        user = entities["user_id"]
        self.user_shops_ordered.add(user, entities["shop_id"])
        self._amount_features(features, user, float(payload["amount"]))
        features["user_orders_1h"] = self.user_orders.add(user, t)

    def _payment_attempted(
        self,
        features: dict[str, float],
        t: float,
        entities: Mapping[str, Any],
        context: Mapping[str, Any],
        payload: Any,
    ) -> None:
        device = context["device_id"]
        ip = context["ip"]
        card = payload["card_fingerprint"]
        declined = payload["outcome"] != "approved"
        _, new_on_device = self.device_cards.add(device, card)
        _, new_on_ip = self.ip_cards.add(ip, card)
        self._amount_features(features, entities["user_id"], float(payload["amount"]))
        features["declined"] = float(declined)
        features["device_payments_1h"] = self.device_payments.add(device, t)
        features["device_new_cards_1h"] = self.device_new_cards.add(device, t, float(new_on_device))
        features["ip_new_cards_1h"] = self.ip_new_cards.add(ip, t, float(new_on_ip))
        features["device_declines_1h"] = self.device_declines.add(device, t, float(declined))

    def _message_sent(
        self,
        features: dict[str, float],
        t: float,
        entities: Mapping[str, Any],
        context: Mapping[str, Any],
        payload: Any,
    ) -> None:
        user = entities["user_id"]
        features["has_link"] = float(payload["has_link"])
        features["length_log"] = math.log1p(payload["length"])
        features["user_messages_1h"] = self.user_messages.add(user, t)
        features["user_recipients"] = float(
            self.user_recipients.add(user, payload["recipient_id"])[0]
        )

    def _review_posted(
        self,
        features: dict[str, float],
        t: float,
        entities: Mapping[str, Any],
        context: Mapping[str, Any],
        payload: Any,
    ) -> None:
        shop = entities["shop_id"]
        low = payload["rating"] <= 2
        ordered = self.user_shops_ordered.contains(entities["user_id"], shop)
        features["low_rating"] = float(low)
        features["reviewer_ordered"] = float(ordered)
        features["shop_reviews_1h"] = self.shop_reviews.add(shop, t)
        features["shop_low_reviews_1h"] = self.shop_low_reviews.add(shop, t, float(low))


_Specific = Callable[
    [FeatureExtractor, dict[str, float], float, Mapping[str, Any], Mapping[str, Any], Any], None
]
# Each event type's own features (a class-level table: nothing extra to pickle).
_SPECIFIC: dict[str, _Specific] = {
    event_type: getattr(FeatureExtractor, "_" + event_type.replace(".", "_"))
    for event_type in FEATURE_SPECS
}
