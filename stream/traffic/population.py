"""The marketplace's people and shops, with heavy-tailed activity.

Activity and shop popularity are lognormal, so a few users and shops account for a large
share of the traffic, as on real marketplaces. Picking is by cumulative weights and bisection:
O(log n), and users and shops that join mid-stream are appended without a rebuild.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from stream.traffic.catalog import pick_category, shaped_price
from stream.traffic.identities import Card, IdAllocator, card, device_id, ipv4
from stream.traffic.vocab import (
    CARD_BINS,
    CURRENCY_BY_COUNTRY,
    HOME_COUNTRIES,
    HOME_COUNTRY_WEIGHTS,
    IP_FIRST_OCTETS,
    Category,
)

# Sigma of log-activity: the top 1% of users produce roughly a fifth of all sessions.
USER_ACTIVITY_SIGMA: Final = 1.6
SHOP_POPULARITY_SIGMA: Final = 1.8
SELLER_SHARE: Final = 0.12
TWO_DEVICE_SHARE: Final = 0.45
TWO_CARD_SHARE: Final = 0.35
LOGIN_METHODS: Final = ("password", "sso", "token")
LOGIN_METHOD_WEIGHTS: Final = (0.5, 0.2, 0.3)
MEDIAN_INITIAL_LISTINGS: Final = 6.0
MAX_INITIAL_LISTINGS: Final = 300


@dataclass(frozen=True, slots=True)
class Listing:
    listing_id: str
    price: float


@dataclass(frozen=True, slots=True)
class PastOrder:
    """A user's latest order, which a later review can be about."""

    at_ms: int
    shop_id: str
    listing_id: str
    shop_owner_id: str


@dataclass(slots=True, eq=False)
class Shop:
    shop_id: str
    owner_id: str
    category: Category
    currency: str
    popularity: float
    listings: list[Listing] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class User:
    """A user and their habits: where they log in from, with what, and how they pay."""

    user_id: str
    country: str
    home_ip: str
    devices: tuple[str, ...]
    cards: tuple[Card, ...]
    login_method: str
    shop: Shop | None = None
    last_order: PastOrder | None = None
    # Moving average of the user's order amounts; 0 until their first order is emitted.
    typical_order_amount: float = 0.0
    # Existed before the stream started (no account.created in the stream).
    established: bool = True


class Population:
    """Active users and orderable shops (those with at least one listing)."""

    def __init__(self, ids: IdAllocator) -> None:
        self.ids = ids
        self.users: list[User] = []
        self._user_cumulative: list[float] = []
        self.open_shops: list[Shop] = []
        self._shop_cumulative: list[float] = []

    def add_user(self, user: User, activity: float) -> None:
        total = self._user_cumulative[-1] if self._user_cumulative else 0.0
        self.users.append(user)
        self._user_cumulative.append(total + activity)

    def pick_user(self, rnd: random.Random) -> User:
        """A user, weighted by activity."""
        cumulative = self._user_cumulative
        index = bisect_right(cumulative, rnd.random() * cumulative[-1])
        return self.users[min(index, len(self.users) - 1)]

    def add_listing(self, shop: Shop, listing: Listing) -> None:
        shop.listings.append(listing)
        if len(shop.listings) == 1:
            total = self._shop_cumulative[-1] if self._shop_cumulative else 0.0
            self.open_shops.append(shop)
            self._shop_cumulative.append(total + shop.popularity)

    def pick_shop(self, rnd: random.Random) -> Shop:
        """An orderable shop, weighted by popularity."""
        cumulative = self._shop_cumulative
        index = bisect_right(cumulative, rnd.random() * cumulative[-1])
        return self.open_shops[min(index, len(self.open_shops) - 1)]


def population_size(events: int) -> int:
    """Users existing at the start: about one per 15 events, within sane bounds."""
    return min(max(events // 15, 200), 500_000)


def new_user(rnd: random.Random, ids: IdAllocator, country: str, *, established: bool) -> User:
    """A user with fresh identity, devices and cards (one device and card for newcomers)."""
    devices: tuple[str, ...] = (device_id(rnd),)
    cards: tuple[Card, ...] = (card(rnd, CARD_BINS),)
    if established:
        if rnd.random() < TWO_DEVICE_SHARE:
            devices += (device_id(rnd),)
        if rnd.random() < TWO_CARD_SHARE:
            cards += (card(rnd, CARD_BINS),)
    return User(
        user_id=ids.user(),
        country=country,
        home_ip=ipv4(rnd, IP_FIRST_OCTETS[country]),
        devices=devices,
        cards=cards,
        login_method=rnd.choices(LOGIN_METHODS, LOGIN_METHOD_WEIGHTS)[0],
        established=established,
    )


def new_shop(rnd: random.Random, ids: IdAllocator, owner: User, popularity: float) -> Shop:
    return Shop(
        shop_id=ids.shop(),
        owner_id=owner.user_id,
        category=pick_category(rnd),
        currency=CURRENCY_BY_COUNTRY[owner.country],
        popularity=popularity,
    )


def build_population(events: int, rng: np.random.Generator, ids: IdAllocator) -> Population:
    """The users and shops that exist when the stream starts, with their listings."""
    size = population_size(events)
    activity = rng.lognormal(0.0, USER_ACTIVITY_SIGMA, size).tolist()
    weights = np.asarray(HOME_COUNTRY_WEIGHTS, dtype=np.float64)
    countries = rng.choice(len(HOME_COUNTRIES), size=size, p=weights / weights.sum()).tolist()
    sellers = rng.random(size) < SELLER_SHARE
    sellers[0] = True  # at least one shop, so orders always have somewhere to go
    # Identity strings come from a random.Random derived from the same generator: the
    # helpers that mint them are shared with the stream, which draws scalars.
    rnd = random.Random(int(rng.integers(0, 2**63)))
    population = Population(ids)
    for index in range(size):
        user = new_user(rnd, ids, HOME_COUNTRIES[countries[index]], established=True)
        population.add_user(user, activity[index])
        if sellers[index]:
            popularity = float(rng.lognormal(0.0, SHOP_POPULARITY_SIGMA))
            shop = new_shop(rnd, ids, user, popularity)
            user.shop = shop
            _stock_shop(population, shop, rng)
    return population


def _stock_shop(population: Population, shop: Shop, rng: np.random.Generator) -> None:
    count = 1 + min(
        int(rng.lognormal(math.log(MEDIAN_INITIAL_LISTINGS), 1.0)), MAX_INITIAL_LISTINGS - 1
    )
    category = shop.category
    prices = rng.lognormal(math.log(category.median_price), category.price_sigma, count)
    for raw in prices.tolist():
        population.add_listing(shop, Listing(population.ids.listing(), shaped_price(raw)))
