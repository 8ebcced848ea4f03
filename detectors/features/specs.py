"""What each event type's features are, and how each is squashed into [0, 1).

Its own module, kept out of the compiled extractor (see ``setup.py``): specs travel in
checkpoints inside the models, and a compiled class can only be unpickled if it can be
built without arguments, which a spec cannot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """A feature's name and how it is squashed into [0, 1)."""

    name: str
    scale: float | None  # None: already in [0, 1] (a flag)

    def squash(self, value: float) -> float:
        if self.scale is None:
            return min(max(value, 0.0), 1.0)
        value = max(value, 0.0)
        return value / (value + self.scale)


_COMMON = (
    FeatureSpec("user_age_h", 24.0),
    FeatureSpec("user_events_1h", 5.0),
    FeatureSpec("device_users", 2.0),
    FeatureSpec("ip_users", 3.0),
    FeatureSpec("new_device", None),
    FeatureSpec("new_country", None),
)

FEATURE_SPECS: dict[str, tuple[FeatureSpec, ...]] = {
    "account.created": (
        *_COMMON,
        FeatureSpec("ip_signups_1h", 2.0),
        FeatureSpec("device_signups_1h", 1.0),
    ),
    "account.login": (
        *_COMMON,
        FeatureSpec("failed", None),
        FeatureSpec("user_failed_logins_1h", 1.0),
    ),
    "listing.created": (
        *_COMMON,
        FeatureSpec("price_vs_category", 1.0),
        FeatureSpec("shop_age_h", 24.0),
        FeatureSpec("shop_listings_1h", 3.0),
        FeatureSpec("subnet_new_shops_1d", 1.0),
        FeatureSpec("same_title_1d", 1.0),
    ),
    "order.placed": (
        *_COMMON,
        FeatureSpec("amount_log", 4.0),
        FeatureSpec("amount_vs_user", 1.0),
        FeatureSpec("user_orders_1h", 2.0),
    ),
    "payment.attempted": (
        *_COMMON,
        FeatureSpec("amount_log", 4.0),
        FeatureSpec("amount_vs_user", 1.0),
        FeatureSpec("declined", None),
        FeatureSpec("device_payments_1h", 3.0),
        FeatureSpec("device_new_cards_1h", 1.0),
        FeatureSpec("ip_new_cards_1h", 1.0),
        FeatureSpec("device_declines_1h", 1.0),
    ),
    "message.sent": (
        *_COMMON,
        FeatureSpec("has_link", None),
        FeatureSpec("length_log", 5.0),
        FeatureSpec("user_messages_1h", 3.0),
        FeatureSpec("user_recipients", 5.0),
    ),
    "review.posted": (
        *_COMMON,
        FeatureSpec("low_rating", None),
        FeatureSpec("reviewer_ordered", None),
        FeatureSpec("shop_reviews_1h", 2.0),
        FeatureSpec("shop_low_reviews_1h", 1.0),
    ),
}
