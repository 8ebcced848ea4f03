"""Normal marketplace behaviour, one session at a time.

A session is a user logging in and doing a few things over the next minutes: buying (an
order, then its payment), messaging, reviewing what they bought, listing items if they sell.
Some sessions are sign-ups of new users. Each session is planned in full when it starts;
its events are scheduled at their own times and merged into the stream by the generator.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Final

from stream.traffic import events
from stream.traffic.catalog import listing_price, listing_title
from stream.traffic.clock import MS_PER_MINUTE, MS_PER_SECOND
from stream.traffic.events import Context, PendingEvent
from stream.traffic.identities import ipv4
from stream.traffic.population import Listing, PastOrder, Population, User, new_shop, new_user
from stream.traffic.vocab import (
    EMAIL_DOMAIN_WEIGHTS,
    EMAIL_DOMAINS,
    HOME_COUNTRIES,
    HOME_COUNTRY_WEIGHTS,
    IP_FIRST_OCTETS,
    NORMAL_DECLINE_REASONS,
    PAYMENT_ERROR_REASON,
)

SIGNUP_SHARE: Final = 0.06
NEW_SELLER_SHARE: Final = 0.15
FAILED_LOGIN_SHARE: Final = 0.04
# Sessions from another network of the home country (phone, work) and from abroad (travel):
# the honest look-alikes of attacks that a detector must learn to tolerate.
OTHER_NETWORK_SHARE: Final = 0.18
TRAVEL_SHARE: Final = 0.01
PRIMARY_DEVICE_SHARE: Final = 0.8
PRIMARY_CARD_SHARE: Final = 0.85
# P(k actions after the login), k = 0..4.
ACTIONS_PER_SESSION: Final = (0.25, 0.35, 0.22, 0.12, 0.06)
MEAN_ACTION_GAP_MS: Final = 80 * MS_PER_SECOND
BUYER_ACTIONS: Final = ("order", "message", "review")
BUYER_ACTION_WEIGHTS: Final = (0.42, 0.33, 0.25)
SELLER_ACTIONS: Final = ("listing", "message", "order")
SELLER_ACTION_WEIGHTS: Final = (0.45, 0.35, 0.2)
PAYMENT_APPROVED: Final = 0.96
PAYMENT_ERROR: Final = 0.005
PAYMENT_RETRY_SHARE: Final = 0.6
RETRY_APPROVED: Final = 0.92
HOME_SHIPPING_SHARE: Final = 0.96
MESSAGE_LINK_SHARE_BUYER: Final = 0.02
MESSAGE_LINK_SHARE_SELLER: Final = 0.08
# Ratings of honest reviews, 1..5 stars.
RATING_WEIGHTS: Final = (0.02, 0.02, 0.06, 0.2, 0.7)
TYPICAL_AMOUNT_SMOOTHING: Final = 0.2
# Mean events per session of this mix, measured over 1M-event streams; converts the
# configured events per day into sessions per day.
MEAN_EVENTS_PER_SESSION: Final = 2.93

_SIGNUP_METHODS: Final = ("email", "google", "apple")
_SIGNUP_METHOD_WEIGHTS: Final = (0.6, 0.3, 0.1)


class NormalTraffic:
    """Plans sessions of honest users against a population, drawing from ``rnd`` only."""

    def __init__(self, population: Population, rnd: random.Random) -> None:
        self.population = population
        self.rnd = rnd

    def session(self, start_ms: int) -> list[PendingEvent]:
        """The events of a session starting at ``start_ms``, in no particular order."""
        if self.rnd.random() < SIGNUP_SHARE:
            return self._signup(start_ms)
        return self._user_session(self.population.pick_user(self.rnd), start_ms)

    # -- sessions -------------------------------------------------------------------------

    def _signup(self, at_ms: int) -> list[PendingEvent]:
        rnd = self.rnd
        population = self.population
        country = rnd.choices(HOME_COUNTRIES, HOME_COUNTRY_WEIGHTS)[0]
        user = new_user(rnd, population.ids, country, established=False)
        is_seller = rnd.random() < NEW_SELLER_SHARE
        if is_seller:
            user.shop = new_shop(rnd, population.ids, user, rnd.lognormvariate(-1.0, 1.5))
        # Newcomers are on average less active than the established crowd.
        activity = rnd.lognormvariate(-0.7, 1.4)
        method = rnd.choices(_SIGNUP_METHODS, _SIGNUP_METHOD_WEIGHTS)[0]
        ctx = events.context(user.home_ip, user.devices[0], country)
        created = events.account_created(
            at_ms,
            user.user_id,
            ctx,
            account_kind="seller" if is_seller else "buyer",
            signup_method=method,
            email_domain=rnd.choices(EMAIL_DOMAINS, EMAIL_DOMAIN_WEIGHTS)[0],
        )
        created.on_emit = lambda: population.add_user(user, activity)
        planned = [created]
        at_ms += 20 * MS_PER_SECOND + int(rnd.random() * 100 * MS_PER_SECOND)
        if rnd.random() < 0.8:
            login_method = "password" if method == "email" else "sso"
            planned.append(
                events.account_login(at_ms, user.user_id, ctx, success=True, method=login_method)
            )
        if is_seller:
            for _ in range(1 + int(rnd.random() * 3)):
                at_ms += 2 * MS_PER_MINUTE + int(rnd.random() * 13 * MS_PER_MINUTE)
                planned.append(self._listing(user, ctx, at_ms))
        return planned

    def _user_session(self, user: User, at_ms: int) -> list[PendingEvent]:
        rnd = self.rnd
        ctx = self._session_context(user)
        planned: list[PendingEvent] = []
        if rnd.random() < FAILED_LOGIN_SHARE:
            # A mistyped password, then the right one a few seconds later.
            planned.append(
                events.account_login(at_ms, user.user_id, ctx, success=False, method="password")
            )
            at_ms += 4 * MS_PER_SECOND + int(rnd.random() * 20 * MS_PER_SECOND)
        method = user.login_method
        planned.append(events.account_login(at_ms, user.user_id, ctx, success=True, method=method))
        is_seller = user.shop is not None
        actions = SELLER_ACTIONS if is_seller else BUYER_ACTIONS
        weights = SELLER_ACTION_WEIGHTS if is_seller else BUYER_ACTION_WEIGHTS
        for _ in range(_draw_index(ACTIONS_PER_SESSION, rnd)):
            at_ms += 5 * MS_PER_SECOND + _exponential_ms(MEAN_ACTION_GAP_MS, rnd)
            action = actions[_draw_index(weights, rnd)]
            if action == "order":
                planned.extend(self._order(user, ctx, at_ms))
            elif action == "listing":
                planned.append(self._listing(user, ctx, at_ms))
            elif action == "review":
                review = self._review(user, ctx, at_ms)
                planned.append(review if review is not None else self._message(user, ctx, at_ms))
            else:
                planned.append(self._message(user, ctx, at_ms))
        return planned

    def _session_context(self, user: User) -> Context:
        rnd = self.rnd
        devices = user.devices
        device = devices[0] if rnd.random() < PRIMARY_DEVICE_SHARE else devices[-1]
        draw = rnd.random()
        if draw < TRAVEL_SHARE:
            abroad = HOME_COUNTRIES[int(rnd.random() * len(HOME_COUNTRIES))]
            return events.context(ipv4(rnd, IP_FIRST_OCTETS[abroad]), device, abroad)
        if draw < TRAVEL_SHARE + OTHER_NETWORK_SHARE:
            return events.context(ipv4(rnd, IP_FIRST_OCTETS[user.country]), device, user.country)
        return events.context(user.home_ip, device, user.country)

    # -- actions --------------------------------------------------------------------------

    def _order(self, user: User, ctx: Context, at_ms: int) -> list[PendingEvent]:
        rnd = self.rnd
        shop = self.population.pick_shop(rnd)
        listing = shop.listings[int(rnd.random() * len(shop.listings))]
        draw = rnd.random()
        item_count = 1 if draw < 0.8 else 2 if draw < 0.93 else 3 + int(rnd.random() * 4)
        amount = min(round(listing.price * item_count, 2), 1_000_000.0)
        order_id = self.population.ids.order()
        shipping = (
            user.country
            if rnd.random() < HOME_SHIPPING_SHARE
            else HOME_COUNTRIES[int(rnd.random() * len(HOME_COUNTRIES))]
        )
        order = events.order_placed(
            at_ms,
            user.user_id,
            ctx,
            shop_id=shop.shop_id,
            listing_id=listing.listing_id,
            order_id=order_id,
            amount=amount,
            currency=shop.currency,
            item_count=item_count,
            shipping_country=shipping,
        )
        past = PastOrder(at_ms, shop.shop_id, listing.listing_id, shop.owner_id)

        def remember() -> None:
            user.last_order = past
            previous = user.typical_order_amount
            user.typical_order_amount = (
                amount
                if previous == 0.0
                else previous + TYPICAL_AMOUNT_SMOOTHING * (amount - previous)
            )

        order.on_emit = remember
        planned = [order]
        card = user.cards[0] if rnd.random() < PRIMARY_CARD_SHARE else user.cards[-1]
        pay_at = at_ms + 3 * MS_PER_SECOND + _exponential_ms(15 * MS_PER_SECOND, rnd)
        draw = rnd.random()
        outcome = (
            "approved"
            if draw < PAYMENT_APPROVED
            else "error"
            if draw < PAYMENT_APPROVED + PAYMENT_ERROR
            else "declined"
        )
        for attempt in (1, 2):
            reason = (
                None
                if outcome == "approved"
                else PAYMENT_ERROR_REASON
                if outcome == "error"
                else NORMAL_DECLINE_REASONS[int(rnd.random() * len(NORMAL_DECLINE_REASONS))]
            )
            planned.append(
                events.payment_attempted(
                    pay_at,
                    user.user_id,
                    ctx,
                    order_id=order_id,
                    shop_id=shop.shop_id,
                    listing_id=listing.listing_id,
                    amount=amount,
                    currency=shop.currency,
                    card_bin=card.bin,
                    card_fingerprint=card.fingerprint,
                    outcome=outcome,
                    decline_reason=reason,
                )
            )
            # One retry at most, usually with the other card.
            if outcome == "approved" or attempt == 2 or rnd.random() >= PAYMENT_RETRY_SHARE:
                break
            card = user.cards[-1] if card is user.cards[0] else user.cards[0]
            pay_at += 20 * MS_PER_SECOND + int(rnd.random() * 100 * MS_PER_SECOND)
            outcome = "approved" if rnd.random() < RETRY_APPROVED else "declined"
        return planned

    def _listing(self, user: User, ctx: Context, at_ms: int) -> PendingEvent:
        rnd = self.rnd
        shop = user.shop
        assert shop is not None, "only sellers list"
        listing = Listing(self.population.ids.listing(), listing_price(shop.category, rnd))
        # Half of handmade listings are one of a kind.
        quantity = 1 if rnd.random() < 0.5 else 2 + int(rnd.random() * 49)
        event = events.listing_created(
            at_ms,
            user.user_id,
            ctx,
            shop_id=shop.shop_id,
            listing_id=listing.listing_id,
            title=listing_title(shop.category, rnd),
            category=shop.category.name,
            price=listing.price,
            currency=shop.currency,
            quantity=quantity,
        )
        population = self.population
        event.on_emit = lambda: population.add_listing(shop, listing)
        return event

    def _message(self, user: User, ctx: Context, at_ms: int) -> PendingEvent:
        rnd = self.rnd
        if user.shop is None:
            # Buyers write to shops: the one they bought from, or one they are browsing.
            past = user.last_order
            if past is not None and rnd.random() < 0.5:
                shop_id, recipient = past.shop_id, past.shop_owner_id
            else:
                shop = self.population.pick_shop(rnd)
                shop_id, recipient = shop.shop_id, shop.owner_id
            link_share = MESSAGE_LINK_SHARE_BUYER
        else:
            # Sellers answer customers.
            shop_id = user.shop.shop_id
            recipient = self.population.pick_user(rnd).user_id
            link_share = MESSAGE_LINK_SHARE_SELLER
        length = min(max(int(rnd.lognormvariate(math.log(110.0), 0.9)), 1), 5000)
        return events.message_sent(
            at_ms,
            user.user_id,
            ctx,
            recipient_id=recipient,
            length=length,
            has_link=rnd.random() < link_share,
            shop_id=shop_id,
        )

    def _review(self, user: User, ctx: Context, at_ms: int) -> PendingEvent | None:
        """A review of the user's latest order, if it was placed before ``at_ms``."""
        past = user.last_order
        if past is None or past.at_ms >= at_ms:
            return None
        user.last_order = None  # one review per order
        rnd = self.rnd
        text_length = 0 if rnd.random() < 0.35 else int(rnd.lognormvariate(math.log(140.0), 0.8))
        return events.review_posted(
            at_ms,
            user.user_id,
            ctx,
            shop_id=past.shop_id,
            listing_id=past.listing_id,
            rating=1 + _draw_index(RATING_WEIGHTS, rnd),
            text_length=min(text_length, 100_000),
        )


def _draw_index(weights: Sequence[float], rnd: random.Random) -> int:
    """Index i with probability weights[i] / sum(weights)."""
    point = rnd.random() * sum(weights)
    for index, weight in enumerate(weights):
        point -= weight
        if point < 0:
            return index
    return len(weights) - 1


def _exponential_ms(mean_ms: float, rnd: random.Random) -> int:
    return int(-math.log(1.0 - rnd.random()) * mean_ms)
