"""Injected attacks: when each instance starts, and the events it consists of.

Each instance is planned in full at its start and labelled with its type and an id such as
``card_testing-3`` (numbered from 1 per type, in start order). Attacks use their own random
stream and create their own accounts, so they leave the honest population untouched; an
account takeover only reads its victim's history.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from stream.traffic import events
from stream.traffic.catalog import listing_title, pick_category
from stream.traffic.clock import MS_PER_HOUR, MS_PER_MINUTE, MS_PER_SECOND
from stream.traffic.config import ATTACK_TYPES, TrafficConfig
from stream.traffic.events import Context, PendingEvent
from stream.traffic.identities import card, device_id, ipv4, subnet_octets
from stream.traffic.population import Population, Shop, User
from stream.traffic.vocab import (
    ATTACKER_COUNTRIES,
    BAIT_TITLE_DECORATIONS,
    CURRENCY_BY_COUNTRY,
    DISPOSABLE_EMAIL_DOMAINS,
    HOME_COUNTRIES,
    HOME_COUNTRY_WEIGHTS,
    HOSTING_FIRST_OCTETS,
    IP_FIRST_OCTETS,
    TESTING_BINS,
    TESTING_DECLINE_REASONS,
)

# Instances start between these shares of the stream, so that most of each instance fits
# before the stream ends and detectors have seen some normal traffic first.
FIRST_START_SHARE: Final = 0.02
LAST_START_SHARE: Final = 0.85
# Victims are picked among users who have ordered, so "their usual" amount is known.
VICTIM_SEARCH_TRIES: Final = 200
FALLBACK_USUAL_AMOUNT: Final = 40.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AttackPlan:
    """Start attack ``attack_id`` once ``position`` records have been emitted."""

    position: int
    attack: str
    attack_id: str


def plan_attacks(config: TrafficConfig, rnd: random.Random) -> list[AttackPlan]:
    """Every attack instance of the run, ordered by start position."""
    per_type = config.attack_instances_per_type()
    low = int(config.events * FIRST_START_SHARE)
    span = max(int(config.events * LAST_START_SHARE) - low, 1)
    plans: list[AttackPlan] = []
    for kind in config.attack_types:
        positions = sorted(low + int(rnd.random() * span) for _ in range(per_type))
        plans.extend(
            AttackPlan(position, kind, f"{kind}-{number}")
            for number, position in enumerate(positions, start=1)
        )
    plans.sort(key=lambda plan: (plan.position, ATTACK_TYPES.index(plan.attack)))
    return plans


class AttackInjector:
    """Plans the events of attack instances against a population, drawing from ``rnd``."""

    def __init__(self, population: Population, rnd: random.Random) -> None:
        self.population = population
        self.rnd = rnd
        self._planners: dict[str, Callable[[int], list[PendingEvent]]] = {
            "card_testing": self._card_testing,
            "account_takeover": self._account_takeover,
            "fake_listing_ring": self._fake_listing_ring,
            "review_bombing": self._review_bombing,
        }

    def launch(self, plan: AttackPlan, now_ms: int) -> list[PendingEvent]:
        """The labelled events of ``plan``, all at or after ``now_ms``."""
        start_ms = now_ms + int(self.rnd.random() * MS_PER_MINUTE)
        planned = self._planners[plan.attack](start_ms)
        for event in planned:
            event.attack = plan.attack
            event.attack_id = plan.attack_id
        return planned

    # -- card testing -----------------------------------------------------------------------

    def _card_testing(self, t: int) -> list[PendingEvent]:
        """A script checking stolen card numbers with tiny payments, minutes long.

        Runs from one device behind rotating proxies, or from one IP with a device per
        account; a handful of throwaway accounts; new cards of a few prepaid BINs each time.
        """
        rnd = self.rnd
        ids = self.population.ids
        country = _pick(ATTACKER_COUNTRIES, rnd)
        one_device = rnd.random() < 0.5
        device = device_id(rnd)
        fixed_ip = ipv4(rnd, HOSTING_FIRST_OCTETS)
        proxies = [ipv4(rnd, HOSTING_FIRST_OCTETS) for _ in range(3 + int(rnd.random() * 8))]
        planned: list[PendingEvent] = []
        accounts: list[tuple[str, Context]] = []
        for _ in range(1 + int(rnd.random() * 5)):
            user_id = ids.user()
            if one_device:
                ctx = events.context(_pick(proxies, rnd), device, country)
            else:
                ctx = events.context(fixed_ip, device_id(rnd), country)
            accounts.append((user_id, ctx))
            planned.append(
                events.account_created(
                    t,
                    user_id,
                    ctx,
                    account_kind="buyer",
                    signup_method="email",
                    email_domain=_pick(DISPOSABLE_EMAIL_DOMAINS, rnd),
                )
            )
            t += 5 * MS_PER_SECOND + int(rnd.random() * 15 * MS_PER_SECOND)
            planned.append(events.account_login(t, user_id, ctx, success=True, method="password"))
            t += 5 * MS_PER_SECOND + int(rnd.random() * 25 * MS_PER_SECOND)
        shop = self.population.pick_shop(rnd)
        listing = min(shop.listings, key=lambda candidate: candidate.price)
        with_orders = rnd.random() < 0.5
        bins = rnd.sample(TESTING_BINS, 1 + int(rnd.random() * 3))
        mean_gap_ms = 2 * MS_PER_SECOND + rnd.random() * 6 * MS_PER_SECOND
        open_orders: dict[str, tuple[str, float]] = {}
        for _ in range(30 + int(rnd.random() * 151)):
            t += 500 + _exponential_ms(mean_gap_ms, rnd)
            user_id, ctx = _pick(accounts, rnd)
            if one_device:
                ctx = events.context(_pick(proxies, rnd), device, country)
            if user_id not in open_orders or rnd.random() < 0.1:
                order_id, amount = ids.order(), round(0.5 + rnd.random() * 4.5, 2)
                open_orders[user_id] = (order_id, amount)
                if with_orders:
                    planned.append(
                        events.order_placed(
                            t,
                            user_id,
                            ctx,
                            shop_id=shop.shop_id,
                            listing_id=listing.listing_id,
                            order_id=order_id,
                            amount=amount,
                            currency="USD",
                            item_count=1,
                            shipping_country=country,
                        )
                    )
                    t += MS_PER_SECOND + int(rnd.random() * 2 * MS_PER_SECOND)
            order_id, amount = open_orders[user_id]
            stolen = card(rnd, bins)
            draw = rnd.random()
            outcome = "declined" if draw < 0.85 else "approved" if draw < 0.97 else "error"
            reason = (
                _pick(TESTING_DECLINE_REASONS, rnd)
                if outcome == "declined"
                else "processor_unavailable"
                if outcome == "error"
                else None
            )
            planned.append(
                events.payment_attempted(
                    t,
                    user_id,
                    ctx,
                    order_id=order_id,
                    shop_id=shop.shop_id,
                    listing_id=listing.listing_id,
                    amount=amount,
                    currency="USD",
                    card_bin=stolen.bin,
                    card_fingerprint=stolen.fingerprint,
                    outcome=outcome,
                    decline_reason=reason,
                )
            )
        return planned

    # -- account takeover -------------------------------------------------------------------

    def _account_takeover(self, t: int) -> list[PendingEvent]:
        """Stolen credentials used from a new device abroad, then cashed out within the hour.

        A few failed guesses, a successful login, orders worth 5-50x the victim's usual
        shipped abroad on the stored card, and phishing messages with links.
        """
        rnd = self.rnd
        population = self.population
        victim = self._pick_victim()
        country = _pick(ATTACKER_COUNTRIES, rnd)
        ctx = events.context(ipv4(rnd, IP_FIRST_OCTETS[country]), device_id(rnd), country)
        planned: list[PendingEvent] = []
        for _ in range(int(rnd.random() * 6)):
            planned.append(
                events.account_login(t, victim.user_id, ctx, success=False, method="password")
            )
            t += 5 * MS_PER_SECOND + int(rnd.random() * 35 * MS_PER_SECOND)
        planned.append(
            events.account_login(t, victim.user_id, ctx, success=True, method="password")
        )
        usual = victim.typical_order_amount or FALLBACK_USUAL_AMOUNT
        for _ in range(2 + int(rnd.random() * 5)):
            order_at = t + MS_PER_MINUTE + int(rnd.random() * 55 * MS_PER_MINUTE)
            planned.extend(self._takeover_order(victim, ctx, order_at, usual))
        for _ in range(int(rnd.random() * 10)):
            planned.append(
                events.message_sent(
                    t + MS_PER_MINUTE + int(rnd.random() * 58 * MS_PER_MINUTE),
                    victim.user_id,
                    ctx,
                    recipient_id=population.pick_user(rnd).user_id,
                    length=60 + int(rnd.random() * 240),
                    has_link=True,
                )
            )
        return planned

    def _pick_victim(self) -> User:
        candidate = self.population.pick_user(self.rnd)
        for _ in range(VICTIM_SEARCH_TRIES):
            if candidate.established and candidate.typical_order_amount > 0:
                return candidate
            candidate = self.population.pick_user(self.rnd)
        return candidate

    def _takeover_order(
        self, victim: User, ctx: Context, at_ms: int, usual: float
    ) -> list[PendingEvent]:
        rnd = self.rnd
        shop = self.population.pick_shop(rnd)
        listing = max(shop.listings, key=lambda candidate: candidate.price)
        target = usual * (5.0 + rnd.random() * 45.0)
        item_count = min(max(1, math.ceil(target / listing.price)), 1000)
        amount = min(round(listing.price * item_count, 2), 1_000_000.0)
        order_id = self.population.ids.order()
        planned = [
            events.order_placed(
                at_ms,
                victim.user_id,
                ctx,
                shop_id=shop.shop_id,
                listing_id=listing.listing_id,
                order_id=order_id,
                amount=amount,
                currency=shop.currency,
                item_count=item_count,
                shipping_country=ctx["country"],
            )
        ]
        stored = victim.cards[0]
        pay_at = at_ms + 2 * MS_PER_SECOND + int(rnd.random() * 10 * MS_PER_SECOND)
        approved = rnd.random() < 0.8
        attempts = [(stored, approved)]
        if not approved:
            # The bank blocked the stored card: try a card bought on the side.
            attempts.append((card(rnd, TESTING_BINS), rnd.random() < 0.5))
        for used, ok in attempts:
            planned.append(
                events.payment_attempted(
                    pay_at,
                    victim.user_id,
                    ctx,
                    order_id=order_id,
                    shop_id=shop.shop_id,
                    listing_id=listing.listing_id,
                    amount=amount,
                    currency=shop.currency,
                    card_bin=used.bin,
                    card_fingerprint=used.fingerprint,
                    outcome="approved" if ok else "declined",
                    decline_reason=None if ok else "suspected_fraud",
                )
            )
            pay_at += 10 * MS_PER_SECOND + int(rnd.random() * 50 * MS_PER_SECOND)
        return planned

    # -- fake listing ring ------------------------------------------------------------------

    def _fake_listing_ring(self, t0: int) -> list[PendingEvent]:
        """New seller accounts from one /24 listing one copied title at bait prices.

        Prices are 20-40% of the category's typical price; titles differ only by a
        decoration; quantities are implausibly high for handmade goods.
        """
        rnd = self.rnd
        ids = self.population.ids
        subnet = f"{_pick(HOSTING_FIRST_OCTETS, rnd)}.{subnet_octets(rnd)}"
        claimed_country = rnd.choices(HOME_COUNTRIES, HOME_COUNTRY_WEIGHTS)[0]
        currency = CURRENCY_BY_COUNTRY[claimed_country]
        category = pick_category(rnd)
        base_title = listing_title(category, rnd)
        devices = [device_id(rnd) for _ in range(1 + int(rnd.random() * 3))]
        window_ms = 20 * MS_PER_MINUTE + int(rnd.random() * 70 * MS_PER_MINUTE)
        sellers = 3 + int(rnd.random() * 6)
        hosts = rnd.sample(range(1, 255), sellers)
        planned: list[PendingEvent] = []
        for host in hosts:
            t = t0 + int(rnd.random() * window_ms)
            user_id, shop_id = ids.user(), ids.shop()
            ctx = events.context(f"{subnet}.{host}", _pick(devices, rnd), claimed_country)
            planned.append(
                events.account_created(
                    t,
                    user_id,
                    ctx,
                    account_kind="seller",
                    signup_method="email",
                    email_domain=_pick(DISPOSABLE_EMAIL_DOMAINS, rnd)
                    if rnd.random() < 0.5
                    else "gmail.com",
                )
            )
            t += 10 * MS_PER_SECOND + int(rnd.random() * 50 * MS_PER_SECOND)
            planned.append(events.account_login(t, user_id, ctx, success=True, method="password"))
            for _ in range(3 + int(rnd.random() * 10)):
                t += 20 * MS_PER_SECOND + int(rnd.random() * 100 * MS_PER_SECOND)
                bait = category.median_price * (0.2 + rnd.random() * 0.2)
                planned.append(
                    events.listing_created(
                        t,
                        user_id,
                        ctx,
                        shop_id=shop_id,
                        listing_id=ids.listing(),
                        title=base_title + _pick(BAIT_TITLE_DECORATIONS, rnd),
                        category=category.name,
                        price=max(round(bait, 2), 0.5),
                        currency=currency,
                        quantity=50 + int(rnd.random() * 451),
                    )
                )
        return planned

    # -- review bombing ---------------------------------------------------------------------

    def _review_bombing(self, t0: int) -> list[PendingEvent]:
        """Throwaway accounts from few IPs and devices 1-star one shop within hours.

        None of them ever ordered from it.
        """
        rnd = self.rnd
        ids = self.population.ids
        shop = self._pick_target_shop()
        targets = [_pick(shop.listings, rnd) for _ in range(1 + int(rnd.random() * 3))]
        ips = [ipv4(rnd, HOSTING_FIRST_OCTETS) for _ in range(1 + int(rnd.random() * 3))]
        countries = [rnd.choices(HOME_COUNTRIES, HOME_COUNTRY_WEIGHTS)[0] for _ in ips]
        devices = [device_id(rnd) for _ in range(1 + int(rnd.random() * 4))]
        window_ms = MS_PER_HOUR + int(rnd.random() * 3 * MS_PER_HOUR)
        planned: list[PendingEvent] = []
        for _ in range(12 + int(rnd.random() * 49)):
            t = t0 + int(rnd.random() * window_ms)
            user_id = ids.user()
            where = int(rnd.random() * len(ips))
            ctx = events.context(ips[where], _pick(devices, rnd), countries[where])
            planned.append(
                events.account_created(
                    t,
                    user_id,
                    ctx,
                    account_kind="buyer",
                    signup_method="email" if rnd.random() < 0.8 else "google",
                    email_domain=_pick(DISPOSABLE_EMAIL_DOMAINS, rnd)
                    if rnd.random() < 0.7
                    else "gmail.com",
                )
            )
            t += 10 * MS_PER_SECOND + int(rnd.random() * 50 * MS_PER_SECOND)
            if rnd.random() < 0.6:
                planned.append(
                    events.account_login(t, user_id, ctx, success=True, method="password")
                )
            t += MS_PER_MINUTE + int(rnd.random() * 9 * MS_PER_MINUTE)
            target = _pick(targets, rnd)
            planned.append(
                events.review_posted(
                    t,
                    user_id,
                    ctx,
                    shop_id=shop.shop_id,
                    listing_id=target.listing_id,
                    rating=1 if rnd.random() < 0.85 else 2,
                    text_length=0 if rnd.random() < 0.2 else 20 + int(rnd.random() * 180),
                )
            )
        return planned

    def _pick_target_shop(self) -> Shop:
        # Popular shops are the ones worth sabotaging.
        return self.population.pick_shop(self.rnd)


def _pick(options: Sequence[T], rnd: random.Random) -> T:
    return options[int(rnd.random() * len(options))]


def _exponential_ms(mean_ms: float, rnd: random.Random) -> int:
    return int(-math.log(1.0 - rnd.random()) * mean_ms)
